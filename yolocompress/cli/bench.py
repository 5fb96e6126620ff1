"""``yolocompress bench MODEL``: CPU latency of a checkpoint (PyTorch eager) or an ONNX file (ONNX Runtime)."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from yolocompress.errors import InputError
from yolocompress.profile.latency import LatencyResult

BACKENDS = ("torch", "onnxruntime")


def run(model: str, imgsz: int | None = None, backend: str = "torch", threads: int = 2, runs: int = 50,
        warmup: int = 10, batch: int = 1) -> LatencyResult:
    """Measure the latency of ``model``.

    ``model`` is a ``.pt`` checkpoint, or for the ``onnxruntime`` backend also an ``.onnx`` file (which is
    measured at its own input size; ``imgsz`` must then match it or be None). A checkpoint measured with
    ``onnxruntime`` is exported to a temporary ONNX file first. ``imgsz`` defaults to 640 for checkpoints.
    """
    from yolocompress.cli.export import load_torch_model
    from yolocompress.export.onnx import export_onnx
    from yolocompress.profile.latency import measure_ort_latency, measure_torch_latency

    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if imgsz is not None and (imgsz < 32 or imgsz % 32):
        raise InputError(f"--imgsz must be a positive multiple of 32, got {imgsz}")
    path = Path(model)
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    if path.suffix.lower() == ".onnx":
        if backend != "onnxruntime":
            raise InputError(f"{path} is an ONNX file; measure it with --backend onnxruntime")
        result = measure_ort_latency(path, threads=threads, warmup=warmup, runs=runs, batch=batch)
        if imgsz is not None and result.imgsz != (imgsz, imgsz):
            raise InputError(f"{path} has a fixed input size {list(result.imgsz)}, not {imgsz}")
        return result
    net = load_torch_model(path)
    imgsz = 640 if imgsz is None else imgsz
    if backend == "torch":
        return measure_torch_latency(net, imgsz, threads=threads, warmup=warmup, runs=runs, batch=batch)
    with tempfile.TemporaryDirectory(prefix="yolocompress-bench-") as tmp:
        onnx_path = export_onnx(net, Path(tmp) / f"{path.stem}.onnx", imgsz=imgsz, batch=batch)
        return measure_ort_latency(onnx_path, threads=threads, warmup=warmup, runs=runs, batch=batch)


def _print_table(model: str, result: LatencyResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"latency of {model}", caption=f"CPU: {result.cpu}")
    for column in ("backend", "input", "threads", "runs", "median ms", "p90 ms", "mean ms"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    h, w = result.imgsz
    table.add_row(result.backend, f"{result.batch}x3x{h}x{w}", str(result.threads), str(result.runs),
                  f"{result.median_ms:.2f}", f"{result.p90_ms:.2f}", f"{result.mean_ms:.2f}")
    Console().print(table)


def _main(args: argparse.Namespace) -> int:
    from yolocompress.io.atomic import atomic_write_json

    for name in ("threads", "runs", "batch"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be >= 1")
    if args.warmup < 0:
        raise InputError("--warmup must be >= 0")
    result = run(args.model, imgsz=args.imgsz, backend=args.backend, threads=args.threads, runs=args.runs,
                 warmup=args.warmup, batch=args.batch)
    _print_table(args.model, result)
    if args.json:
        atomic_write_json({"model": str(args.model), **result.to_dict()}, args.json)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure CPU inference latency",
                              description="Median and p90 latency of one forward pass at a fixed thread count.")
    p.add_argument("model", help="checkpoint (.pt), or an .onnx file with --backend onnxruntime")
    p.add_argument("--imgsz", type=int, default=None,
                   help="square input size in pixels (default 640; an .onnx file's own size)")
    p.add_argument("--backend", choices=BACKENDS, default="torch", help="runtime to measure (default torch)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed warm-up runs (default 10)")
    p.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p.set_defaults(func=_main)
