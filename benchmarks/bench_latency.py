"""PyTorch eager vs ONNX Runtime CPU latency of YOLOv5 models, side by side.

    python benchmarks/bench_latency.py [--models yolov5n yolov5s] [--imgsz 320 640] [--threads 2]

Batch 1, a fixed thread count for both runtimes, warm-up runs discarded; prints median and p90 in ms and
the ratio ORT/torch of the medians (below 1: ONNX Runtime is faster). Models are freshly built (random
weights: latency does not depend on the values). PyTorch runs the model as built (BatchNorm not folded);
ONNX Runtime runs our export, where BatchNorm is folded into the convolutions.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from yolocompress.export.onnx import export_onnx
from yolocompress.models import build_model
from yolocompress.profile import gflops, measure_ort_latency, measure_torch_latency
from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolov5n", "yolov5s"])
    parser.add_argument("--imgsz", nargs="+", type=int, default=[320, 640])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)

    print(f"{cpu_line(cpu_name(), cpu_flags())}; threads {args.threads}, batch 1, "
          f"{args.warmup} warm-up + {args.runs} timed runs")
    header = (f"{'model':<10} {'imgsz':>5} {'GFLOPs':>7} | {'torch med':>9} {'p90':>7} | "
              f"{'ORT med':>8} {'p90':>7} | {'ORT/torch':>9}")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        for name in args.models:
            model = build_model(name).eval()
            for imgsz in args.imgsz:
                torch_result = measure_torch_latency(model, imgsz, threads=args.threads, warmup=args.warmup,
                                                     runs=args.runs)
                onnx_path = export_onnx(model, Path(tmp) / f"{name}-{imgsz}.onnx", imgsz=imgsz)
                ort_result = measure_ort_latency(onnx_path, threads=args.threads, warmup=args.warmup,
                                                 runs=args.runs)
                ratio = ort_result.median_ms / torch_result.median_ms
                print(f"{name:<10} {imgsz:>5} {gflops(model, imgsz):>7.2f} | "
                      f"{torch_result.median_ms:>9.1f} {torch_result.p90_ms:>7.1f} | "
                      f"{ort_result.median_ms:>8.1f} {ort_result.p90_ms:>7.1f} | {ratio:>9.2f}", flush=True)
    print("latencies in ms; ORT/torch = ratio of medians")
    return 0


if __name__ == "__main__":
    sys.exit(main())
