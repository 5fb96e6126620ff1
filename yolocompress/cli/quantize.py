"""``yolocompress quantize MODEL --method ptq --data DATA -o OUT.onnx``: int8 model for ONNX Runtime."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from yolocompress.cli.common import console, err_console, image_size, positive_int, write_json
from yolocompress.cli.distill import add_method_flags, distill_option
from yolocompress.errors import InputError
from yolocompress.export.openvino import ONNX_BACKENDS

if TYPE_CHECKING:  # onnxruntime and torch are imported only when the command runs
    from yolocompress.compress.distill.config import DistillConfig
    from yolocompress.compress.quant.sensitivity import SensitivityReport
    from yolocompress.compress.stage import StageReport

METHODS = ("ptq", "qat")
CALIBRATIONS = ("minmax", "percentile", "entropy", "mse")


def run(model: str, data: str, output: str, method: str = "ptq", imgsz: int | None = None,
        calib_images: int = 256, calibration: str = "mse", per_channel: bool = True,
        exclude: Sequence[str] = (), silu: str = "int8", stem: str = "float", head: str = "int8",
        activations: str = "u8", sensitivity: bool = False, auto_exclude: int = 0,
        sensitivity_images: int = 128, epochs: int = 3, lr: float = 1e-4, batch: int = 16,
        workers: int = 0, distill: float | DistillConfig = 1.0, labels: bool = False,
        tune_backend: str = "onnxruntime", float_prefix: int | str = 0
        ) -> tuple[StageReport, SensitivityReport | None]:
    """Quantize ``model`` (``.pt`` or fp32 ``.onnx``) to int8 and write it to ``output`` (``.onnx``).

    With ``sensitivity`` (or ``auto_exclude`` k > 0) the planned int8 convolutions are first ranked by the
    mAP50-95 each one costs (on ``sensitivity_images`` training images); ``auto_exclude`` keeps the worst k
    float. ``method="qat"`` fine-tunes with fake quantization first (``epochs``, ``lr``, ``batch``; the loss
    is distillation from the float model, ``distill``: the output-KD weight or a ``DistillConfig``, plus,
    with ``labels``, the detection loss; needs a ``.pt`` model). ``imgsz`` defaults to a checkpoint's training
    size. Returns the ``quantize`` :class:`~yolocompress.compress.stage.StageReport` and the sensitivity
    report (or None).
    """
    from yolocompress.compress.quant import sensitivity as sens
    from yolocompress.compress.quant.ptq import QuantConfig, quantize_ptq

    if auto_exclude < 0:
        raise InputError(f"--auto-exclude needs K >= 0, got {auto_exclude}")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "qat" and Path(model).suffix.lower() == ".onnx":
        raise InputError("--method qat fine-tunes the PyTorch model: give a .pt checkpoint, not an .onnx file")
    if Path(output).suffix.lower() != ".onnx":
        raise InputError(f"output must be an .onnx file, got {output}")
    if not Path(model).is_file():
        raise InputError(f"model file not found: {model}")
    if imgsz is not None and Path(model).suffix.lower() == ".onnx":
        from yolocompress.engine.predictors import onnx_input_shape

        shape = onnx_input_shape(model)
        if (shape.height, shape.width) != (imgsz, imgsz):
            raise InputError(f"{Path(model).name} has a fixed input size {shape.height}x{shape.width}, "
                             f"not {imgsz}x{imgsz}; export it again at --imgsz {imgsz}")
    config = QuantConfig(calibration=calibration, calib_images=calib_images, per_channel=per_channel,
                         activation_type=activations, silu=silu, stem=stem, head=head, exclude=tuple(exclude),
                         imgsz=imgsz,  # None: a .pt checkpoint is exported at its training size
                         tune_backend=tune_backend, float_prefix=float_prefix)
    ranking = None
    if auto_exclude:
        config, ranking = sens.auto_exclude(model, data, auto_exclude, config, images=sensitivity_images)
    elif sensitivity:
        ranking = sens.sensitivity(model, data, config, images=sensitivity_images)
    if method == "qat":
        import dataclasses

        from yolocompress.compress.quant.qat import QatConfig, quantize_qat
        from yolocompress.io.checkpoint import load_model_with_info

        net, info = load_model_with_info(model)
        if config.imgsz is None:  # QAT gets the module, which does not know the size it was trained at
            config = dataclasses.replace(config, imgsz=info.imgsz)
        qat = QatConfig(epochs=epochs, lr=lr, batch=batch, workers=workers, distill=distill, labels=labels)
        return quantize_qat(net, data, config, qat, output=output)[1], ranking
    return quantize_ptq(model, data, config, output=output)[1], ranking


def _prefix(text: str) -> int | str:
    """argparse type of --float-prefix: a layer count >= 0 or 'auto'."""
    if text == "auto":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a layer count >= 0 or 'auto', got {text!r}")
    return int(text)


def _db(value: float | None) -> float:
    """An SQNR figure of a report (``None``: a noiseless output, stored as JSON null) as printable dB."""
    return float("inf") if value is None else float(value)


def _print(report: StageReport) -> None:
    """The summary lines of a ``quantize`` stage report (warnings to stderr)."""
    d = report.details
    k, p = d["kernels"], d["plan"]
    console.print(f"wrote {d['output']}: int8 {d['int8_bytes'] / 1e6:.2f} MB = {d['size_ratio']:.2f}x the "
                  f"fp32 {d['fp32_bytes'] / 1e6:.2f} MB")
    console.print(f"plan: {p['int8_convs']} int8 convs ({100 * p['int8_mac_share']:.1f}% of conv MACs), float: "
                  + ", ".join(f"{scope} ({why})" for scope, why in p["float_convs"].items()))
    console.print(f"ONNX Runtime: {k['planned_integer']}/{k['planned']} planned convs run as integer kernels "
                  f"({100 * k['planned_mac_share']:.1f}% of their MACs)")
    sqnr, score_sqnr = _db(d["sqnr_db"]), _db(d["score_sqnr_db"])
    console.print(f"output SQNR vs fp32 on {min(report.config['check_images'], d['calib_images'])} "
                  f"calibration images: {sqnr:.1f} dB (scores {score_sqnr:.1f} dB); "
                  f"{d['calib_images']} images, {report.config['calibration']} calibration, "
                  f"{report.seconds:.1f} s")
    tuning = d.get("autotune")
    if tuning:
        console.print(f"plan chosen on {tuning['cpu']} with {tuning['backend']}, {tuning['threads']} threads: "
                      f"{tuning['reason']}")
    qat = d.get("qat")
    if qat:
        console.print(f"QAT: {qat['epochs']} epochs at lr {qat['lr']}; ONNX Runtime int8 vs torch "
                      f"fake-quant output: {_db(qat['parity_sqnr_db']):.1f} dB")
    for warning in report.warnings:
        err_console.print(f"warning: {warning}")


def _print_ranking(ranking: SensitivityReport, top: int = 10) -> None:
    console.print(f"sensitivity on {ranking.images} {ranking.split} images: mAP50-95 fp32 "
                  f"{ranking.fp32_map50_95:.4f}, all planned int8 {ranking.int8_map50_95:.4f}; gain when only "
                  "that conv is float:")
    for layer in ranking.layers[:top]:
        console.print(f"  {layer.scope:<28} {100 * layer.gain:+.2f} points  ({layer.macs / 1e6:.1f} M MACs)")


def _main(args: argparse.Namespace) -> int:
    exclude = [s for group in (args.exclude or []) for s in group]
    report, ranking = run(args.model, args.data, args.output, method=args.method, imgsz=args.imgsz,
                          calib_images=args.calib_images, calibration=args.calibration,
                          per_channel=args.per_channel, exclude=exclude, silu=args.silu, stem=args.stem,
                          head=args.head, activations=args.activations, sensitivity=args.sensitivity,
                          auto_exclude=args.auto_exclude, sensitivity_images=args.sensitivity_images,
                          epochs=args.epochs, lr=args.lr, batch=args.batch, workers=args.workers,
                          distill=distill_option(args.distill, args), labels=args.labels,
                          tune_backend=args.tune_backend, float_prefix=args.float_prefix)
    if ranking is not None:
        _print_ranking(ranking)
    _print(report)
    out = {"model": str(args.model), "data": str(args.data), **report.to_dict()}
    if ranking is not None:
        out["sensitivity"] = ranking.to_dict()
    write_json(out, args.json)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("quantize", help="int8 quantization for ONNX Runtime (calibrated PTQ or QAT)",
                              description="Quantize a detector to int8 (QDQ ONNX) with calibration images from "
                                          "the training split. Detect output convs and box decoding stay float; "
                                          "the integer kernels ONNX Runtime builds are verified.")
    p.add_argument("model", help="checkpoint (.pt) or exported fp32 .onnx (fixed square size, batch 1)")
    p.add_argument("--method", choices=METHODS, default="ptq", help="quantization method (default ptq)")
    p.add_argument("--data", required=True, help="data.yaml; calibration images come from its train split")
    p.add_argument("-o", "--output", required=True, help="int8 model to write (.onnx)")
    p.add_argument("--imgsz", type=image_size, default=None,
                   help="export size for a .pt model (default: its training size, 640 for Ultralytics "
                        "checkpoints; an .onnx file keeps its own)")
    p.add_argument("--calib-images", type=positive_int, default=256, help="calibration images (default 256)")
    p.add_argument("--calibration", choices=CALIBRATIONS, default="mse",
                   help="activation range estimation (default mse)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--per-channel", dest="per_channel", action="store_true", default=True,
                       help="one weight scale per output channel (default)")
    group.add_argument("--per-tensor", dest="per_channel", action="store_false",
                       help="one weight scale per tensor")
    p.add_argument("--exclude", nargs="+", action="append", metavar="NAME",
                   help="keep these float: module paths (model.17, model.17.cv3.conv) or ONNX node names; "
                        "a name that matches nothing is an error")
    p.add_argument("--silu", choices=("int8", "float", "auto"), default="int8",
                   help="SiLU as QLinearSigmoid + QLinearMul (int8, default), in float, or auto: time both "
                        "plans on this machine (--tune-backend) and keep the faster within 1 dB SQNR")
    p.add_argument("--stem", choices=("int8", "float", "auto"), default="float",
                   help="the first conv (3-channel image input): float (default; faster on x86), int8, or auto")
    p.add_argument("--float-prefix", type=_prefix, default=0, metavar="N|auto",
                   help="keep the first N layers float (model.0 .. model.N-1; default 0), or auto: try 0, 1, 2")
    p.add_argument("--tune-backend", choices=ONNX_BACKENDS, default="onnxruntime",
                   help="runtime that --silu/--stem auto time the candidates on: where the file will run "
                        "(default onnxruntime)")
    p.add_argument("--head", choices=("int8", "float"), default="int8",
                   help="the Detect output convs: int8 input and weights in an integer kernel with a float "
                        "output (default) or fully float; their outputs and the box decoding stay float")
    p.add_argument("--activations", choices=("u8", "s8"), default="u8",
                   help="activation type (default u8: what ONNX Runtime's x86 integer kernels take)")
    p.add_argument("--sensitivity", action="store_true",
                   help="rank the int8 convs by the mAP50-95 each costs (train images; one quantization "
                        "and evaluation per conv)")
    p.add_argument("--auto-exclude", type=int, default=0, metavar="K",
                   help="keep the K most sensitive convs float (implies --sensitivity)")
    p.add_argument("--sensitivity-images", type=positive_int, default=128,
                   help="training images evaluated per candidate (default 128)")
    p.add_argument("--epochs", type=positive_int, default=3, help="QAT fine-tuning epochs (default 3)")
    p.add_argument("--lr", type=float, default=1e-4, help="QAT initial learning rate (default 1e-4)")
    p.add_argument("--distill", type=float, default=1.0, metavar="W",
                   help="QAT: weight of distillation from the float model (default 1; 0: labels only)")
    add_method_flags(p, "QAT")
    p.add_argument("--labels", action="store_true",
                   help="QAT: add the detection loss on the training labels (default: distillation only)")
    p.add_argument("--batch", type=positive_int, default=16, help="QAT batch size (default 16)")
    p.add_argument("--workers", type=int, default=0, help="QAT data-loading workers (default 0)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=_main)
