"""``yolocompress bench MODEL``: CPU latency of a checkpoint (PyTorch eager) or an ONNX file (ORT)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.table import Table

from yolocompress.cli.common import (ProgressPrinter, console, err_console, image_size,
                                     non_negative_int, positive_int, write_json)
from yolocompress.export.openvino import ONNX_BACKENDS
from yolocompress.io.paths import preflight
from yolocompress.profile.cpu import cpu_line

if TYPE_CHECKING:  # torch is imported only when the command runs
    from yolocompress.compress.benchmark import BenchResult

# the library's (compress.benchmark.BACKENDS); restated because argparse needs them before the library is
# imported, and a test holds the two equal
BACKENDS = ("torch", "torch-dnn", *ONNX_BACKENDS)


def _table(model: str, bench: BenchResult) -> Table:
    result = bench.latency
    table = Table(title=f"latency of {model}", caption=f"CPU: {result.cpu}")
    for column in ("backend", "input", "threads", "runs", "median ms", "p90 ms", "mean ms", "p90/median"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    h, w = result.imgsz
    table.add_row(result.backend, f"{result.batch}x3x{h}x{w}", str(result.threads), str(result.runs),
                  f"{result.median_ms:.2f}", f"{result.p90_ms:.2f}", f"{result.mean_ms:.2f}",
                  f"{bench.spread:.2f}")
    return table


def _main(args: argparse.Namespace) -> int:
    preflight(inputs=[("model file", args.model)], outputs=[("--json", args.json)])
    from yolocompress.compress.benchmark import benchmark, default_backend

    backend = args.backend or default_backend(args.model)
    err_console.print(f"timing {args.model} on {backend}: {args.warmup} warm-up + {args.runs} timed runs, "
                      f"{args.threads} threads ...", highlight=False, soft_wrap=True)
    bench = benchmark(args.model, backend=backend, imgsz=args.imgsz, threads=args.threads, runs=args.runs,
                      warmup=args.warmup, batch=args.batch, on_progress=ProgressPrinter())
    console.print(_table(args.model, bench))
    load = "n/a" if bench.load_average is None else f"{bench.load_average:.2f}"
    console.print(f"{cpu_line(bench.latency.cpu, bench.latency.cpu_flags)}; {bench.cpus} logical CPUs, "
                  f"{bench.latency.threads} threads; "
                  f"load average before timing {load}; timings {bench.stability} "
                  f"(p90/median {bench.spread:.2f})", highlight=False, soft_wrap=True)
    for warning in bench.warnings:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    write_json({"model": str(args.model), **bench.to_dict()}, args.json)
    return 0



def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure CPU inference latency",
                              description="Median and p90 latency of one forward pass at a fixed thread "
                                          "count, with a verdict on the timings' stability and the machine's "
                                          "load.")
    p.add_argument("model", help="checkpoint (.pt) or .onnx file")
    p.add_argument("--imgsz", type=image_size, default=None,
                   help="square input size in pixels (default: the size the checkpoint records, 640 for "
                        "Ultralytics checkpoints; an .onnx file's own size)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="runtime to measure (default: onnxruntime for an .onnx file, torch for a checkpoint; "
                        "torch-dnn: the fused model with oneDNN conv+activation kernels; openvino, "
                        "openvino-bf16: OpenVINO at fp32 / bf16 precision, with the openvino extra)")
    p.add_argument("--threads", type=positive_int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--runs", type=positive_int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=non_negative_int, default=10, help="untimed warm-up runs (default 10)")
    p.add_argument("--batch", type=positive_int, default=1, help="images per call (default 1)")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p.set_defaults(func=_main)
