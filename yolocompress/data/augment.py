"""Training augmentations of YOLOv5 (hyp.scratch-low semantics), on uint8 tensors with numpy boxes.

Images are ``uint8 Tensor[3, H, W]`` RGB; boxes are ``float32 ndarray[n, 5]`` rows ``class, x1, y1, x2,
y2`` in pixels. Every random draw comes from the ``numpy.random.Generator`` passed in, so a sample is a
pure function of its generator's seed.

The geometric warp is written here rather than with ``torchvision.transforms.v2.functional.affine``:
YOLOv5's warp changes the canvas size (a 2s x 2s mosaic becomes an s x s image), which v2's affine
cannot do without warping four times the pixels, and its shear/rotation parametrisation differs.
HSV jitter multiplies hue, saturation and value by random gains, as YOLOv5 (v2's ``ColorJitter`` adds
a hue shift and blends saturation with grey, which are different augmentations).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from yolocompress.data.images import PAD_VALUE
from yolocompress.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation hyperparameters; names, meaning and defaults of YOLOv5's ``hyp.scratch-low.yaml``.

    ``hsv_*``: gain ranges (fractions); ``degrees``: rotation range (deg); ``translate``: fraction of the
    image; ``scale``: gain range (+/-); ``shear``: deg; ``perspective``: 0..0.001; ``flipud``,
    ``fliplr``, ``mosaic``, ``mixup``: probabilities.
    """

    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    perspective: float = 0.0
    flipud: float = 0.0
    fliplr: float = 0.5
    mosaic: float = 1.0
    mixup: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"augmentation {f.name} must be a finite number >= 0, got {v!r}")
            object.__setattr__(self, f.name, float(v))
        for name in ("hsv_h", "hsv_s", "hsv_v", "flipud", "fliplr", "mosaic", "mixup", "translate"):
            if getattr(self, name) > 1:
                raise InputError(f"augmentation {name} must be in [0, 1], got {getattr(self, name)}")
        if self.scale >= 1:
            raise InputError(f"augmentation scale must be < 1 (gain range 1 +/- scale), got {self.scale}")

    @classmethod
    def from_hyp(cls, hyp: Any) -> "AugmentConfig":
        """Pick the augmentation fields from a flat hyp mapping (a YOLOv5 hyp YAML) or object; an object
        with an ``augment`` attribute holding an AugmentConfig (``engine.loss.Hyp``) gives that.

        Missing fields keep their defaults, other keys (learning rate, loss gains) are ignored;
        ``copy_paste`` needs segment labels and is not supported (a non-zero value is logged and ignored).
        An object with none of the fields is an InputError (it is not a hyp).
        """
        if isinstance(hyp, cls):
            return hyp
        if isinstance(getattr(hyp, "augment", None), cls):
            return hyp.augment
        get = hyp.get if isinstance(hyp, Mapping) else (lambda k, d=None: getattr(hyp, k, d))
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(hyp, Mapping) and all(get(k) is None for k in names):
            raise InputError(f"{type(hyp).__name__} has no augmentation fields ({', '.join(names[:3])}, ...)")
        if get("copy_paste", 0):
            logger.warning("hyp copy_paste=%s ignored: copy-paste needs segment labels", get("copy_paste"))
        return cls(**{k: get(k) for k in names if get(k) is not None})


def random_affine(img: Tensor, boxes: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
                  border: int = 0) -> tuple[Tensor, np.ndarray]:
    """YOLOv5 ``random_perspective``: rotate, scale, shear, perspective and translate, then drop boxes
    that became too small, thin or cut off (:func:`box_candidates`).

    The output is ``border`` pixels smaller on every side (``border=-s//2`` turns a 2s x 2s mosaic into
    an s x s image). ``boxes`` are ``[n, 5]`` class + x1y1x2y2 pixels; the survivors are returned in the
    same form, clipped to the output.
    """
    in_h, in_w = img.shape[-2:]
    out_h, out_w = in_h + 2 * border, in_w + 2 * border
    m, gain = affine_matrix(cfg, rng, (in_h, in_w), (out_h, out_w))
    if border != 0 or not np.allclose(m, np.eye(3)):
        img = warp(img, m, (out_h, out_w))
    if len(boxes):
        new = transform_boxes(boxes[:, 1:5], m, (out_h, out_w))
        keep = box_candidates(boxes[:, 1:5] * gain, new)
        boxes = np.concatenate([boxes[keep, :1], new[keep]], 1).astype(np.float32)
    return img, boxes


