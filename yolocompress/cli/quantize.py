"""``yolocompress quantize MODEL --method ptq --data DATA -o OUT.onnx``: int8 model for ONNX Runtime."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from yolocompress.cli.common import (add_max_map_drop, config_help, console, image_size,
                                     positive_int, print_stage_warnings, write_json)
from yolocompress.cli.distill import DISTILL_CONFIG, add_method_flags, distill_option
from yolocompress.errors import InputError
from yolocompress.export.openvino import ONNX_BACKENDS
from yolocompress.io.paths import file_size, preflight
from yolocompress.profile.cpu import cpu_line

if TYPE_CHECKING:  # onnxruntime and torch are imported only when the command runs
    from yolocompress.compress.accuracy import AccuracyVerdict
    from yolocompress.compress.distill.config import DistillConfig
    from yolocompress.compress.quant.ptq import QuantConfig
    from yolocompress.compress.quant.sensitivity import SensitivityResult
    from yolocompress.compress.stage import StageReport

METHODS = ("ptq", "qat")
# help texts say {quant.field} / {qat.field} / {ptq.NAME}: filled from the library when help is shown
LIBRARY = {"quant": "yolocompress.compress.quant.ptq:QuantConfig",
           "qat": "yolocompress.compress.quant.qat:QatConfig",
           "ptq": "yolocompress.compress.quant.ptq", "plan": "yolocompress.compress.quant.plan",
           "calibrate": "yolocompress.compress.quant.calibrate",
           "sens": "yolocompress.compress.quant.sensitivity:sensitivity", "distill": DISTILL_CONFIG}


def _given(**values: Any) -> dict[str, Any]:
    """The keywords whose value is not None: a flag left out keeps the library config's default."""
    return {k: v for k, v in values.items() if v is not None}


def run(model: str, data: str, output: str, method: str = "ptq", imgsz: int | None = None,
        calib_images: int | None = None, calibration: str | None = None, per_channel: bool | None = None,
        exclude: Sequence[str] = (), silu: str | None = None, stem: str | None = None,
        head: str | None = None, activations: str | None = None, sensitivity: bool = False, auto_exclude: int = 0,
        sensitivity_images: int | None = None, epochs: int | None = None, lr: float | None = None,
        batch: int | None = None, workers: int | None = None, distill: float | DistillConfig | None = None,
        labels: bool | None = None, max_map_drop: float | None = None, measure_map: bool = True,
        tune_backend: str | None = None, float_prefix: int | str | None = None
        ) -> tuple[StageReport, SensitivityResult | None, AccuracyVerdict]:
    """Quantize ``model`` (``.pt`` or fp32 ``.onnx``) to int8 and write it to ``output`` (``.onnx``).

    Settings left at ``None`` keep the defaults of ``QuantConfig`` (PTQ) and ``QatConfig`` (QAT). With
    ``sensitivity`` (or ``auto_exclude`` k > 0) the planned int8 convolutions are first ranked by the
    mAP50-95 each one costs (on ``sensitivity_images`` training images); ``auto_exclude`` keeps the worst k
    float. ``method="qat"`` fine-tunes with fake quantization first (needs a ``.pt`` model; ``distill``: the
    output-KD weight or a ``DistillConfig``). ``silu``/``stem``/``float_prefix`` ``"auto"`` time the candidate
    plans on ``tune_backend``. ``imgsz`` defaults to a checkpoint's training size. With ``measure_map`` the
    input and the int8 model are evaluated on the val split, and the verdict of
    :func:`~yolocompress.compress.accuracy.check_accuracy` (``max_map_drop`` points) comes back with the
    ``quantize`` :class:`~yolocompress.compress.stage.StageReport` and the sensitivity report (or None).
    """
    _check_options(model, method, auto_exclude, max_map_drop, measure_map)
    from yolocompress.compress.accuracy import check_accuracy, with_measured_map
    from yolocompress.compress.quant import sensitivity as sens
    from yolocompress.compress.quant.ptq import QuantConfig, quantize_ptq
    from yolocompress.data.config import load_data_config

    load_data_config(data)  # a broken data.yaml fails here, before the export and the calibration
    _check_onnx_size(model, imgsz)
    config = QuantConfig(**_given(calibration=calibration, calib_images=calib_images, per_channel=per_channel,
                                  activation_type=activations, silu=silu, stem=stem, head=head,
                                  tune_backend=tune_backend, float_prefix=float_prefix),
                         exclude=tuple(exclude), imgsz=imgsz)  # None: a .pt checkpoint's own size
    ranking = None
    if auto_exclude:
        config, ranking = sens.auto_exclude(model, data, auto_exclude, config,
                                            **_given(images=sensitivity_images))
    elif sensitivity:
        ranking = sens.sensitivity(model, data, config, **_given(images=sensitivity_images))
    if method == "qat":
        qat_settings = _given(epochs=epochs, lr=lr, batch=batch, workers=workers, distill=distill, labels=labels)
        report = _run_qat(model, data, config, output, qat_settings)
    else:
        report = quantize_ptq(model, data, config, output=output)[1]
    if measure_map:
        report = with_measured_map(report, data, before=model, after=output)
    report, verdict = check_accuracy(report, max_map_drop)
    return report, ranking, verdict


