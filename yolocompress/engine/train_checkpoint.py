"""The training checkpoint ``weights/last.pt``: its format, written from a :class:`Trainer` and read back.

Everything needed to continue a run exactly, as plain data (``torch.load(weights_only=True)`` reads it):
the model and EMA weights, optimizer and AMP scaler states, gradients accumulated but not yet applied, the
RNG states of every process, counters, the best fitness so far, the config, hyperparameters, data settings
and the per-epoch history. ``yolocompress.io.checkpoint.load_model`` loads its EMA model (``"ema"`` is in our
model format). ``best.pt`` is :func:`model_record` of the best EMA model alone.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from yolocompress.engine.ema import unwrap
from yolocompress.engine.rng import seed_everything, set_rng_state
from yolocompress.errors import InputError
from yolocompress.io.ultralytics import load_error

if TYPE_CHECKING:
    from yolocompress.engine.trainer import Trainer

LOGGER = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "yolocompress-train"
CHECKPOINT_VERSION = 1


def plain_data(value: Any) -> Any:
    """``value`` as plain data (dataclasses, paths and tuples turned into dicts, strings and lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def model_config(model: nn.Module) -> dict[str, Any]:
    """The config that rebuilds ``model`` (a pruned model's real sizes included)."""
    model = unwrap(model)
    if hasattr(model, "resolved_config"):
        return model.resolved_config()
    return copy.deepcopy(getattr(model, "yaml", {}))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (``last.pt``) with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file, or one that needs unpickling code
        raise load_error(path, exc, "training checkpoint") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a yolocompress training checkpoint (last.pt)")
    if ckpt.get("format_version", 0) > CHECKPOINT_VERSION:
        raise InputError(f"{path} was written by a newer yolocompress")
    return ckpt


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _pending_grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().cpu() for n, p in module.named_parameters() if p.grad is not None}


def model_record(trainer: Trainer, model: nn.Module, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """``model`` in our checkpoint format (a wrapped model keeps its raw state_dict and original config)."""
    from yolocompress.io.checkpoint import history_entry, model_to_dict

    entry = history_entry("train", epochs=trainer.epoch + 1, imgsz=trainer.config.imgsz,
                          data=plain_data(getattr(trainer.data_cfg, "yaml_path", None)))
    if trainer.wrap_model is None:
        return model_to_dict(model, imgsz=trainer.config.imgsz, history=[entry], metrics=metrics)
    return {"config": trainer.model_config, "wrapped": True, "state_dict": _cpu_state(model),
            "history": [entry], "metrics": dict(metrics or {})}


def checkpoint_dict(trainer: Trainer, epoch: int, rng: list[dict[str, Any]]) -> dict[str, Any]:
    """The checkpoint of ``trainer`` after ``epoch`` (rank 0), ``rng`` holding every process's RNG state."""
    model = unwrap(trainer.model)
    assert trainer.ema is not None
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "step": trainer.step,
        "last_opt_step": trainer.last_opt_step,
        "best_fitness": trainer.best_fitness,
        "best_epoch": trainer.best_epoch,
        "model_config": trainer.model_config,
        "model": _cpu_state(model),
        "ema": model_record(trainer, trainer.ema.ema),
        "ema_updates": trainer.ema.updates,
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "pending_grads": _pending_grads(model),
        "extra_modules": _cpu_state(trainer.extra_modules),
        "extra_pending_grads": _pending_grads(trainer.extra_modules),
        "rng": rng,
        "train_config": trainer.config.to_dict(),
        "hyp": trainer.hyp.to_dict(),
        "data": plain_data(trainer.data_cfg),
        "wrapped": trainer.wrap_model is not None,
        "stopped_early": trainer.stopped,
        "history": trainer.history,
    }


def restore_checkpoint(trainer: Trainer, ckpt: dict[str, Any]) -> None:
    """Put ``trainer`` (set up: model, optimizer, scaler, EMA built) back where ``ckpt`` was written; its
    next epoch is ``trainer.start_epoch``. ``InputError`` when the weights do not fit or the run is over."""
    config = trainer.config
    try:
        unwrap(trainer.model).load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise InputError(f"{config.resume}: weights do not fit the model: {first_line}") from exc
    trainer.optimizer.load_state_dict(ckpt["optimizer"])
    trainer.scaler.load_state_dict(ckpt["scaler"])
    if trainer.ema is not None:
        trainer.ema.ema.load_state_dict(ckpt["ema"]["state_dict"])
        trainer.ema.updates = int(ckpt["ema_updates"])
    params = dict(unwrap(trainer.model).named_parameters())
    for name, grad in ckpt.get("pending_grads", {}).items():
        params[name].grad = grad.to(trainer.device)
    if ckpt.get("extra_modules"):
        trainer.extra_modules.load_state_dict(ckpt["extra_modules"])
        extra = dict(trainer.extra_modules.named_parameters())
        for name, grad in ckpt.get("extra_pending_grads", {}).items():
            extra[name].grad = grad.to(trainer.device)
    trainer.start_epoch = int(ckpt["epoch"]) + 1
    if trainer.start_epoch >= config.epochs or ckpt.get("stopped_early"):
        how = "stopped early" if ckpt.get("stopped_early") else "finished"
        raise InputError(f"{config.resume}: that run {how} after epoch {ckpt['epoch'] + 1} of "
                         f"{config.epochs}; nothing to resume")
    trainer.last_opt_step = int(ckpt["last_opt_step"])
    trainer.step = int(ckpt["step"])
    trainer.best_fitness = float(ckpt["best_fitness"])
    trainer.best_epoch = int(ckpt["best_epoch"])
    trainer.history = [dict(row) for row in ckpt["history"]]
    if trainer.ctx.is_main and trainer.best_path.is_file() and trainer.wrap_model is None:
        from yolocompress.io.checkpoint import load_model

        trainer.best_state = {k: v.cpu() for k, v in load_model(trainer.best_path).state_dict().items()}
    LOGGER.info("resuming %s at epoch %d of %d", config.resume, trainer.start_epoch + 1, config.epochs)
    states = ckpt["rng"]
    if len(states) == trainer.ctx.world_size:
        set_rng_state(states[trainer.ctx.rank])
    else:  # a different number of processes: reproducible, but not the interrupted run
        seed_everything(config.seed + trainer.ctx.rank + trainer.start_epoch)