def affine_matrix(cfg: AugmentConfig, rng: np.random.Generator, in_hw: tuple[int, int],
                  out_hw: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The random 3x3 pixel transform ``T @ S @ R @ P @ C`` of YOLOv5 and its scale gain.

    C moves the input centre to the origin; P adds perspective; R rotates by ``U(-degrees, degrees)``
    (counter-clockwise on screen) and scales by ``U(1 - scale, 1 + scale)``; S shears both axes by
    ``U(-shear, shear)`` degrees; T moves the origin to ``U(0.5 -/+ translate)`` of the output size.
    """
    (in_h, in_w), (out_h, out_w) = in_hw, out_hw
    c = np.eye(3)
    c[0, 2], c[1, 2] = -in_w / 2, -in_h / 2
    p = np.eye(3)
    p[2, 0], p[2, 1] = rng.uniform(-cfg.perspective, cfg.perspective, 2)
    angle = math.radians(rng.uniform(-cfg.degrees, cfg.degrees))
    gain = float(rng.uniform(1 - cfg.scale, 1 + cfg.scale))
    r = np.eye(3)
    r[:2, :2] = gain * np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    s = np.eye(3)
    s[0, 1], s[1, 0] = np.tan(np.radians(rng.uniform(-cfg.shear, cfg.shear, 2)))
    t = np.eye(3)
    tx, ty = rng.uniform(0.5 - cfg.translate, 0.5 + cfg.translate, 2)
    t[0, 2], t[1, 2] = tx * out_w, ty * out_h
    return t @ s @ r @ p @ c, gain


def warp(img: Tensor, m: np.ndarray, out_hw: tuple[int, int], value: int = PAD_VALUE) -> Tensor:
    """Warp ``img (uint8 Tensor[3, H, W])`` by the 3x3 pixel transform ``m`` (output = m @ input),
    bilinear, filling outside pixels with ``value``; like ``cv2.warpAffine``/``warpPerspective``."""
    out_h, out_w = out_hw
    in_h, in_w = img.shape[-2:]
    inv = np.linalg.inv(m)
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64), torch.arange(out_w, dtype=torch.float64),
                            indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ torch.from_numpy(inv).T
    src = pts[..., :2] / pts[..., 2:]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels (cv2's convention)
    grid = torch.stack([src[..., 0] * (2 / max(in_w - 1, 1)) - 1, src[..., 1] * (2 / max(in_h - 1, 1)) - 1], -1)
    x = img[None].float() - value
    y = F.grid_sample(x, grid[None].float(), mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    return (y + value).round_().clamp_(0, 255).to(torch.uint8)


def transform_boxes(xyxy: np.ndarray, m: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Map ``xyxy (ndarray[n, 4])`` by ``m``: the box around the four transformed corners, clipped."""
    n = len(xyxy)
    corners = np.ones((n * 4, 3))
    corners[:, :2] = xyxy[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    corners = corners @ m.T
    corners = (corners[:, :2] / corners[:, 2:3]).reshape(n, 8)
    x, y = corners[:, 0::2], corners[:, 1::2]
    out = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], 1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, out_hw[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, out_hw[0])
    return out


def box_candidates(before: np.ndarray, after: np.ndarray, wh_thr: float = 2, ar_thr: float = 100,
                   area_thr: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """Boxes worth keeping after a warp (YOLOv5's rule): wider and taller than ``wh_thr`` pixels, at least
    ``area_thr`` of their (scaled) area left after clipping, aspect ratio below ``ar_thr``.

    ``before``, ``after``: ``ndarray[n, 4]`` x1y1x2y2 pixels (``before`` already multiplied by the scale
    gain). Returns a boolean mask ``[n]``.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def mosaic4(images: Sequence[Tensor], labels: Sequence[np.ndarray], s: int,
            center: tuple[int, int], value: int = PAD_VALUE) -> tuple[Tensor, np.ndarray]:
    """Place four images around ``center=(xc, yc)`` on a 2s x 2s canvas: top-left, top-right,
    bottom-left, bottom-right, each touching the centre with one corner and cut at the canvas edge.

    ``labels``: per image ``[n, 5]`` class + normalised cx, cy, w, h. Returns the canvas
    ``uint8 Tensor[3, 2s, 2s]`` and the boxes ``[n, 5]`` class + x1y1x2y2 canvas pixels, clipped.
    """
    xc, yc = center
    size = 2 * s
    canvas = torch.full((3, size, size), value, dtype=torch.uint8)
    out = []
    for k, (img, lb) in enumerate(zip(images, labels)):
        h, w = img.shape[-2:]
        x0 = xc - w if k in (0, 2) else xc
        y0 = yc - h if k in (0, 1) else yc
        x1, y1, x2, y2 = max(x0, 0), max(y0, 0), min(x0 + w, size), min(y0 + h, size)
        if x2 > x1 and y2 > y1:
            canvas[:, y1:y2, x1:x2] = img[:, y1 - y0:y2 - y0, x1 - x0:x2 - x0]
        out.append(xywhn_to_xyxy(lb, w, h, x0, y0))
    boxes = np.concatenate(out, 0)
    boxes[:, 1:5] = boxes[:, 1:5].clip(0, size)
    return canvas, boxes


def mixup(img1: Tensor, boxes1: np.ndarray, img2: Tensor, boxes2: np.ndarray,
          rng: np.random.Generator) -> tuple[Tensor, np.ndarray]:
    """Blend two training images with a Beta(32, 32) weight and keep both box sets (YOLOv5 MixUp)."""
    r = float(rng.beta(32.0, 32.0))
    img = (img1.float() * r + img2.float() * (1 - r)).round_().clamp_(0, 255).to(torch.uint8)
    return img, np.concatenate([boxes1, boxes2], 0)


def augment_hsv(img: Tensor, gains: Sequence[float]) -> Tensor:
    """Multiply hue, saturation and value of ``img (uint8 Tensor[3, H, W])`` by ``gains = (gh, gs, gv)``.

    Hue wraps around; saturation and value are clipped to [0, 1].
    """
    gh, gs, gv = (float(g) for g in gains)
    if gh == gs == gv == 1:
        return img
    x = img.float() / 255
    r, g, b = x[0], x[1], x[2]
    v, _ = x.max(0)
    c = v - x.min(0).values
    safe_c = torch.where(c > 0, c, torch.ones_like(c))
    h = torch.where(v == r, ((g - b) / safe_c) % 6, torch.where(v == g, (b - r) / safe_c + 2, (r - g) / safe_c + 4))
    h = torch.where(c > 0, h / 6, torch.zeros_like(h))
    s = torch.where(v > 0, c / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    h = (h * gh) % 1.0
    s = (s * gs).clamp_(0, 1)
    v = (v * gv).clamp_(0, 1)
    # HSV -> RGB: channel n in (5, 3, 1) is v - v*s*clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6
    n = torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1)
    k = (n + h[None] * 6) % 6
    out = v[None] - (v * s)[None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return (out * 255).round_().clamp_(0, 255).to(torch.uint8)


def xywhn_to_xyxy(labels: np.ndarray, w: float, h: float, padw: float = 0, padh: float = 0) -> np.ndarray:
    """``[n, 5]`` class + normalised cx, cy, w, h -> class + pixel x1y1x2y2 in a ``w x h`` image offset
    by ``(padw, padh)``."""
    out = labels.astype(np.float32, copy=True)
    out[:, 1] = w * (labels[:, 1] - labels[:, 3] / 2) + padw
    out[:, 2] = h * (labels[:, 2] - labels[:, 4] / 2) + padh
    out[:, 3] = w * (labels[:, 1] + labels[:, 3] / 2) + padw
    out[:, 4] = h * (labels[:, 2] + labels[:, 4] / 2) + padh
    return out


def xyxy_to_xywhn(boxes: np.ndarray, w: int, h: int, eps: float = 1e-3) -> np.ndarray:
    """``[n, 5]`` class + pixel x1y1x2y2 -> class + cx, cy, w, h normalised to ``w x h``, after clipping
    the corners to ``[0, w - eps] x [0, h - eps]`` (as YOLOv5's ``xyxy2xywhn(clip=True, eps=1e-3)``)."""
    b = boxes.astype(np.float32, copy=True)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, w - eps)
    b[:, [2, 4]] = b[:, [2, 4]].clip(0, h - eps)
    out = np.empty_like(b)
    out[:, 0] = b[:, 0]
    out[:, 1] = (b[:, 1] + b[:, 3]) / 2 / w
    out[:, 2] = (b[:, 2] + b[:, 4]) / 2 / h
    out[:, 3] = (b[:, 3] - b[:, 1]) / w
    out[:, 4] = (b[:, 4] - b[:, 2]) / h
    return out