def _check_options(model: str, method: str, auto_exclude: int, max_map_drop: float | None,
                   measure_map: bool) -> None:
    """Refuse impossible combinations of options before anything is loaded."""
    if auto_exclude < 0:
        raise InputError(f"--auto-exclude needs K >= 0, got {auto_exclude}")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "qat" and Path(model).suffix.lower() == ".onnx":
        raise InputError("--method qat fine-tunes the PyTorch model: give a .pt checkpoint, not an .onnx file")
    if max_map_drop is not None and not measure_map:
        raise InputError("--max-map-drop needs the mAP measured: leave out --no-eval")


def _check_onnx_size(model: str, imgsz: int | None) -> None:
    """Refuse an ``--imgsz`` that differs from the fixed input size of an ``.onnx`` model."""
    if imgsz is None or Path(model).suffix.lower() != ".onnx":
        return
    from yolocompress.engine.predictors import onnx_input_shape

    shape = onnx_input_shape(model)
    if (shape.height, shape.width) != (imgsz, imgsz):
        raise InputError(f"{Path(model).name} has a fixed input size {shape.height}x{shape.width}, "
                         f"not {imgsz}x{imgsz}; export it again at --imgsz {imgsz}")


def _run_qat(model: str, data: str, config: QuantConfig, output: str,
             qat_settings: dict[str, Any]) -> StageReport:
    """QAT of the ``.pt`` checkpoint ``model`` (at its training size unless ``config.imgsz`` is set)."""
    import dataclasses

    from yolocompress.compress.quant.qat import QatConfig, quantize_qat
    from yolocompress.io.checkpoint import load_model_with_info

    net, info = load_model_with_info(model)
    if config.imgsz is None:  # QAT gets the module, which does not know the size it was trained at
        config = dataclasses.replace(config, imgsz=info.imgsz)
    return quantize_qat(net, data, config, QatConfig(**qat_settings), output=output)[1]


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
    """The summary lines of a ``quantize`` stage report."""
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
    speed = d.get("speed")
    if speed:
        console.print(f"speed on this machine ({speed['backend']}, {speed['threads']} threads, batch 1, medians "
                      f"side by side): int8 {speed['int8_median_ms']:.2f} ms vs fp32 "
                      f"{speed['fp32_median_ms']:.2f} ms = {speed['int8_vs_fp32']:.2f}x "
                      f"({speed['int8_vs_fp32_min']:.2f}x of the minimums)")
        console.print(f"  {cpu_line(speed['cpu'], speed['cpu_flags'])}")
    tuning = d.get("autotune")
    if tuning:
        console.print(f"plan chosen with {tuning['backend']}, {tuning['threads']} threads on "
                      f"{cpu_line(tuning['cpu'], tuning.get('cpu_flags'))}: {tuning['reason']}")
    qat = d.get("qat")
    if qat:
        console.print(f"QAT: {qat['epochs']} epochs at lr {qat['lr']}; ONNX Runtime int8 vs torch "
                      f"fake-quant output: {_db(qat['parity_sqnr_db']):.1f} dB")
    before, after = report.before, report.after
    measured = before is not None and after is not None
    if measured and before.map50_95 is not None and after.map50_95 is not None:
        console.print(f"mAP50-95 on the val split: {before.map50_95:.4f} -> {after.map50_95:.4f} "
                      f"({100 * (after.map50_95 - before.map50_95):+.2f} points)")


