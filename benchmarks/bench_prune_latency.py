"""A latency budget for pruning (issue 18, item 2): ``prune --target-latency R`` on the shipped baseline and
the demo data, no fine-tune; prints the CPU model and ISA flags, how long the per-layer latency table took
to measure (or that it came from the cache), every candidate's predicted latency ratio and score, and, for
the chosen candidate and the uniform strategy, the predicted and the measured ONNX Runtime latency ratio
(measured side by side with the original: ``profile.latency.interleaved_times``) with the prediction error.

Run from the repository root (slow at 640 px: the table times every convolution's widths on a grid once per
CPU model and image size; later runs read it from the cache folder):
``PYTHONPATH=. python3 benchmarks/bench_prune_latency.py --imgsz 640 --target-latency 0.5 --candidates 6``
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def run(args: argparse.Namespace) -> dict:
    import torch

    from yolocompress.compress.prune import PruneConfig, prune_model
    from yolocompress.data import load_data_config
    from yolocompress.demo import baseline_path, demo_data
    from yolocompress.io.checkpoint import load_model
    from yolocompress.profile.latency import cpu_flags, cpu_name
    from yolocompress.profile.latency_table import LayerShape, OrtLayerTimer, latency_table

    torch.set_num_threads(args.threads)
    model = load_model(baseline_path()).float().eval()
    data = load_data_config(args.data or demo_data())
    cfg = PruneConfig.from_flat(ratio=None, target_latency=args.target_latency, imgsz=args.imgsz,
                                candidates=args.candidates, guided=args.guided, eval_images=args.eval_images,
                                calib_batches=args.calib_batches, finetune_epochs=0, seed=args.seed,
                                latency_threads=args.threads, eval_baseline=False)
    print(f"CPU: {cpu_name()}; ISA flags: {' '.join(cpu_flags()) or '-'}; ONNX Runtime, {args.threads} "
          f"threads, batch 1, {args.imgsz} px", flush=True)
    t0 = time.perf_counter()
    table = latency_table(model, args.imgsz, threads=args.threads, round_to=cfg.channels.round_to)
    table_s = time.perf_counter() - t0
    print(f"latency table: {len(table.ms)} layer shapes, {table.measured} measured now in {table_s:.0f} s "
          f"({'cache' if table.measured == 0 else 'measured'}: {table.path})", flush=True)
    t0 = time.perf_counter()
    _, report = prune_model(model, data, cfg)
    prune_s = time.perf_counter() - t0
    d = report.details
    budget = d["budget"]
    for c in d["candidates"]:
        mark = "  <- chosen" if c["index"] == d["chosen"] else ""
        print(f"  #{c['index']} {c['kind']:8s} predicted latency ratio {c['latency_ratio']:.3f}, "
              f"GFLOPs {c['gflops']:.3f}, score {c['score']:.4f}{mark}")
    # an alternative to the plain ratio of the table's sums: take each timed layer's fixed cost per call
    # (a 1x1 conv of one channel on one pixel, the same timer) out of every layer before the ratio
    timer = OrtLayerTimer(threads=args.threads)
    per_call = sorted(timer(LayerShape(1, 1, (1, 1), (1, 1), (0, 0), 1, 1, 1)) for _ in range(3))[1]
    full_ms, n_layers = table.predict(model), len(table.sites)
    overhead = n_layers * per_call
    print(f"table: original {full_ms:.2f} ms summed over {n_layers} convolutions; fixed cost per timed call "
          f"{per_call * 1e3:.0f} us ({overhead:.2f} ms over all)")
    rows = {"chosen": budget, "uniform": budget["uniform"]}
    errors, corrected = {}, {}
    for name, b in rows.items():
        errors[name] = b["measured_ratio"] / b["predicted_ratio"] - 1.0
        alt = (b["predicted_ratio"] * full_ms - overhead) / (full_ms - overhead)
        corrected[name] = b["measured_ratio"] / alt - 1.0
        print(f"{name}: predicted ratio {b['predicted_ratio']:.3f}, measured {b['measured_ratio']:.3f} "
              f"(error {100 * errors[name]:+.1f}%), GFLOPs ratio {b['gflops_ratio']:.3f}; without the fixed "
              f"cost per call: predicted {alt:.3f} (error {100 * corrected[name]:+.1f}%)")
    print(f"original {budget['original_ms']:.1f} ms, chosen {budget['measured_ms']:.1f} ms (predicted "
          f"{budget['predicted_ms']:.1f} ms); prediction error <= 10%: "
          f"{'yes' if all(abs(e) <= 0.10 for e in errors.values()) else 'no'} (chosen and uniform); "
          f"measured <= target {args.target_latency} +5%: "
          f"{'yes' if budget['measured_ratio'] <= 1.05 * args.target_latency else 'no'}; "
          f"prune {prune_s:.0f} s")
    return {"cpu": cpu_name(), "flags": cpu_flags(), "threads": args.threads, "imgsz": args.imgsz,
            "table_s": table_s, "table_measured": table.measured, "prune_s": prune_s, "budget": budget,
            "errors": errors, "errors_without_call_cost": corrected, "per_call_ms": per_call,
            "candidates": d["candidates"], "chosen": d["chosen"], "timing_s": d["timing_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--target-latency", type=float, default=0.5)
    p.add_argument("--candidates", type=int, default=6)
    p.add_argument("--guided", type=int, default=0)
    p.add_argument("--eval-images", type=int, default=64,
                   help="held-out images per candidate (the score only picks among candidates; the latencies "
                        "do not depend on it)")
    p.add_argument("--calib-batches", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="data.yaml (default: the demo data)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args()
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
