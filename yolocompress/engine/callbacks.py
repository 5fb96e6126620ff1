"""The trainer's extension points: callbacks, extra loss terms and captured intermediate features.

- ``Callback``: override any of its no-op hooks; each receives the ``Trainer`` first (``trainer.model``,
  ``trainer.ema``, ``trainer.optimizer``, ``trainer.epoch`` ...). Hooks run on every process of a
  distributed run, so state changes (pruning masks) stay identical across processes.
- ``ExtraLoss``: a callable ``(batch, student_outputs, features) -> (loss, items)`` added to the detection
  loss (distillation). It may name the layers whose outputs it needs in ``feature_layers``.
- ``FeatureCapture``: forward hooks that record the outputs of ``model.model[i]`` during a forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence, runtime_checkable

from torch import Tensor, nn

from yolocompress.engine.ema import unwrap

if TYPE_CHECKING:
    from yolocompress.engine.trainer import Trainer


class Callback:
    """Base class of trainer callbacks; every hook does nothing unless overridden."""

    def on_train_start(self, trainer: Trainer) -> None:
        """After the optimizer is built and any checkpoint resumed, before the first epoch."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before the first batch of ``epoch`` (0-based)."""

    def on_batch_end(self, trainer: Trainer, step: int) -> None:
        """After the backward pass of batch ``step`` (0-based, counted from the start of training)."""

    def on_after_optimizer_step(self, trainer: Trainer) -> None:
        """Right after an optimizer step and before the EMA update (re-apply pruning masks here)."""

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """After validation and the epoch's checkpoint; ``metrics`` is the epoch's results row."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last epoch (or an early stop), once the final weights are written."""


class CallbackList(Callback):
    """Calls each hook of several callbacks in order."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must derive from Callback, got {type(cb).__name__}")

    def on_train_start(self, trainer: Trainer) -> None:
        for cb in self.callbacks:
            cb.on_train_start(trainer)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        for cb in self.callbacks:
            cb.on_epoch_start(trainer, epoch)

    def on_batch_end(self, trainer: Trainer, step: int) -> None:
        for cb in self.callbacks:
            cb.on_batch_end(trainer, step)

    def on_after_optimizer_step(self, trainer: Trainer) -> None:
        for cb in self.callbacks:
            cb.on_after_optimizer_step(trainer)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(trainer, metrics)

    def on_train_end(self, trainer: Trainer) -> None:
        for cb in self.callbacks:
            cb.on_train_end(trainer)


@dataclass
class Batch:
    """One training batch as the model sees it.

    Attributes:
        imgs (Tensor[B, 3, H, W]): float images in 0..1 on the training device.
        targets (Tensor[n, 6]): ``image_index, class, cx, cy, w, h`` (normalised) on the training device.
        paths: image files; shapes: letterbox geometry per image (see docs/architecture.md).
    """

    imgs: Tensor
    targets: Tensor
    paths: Sequence[str]
    shapes: Sequence[Any]


@runtime_checkable
class ExtraLoss(Protocol):
    """A loss term added to the detection loss.

    ``__call__(batch, student_outputs, features)`` gets the ``Batch``, the model's raw train-mode outputs
    (nl tensors ``[B, na, ny, nx, no]``) and ``features`` ``{layer index: output}`` of the layers listed in
    the optional attribute ``feature_layers``. It returns ``(loss, items)``: a scalar on the scale of one
    image (the trainer multiplies it by the batch size, as YOLOv5 does with the detection loss) and a dict
    of floats to log.
    """

    def __call__(self, batch: Batch, student_outputs: list[Tensor],
                 features: dict[int, Tensor]) -> tuple[Tensor, dict[str, float]]: ...


def feature_layers(extra_losses: Iterable[Any]) -> list[int]:
    """The sorted union of every extra loss's ``feature_layers``."""
    return sorted({int(i) for loss in extra_losses for i in getattr(loss, "feature_layers", ())})


class FeatureCapture:
    """Record the outputs of ``model.model[i]`` for the given layer indices on each forward pass.

    Use as a context manager (hooks are removed on exit); ``features`` holds the outputs of the latest
    forward, keyed by layer index, with their autograd history (so a loss on them trains the model).
    """

    def __init__(self, model: nn.Module, layers: Sequence[int]) -> None:
        self.features: dict[int, Tensor] = {}
        layer_list = unwrap(model).model
        self._handles = []
        for i in layers:
            if not -len(layer_list) <= i < len(layer_list):
                raise IndexError(f"feature layer {i} out of range: the model has {len(layer_list)} layers")
            self._handles.append(layer_list[i].register_forward_hook(self._hook(i)))

    def _hook(self, index: int):
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            self.features[index] = output
        return hook

    def clear(self) -> None:
        self.features = {}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.features = {}

    def __enter__(self) -> "FeatureCapture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
