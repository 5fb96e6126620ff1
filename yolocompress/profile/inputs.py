"""The dummy input a model is measured or exported with: image size and channel count."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def image_hw(imgsz: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` in pixels from ``640`` (square) or ``(H, W)``."""
    if isinstance(imgsz, int):
        hw = (imgsz, imgsz)
    else:
        if len(imgsz) != 2:
            raise ValueError(f"imgsz must be an int or (H, W), got {imgsz!r}")
        hw = (int(imgsz[0]), int(imgsz[1]))
    if min(hw) < 1:
        raise ValueError(f"imgsz must be positive, got {imgsz!r}")
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
