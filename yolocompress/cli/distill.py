"""``yolocompress distill STUDENT --teacher T --data D -o OUT.pt``: train a student under a teacher."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolocompress.cli.common import (ProgressPrinter, add_max_map_drop, add_workers, config_help, console,
                                     image_size, positive_int, print_stage_warnings, write_json)
from yolocompress.errors import InputError
from yolocompress.io.paths import file_size, names_a_file, preflight


def _layers(text: str) -> tuple[int, ...] | None:
    """argparse type: ``auto`` or comma-separated layer indices."""
    if text.strip().lower() == "auto":
        return None
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or layer indices such as 17,20,23, got {text!r}") from None


FEATURE_FLAGS = ("feature_layers", "feature_weight", "temperature")
# help defaults come from here (``cli.common.config_help``; a command using these flags adds this source)
DISTILL_MODULE = "yolocompress.compress.distill.config"
DISTILL_CONFIG = f"{DISTILL_MODULE}:DistillConfig"


def add_method_flags(p: argparse.ArgumentParser, stage: str) -> None:
    """``--distill-method``, ``--feature-layers``, ``--feature-weight``, ``--temperature``: the distillation
    choice of ``distill`` for a command whose ``--distill W`` is the output-KD weight (``stage``: its name
    in the help)."""
    p.add_argument("--distill-method", default=None, metavar="output|feature|both",
                   help=f"{stage}: distill output (the head), feature (CWD of the neck outputs, connectors "
                        "where channels differ) or both, with --distill as the output-KD weight (default: "
                        "output KD at --distill's weight)")
    _feature_flags(p)


def _feature_flags(p: argparse.ArgumentParser) -> None:
    """``--feature-layers``, ``--feature-weight``, ``--temperature`` (``None`` when not given: the library's
    defaults, shown in the help from ``DISTILL_CONFIG``)."""
    p.add_argument("--feature-layers", type=_layers, default=None, metavar="auto|17,20,23",
                   help="layers for feature KD (default auto: the layers that feed Detect)")
    p.add_argument("--feature-weight", type=float, default=None, metavar="W",
                   help="feature-KD weight (default {distill.feature_weight})")
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="CWD temperature (default {distill.temperature})")


def distill_option(weight: float | None, args: argparse.Namespace) -> Any:
    """The stage's ``distill`` setting from ``--distill W`` (``weight``) and :func:`add_method_flags`' flags:
    the plain weight (``None``: not given) without ``--distill-method``, else a ``DistillConfig``."""
    given = [f"--{name.replace('_', '-')}" for name in FEATURE_FLAGS if getattr(args, name) is not None]
    if args.distill_method in (None, "output") and given:
        raise InputError(f"{', '.join(given)} set feature distillation: add --distill-method feature or both")
    if args.distill_method is None:
        return weight
    from yolocompress.compress.distill import DistillConfig  # imports torch: only when it is needed

    feature = {name: getattr(args, name) for name in FEATURE_FLAGS if getattr(args, name) is not None}
    return DistillConfig(method=args.distill_method, weight=1.0 if weight is None else weight,
                         check_teacher=False, **feature)


def _main(args: argparse.Namespace) -> int:
    if Path(args.output).suffix.lower() != ".pt":
        raise InputError(f"output must be a .pt file, got {args.output}")
    preflight(inputs=[("model file", args.student if names_a_file(args.student) else None),
                      ("model file", args.teacher), ("data.yaml", args.data)],
              outputs=[("output", args.output), ("--json", args.json)], folders=[("--out-dir", args.out_dir)],
              expected_bytes=file_size(args.student))
    from yolocompress.compress.accuracy import check_accuracy, with_measured_map
    from yolocompress.compress.distill import DistillConfig, distill_model
    from yolocompress.compress.distill.config import default_method
    from yolocompress.compress.finetune import FinetuneConfig
    from yolocompress.data import load_data_config
    from yolocompress.io.checkpoint import history_entry, load_model_with_info, save_model
    from yolocompress.models import build_model, list_configs

    data = load_data_config(args.data)
    teacher, teacher_info = load_model_with_info(args.teacher)
    from_scratch = not Path(args.student).is_file()
    if not from_scratch:
        student, info = load_model_with_info(args.student)
        history, imgsz = info.history, args.imgsz or info.imgsz
    elif Path(args.student).stem in list_configs():  # a config: trained from scratch under the teacher
        student, history, imgsz = build_model(args.student, nc=data.nc), [], args.imgsz or teacher_info.imgsz
    else:
        raise InputError(f"model file not found: {args.student} (the student: a checkpoint, or a config name "
                         "such as yolov5n)")
    given = {name: getattr(args, name) for name in ("weight", *FEATURE_FLAGS) if getattr(args, name) is not None}
    feature_settings = any(name in given for name in FEATURE_FLAGS)
    method = args.method or default_method(from_scratch, feature_settings)
    config = DistillConfig(method=method, **given)  # the rest: the library's defaults
    train = FinetuneConfig(epochs=args.epochs, imgsz=imgsz, batch=args.batch, lr0=args.lr0,
                           warmup_epochs=args.warmup_epochs, seed=args.seed, device=args.device, workers=args.workers)
    tuned, report = distill_model(student, teacher, data, config, train, out_dir=args.out_dir, resume=args.resume,
                                  on_progress=ProgressPrinter())
    report = with_measured_map(report, data, after=tuned, imgsz=imgsz)  # "before": measured by the stage
    report, verdict = check_accuracy(report, args.max_map_drop)
    entry = history_entry("distill", teacher=Path(args.teacher).name, config=dict(report.config))
    save_model(tuned, args.output, imgsz=imgsz, history=[*history, entry])
    _print(report.to_dict(), args.output)
    write_json(report.to_dict(), args.json)
    print_stage_warnings(report, verdict)
    verdict.raise_if_failed()
    return 0


def _print(report: dict[str, Any], output: str) -> None:
    d = report["details"]
    last = d["history"][-1] if d.get("history") else {}
    terms = ", ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in last.items()
                      if k.startswith("train/") and isinstance(v, float))
    console.print(f"distilled ({d['method']}) -> {output}: {d['epochs_completed']} epochs; last epoch: {terms}")
    if d.get("connectors"):
        console.print("connectors (student -> teacher channels): " +
                      ", ".join(f"layer {i}: {s} -> {t}" for i, (s, t) in d["connectors"].items()))
    if d.get("teacher_forward_s_per_epoch") is not None:
        console.print(f"teacher forward (the KD overhead): {d['teacher_forward_s_per_epoch']:.3g} s per "
                      f"epoch, {100 * d['teacher_forward_share']:.0f}% of the training time")
    if "metrics/mAP_0.5:0.95" in last:
        console.print(f"val mAP50-95 after the last epoch: {last['metrics/mAP_0.5:0.95']:.4f} "
                      f"(best epoch {d['best_epoch'] + 1})")
    before, after = report["before"] or {}, report["after"] or {}
    if before.get("map50_95") is not None and after.get("map50_95") is not None:
        console.print(f"student mAP50-95 on the val split: {before['map50_95']:.4f} -> "
                      f"{after['map50_95']:.4f}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "distill", help="train a student (e.g. a pruned model) under a teacher: output and/or feature KD",
        formatter_class=config_help(distill=DISTILL_CONFIG, distill_module=DISTILL_MODULE),
        description="Knowledge distillation. --method output: the teacher's head outputs as soft targets (same "
                    "classes, anchors and strides); feature: channel-wise distillation (CWD) of the neck outputs, "
                    "with 1x1 conv + BN connectors where the channel counts differ (dropped from the saved "
                    "student); both. Every loss term is logged per epoch in results.csv.")
    p.add_argument("student", help="student checkpoint (.pt), or a config name to train from scratch")
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.pt)")
    p.add_argument("--data", required=True, help="data.yaml")
    p.add_argument("-o", "--output", required=True, help="distilled student to write (.pt, our format)")
    p.add_argument("--method", default=None, metavar="output|feature|both",
                   help="what to distill (default: {distill.method} for a student checkpoint, "
                        "{distill_module.FROM_SCRATCH_METHOD} for a config name trained from scratch, "
                        "as measured)")
    p.add_argument("--weight", type=float, default=None, metavar="W",
                   help="output-KD weight, relative to the labels (default {distill.weight})")
    _feature_flags(p)
    p.add_argument("--epochs", type=positive_int, default=20, help="training epochs (default 20)")
    p.add_argument("--imgsz", type=image_size, default=None, help="image size (default: the student's, else "
                                                                  "the teacher's recorded size)")
    p.add_argument("--batch", type=positive_int, default=16, help="batch size (default 16)")
    p.add_argument("--lr0", type=float, default=None, help="initial learning rate (default YOLOv5's 0.01)")
    p.add_argument("--warmup-epochs", type=float, default=None, help="warm-up epochs (default YOLOv5's 3)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    add_workers(p)
    p.add_argument("--out-dir", default="runs/distill", help="the trainer's run folder (default runs/distill)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from --out-dir's last.pt")
    p.add_argument("--json", default=None, metavar="FILE", help="write the stage report as JSON")
    add_max_map_drop(p)
    p.set_defaults(func=_main)
