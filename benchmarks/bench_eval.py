"""Evaluation throughput (images/s) with a per-stage breakdown: pre, inference, NMS + metrics.

    python benchmarks/bench_eval.py [--repeat 3] [--threads 2] [--synthetic 256] [--onnx]

Runs the fixture checkpoint (YOLOv5n, 3 classes) on the fixture ``shapes-val`` (128 images) at 256 px with
val.py settings (batch 32, conf 0.001, NMS IoU 0.6, rect batches), and the shipped baseline (YOLOv5n, 6
classes) on a synthetic val split generated like the demo's (seed 0, ``--synthetic`` images; 128 is exactly
the demo val split). ``--onnx`` adds the exported model (fixed 1x3x256x256, run image by image on square
batches); ``--dnn`` adds the fused model with oneDNN conv+activation kernels (``accelerate_cpu``). Each configuration runs ``--repeat``
times and the fastest run is reported (the machine is shared; the minimum is the least disturbed).
Stage times are milliseconds per image; image loading (decode + letterbox) is outside the stages and is
part of the wall time only.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from yolocompress.engine.evaluator import EvalResult, evaluate_model
from yolocompress.io.checkpoint import load_model

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "ultralytics-yolov5"
CHECKPOINT = FIXTURES / "yolov5n-shapes-e12.pt"
DATA = FIXTURES / "shapes-val" / "data.yaml"


def _best_of(repeat: int, fn) -> tuple[float, EvalResult]:
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
        if best is None or wall < best[0]:
            best = (wall, result)
    return best


def _row(label: str, wall: float, r: EvalResult) -> str:
    s = r.speed_ms
    post = s["nms"] + s.get("metrics", 0.0)
    return (f"{label:<44} {r.images:>6} {r.images / wall:>8.1f} | {s['pre']:>6.2f} {s['inference']:>9.2f} "
            f"{post:>11.2f} | {r.map50:>6.4f} {r.map50_95:>8.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration; the fastest is shown")
    parser.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime intra-op threads")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--synthetic", type=int, default=256, metavar="N",
                        help="synthetic val images (0: skip the synthetic set)")
    parser.add_argument("--onnx", action="store_true", help="also evaluate the exported ONNX model")
    parser.add_argument("--dnn", action="store_true", help="also evaluate the fused model with oneDNN kernels")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    fixture_model = load_model(CHECKPOINT)
    header = (f"{'configuration':<44} {'images':>6} {'img/s':>8} | {'pre':>6} {'inference':>9} "
              f"{'nms+metrics':>11} | {'mAP50':>6} {'mAP50-95':>8}")
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, conf 0.001, IoU 0.6, "
          f"best of {args.repeat}; stage times in ms per image")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        sets = [("fixture shapes-val", fixture_model, DATA)]
        if args.synthetic > 0:
            from yolocompress.data.synthetic import synthesize_dataset
            from yolocompress.demo import baseline_path

            baseline = load_model(baseline_path()).float()
            data = synthesize_dataset(Path(tmp) / "synthetic", n_train=1, n_val=args.synthetic, imgsz=256, seed=0)
            sets.append((f"baseline, synthetic val ({args.synthetic})", baseline, data))
        for name, model, data in sets:
            wall, r = _best_of(args.repeat, lambda: evaluate_model(
                model, data, imgsz=256, batch=args.batch, label_cache=False))
            print(_row(f"{name}, torch rect", wall, r), flush=True)
            if args.dnn:
                from yolocompress.compress.fuse import fuse
                from yolocompress.compress.onednn import accelerate_cpu

                fast = accelerate_cpu(fuse(model), inplace=True)
                wall, r = _best_of(args.repeat, lambda: evaluate_model(
                    fast, data, imgsz=256, batch=args.batch, label_cache=False))
                print(_row(f"{name}, torch-dnn rect", wall, r), flush=True)
            if args.onnx:
                from yolocompress.export.onnx import export_onnx

                onnx_path = export_onnx(model, Path(tmp) / f"model-{len(name)}.onnx", imgsz=256, batch=1)
                wall, r = _best_of(args.repeat, lambda: evaluate_model(
                    onnx_path, data, imgsz=256, batch=args.batch, threads=args.threads, label_cache=False))
                print(_row(f"{name}, ONNX 1x256 square", wall, r), flush=True)
    print("img/s = images / wall time of the whole evaluation (loading included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
