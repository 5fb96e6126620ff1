"""``yolocompress fuse MODEL -o OUT.pt``: fold BatchNorm into convolutions and merge RepConv branches."""
from __future__ import annotations

import argparse
from pathlib import Path

from yolocompress.errors import InputError
from yolocompress.io.paths import file_size, preflight


def _main(args: argparse.Namespace) -> int:
    if Path(args.output).suffix.lower() != ".pt":
        raise InputError(f"output must be a .pt file, got {args.output}")
    preflight(inputs=[("model file", args.model)], outputs=[("output", args.output)],
              expected_bytes=file_size(args.model))
    from yolocompress.cli.common import load_cli_model
    from yolocompress.compress.fuse import fuse_stage
    from yolocompress.io.checkpoint import history_entry, save_model

    net, info = load_cli_model(args.model, args.cfg)
    fused, report = fuse_stage(net)
    d = report.details
    entry = history_entry("fuse", file=Path(args.model).name, params_before=report.before.params,
                          params_after=report.after.params, **d)
    save_model(fused, args.output, imgsz=info.imgsz, history=[*info.history, entry], metrics=info.metrics,
               half=args.half)
    stored = "float16" if args.half else "float32"
    size_in, size_out = (Path(p).stat().st_size / 1e6 for p in (args.model, args.output))
    sizes = f"{size_in:.1f} MB -> {size_out:.1f} MB"
    if info.dtype != stored:
        print(f"note: {args.model} stores {info.dtype} weights, {args.output} stores {stored} ({sizes}); "
              + ("--half keeps the file small" if stored == "float32" else "the weights were rounded"))
    if d["already_fused"]:
        print(f"{args.model} was already fused; written to {args.output} ({stored}, {sizes})")
        return 0
    print(f"fused {args.model} -> {args.output}: {d['batchnorms_folded']} BatchNorm folded, {d['repconvs_merged']} "
          f"RepConv merged, params {report.before.params:,} -> {report.after.params:,}, file {sizes} "
          f"({stored}), max relative output difference {d['max_relative_error']:.1e} "
          f"(at {d['check_imgsz']} px)")
    for warning in report.warnings:
        print(warning)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("fuse", help="fold BatchNorm into convolutions and merge RepConv branches (deploy form)",
                              description="Write the deploy form of a checkpoint: every BatchNorm folded into the "
                                          "convolution before it and every RepConv merged into one convolution. "
                                          "Outputs are unchanged up to float rounding (checked). Prune before "
                                          "fusing: pruning needs the BatchNorm layers.")
    p.add_argument("model", help="checkpoint (.pt: ours, Ultralytics, or a state_dict with --cfg)")
    p.add_argument("-o", "--output", required=True, help="fused checkpoint to write (.pt, our format)")
    p.add_argument("--cfg", default=None, help="model config for a bare state_dict")
    p.add_argument("--half", action="store_true", help="store the weights as fp16 (half the file size)")
    p.set_defaults(func=_main)
