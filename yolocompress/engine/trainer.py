"""Fine-tune (or train) a YOLOv5-family detector: the YOLOv5 recipe with small, explicit extension points.

One epoch: warm-up / scheduled learning rate, forward (AMP on CUDA), ``DetectionLoss`` plus any extra loss
terms, backward, an optimizer step every ``accumulate`` batches (gradient clipping at norm 10, then the
``on_after_optimizer_step`` callbacks, then the EMA update); at the end the EMA model is evaluated on the
validation split and a checkpoint written atomically:

- ``weights/last.pt``: everything needed to continue exactly (model, EMA, optimizer, scaler, pending
  gradients, RNG states of every process, config); plain data, ``torch.load(weights_only=True)`` reads it,
  and ``yolocompress.io.checkpoint.load_model`` loads its EMA model;
- ``weights/best.pt``: the EMA model of the best epoch (fitness = 0.1 mAP@0.5 + 0.9 mAP@0.5:0.95) in our
  model format;
- ``results.csv``: one row per epoch.

Resuming from ``last.pt`` on the CPU with the same seed reproduces an uninterrupted run bit for bit. The
checkpoint format lives in ``engine/train_checkpoint.py``, RNG states in ``engine/rng.py`` and the CSV in
``engine/results_csv.py``; this module keeps the training loop.

A non-finite loss, gradient (without AMP's scaler, which skips such steps itself) or weight stops the run with
``TrainingDivergedError`` naming the epoch and step, before anything is stepped or saved: ``last.pt`` and
``best.pt`` keep the last good epoch.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from yolocompress.engine import distributed as dist_utils
from yolocompress.engine.callbacks import Batch, Callback, CallbackList, FeatureCapture, feature_layers
from yolocompress.engine.ema import ModelEMA, unwrap
from yolocompress.engine.loss import DetectionLoss, Hyp
from yolocompress.engine.optim import Schedule, build_optimizer
from yolocompress.engine.results_csv import write_results_csv
from yolocompress.engine.rng import rng_state, seed_everything
from yolocompress.engine.train_checkpoint import (
    checkpoint_dict, load_checkpoint, model_config, model_record, plain_data, restore_checkpoint,
)
from yolocompress.data.config import as_data_config
from yolocompress.errors import InputError, TrainingDivergedError
from yolocompress.io.atomic import atomic_torch_save, atomic_write_json
from yolocompress.models.inputs import max_stride
from yolocompress.progress import ProgressCallback, report

LOGGER = logging.getLogger(__name__)
MAX_GRAD_NORM = 10.0
LOSS_NAMES = ("box", "obj", "cls")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (validated on construction).

    Attributes:
        epochs: total epochs (a resumed run continues up to this number).
        imgsz: training and validation image size, pixels (a multiple of the model's largest stride).
        batch: global batch size (split evenly over the processes of a distributed run).
        device: ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun, ``cuda`` means each process's local GPU).
        workers: data-loading worker processes per training process.
        seed: seeds Python, NumPy and torch (plus the rank in a distributed run) and the data order.
        out_dir: the run folder (``weights/``, ``results.csv``, ``config.json``).
        resume: a ``last.pt`` to continue from.
        close_mosaic: turn mosaic augmentation off for the last N epochs.
        patience: stop after this many epochs without a better fitness (0: never).
        cos_lr: cosine instead of linear learning-rate decay.
        amp: fp16 mixed precision with gradient scaling (used on CUDA only).
        bf16: bfloat16 autocast on the CPU (weights and optimizer stay fp32). About 1.7x faster training
            where the CPU has AMX / AVX-512 BF16 (with ``channels_last``); results differ slightly from fp32.
        channels_last: NHWC memory format for the model and its inputs (oneDNN's fast path on CPUs).
        sync_bn: SyncBatchNorm in distributed CUDA runs.
        val: evaluate after every epoch (otherwise ``best.pt`` is the last EMA model).
        cache: keep decoded, resized images in RAM.
        nominal_batch: gradients are accumulated to this many images per optimizer step (YOLOv5: 64) and
            weight decay scaled to match; set it to ``batch`` to step after every batch.
    """

    epochs: int = 100
    imgsz: int = 640
    batch: int = 16
    device: str = "cpu"
    workers: int = 2
    seed: int = 0
    out_dir: str = "runs/train"
    resume: str | None = None
    close_mosaic: int = 10
    patience: int = 100
    cos_lr: bool = False
    amp: bool = True
    bf16: bool = False
    channels_last: bool = False
    sync_bn: bool = False
    val: bool = True
    cache: bool = False
    nominal_batch: int = 64

    def __post_init__(self) -> None:
        for name in ("epochs", "imgsz", "batch", "nominal_batch"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("workers", "close_mosaic", "patience"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        object.__setattr__(self, "out_dir", str(self.out_dir))
        if self.resume is not None:
            object.__setattr__(self, "resume", str(self.resume))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What a run produced. ``model`` is the EMA model of the best epoch (eval mode, on the CPU)."""

    out_dir: Path
    best_path: Path
    last_path: Path
    best_fitness: float
    best_epoch: int
    epochs_completed: int
    stopped_early: bool
    history: list[dict[str, Any]]
    model: nn.Module


class Trainer:
    """Train ``model`` on ``data_cfg``'s train split, validating on its val split.

    Args:
        model: a ``DetectionModel`` (already pruned, fused away from training, ... as the caller wants).
        data_cfg: a ``yolocompress.data.DataConfig`` or the ``data.yaml`` path it loads from.
        config: run settings.
        hyp: loss, optimizer and augmentation hyperparameters.
        callbacks: ``Callback`` objects, called in order.
        extra_losses: ``ExtraLoss`` terms added to the detection loss (see ``callbacks``).
        wrap_model: ``fn(model) -> model`` applied once before the optimizer is built (QAT inserts its
            fake-quant modules here); a resumed run must pass the same function.
        on_progress: called (rank 0) with a ``ProgressEvent`` after every batch (task ``epoch E/N``, the
            running losses in ``info``) and once per epoch with its metrics as ``message``.

    Attributes for callbacks: ``model`` (the bare model being trained), ``train_model`` (the same or its
    DDP wrapper), ``ema`` (``ModelEMA``, rank 0 only, else ``None``), ``optimizer``, ``epoch``, ``step``
    (batches trained so far), ``config``, ``hyp``, ``device``, ``ctx`` (``DistContext``). State that the
    checkpoint saves and restores (:mod:`~yolocompress.engine.train_checkpoint`): ``history``,
    ``best_fitness``, ``best_epoch``, ``best_state`` (the best EMA weights), ``last_opt_step``, ``stopped``,
    ``start_epoch``.
    """

    def __init__(self, model: nn.Module, data_cfg: Any, config: TrainConfig, hyp: Hyp | None = None,
                 callbacks: Iterable[Callback] = (), extra_losses: Sequence[Any] = (),
                 wrap_model: Callable[[nn.Module], nn.Module] | None = None,
                 on_progress: ProgressCallback | None = None) -> None:
        self.model = model
        self.data_cfg = as_data_config(data_cfg)
        self.config = config
        self.hyp = hyp or Hyp()
        self.callbacks = CallbackList(callbacks)
        self.extra_losses = list(extra_losses)
        for loss in self.extra_losses:
            if not callable(loss):
                raise TypeError(f"extra losses must be callable, got {type(loss).__name__}")
        if self.hyp.box == self.hyp.obj == self.hyp.cls == 0 and not self.extra_losses:
            raise InputError("nothing to train: the detection loss gains box, obj and cls are all 0 and there "
                             "is no extra loss")
        self.wrap_model = wrap_model
        self.on_progress = on_progress if dist_utils.context_from_env().is_main else None
        self.out_dir = Path(config.out_dir)
        self.weights_dir = self.out_dir / "weights"
        self.last_path = self.weights_dir / "last.pt"
        self.best_path = self.weights_dir / "best.pt"
        self.ctx = dist_utils.context_from_env()
        self.device = torch.device("cpu")
        self.train_model: nn.Module = model
        self.ema: ModelEMA | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best_fitness = 0.0
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_opt_step = -1
        self._owns_process_group = False
        self.stopped = False

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.config
        self.device = dist_utils.resolve_device(cfg.device, self.ctx)
        self._owns_process_group = dist_utils.init_process_group(self.ctx, self.device)
        if cfg.batch % self.ctx.world_size:
            raise InputError(f"batch {cfg.batch} must be a multiple of the {self.ctx.world_size} processes")
        seed_everything(cfg.seed + self.ctx.rank)
        self.model_config = model_config(self.model)
        if self.wrap_model is not None:
            self.model = self.wrap_model(self.model)
        self.model.to(self.device)
        for term in self.extra_losses:  # e.g. a distillation teacher
            if callable(getattr(term, "to", None)):
                term.to(self.device)
        stride = max_stride(unwrap(self.model))
        if cfg.imgsz % stride:
            raise InputError(f"imgsz {cfg.imgsz} must be a multiple of the model's stride {stride}")
        self.nc = int(unwrap(self.model).nc)
        if int(self.data_cfg.nc) != self.nc:
            raise InputError(f"the model has {self.nc} classes but the data set {self.data_cfg.nc}")
        # modules of extra loss terms that train with the model (feature-distillation connectors)
        self.extra_modules = nn.ModuleList([term.trainable for term in self.extra_losses
                                            if isinstance(getattr(term, "trainable", None), nn.Module)])
        self.extra_modules.to(self.device)
        self.optimizer = build_optimizer(self.model, self.hyp, batch=cfg.batch, nominal_batch=cfg.nominal_batch,
                                         extra=self.extra_modules)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.autocast_dtype = torch.float16 if self.use_amp else torch.bfloat16
        self.use_autocast = self.use_amp or (cfg.bf16 and self.device.type == "cpu")
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ema = ModelEMA(self.model) if self.ctx.is_main else None
        self.loss_fn = DetectionLoss(self.model, self.hyp, imgsz=cfg.imgsz).to(self.device)
        self.train_loader = self._build_train_loader(stride)
        self.val_loader = self._build_val_loader(stride) if (self.ctx.is_main and cfg.val) else None
        self.schedule = Schedule(self.hyp, cfg.epochs, len(self.train_loader), batch=cfg.batch, cosine=cfg.cos_lr,
                                 nominal_batch=cfg.nominal_batch)
        self.start_epoch = 0
        if cfg.resume:
            restore_checkpoint(self, load_checkpoint(cfg.resume))
        if self.ctx.distributed:
            self.train_model = dist_utils.wrap_ddp(self.model, self.device, sync_bn=cfg.sync_bn)
        else:
            self.train_model = self.model

    def _build_train_loader(self, stride: int):
        from yolocompress.data import build_train_loader

        cfg = self.config
        return build_train_loader(
            self.data_cfg, imgsz=cfg.imgsz, batch=cfg.batch, stride=stride, hyp=self.hyp.augment, seed=cfg.seed,
            workers=cfg.workers, rank=self.ctx.rank, world_size=self.ctx.world_size, cache=cfg.cache,
        )

    def _build_val_loader(self, stride: int):
        from yolocompress.data import build_eval_loader

        cfg = self.config
        return build_eval_loader(self.data_cfg, "val", imgsz=cfg.imgsz, batch=cfg.batch // self.ctx.world_size * 2,
                                 stride=stride, rect=True, workers=cfg.workers, cache=cfg.cache)

    # ------------------------------------------------------------------ loop
    def train(self) -> TrainResult:
        """Run (or continue) training; returns where the weights went and the best EMA model."""
        cfg = self.config
        capture = None
        stopped_early = False
        try:
            self._setup()
            if self.ctx.is_main:
                self.weights_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_json({"train": cfg.to_dict(), "hyp": self.hyp.to_dict(),
                                   "data": plain_data(self.data_cfg)}, self.out_dir / "config.json")
            layers = feature_layers(self.extra_losses)
            capture = FeatureCapture(self.model, layers) if layers else None
            self.callbacks.on_train_start(self)
            for epoch in range(self.start_epoch, cfg.epochs):
                self.epoch = epoch
                losses, extra, elapsed = self._train_epoch(epoch, capture)
                row, stop = self._end_epoch(epoch, losses, extra, elapsed)
                self.callbacks.on_epoch_end(self, row)
                if stop:
                    stopped_early = epoch + 1 < cfg.epochs
                    break
            result = self._finish(stopped_early)
            self.callbacks.on_train_end(self)
        finally:
            if capture is not None:
                capture.remove()
            if self._owns_process_group:
                dist_utils.destroy_process_group()
        return result

    def _train_epoch(self, epoch: int, capture: FeatureCapture | None) -> tuple[torch.Tensor, dict[str, float], float]:
        cfg = self.config
        start = time.perf_counter()
        self.train_model.train()
        self.extra_modules.train()
        loader = self.train_loader
        loader.set_epoch(epoch)
        loader.mosaic = self.hyp.augment.mosaic > 0 and epoch < cfg.epochs - cfg.close_mosaic
        self.schedule.start_epoch(self.optimizer, epoch)
        self.callbacks.on_epoch_start(self, epoch)
        nb = len(loader)
        mean_loss = torch.zeros(len(LOSS_NAMES), device=self.device)
        extra_sums: dict[str, float] = {}
        task = f"epoch {epoch + 1}/{cfg.epochs}"
        for i, (imgs, targets, paths, shapes) in enumerate(loader):
            ni = i + nb * epoch  # batches since the start of training
            self.schedule.warmup(self.optimizer, ni, epoch)
            accumulate = self.schedule.accumulate_at(ni)
            inputs = imgs.to(self.device, non_blocking=True).float().div_(255)
            batch = Batch(inputs.contiguous(memory_format=self.memory_format), targets.to(self.device), paths, shapes)
            with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype, enabled=self.use_autocast):
                if capture is not None:
                    capture.clear()
                preds = self.train_model(batch.imgs)
            preds = [p.float() for p in preds]
            loss, items = self.loss_fn(preds, batch.targets)
            for term in self.extra_losses:  # in the forward's precision (a distillation teacher too)
                with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype,
                                    enabled=self.use_autocast):
                    extra_loss, extra_items = term(batch, preds, capture.features if capture else {})
                loss = loss + extra_loss.float() * batch.imgs.shape[0]
                for key, value in extra_items.items():
                    value = value.detach() if isinstance(value, torch.Tensor) else value
                    extra_sums[key] = extra_sums.get(key, 0.0) + float(value)
            finite = torch.isfinite(loss)
            if not dist_utils.all_true(finite):  # every process stops at this step, none waits in backward
                parts = ", ".join(f"{k} {v:.4g}" for k, v in zip(LOSS_NAMES, items.tolist()))
                detail = (f" (loss {float(loss.detach()):.4g}; detection terms: {parts})" if not finite else
                          f" (in another process; this one, rank {self.ctx.rank}, was finite)")
                raise self._diverged("loss", epoch, f"batch {i + 1}/{nb}, step {ni + 1}", detail)
            if self.ctx.distributed:
                loss = loss * self.ctx.world_size  # DDP averages gradients over processes
            self.scaler.scale(loss).backward()
            if ni - self.last_opt_step >= accumulate:
                self._optimizer_step(epoch, f"batch {i + 1}/{nb}, step {ni + 1}")
                self.last_opt_step = ni
            self.step = ni + 1
            self.callbacks.on_batch_end(self, ni)
            mean_loss = (mean_loss * i + items) / (i + 1)
            if self.on_progress is not None:
                report(self.on_progress, task, i + 1, nb, "batch",
                       {**dict(zip(LOSS_NAMES, mean_loss.tolist())), **{k: v / (i + 1) for k, v in extra_sums.items()},
                        "inst": int(targets.shape[0]), "size": int(imgs.shape[-1])})
        extra_means = {k: v / max(nb, 1) for k, v in extra_sums.items()}
        return mean_loss.cpu(), extra_means, time.perf_counter() - start

    def _optimizer_step(self, epoch: int, where: str) -> None:
        self.scaler.unscale_(self.optimizer)
        extra = [p for p in self.extra_modules.parameters() if p.grad is not None]
        if extra and self.ctx.distributed:  # DDP averages the model's gradients; these are not in it
            import torch.distributed as dist

            for p in extra:
                dist.all_reduce(p.grad)
                p.grad /= self.ctx.world_size
        norm = nn.utils.clip_grad_norm_([*self.model.parameters(), *extra], max_norm=MAX_GRAD_NORM)
        if not self.scaler.is_enabled() and not torch.isfinite(norm):  # (AMP's scaler skips such steps)
            raise self._diverged("gradient", epoch, where)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.callbacks.on_after_optimizer_step(self)
        if self.ema is not None:
            self.ema.update(self.model)

    def _validate(self) -> dict[str, float]:
        from yolocompress.engine.evaluator import evaluate
        from yolocompress.engine.predictors import TorchPredictor

        assert self.ema is not None and self.val_loader is not None
        names = list(getattr(self.data_cfg, "names", [])) or [str(i) for i in range(self.nc)]
        result = evaluate(TorchPredictor(self.ema.ema, device=self.device), self.val_loader, self.nc, names,
                          device=self.device, imgsz=self.config.imgsz)
        return {"metrics/precision": result.precision, "metrics/recall": result.recall,
                "metrics/mAP_0.5": result.map50, "metrics/mAP_0.5:0.95": result.map50_95,
                "fitness": result.fitness}

    def _diverged(self, what: str, epoch: int, where: str, detail: str = "") -> TrainingDivergedError:
        """The error for a non-finite ``what`` in ``epoch`` (0-based) at ``where``; it says which checkpoint
        was kept (nothing non-finite is ever saved)."""
        if epoch > self.start_epoch or (epoch > 0 and self.last_path.is_file()):
            kept = f"the last good checkpoint, {self.last_path} (end of epoch {epoch}), was kept"
        else:
            kept = "no checkpoint of this run was written"
        return TrainingDivergedError(f"training diverged: non-finite {what} in epoch {epoch + 1}/"
                                     f"{self.config.epochs}, {where}{detail}; {kept}. Try a lower lr0 "
                                     "(--hyp) or a larger batch")

    def _check_finite_weights(self, epoch: int) -> None:
        models = [self.model] + ([self.ema.ema] if self.ema is not None else [])
        for model in models:
            for name, value in model.state_dict().items():
                if value.is_floating_point() and not torch.isfinite(value).all():
                    raise self._diverged("weights", epoch, f"at its end ({name})")

    def _end_epoch(self, epoch: int, losses: torch.Tensor, extra: dict[str, float],
                   elapsed: float) -> tuple[dict[str, Any], bool]:
        cfg = self.config
        self._check_finite_weights(epoch)  # before anything is validated or saved
        row: dict[str, Any] | None = None
        stop = False
        if self.ctx.is_main:
            metrics = self._validate() if cfg.val else {}
            row = {"epoch": epoch, **{f"train/{k}_loss": float(v) for k, v in zip(LOSS_NAMES, losses)},
                   **{f"train/{k}": v for k, v in extra.items()}, **metrics,
                   **{f"x/lr{j}": g["lr"] for j, g in enumerate(self.optimizer.param_groups)},
                   "time_s": elapsed}
            self.history.append(row)
            fitness = metrics.get("fitness", 0.0)
            if fitness >= self.best_fitness:
                self.best_fitness, self.best_epoch = fitness, epoch
                self.best_state = {k: v.detach().cpu().clone() for k, v in self.ema.ema.state_dict().items()}
                self._save_best(metrics)
            stop = cfg.patience > 0 and epoch - self.best_epoch >= cfg.patience
            self.stopped = stop
            if stop:
                LOGGER.info("stopping early: no better fitness for %d epochs (best %.4g at epoch %d)",
                            cfg.patience, self.best_fitness, self.best_epoch + 1)
            if self.on_progress is not None:
                metrics_line = "  ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in row.items() if k.startswith("metrics/"))
                report(self.on_progress, "", 0, 0, message=f"epoch {epoch + 1}/{cfg.epochs}: "
                       f"{metrics_line or 'done'}")
        rng = dist_utils.gather_objects(rng_state())
        if self.ctx.is_main:
            atomic_torch_save(checkpoint_dict(self, epoch, rng), self.last_path)
            write_results_csv(self.history, self.out_dir / "results.csv")
        row, stop = dist_utils.broadcast_object((row, stop))
        return row, stop

    def _save_best(self, metrics: dict[str, float]) -> None:
        atomic_torch_save(model_record(self, self.ema.ema, metrics), self.best_path)

    def _finish(self, stopped_early: bool) -> TrainResult:
        best_model = None
        if self.ctx.is_main:
            best_model = copy.deepcopy(self.ema.ema).cpu().eval()
            if self.best_state is not None:
                best_model.load_state_dict(self.best_state)
        dist_utils.barrier()
        return TrainResult(out_dir=self.out_dir, best_path=self.best_path, last_path=self.last_path,
                           best_fitness=self.best_fitness, best_epoch=self.best_epoch,
                           epochs_completed=self.epoch + 1, stopped_early=stopped_early,
                           history=list(self.history), model=best_model if best_model is not None else
                           unwrap(self.model))
