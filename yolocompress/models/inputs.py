"""The dummy input a model is measured or exported with: image size and channel count."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from yolocompress.errors import InputError


def image_hw(imgsz: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` in pixels from ``640`` (square) or ``(H, W)``."""
    if isinstance(imgsz, int):
        hw = (imgsz, imgsz)
    else:
        if len(imgsz) != 2:
            raise InputError(f"imgsz must be an int or (H, W), got {imgsz!r}")
        hw = (int(imgsz[0]), int(imgsz[1]))
    if min(hw) < 1:
        raise InputError(f"imgsz must be positive, got {imgsz!r}")
    return hw


def input_channels(model: nn.Module) -> int:
    """Input channels of ``model``: its ``input_channels`` attribute (DetectionModel), else its config's
    ``ch``, else 3 (RGB). The first convolution cannot tell: a Focus layer sees 4x the image channels."""
    ch = getattr(model, "input_channels", None)
    if isinstance(ch, int):
        return ch
    cfg = getattr(model, "yaml", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("ch"), int):
        return cfg["ch"]
    return 3


def max_stride(model: nn.Module) -> int | None:
    """The model's largest stride in pixels (its coarsest Detect level, e.g. 32 or 64), ``None`` when it has
    no ``stride`` attribute (a plain module). Image sizes must be multiples of it."""
    stride = getattr(model, "stride", None)
    return None if stride is None else int(torch.as_tensor(stride).max())


def check_image_size(model: nn.Module, hw: tuple[int, int]) -> None:
    """Raise ``InputError`` unless ``(H, W)`` are multiples of the model's largest stride (if it has one)."""
    s = max_stride(model)
    if s is None:
        return
    if hw[0] % s or hw[1] % s:
        raise InputError(f"image size {hw[0]}x{hw[1]} is not a multiple of the model's largest stride {s}")
