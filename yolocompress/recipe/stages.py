"""The stage types a recipe can name, registered by name (as timm registers models).

Each :class:`StageType` says which config dataclass(es) its recipe keys are the fields of, what artifact it
takes (a PyTorch model, or either) and gives (``torch``, ``onnx`` or the same artifact), which fields the
runner sets itself (the recipe's one image size, work folders) and which recipe defaults differ
from the library's (a recipe's ``prune`` does not fine-tune by itself: a ``finetune`` stage follows it).
``run(context, artifact, configs)`` calls the library's stage function and returns ``(artifact, StageReport)``.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from yolocompress.compress.distill.stage import DistillConfig, distill_model
from yolocompress.compress.finetune import FinetuneConfig, finetune
from yolocompress.compress.fuse import FuseConfig, fuse_stage
from yolocompress.compress.prune.config import PruneConfig
from yolocompress.compress.prune.pruner import prune_model
from yolocompress.compress.quant.ptq import QuantConfig, quantize_ptq
from yolocompress.compress.quant.qat import QatConfig, quantize_qat
from yolocompress.compress.stage import StageReport, config_dict
from yolocompress.errors import InputError
from yolocompress.io.workdir import work_dir
from yolocompress.progress import ProgressCallback


@dataclass(frozen=True)
class StageContext:
    """What the runner hands a stage besides its artifact and configs.

    ``teacher``: the recipe's input model (the distillation teacher of ``finetune``/``distill``);
    ``work_dir``: the stage's output folder (``model.onnx`` and the trainer's ``train/`` go here);
    ``resume``: continue a killed trainer run from ``work_dir/train/weights/last.pt``.
    """

    data: Any
    imgsz: int
    seed: int
    work_dir: Path
    teacher: Any = None
    resume: bool = False
    on_progress: ProgressCallback | None = None


@dataclass(frozen=True)
class ExportConfig:
    """Settings of the export stage: ONNX opset and the parity bound against PyTorch (max relative error of
    the decoded output, see :func:`~yolocompress.export.onnx.verify_onnx`)."""

    opset: int = 17
    tolerance: float = 1e-4

    def __post_init__(self) -> None:
        if not 11 <= int(self.opset) <= 21:
            raise InputError(f"opset must be between 11 and 21, got {self.opset}")
        if not self.tolerance > 0:
            raise InputError(f"tolerance must be > 0, got {self.tolerance}")


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of the evaluate stage (the conventions of Ultralytics ``val.py``)."""

    split: str = "val"
    conf_thres: float = 0.001
    iou_thres: float = 0.6
    batch: int = 32

    def __post_init__(self) -> None:
        if self.split not in ("train", "val", "test"):
            raise InputError(f"split must be train, val or test, got {self.split!r}")
        if not 0 <= self.conf_thres <= 1 or not 0 <= self.iou_thres <= 1:
            raise InputError("conf_thres and iou_thres must be in [0, 1]")
        if self.batch < 1:
            raise InputError(f"batch must be >= 1, got {self.batch}")


Runner = Callable[[StageContext, Any, Mapping[str, Any]], tuple[Any, StageReport]]


@dataclass(frozen=True)
class StageType:
    """One stage a recipe can name (see the module docstring)."""

    name: str
    parts: Mapping[str, type]
    takes: str                      # "torch" or "any"
    gives: str                      # "torch", "onnx" or "same"
    run: Runner
    needs_unfused: bool = False
    fuses: bool = False
    runner_fields: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    method_parts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # quantize: method -> parts

    def keys(self, method: str | None = None) -> dict[str, tuple[str, type]]:
        """Recipe key -> (part, config type) for the stage (for ``quantize``: of that ``method``)."""
        parts = self.method_parts.get(method or "", tuple(self.parts)) if self.method_parts else tuple(self.parts)
        out = {"method": ("", str)} if self.method_parts else {}
        for part in parts:
            for f in dataclasses.fields(self.parts[part]):
                if f.name not in self.runner_fields:
                    out[f.name] = (part, self.parts[part])
        return out


STAGE_TYPES: dict[str, StageType] = {}


def register_stage(stage_type: StageType) -> StageType:
    """Make ``stage_type`` available to recipes under its name."""
    STAGE_TYPES[stage_type.name] = stage_type
    return stage_type


def stage_type(name: str, where: str) -> StageType:
    """The registered stage type ``name``; an unknown name is an ``InputError`` naming ``where``."""
    from yolocompress.recipe.schema import did_you_mean

    if name not in STAGE_TYPES:
        raise InputError(f"{where}: unknown stage type{did_you_mean(name, list(STAGE_TYPES))}")
    return STAGE_TYPES[name]


