"""``yolocompress export MODEL -o OUT.onnx``: write an ONNX file of a checkpoint, checked against PyTorch."""
from __future__ import annotations

import argparse
from pathlib import Path

from yolocompress.cli.common import console, image_size, load_cli_model, positive_int
from yolocompress.io.paths import file_size, preflight


def run(model: str, output: str, imgsz: int | None = None, batch: int = 1, dynamic: bool = False,
        opset: int = 17, simplify: bool = False, verify: bool = True) -> tuple[Path, float | None]:
    """Export ``model`` (a ``.pt`` path) to ``output`` at ``imgsz`` (default: the checkpoint's training size);
    returns the path and the parity error (None: skipped).

    Raises ``CompressionError`` when ONNX Runtime's output differs from PyTorch's by more than
    ``export.onnx.PARITY_TOLERANCE`` (the file is kept so it can be inspected).
    """
    from yolocompress.export.onnx import export_checked

    net, info = load_cli_model(model)
    return export_checked(net, output, imgsz=imgsz or info.imgsz, batch=batch, dynamic=dynamic, opset=opset,
                          simplify=simplify, verify=verify)


def _main(args: argparse.Namespace) -> int:
    preflight(inputs=[("model file", args.model)], outputs=[("output", args.output)],
              expected_bytes=file_size(args.model))
    path, error = run(args.model, args.output, imgsz=args.imgsz, batch=args.batch, dynamic=args.dynamic,
                      opset=args.opset, simplify=args.simplify, verify=not args.no_verify)
    from yolocompress.export.onnx import read_onnx_metadata

    height, width = read_onnx_metadata(path).imgsz
    shape = f"{'dynamic' if args.dynamic else args.batch}x3x{height}x{width}"
    parity = "" if error is None else f", max relative error vs PyTorch {error:.1e}"
    console.print(f"exported {path} (input images {shape}, opset {args.opset}{parity})", highlight=False)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a checkpoint to ONNX (decoded boxes, no NMS)",
                              description="Export a .pt checkpoint to ONNX: input 'images' [B,3,H,W] RGB "
                                          "0..1, output 'output0' [B,N,5+nc] (cx,cy,w,h px, objectness, "
                                          "class scores).")
    p.add_argument("model", help="checkpoint (.pt)")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.add_argument("--imgsz", type=image_size, default=None,
                   help="square input size in pixels (default: the checkpoint's training size, 640 for "
                        "Ultralytics checkpoints)")
    p.add_argument("--batch", type=positive_int, default=1,
                   help="fixed batch size (default 1; ignored with --dynamic)")
    p.add_argument("--dynamic", action="store_true", help="symbolic batch dimension (H and W stay fixed)")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--simplify", action="store_true", help="also run onnxslim (optional package)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch parity check")
    p.set_defaults(func=_main)