def _print_ranking(ranking: SensitivityResult, top: int = 10) -> None:
    console.print(f"sensitivity on {ranking.images} {ranking.split} images: mAP50-95 fp32 "
                  f"{ranking.fp32_map50_95:.4f}, all planned int8 {ranking.int8_map50_95:.4f}; gain when only "
                  "that conv is float:")
    for layer in ranking.layers[:top]:
        console.print(f"  {layer.scope:<28} {100 * layer.gain:+.2f} points  ({layer.macs / 1e6:.1f} M MACs)")


def _main(args: argparse.Namespace) -> int:
    if Path(args.output).suffix.lower() != ".onnx":
        raise InputError(f"output must be an .onnx file, got {args.output}")
    preflight(inputs=[("model file", args.model), ("data.yaml", args.data)],
              outputs=[("output", args.output), ("--json", args.json)], expected_bytes=file_size(args.model))
    exclude = [s for group in (args.exclude or []) for s in group]
    report, ranking, verdict = run(
        args.model, args.data, args.output, method=args.method, imgsz=args.imgsz,
        calib_images=args.calib_images, calibration=args.calibration, per_channel=args.per_channel,
        exclude=exclude, silu=args.silu, stem=args.stem, head=args.head, activations=args.activations,
        sensitivity=args.sensitivity, auto_exclude=args.auto_exclude, sensitivity_images=args.sensitivity_images,
        epochs=args.epochs, lr=args.lr, batch=args.batch, workers=args.workers,
        distill=distill_option(args.distill, args), labels=args.labels, max_map_drop=args.max_map_drop,
        measure_map=not args.no_eval, tune_backend=args.tune_backend, float_prefix=args.float_prefix)
    if ranking is not None:
        _print_ranking(ranking)
    _print(report)
    out = {"model": str(args.model), "data": str(args.data), **report.to_dict()}
    if ranking is not None:
        out["sensitivity"] = ranking.to_dict()
    write_json(out, args.json)
    print_stage_warnings(report, verdict)
    verdict.raise_if_failed()
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("quantize", help="int8 quantization for ONNX Runtime (calibrated PTQ or QAT)",
                              formatter_class=config_help(**LIBRARY),
                              description="Quantize a detector to int8 (QDQ ONNX) with calibration images "
                                          "from the training split. Detect output convs and box decoding stay "
                                          "float; the integer kernels ONNX Runtime builds are verified. Then "
                                          "the input and the int8 model are evaluated on the val split "
                                          "(--no-eval: not).")
    p.add_argument("model", help="checkpoint (.pt) or exported fp32 .onnx (fixed square size, batch 1)")
    p.add_argument("--method", choices=METHODS, default="ptq", help="quantization method (default ptq)")
    p.add_argument("--data", required=True, help="data.yaml; calibration images come from its train split")
    p.add_argument("-o", "--output", required=True, help="int8 model to write (.onnx)")
    p.add_argument("--imgsz", type=image_size, default=None,
                   help="export size for a .pt model (default: its training size, 640 for Ultralytics "
                        "checkpoints; an .onnx file keeps its own)")
    p.add_argument("--calib-images", type=positive_int, default=None,
                   help="calibration images (default {quant.calib_images})")
    _add_plan_flags(p)
    _add_sensitivity_flags(p)
    _add_qat_flags(p)
    p.add_argument("--no-eval", action="store_true",
                   help="do not evaluate the input and the int8 model on the val split (no accuracy check)")
    add_max_map_drop(p)
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=_main, per_channel=None)


