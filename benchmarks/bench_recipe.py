"""Shipped recipes end to end on the shipped baseline: wall time per stage, mAP50-95 drop, and the final
int8 model's ONNX Runtime latency against the fp32 baseline at the recipe's size and at other sizes.

    python benchmarks/bench_recipe.py [--recipes prune-int8 full] [--out runs/bench-recipe]
                                      [--latency-imgsz 640] [--runs 50] [--threads 2] [--set KEY=VALUE ...]

Each recipe runs with ``yolocompress run``'s library call (``run_recipe``) on the shipped baseline (yolov5n,
6 classes, trained at 256 px) and the demo data, into ``--out/<recipe>`` (resumable: a rerun skips finished
stages). Its report gives the figures at the recipe's image size (256 px), where the baseline and every
artifact were timed side by side in one process. For every ``--latency-imgsz`` other than that, the
artifact the ``quantize`` stage started from is exported and int8-quantized again at that size (PTQ with the
recipe's quantization settings; int8 latency depends on the graph, not on the weight values, so a QAT
result runs exactly as fast) and timed interleaved with the fp32 baseline and the fp32 pre-quantize model at
that size. Every latency line carries the CPU model and ISA flags: ratios differ between CPUs.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from yolocompress.compress.quant.ptq import quantize_ptq
from yolocompress.demo import baseline_path, demo_data
from yolocompress.io.checkpoint import load_model
from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name
from yolocompress.recipe import load_recipe, run_recipe
from yolocompress.recipe.runner import measure_latencies


def _progress(event) -> None:
    if event.status in ("start", "done", "skip"):
        extra = f" {event.seconds:.1f} s" if event.status == "done" else ""
        print(f"  {time.strftime('%H:%M:%S')} [{event.index}/{event.total}] {event.name} {event.status}{extra}",
              flush=True)


def latency_at(size: int, loaded, out: Path, threads: int, runs: int) -> dict[str, float]:
    """ORT medians (ms) at ``size``: fp32 baseline, fp32 model before quantize, its int8 PTQ at ``size``."""
    quant = next(s for s in loaded.plan.stages if s.type.name == "quantize")
    before = loaded.plan.stages[quant.index - 1].folder if quant.index else "00-baseline"
    source = load_model(out / before / "model.pt")
    cfg = dataclasses.replace(quant.configs["quant"], imgsz=size, calib_images=32)
    with tempfile.TemporaryDirectory(prefix="bench-recipe-") as tmp:
        int8, _ = quantize_ptq(source, loaded.data, cfg, output=Path(tmp) / "int8.onnx")
        pre = Path(tmp) / "pre.pt"
        base = Path(tmp) / "base.pt"
        from yolocompress.io.checkpoint import save_model

        save_model(source, pre, imgsz=size)
        save_model(load_model(out / "00-baseline" / "model.pt"), base, imgsz=size)
        timed = measure_latencies([base, pre, int8], size, ("onnxruntime",), threads, runs, 10, 5)
        return {name: timed[p]["onnxruntime"].median_ms for name, p in
                (("fp32 baseline", base), ("fp32 pre-quantize", pre), ("int8", int8))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["prune-int8", "full"])
    ap.add_argument("--out", default="runs/bench-recipe")
    ap.add_argument("--latency-imgsz", nargs="*", type=int, default=[640])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    print(f"{cpu_line(cpu_name(), cpu_flags())}; threads {args.threads}; {time.strftime('%Y-%m-%d')}")
    for name in args.recipes:
        out = Path(args.out) / name
        loaded = load_recipe(name, overrides=args.set, model=baseline_path(), data=demo_data())
        print(f"\n== recipe {name} (imgsz {loaded.plan.imgsz}) -> {out}", flush=True)
        t0 = time.perf_counter()
        result = run_recipe(loaded, out, resume=True, on_progress=_progress)
        wall = time.perf_counter() - t0
        rows, stages = result.report["rows"], result.report["stages"]
        base, final = rows[0], rows[-1]
        print(f"wall time {wall:.0f} s (stages skipped by a resume count 0); per stage: " +
              ", ".join(f"{s['name']} {s['seconds']:.0f} s" for s in stages))
        for row in rows:
            ort = (row["latency"].get("onnxruntime") or {}).get("median_ms")
            print(f"  {row['stage']:<10} params {row['params']:>9,}  GFLOPs {row['gflops']:.3f}  size "
                  f"{row['file_bytes'] / 1e6:6.2f} MB  mAP50-95 {row['map50_95']:.4f} "
                  f"({100 * (row['map50_95'] - base['map50_95']):+.2f} pts)  ORT {ort:.2f} ms "
                  f"({ort / base['latency']['onnxruntime']['median_ms']:.3f}x)")
        print(f"final at {loaded.plan.imgsz} px: ORT latency ratio "
              f"{final['latency']['onnxruntime']['median_ms'] / base['latency']['onnxruntime']['median_ms']:.3f}, "
              f"mAP50-95 drop {100 * (base['map50_95'] - final['map50_95']):.2f} points, size ratio "
              f"{final['file_bytes'] / base['file_bytes']:.3f}")
        for size in args.latency_imgsz:
            if size == loaded.plan.imgsz:
                continue
            ms = latency_at(size, loaded, out, args.threads, args.runs)
            ref = ms["fp32 baseline"]
            print(f"at {size} px (ORT medians, interleaved): " +
                  ", ".join(f"{k} {v:.2f} ms ({v / ref:.3f}x)" for k, v in ms.items()))


if __name__ == "__main__":
    main()