# ------------------------------------------------------------------------------------------ the runners
def _run_prune(ctx: StageContext, model: Any, configs: Mapping[str, Any]) -> tuple[Any, StageReport]:
    return prune_model(model, ctx.data, configs["config"], on_progress=ctx.on_progress)


def _run_finetune(ctx: StageContext, model: Any, configs: Mapping[str, Any]) -> tuple[Any, StageReport]:
    return finetune(model, ctx.data, configs["config"], teacher=ctx.teacher, out_dir=ctx.work_dir / "train",
                    resume=ctx.resume, on_progress=ctx.on_progress)


def _run_distill(ctx: StageContext, model: Any, configs: Mapping[str, Any]) -> tuple[Any, StageReport]:
    return distill_model(model, ctx.teacher, ctx.data, configs["distill"], configs["train"],
                         out_dir=ctx.work_dir / "train", resume=ctx.resume, on_progress=ctx.on_progress)


def _run_fuse(ctx: StageContext, model: Any, configs: Mapping[str, Any]) -> tuple[Any, StageReport]:
    return fuse_stage(model, ctx.data, configs["config"])


def _run_quantize(ctx: StageContext, artifact: Any, configs: Mapping[str, Any]) -> tuple[Any, StageReport]:
    output = ctx.work_dir / "model.onnx"
    if "qat" in configs:
        qat = dataclasses.replace(configs["qat"], out_dir=str(ctx.work_dir / "train"))
        return quantize_qat(artifact, ctx.data, configs["quant"], qat, output=output)
    return quantize_ptq(artifact, ctx.data, configs["quant"], output=output)


def _run_export(ctx: StageContext, model: Any, configs: Mapping[str, Any]) -> tuple[Any, StageReport]:
    from yolocompress.errors import CompressionError
    from yolocompress.export.onnx import export_onnx, verify_onnx
    from yolocompress.io.atomic import atomic_path

    cfg = configs["config"]
    t0 = time.perf_counter()
    output = ctx.work_dir / "model.onnx"
    with work_dir("yc-export-", parent=ctx.work_dir) as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", imgsz=ctx.imgsz, opset=cfg.opset)
        error = verify_onnx(model, path, imgsz=ctx.imgsz)
        if error > cfg.tolerance:
            raise CompressionError(f"the ONNX export differs from PyTorch (max relative error {error:.2e} > "
                                   f"{cfg.tolerance:.0e})")
        with atomic_path(output) as target:
            shutil.copyfile(path, target)
    return output, StageReport(stage="export", config=config_dict(cfg), seconds=time.perf_counter() - t0,
                               details={"max_relative_error": error, "opset": cfg.opset})


def _run_evaluate(ctx: StageContext, artifact: Any, configs: Mapping[str, Any]) -> tuple[Any, StageReport]:
    from yolocompress.engine.evaluator import evaluate_model

    cfg = configs["config"]
    t0 = time.perf_counter()
    result = evaluate_model(artifact, ctx.data, split=cfg.split, imgsz=ctx.imgsz, batch=cfg.batch,
                            conf_thres=cfg.conf_thres, iou_thres=cfg.iou_thres)
    return artifact, StageReport(stage="evaluate", config=config_dict(cfg), seconds=time.perf_counter() - t0,
                                 details={"split": cfg.split, **result.to_dict()})


_TRAINER_FIELDS = frozenset({"imgsz"})
register_stage(StageType(
    "prune", {"config": PruneConfig}, takes="torch", gives="torch", run=_run_prune, needs_unfused=True,
    runner_fields=frozenset({"imgsz", "finetune_dir", "latency", "latency_threads", "eval_baseline",
                             "search_log", "resume"}),
    defaults={"finetune": {"epochs": 0}}))
register_stage(StageType("finetune", {"config": FinetuneConfig}, takes="torch", gives="torch", run=_run_finetune,
                         runner_fields=_TRAINER_FIELDS))
register_stage(StageType("distill", {"distill": DistillConfig, "train": FinetuneConfig}, takes="torch", gives="torch",
                         run=_run_distill, runner_fields=frozenset({"imgsz", "distill"})))
register_stage(StageType("fuse", {"config": FuseConfig}, takes="torch", gives="torch", run=_run_fuse, fuses=True))
register_stage(StageType(
    "quantize", {"quant": QuantConfig, "qat": QatConfig}, takes="any", gives="onnx", run=_run_quantize,
    runner_fields=frozenset({"imgsz", "out_dir"}), method_parts={"ptq": ("quant",), "qat": ("quant", "qat")}))
register_stage(StageType("export", {"config": ExportConfig}, takes="torch", gives="onnx", run=_run_export))
register_stage(StageType("evaluate", {"config": EvaluateConfig}, takes="any", gives="same", run=_run_evaluate))

__all__ = ["EvaluateConfig", "ExportConfig", "STAGE_TYPES", "StageContext", "StageType", "register_stage",
           "stage_type"]
