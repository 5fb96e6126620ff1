"""``yolocompress info MODEL``: layers, parameters, GFLOPs, classes, strides, image size."""
from __future__ import annotations

import argparse

from rich.table import Table

from yolocompress.cli.common import console, image_size, load_cli_model, write_json
from yolocompress.io.paths import names_a_file, preflight


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a model: layers, params, GFLOPs, classes, strides")
    p.add_argument("model", help="checkpoint (.pt: ours, Ultralytics, or a state_dict with --cfg) or a config name")
    p.add_argument("--imgsz", type=image_size, default=None, help="image size for GFLOPs (default: the model's)")
    p.add_argument("--cfg", default=None, help="model config for a bare state_dict")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--layers", action="store_true", help="print the per-layer table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    preflight(inputs=[("model file", args.model if names_a_file(args.model) else None)],
              outputs=[("--json", args.json)])
    from pathlib import Path

    from yolocompress.models import build_model, list_configs
    from yolocompress.report.model_info import model_summary

    if not Path(args.model).exists() and Path(args.model).stem in list_configs():
        model, source, native = build_model(args.model), "config", 640
    else:
        model, info = load_cli_model(args.model, args.cfg)
        source, native = info.source, info.imgsz
    summary = model_summary(model, imgsz=args.imgsz or native, source=source)
    if args.layers:
        table = Table(title="layers")
        for column in ("#", "from", "n", "module", "params", "GFLOPs"):
            table.add_column(column, justify="right" if column in ("#", "n", "params", "GFLOPs") else "left")
        for row in summary["layers"]:
            table.add_row(str(row["index"]), str(row["from"]), str(row["n"]), row["module"],
                          f"{row['params']:,}", f"{row['gflops']:.3f}")
        console.print(table)
    table = Table(title=f"{args.model}", show_header=False)
    table.add_column("key")
    table.add_column("value")
    rows = [
        ("source", summary["source"]),
        ("layers", str(len(summary["layers"]))),
        ("params", f"{summary['params']:,} ({summary['params_nonzero']:,} non-zero)"),
        ("GFLOPs", f"{summary['gflops']:.2f} at {summary['imgsz']}"),
        ("fused", "yes" if summary["fused"] else
         f"no (fused: {summary['params_fused']:,} params, {summary['gflops_fused']:.2f} GFLOPs)"),
        ("classes", f"{summary['nc']}: {', '.join(summary['names'][:10])}{' ...' if summary['nc'] > 10 else ''}"),
        ("strides", ", ".join(str(int(s)) for s in summary["strides"])),
        ("anchors / level", str(summary["anchors_per_level"])),
        ("image size", str(summary["imgsz"])),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    write_json(summary, args.json)
    return 0
