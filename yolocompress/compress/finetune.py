"""The fine-tune stage: train a compressed model back towards its accuracy with the project's ``Trainer``.

``finetune(model, data, FinetuneConfig(epochs=20), teacher=None)`` returns ``(tuned model, StageReport)``.
With ``distill`` (a weight ``W > 0``: output KD at ``W``; or a
:class:`~yolocompress.compress.distill.config.DistillConfig`: output, feature or both) and a ``teacher`` (in a
recipe: the unpruned input model), the detection loss is joined by the distillation terms
(:func:`~yolocompress.compress.distill.config.distill_terms`). The Trainer's run
folder is a temporary one unless ``out_dir`` is given; there ``weights/last.pt`` is written every epoch and
``resume=True`` continues a killed run from it (bit-exactly on the CPU).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from yolocompress.compress.distill.config import (DistillConfig, as_distill_config, distill_json,
                                                  distill_terms, kd_warnings, teacher_overhead)
from yolocompress.compress.stage import ModelSnapshot, StageReport, config_dict
from yolocompress.errors import InputError
from yolocompress.io.workdir import work_dir
from yolocompress.progress import ProgressCallback


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of one fine-tune (validated on construction).

    Attributes:
        epochs: epochs of training.
        imgsz: training and validation image size (pixels); ``None``: the caller's (a recipe's ``imgsz``).
        batch: images per batch; gradients accumulate to ``nominal_batch`` images per optimizer step.
        lr0: initial SGD learning rate (``None``: YOLOv5's 0.01).
        warmup_epochs: learning-rate warm-up (``None``: YOLOv5's 3 epochs, made for training from scratch;
            a short fine-tune of a trained model spends most of itself warming up with that).
        close_mosaic: mosaic augmentation off for the last N epochs (``None``: half of ``epochs``).
        distill: distillation from the teacher: a weight ``W`` (output KD at ``W``; 0: labels only) or a
            :class:`~yolocompress.compress.distill.config.DistillConfig` (``method`` output, feature or both;
            its ``check_teacher`` is the ``distill`` stage's).
        cos_lr: cosine learning-rate decay instead of linear.
        bf16, channels_last: CPU bf16 autocast / NHWC memory format (see ``TrainConfig``).
        val: evaluate every epoch and return the best epoch's EMA weights (else the last).
        seed, device, workers: as ``TrainConfig``.
    """

    epochs: int = 20
    imgsz: int | None = None
    batch: int = 16
    nominal_batch: int = 64
    lr0: float | None = None
    warmup_epochs: float | None = None
    close_mosaic: int | None = None
    distill: float | DistillConfig = 0.0
    cos_lr: bool = False
    bf16: bool = False
    channels_last: bool = False
    val: bool = True
    seed: int = 0
    device: str = "cpu"
    workers: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch", "nominal_batch"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.imgsz is not None and (int(self.imgsz) < 32 or int(self.imgsz) % 32):
            raise InputError(f"imgsz must be a positive multiple of 32, got {self.imgsz}")
        if self.lr0 is not None and not float(self.lr0) > 0:
            raise InputError(f"lr0 must be > 0, got {self.lr0}")
        if self.warmup_epochs is not None and not float(self.warmup_epochs) >= 0:
            raise InputError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.close_mosaic is not None and int(self.close_mosaic) < 0:
            raise InputError(f"close_mosaic must be >= 0, got {self.close_mosaic}")
        as_distill_config(self.distill)  # a weight >= 0 or a DistillConfig
        if int(self.workers) < 0:
            raise InputError(f"workers must be >= 0, got {self.workers}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "distill": distill_json(self.distill)}


def finetune(model: nn.Module, data: Any, config: FinetuneConfig | None = None, teacher: nn.Module | None = None,
             out_dir: str | Path | None = None, resume: bool = False, on_progress: ProgressCallback | None = None,
             extra_losses: Sequence[Any] = (), hyp: Any = None) -> tuple[nn.Module, StageReport]:
    """Fine-tune ``model`` (not modified) on ``data`` (``data.yaml`` or ``DataConfig``).

    Args:
        config: :class:`FinetuneConfig`; ``imgsz`` must be set (a recipe sets it).
        teacher: the distillation teacher (needed when ``config.distill`` asks for distillation).
        out_dir: keep the Trainer's run folder (``weights/last.pt``, ``best.pt``, ``results.csv``) here.
        resume: continue from ``out_dir/weights/last.pt`` when it exists.
        on_progress: the Trainer's progress events (see ``Trainer``).
        extra_losses: further trainer loss terms, after the distillation terms ``config.distill`` adds.
        hyp: training hyperparameters (``engine.loss.Hyp``; default YOLOv5's); ``config.lr0`` and
            ``config.warmup_epochs``, when set, replace its own.
    Returns:
        ``(best EMA model in eval mode on the CPU, StageReport)``; ``details``: ``epochs_completed``,
        ``best_epoch``, ``best_fitness``, ``resumed_from_epoch`` (or None) and the per-epoch ``history``;
        with distillation also ``method``, ``feature_layers``, ``connectors``, the KD overhead of the epochs
        trained by this call (``teacher_forward_s_per_epoch``, ``teacher_forward_share`` of the training time)
        and warnings when a KD term of epoch 1 is under 1% or over 100x of the detection loss.
    """
    from yolocompress.data.config import as_data_config
    from yolocompress.engine.loss import Hyp
    from yolocompress.engine.train_checkpoint import load_checkpoint
    from yolocompress.engine.trainer import TrainConfig, Trainer
    from yolocompress.io.checkpoint import load_model
    from yolocompress.models.shapes import shape_spec
    from yolocompress.profile.params import count_params

    cfg = config or FinetuneConfig()
    if cfg.imgsz is None:
        raise InputError("finetune needs an image size (FinetuneConfig.imgsz)")
    kd = as_distill_config(cfg.distill)
    if kd is not None and teacher is None:
        raise InputError("finetune with distill needs a teacher model")
    t0 = time.perf_counter()
    before = shape_spec(model)
    hyp = dataclasses.replace(hyp or Hyp(), **{k: float(v) for k, v in (("lr0", cfg.lr0),
                                                                        ("warmup_epochs", cfg.warmup_epochs))
                                               if v is not None})
    extra, kd_details = (distill_terms(kd, teacher, model, int(cfg.imgsz), cfg.seed, hyp) if kd is not None
                         else ([], {}))
    extra += list(extra_losses)
    data = as_data_config(data)
    with work_dir("yc-finetune-") as tmp:
        run_dir = Path(out_dir) if out_dir is not None else Path(tmp)
        last = run_dir / "weights" / "last.pt"
        resume_from = str(last) if resume and last.is_file() else None
        resumed_epoch = int(load_checkpoint(last)["epoch"]) + 1 if resume_from else None
        tc = TrainConfig(epochs=cfg.epochs, imgsz=int(cfg.imgsz), batch=cfg.batch,
                         nominal_batch=max(cfg.nominal_batch, cfg.batch), device=cfg.device, workers=cfg.workers,
                         seed=cfg.seed, out_dir=str(run_dir), resume=resume_from,
                         close_mosaic=cfg.epochs // 2 if cfg.close_mosaic is None else cfg.close_mosaic,
                         patience=0, cos_lr=cfg.cos_lr, bf16=cfg.bf16,
                         channels_last=cfg.channels_last, val=cfg.val)
        if resumed_epoch is not None and resumed_epoch >= cfg.epochs:  # killed after its last epoch was saved
            tuned, finished = load_model(run_dir / "weights" / "best.pt"), load_checkpoint(last)
            summary = {"epochs_completed": resumed_epoch, "best_epoch": int(finished["best_epoch"]),
                       "best_fitness": float(finished["best_fitness"]),
                       "history": [dict(row) for row in finished["history"]]}
        else:
            result = Trainer(copy.deepcopy(model).float().cpu().train(), data, tc, hyp=hyp,
                             extra_losses=extra, on_progress=on_progress).train()
            tuned = result.model
            summary = {"epochs_completed": result.epochs_completed, "best_epoch": result.best_epoch,
                       "best_fitness": result.best_fitness, "history": result.history}
    tuned = tuned.cpu().eval()
    if shape_spec(tuned) != before:  # the Trainer must not change the architecture
        raise RuntimeError("fine-tuning changed the model's architecture")
    params = int(count_params(tuned).total)
    trained_now = [r for r in summary["history"] if r["epoch"] >= (resumed_epoch or 0)]  # by this call
    report = StageReport(
        stage="finetune", config=config_dict(cfg), seconds=time.perf_counter() - t0,
        before=ModelSnapshot(imgsz=int(cfg.imgsz), params=params),
        after=ModelSnapshot(imgsz=int(cfg.imgsz), params=params),
        details={**summary, "resumed_from_epoch": resumed_epoch, "teacher": bool(extra), **kd_details,
                 **teacher_overhead(extra, trained_now)},
        warnings=tuple(kd_warnings(summary["history"])))
    return tuned, report


__all__ = ["FinetuneConfig", "finetune"]
