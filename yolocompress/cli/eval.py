"""``yolocompress eval MODEL --data DATA``: mAP of a checkpoint or an ONNX file, as Ultralytics ``val.py``."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from yolocompress.cli.common import (ProgressPrinter, add_workers, console, image_size,
                                     positive_int, write_json)
from yolocompress.errors import InputError
from yolocompress.export.openvino import ONNX_BACKENDS
from yolocompress.io.paths import preflight
from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name

if TYPE_CHECKING:  # torch is imported only when the command runs
    from yolocompress.engine.evaluator import EvalResult


def _fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a value in [0, 1], got {value}")
    return value


def run(model: str, data: str, imgsz: int | None = None, batch: int = 32, conf: float = 0.001,
        iou: float = 0.6, split: str = "val", max_det: int = 300, threads: int | None = None,
        device: str = "cpu", workers: int = 0, on_progress: Any = None, backend: str = "onnxruntime"
        ) -> EvalResult:
    """Evaluate ``model`` (``.pt`` or ``.onnx``) on ``split`` of ``data`` (a ``data.yaml``); an ``.onnx`` file
    runs on ``backend`` (``onnxruntime``, ``openvino`` or ``openvino-bf16``)."""
    import torch

    from yolocompress.engine.evaluator import evaluate_model

    if threads is not None and not model.lower().endswith(".onnx"):
        torch.set_num_threads(threads)
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"bad --device {device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but no CUDA device is available")
    return evaluate_model(model, data, split=split, imgsz=imgsz, batch=batch, conf_thres=conf, iou_thres=iou,
                          max_det=max_det, device=device, threads=threads, workers=workers, on_progress=on_progress,
                          backend=backend)


def _main(args: argparse.Namespace) -> int:
    preflight(inputs=[("model file", args.model), ("data.yaml", args.data)], outputs=[("--json", args.json)])
    from yolocompress.report.tables import eval_table

    result = run(args.model, args.data, imgsz=args.imgsz, batch=args.batch, conf=args.conf, iou=args.iou,
                 split=args.split, max_det=args.max_det, threads=args.threads, device=args.device,
                 workers=args.workers, on_progress=ProgressPrinter(), backend=args.backend)
    console.print(eval_table(args.model, result))
    if args.device == "cpu":  # the per-image times of the table's caption hold for this CPU
        console.print(f"times per image on {cpu_line(cpu_name(), cpu_flags())}", markup=False, highlight=False)
    report: dict[str, Any] = {"model": str(args.model), "data": str(args.data), "split": args.split,
                              **result.to_dict()}
    if args.model.lower().endswith(".onnx"):
        report["backend"] = args.backend
    write_json(report, args.json)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="measure mAP on a labelled data set",
                              description="mAP@0.5, mAP@0.5:0.95, precision and recall with the conventions "
                                          "of Ultralytics val.py (rect batches, conf 0.001, NMS IoU 0.6).")
    p.add_argument("model", help="checkpoint (.pt, ours or Ultralytics') or an exported .onnx file")
    p.add_argument("--data", required=True, help="data.yaml of the data set")
    p.add_argument("--imgsz", type=image_size, default=None,
                   help="long side in pixels (default: the checkpoint's training size, else 640; "
                        "a fixed-size .onnx file uses its own size)")
    p.add_argument("--batch", type=positive_int, default=32, help="images per batch (default 32)")
    p.add_argument("--conf", type=_fraction, default=0.001, help="confidence threshold (default 0.001)")
    p.add_argument("--iou", type=_fraction, default=0.6, help="NMS IoU threshold (default 0.6)")
    p.add_argument("--max-det", type=positive_int, default=300,
                   help="detections kept per image (default 300)")
    p.add_argument("--split", choices=("val", "test", "train"), default="val", help="split to evaluate")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads (PyTorch, or ONNX Runtime intra-op; default: the runtime's own)")
    p.add_argument("--backend", choices=ONNX_BACKENDS, default="onnxruntime",
                   help="runtime of an .onnx MODEL: onnxruntime (default), openvino (fp32 inference precision) "
                        "or openvino-bf16 (needs the openvino extra)")
    p.add_argument("--device", default="cpu", help="PyTorch device, e.g. cpu or cuda:0 (default cpu)")
    add_workers(p, "image loading")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    p.set_defaults(func=_main)
