"""What re-parameterization buys at inference: latency of the unfused and fused forms, side by side.

Pairs (each: training form -> deploy form from ``fuse``):
  * yolov5s      unfused (Conv -> BN -> SiLU) vs BN folded into the convolutions;
  * yolov5s-rep  training form (RepConv 3x3 + 1x1 + identity branches, all with BN) vs deploy form (one
                 3x3 conv each; the same layer shapes as fused yolov5s).
Each deploy form is timed twice in eager PyTorch: as ``fuse`` leaves it (``fused``: conv with bias,
then the activation as its own op) and with ``accelerate_cpu`` (``fused+dnn``: each conv+bias+activation one
oneDNN kernel with weights packed once; only possible once BN is folded, since BN sits between conv and
activation in the training form). Both are reported so the share of each step is visible.
Each model is timed with PyTorch eager (``measure_torch_latency``) and, with ``--onnx``, with ONNX Runtime
(``export_onnx`` + ``measure_ort_latency``; the exporter's constant folding already folds BN, so there the
yolov5s pair should match and only the merged RepConv branches can differ). Models are measured in turns,
``--rounds`` times, and each figure is the median of the per-round medians, so a burst of load from other
jobs moves all models alike instead of one.

    PYTHONPATH=. python3 benchmarks/bench_fuse.py --onnx
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from yolocompress.compress.fuse import fuse, relative_error
from yolocompress.compress.onednn import accelerate_cpu
from yolocompress.models import build_model
from yolocompress.profile import count_params, gflops, measure_ort_latency, measure_torch_latency
from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name

TARGETS = {"yolov5s": 0.9, "yolov5s-rep": 0.6}


def _medians(measure, items: dict[str, object], rounds: int, verbose: bool = False) -> dict[str, tuple[float, float]]:
    """(median of per-round medians, largest per-round p90) per item, measuring the items in turns."""
    medians: dict[str, list[float]] = {k: [] for k in items}
    p90: dict[str, float] = {k: 0.0 for k in items}
    keys = list(items)
    for k in range(rounds):
        for key in keys[k % len(keys):] + keys[:k % len(keys)]:  # rotate the order: no model always goes first
            r = measure(items[key])
            medians[key].append(r.median_ms)
            p90[key] = max(p90[key], r.p90_ms)
    if verbose:
        for key, values in medians.items():
            print(f"  {key:20s} per-round medians: {', '.join(f'{v:.1f}' for v in values)}")
    return {k: (statistics.median(v), p90[k]) for k, v in medians.items()}


@dataclass(frozen=True)
class _CpuTime:
    median_ms: float
    p90_ms: float


def _cpu_time(call, warmup: int, runs: int) -> _CpuTime:
    """Process CPU milliseconds per call: with one thread this is the call's compute cost, which a busy shared
    machine barely changes (wall-clock time there measures the other jobs as much as ours)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        t0 = time.process_time()
        call()
        times.append((time.process_time() - t0) * 1e3)
    return _CpuTime(float(np.median(times)), float(np.percentile(times, 90)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20, help="timed runs per model per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--onnx", action="store_true", help="also export and time with ONNX Runtime")
    ap.add_argument("--verbose", action="store_true", help="print every round's median")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time process CPU instead of wall clock (needs --threads 1): for a machine shared with "
                         "other jobs, where wall-clock figures are not trustworthy")
    args = ap.parse_args()
    if args.cpu_time and args.threads != 1:
        ap.error("--cpu-time measures one thread's work: use it with --threads 1")

    torch.manual_seed(0)
    models: dict[str, torch.nn.Module] = {}
    errors: dict[str, float] = {}
    x = torch.rand(1, 3, args.imgsz, args.imgsz)
    for name in TARGETS:
        train_form = build_model(name).eval()
        models[f"{name}|train"] = train_form
        models[f"{name}|fused"] = fuse(train_form)
        models[f"{name}|fused+dnn"] = accelerate_cpu(models[f"{name}|fused"])
        with torch.inference_mode():
            errors[name] = relative_error(train_form, models[f"{name}|fused+dnn"], x)

    def torch_latency(model):
        if args.cpu_time:
            torch.set_num_threads(1)
            with torch.inference_mode():
                return _cpu_time(lambda: model(x), args.warmup, args.runs)
        return measure_torch_latency(model, args.imgsz, threads=args.threads, warmup=args.warmup, runs=args.runs)

    eager = _medians(torch_latency, models, args.rounds, args.verbose)
    ort = {}
    if args.onnx:
        from yolocompress.export.onnx import export_onnx
        from yolocompress.export.ort import create_session

        with tempfile.TemporaryDirectory() as tmp:
            files = {k: export_onnx(m, Path(tmp) / f"{k.replace('|', '-')}.onnx", imgsz=args.imgsz)
                     for k, m in models.items() if not k.endswith("+dnn")}  # the same graph as ``fused``

            def ort_latency(path):
                if args.cpu_time:
                    session = create_session(path, threads=1)
                    feed = {session.get_inputs()[0].name: x.numpy()}
                    return _cpu_time(lambda: session.run(None, feed), args.warmup, args.runs)
                return measure_ort_latency(path, threads=args.threads, warmup=args.warmup, runs=args.runs)

            ort = _medians(ort_latency, files, args.rounds, args.verbose)

    clock = "process CPU time" if args.cpu_time else "wall clock"
    print(f"{cpu_line(cpu_name(), cpu_flags())}; threads {args.threads}, batch 1, imgsz {args.imgsz}, {clock}; "
          f"{args.rounds} rounds x ({args.warmup} warm-up + {args.runs} timed runs), models in turns")
    header = f"{'model':12s} {'form':9s} {'params':>10s} {'GFLOPs':>7s} | {'torch med':>9s} {'p90':>7s}"
    header += f" | {'ORT med':>8s} {'p90':>7s}" if ort else ""
    print(header)
    print("-" * len(header))
    for key, model in models.items():
        name, form = key.split("|")
        flops = gflops(model, args.imgsz) if not form.endswith("+dnn") else gflops(models[f"{name}|fused"], args.imgsz)
        line = (f"{name:12s} {form:9s} {count_params(model).total:>10,} {flops:7.2f} | "
                f"{eager[key][0]:9.1f} {eager[key][1]:7.1f}")
        line += f" | {ort[key][0]:8.1f} {ort[key][1]:7.1f}" if ort and key in ort else ""
        print(line)
    print()
    print(f"{'ratio deploy/train':30s} {'fused':>7s} {'+dnn':>7s} {'target':>7s}" + (f" {'ORT':>7s}" if ort else "")
          + "  max rel. output diff (+dnn vs train)")
    for name, target in TARGETS.items():
        t = eager[f"{name}|fused"][0] / eager[f"{name}|train"][0]
        d = eager[f"{name}|fused+dnn"][0] / eager[f"{name}|train"][0]
        line = f"{name:30s} {t:7.3f} {d:7.3f} {'<= ' + str(target):>7s}"
        line += f" {ort[f'{name}|fused'][0] / ort[f'{name}|train'][0]:7.3f}" if ort else ""
        print(f"{line}  {errors[name]:.1e}")
    t = eager["yolov5s-rep|fused"][0] / eager["yolov5s|train"][0]
    d = eager["yolov5s-rep|fused+dnn"][0] / eager["yolov5s|train"][0]
    line = f"{'yolov5s-rep deploy / yolov5s':30s} {t:7.3f} {d:7.3f} {'':>7s}"
    line += f" {ort['yolov5s-rep|fused'][0] / ort['yolov5s|train'][0]:7.3f}" if ort else ""
    print(line)
    print("latencies in ms (median of per-round medians; p90 = worst round's p90)")


if __name__ == "__main__":
    main()