def _add_plan_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the calibration and of the plan (what is int8, what stays float)."""
    p.add_argument("--calibration", default=None, metavar="METHOD",
                   help="activation range estimation: {calibrate.CALIBRATION_METHODS} "
                        "(default {quant.calibration})")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--per-channel", dest="per_channel", action="store_const", const=True,
                       help="one weight scale per output channel (default: {quant.per_channel})")
    group.add_argument("--per-tensor", dest="per_channel", action="store_const", const=False,
                       help="one weight scale per tensor")
    p.add_argument("--exclude", nargs="+", action="append", metavar="NAME",
                   help="keep these float: module paths (model.17, model.17.cv3.conv) or ONNX node names; "
                        "a name that matches nothing is an error")
    p.add_argument("--silu", default=None, metavar="MODE",
                   help="SiLU as QLinearSigmoid + QLinearMul (int8) or in float: {plan.SILU_MODES}, or auto: "
                        "time the plans on this machine (--tune-backend) and keep the fastest within 1 dB "
                        "SQNR (default {quant.silu})")
    p.add_argument("--stem", default=None, metavar="MODE",
                   help="the first conv (3-channel image input): {plan.STEM_MODES} or auto (default {quant.stem}; "
                        "float is faster on x86)")
    p.add_argument("--float-prefix", type=_prefix, default=None, metavar="N|auto",
                   help="keep the first N layers float (model.0 .. model.N-1; default {quant.float_prefix}), or "
                        "auto: try 0, 1 and 2")
    p.add_argument("--tune-backend", choices=ONNX_BACKENDS, default=None,
                   help="runtime that the auto settings time the candidates on: where the file will run "
                        "(default {quant.tune_backend})")
    p.add_argument("--head", default=None, metavar="MODE",
                   help="the Detect output convs: int8 input and weights in an integer kernel with a float "
                        "output, or fully float: {plan.HEAD_MODES} (default {quant.head}); their outputs and "
                        "the box decoding stay float")
    p.add_argument("--activations", default=None, metavar="TYPE",
                   help="activation type: {ptq.ACTIVATION_TYPES} (default {quant.activation_type}: what ONNX "
                        "Runtime's x86 integer kernels take)")


def _add_sensitivity_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the per-conv sensitivity ranking and automatic exclusion."""
    p.add_argument("--sensitivity", action="store_true",
                   help="rank the int8 convs by the mAP50-95 each costs (train images; one quantization "
                        "and evaluation per conv)")
    p.add_argument("--auto-exclude", type=int, default=0, metavar="K",
                   help="keep the K most sensitive convs float (implies --sensitivity)")
    p.add_argument("--sensitivity-images", type=positive_int, default=None,
                   help="training images evaluated per candidate (default {sens.images})")


def _add_qat_flags(p: argparse.ArgumentParser) -> None:
    """Flags of quantization-aware training (``--method qat``)."""
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="QAT fine-tuning epochs (default {qat.epochs})")
    p.add_argument("--lr", type=float, default=None, help="QAT initial learning rate (default {qat.lr})")
    p.add_argument("--distill", type=float, default=None, metavar="W",
                   help="QAT: weight of distillation from the float model (default {qat.distill}; 0: "
                        "labels only)")
    add_method_flags(p, "QAT")
    p.add_argument("--labels", action="store_true", default=None,
                   help="QAT: add the detection loss on the training labels (default: distillation only)")
    p.add_argument("--batch", type=positive_int, default=None, help="QAT batch size (default {qat.batch})")
    p.add_argument("--workers", type=int, default=None,
                   help="QAT data-loading workers (default {qat.workers})")
