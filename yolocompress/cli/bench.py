"""``yolocompress bench MODEL``: CPU latency of a checkpoint (PyTorch eager) or an ONNX file (ORT)."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.table import Table

from yolocompress.cli.common import console, image_size, load_cli_model, positive_int, write_json
from yolocompress.errors import InputError
from yolocompress.profile.latency import LatencyResult

BACKENDS = ("torch", "torch-dnn", "onnxruntime")


def run(model: str, imgsz: int | None = None, backend: str = "torch", threads: int = 2, runs: int = 50,
        warmup: int = 10, batch: int = 1) -> LatencyResult:
    """Measure the latency of ``model``.

    ``model`` is a ``.pt`` checkpoint, or for the ``onnxruntime`` backend also an ``.onnx`` file (which is
    measured at its own input size; ``imgsz`` must then match it or be None). A checkpoint measured with
    ``onnxruntime`` is exported to a temporary ONNX file first. ``imgsz`` defaults to 640 for checkpoints.
    ``torch-dnn`` measures the eager deploy form: the model fused (if it is not already) and its
    conv+activation pairs run as single oneDNN kernels (``compress.onednn.accelerate_cpu``).
    """
    from yolocompress.export.onnx import export_onnx
    from yolocompress.profile.latency import measure_ort_latency, measure_torch_latency

    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        if backend != "onnxruntime":
            raise InputError(f"{path.name} is an ONNX model; measure it with --backend onnxruntime")
        result = measure_ort_latency(path, threads=threads, warmup=warmup, runs=runs, batch=batch)
        if imgsz is not None and result.imgsz != (imgsz, imgsz):
            raise InputError(f"{path.name} has a fixed input size {result.imgsz[0]}x{result.imgsz[1]}, "
                             f"not {imgsz}x{imgsz}")
        return result
    net = load_cli_model(model)[0]
    imgsz = 640 if imgsz is None else imgsz
    if backend == "torch":
        return measure_torch_latency(net, imgsz, threads=threads, warmup=warmup, runs=runs, batch=batch)
    if backend == "torch-dnn":
        from dataclasses import replace

        from yolocompress.compress.fuse import fuse, is_fused
        from yolocompress.compress.onednn import accelerate_cpu

        fast = accelerate_cpu(net if is_fused(net) else fuse(net), inplace=True)
        result = measure_torch_latency(fast, imgsz, threads=threads, warmup=warmup, runs=runs, batch=batch)
        return replace(result, backend="torch-dnn")
    with tempfile.TemporaryDirectory(prefix="yolocompress-bench-") as tmp:
        onnx_path = export_onnx(net, Path(tmp) / f"{path.stem}.onnx", imgsz=imgsz, batch=batch)
        return measure_ort_latency(onnx_path, threads=threads, warmup=warmup, runs=runs, batch=batch)


def _table(model: str, result: LatencyResult) -> Table:
    table = Table(title=f"latency of {model}", caption=f"CPU: {result.cpu}")
    for column in ("backend", "input", "threads", "runs", "median ms", "p90 ms", "mean ms"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    h, w = result.imgsz
    table.add_row(result.backend, f"{result.batch}x3x{h}x{w}", str(result.threads), str(result.runs),
                  f"{result.median_ms:.2f}", f"{result.p90_ms:.2f}", f"{result.mean_ms:.2f}")
    return table


def _main(args: argparse.Namespace) -> int:
    result = run(args.model, imgsz=args.imgsz, backend=args.backend, threads=args.threads, runs=args.runs,
                 warmup=args.warmup, batch=args.batch)
    console.print(_table(args.model, result))
    write_json({"model": str(args.model), **result.to_dict()}, args.json)
    return 0


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure CPU inference latency",
                              description="Median and p90 latency of one forward pass at a fixed "
                                          "thread count.")
    p.add_argument("model", help="checkpoint (.pt), or an .onnx file with --backend onnxruntime")
    p.add_argument("--imgsz", type=image_size, default=None,
                   help="square input size in pixels (default 640; an .onnx file's own size)")
    p.add_argument("--backend", choices=BACKENDS, default="torch", help="runtime to measure (default torch; torch-dnn: the fused model with "
                        "oneDNN conv+activation kernels)")
    p.add_argument("--threads", type=positive_int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--runs", type=positive_int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=_non_negative_int, default=10, help="untimed warm-up runs (default 10)")
    p.add_argument("--batch", type=positive_int, default=1, help="images per call (default 1)")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p.set_defaults(func=_main)
