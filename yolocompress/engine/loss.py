"""The YOLOv5 detection loss and the training hyperparameters it shares with the optimizer.

``DetectionLoss`` reproduces the loss of Ultralytics YOLOv5 (v6/v7): every ground-truth box is matched
to each anchor whose width and height ratios stay within ``anchor_t``, in its own grid cell and the two
neighbouring cells nearer to its centre (so a target trains up to 3 cells x na anchors per level).
Box loss is 1 - CIoU, objectness is BCE against the (detached) IoU of the matched prediction, the class
loss BCE against (optionally smoothed) one-hot targets.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolocompress.data.augment import AugmentConfig
from yolocompress.errors import InputError
from yolocompress.yamlfile import load_yaml_mapping

# Objectness weight of each output level, finest first (YOLOv5: P3-P5, or P3-P7 for more levels).
_BALANCE = {3: (4.0, 1.0, 0.4)}
_BALANCE_DEFAULT = (4.0, 1.0, 0.25, 0.06, 0.02)
# Neighbouring-cell offsets: own cell, then +x, +y, -x, -y, half a cell each.
_OFFSETS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32) * 0.5


@dataclass(frozen=True)
class Hyp:
    """Training hyperparameters; defaults are YOLOv5's ``hyp.scratch-low.yaml``.

    Loss gains (``box``, ``cls``, ``obj``) are the values for 3 output levels, 80 classes and 640 px;
    ``DetectionLoss`` rescales them as YOLOv5's ``train.py`` does. ``augment`` holds the data package's
    augmentation settings, so that one flat YOLOv5 hyp file (``from_dict``) configures a whole run.
    """

    lr0: float = 0.01  # initial learning rate (SGD)
    lrf: float = 0.01  # final learning rate = lr0 * lrf
    momentum: float = 0.937
    weight_decay: float = 5e-4  # for a nominal batch of 64
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    box: float = 0.05
    cls: float = 0.5
    cls_pw: float = 1.0  # BCE positive weight, classes
    obj: float = 1.0
    obj_pw: float = 1.0  # BCE positive weight, objectness
    iou_t: float = 0.20  # unused by YOLOv5's loss; kept so its hyp files load
    anchor_t: float = 4.0  # max width/height ratio between a target and an anchor it is matched to
    fl_gamma: float = 0.0  # focal loss gamma (0: plain BCE)
    label_smoothing: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.augment, AugmentConfig):
            raise InputError(f"hyp augment must be an AugmentConfig, got {type(self.augment).__name__}")
        for f in _number_fields():
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"hyp {f} must be a finite number, got {value!r}")
            if value < 0:
                raise InputError(f"hyp {f} must be >= 0, got {value}")
            object.__setattr__(self, f, float(value))
        if self.lr0 <= 0:
            raise InputError(f"hyp lr0 must be > 0, got {self.lr0}")
        if not 0 < self.lrf <= 1:
            raise InputError(f"hyp lrf must be in (0, 1], got {self.lrf}")
        for name in ("momentum", "warmup_momentum"):
            if not getattr(self, name) < 1:
                raise InputError(f"hyp {name} must be < 1, got {getattr(self, name)}")
        if self.anchor_t <= 1:
            raise InputError(f"hyp anchor_t must be > 1, got {self.anchor_t}")
        if self.label_smoothing >= 1:
            raise InputError(f"hyp label_smoothing must be < 1, got {self.label_smoothing}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Hyp":
        """Build from a flat mapping (a parsed YOLOv5 hyp YAML); unknown keys are an error (they catch typos).

        Augmentation keys go to ``augment``; YOLOv5's ``copy_paste`` (ignored by the data package unless 0)
        and optional ``anchors`` (used by autoanchor) are accepted.
        """
        aug_names = {f.name for f in dataclasses.fields(AugmentConfig)} | {"copy_paste"}
        own = {k: v for k, v in values.items() if k not in aug_names and k != "anchors"}
        unknown = sorted(map(str, set(own) - set(_number_fields())))
        if unknown:
            raise InputError(f"unknown hyp key(s): {', '.join(unknown)}")
        augment = AugmentConfig.from_hyp({k: v for k, v in values.items() if k in aug_names})
        return cls(**own, augment=augment)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "Hyp":
        """Read a YOLOv5 hyp file with the bounded YAML loader (an empty file gives the defaults)."""
        return cls.from_dict(load_yaml_mapping(path, "hyp file", "hyperparameters"))

    def to_dict(self) -> dict[str, float]:
        """The flat YOLOv5-style mapping (``from_dict`` reads it back)."""
        return {**{f: getattr(self, f) for f in _number_fields()}, **dataclasses.asdict(self.augment)}


def _number_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(Hyp) if f.name != "augment"]


@dataclass(frozen=True)
class LossGains:
    """The weights of the detection loss's parts for one model and image size (``loss_gains``).

    ``box``, ``obj``, ``cls``: the gains of the box, objectness and class parts; ``balance``: the objectness
    weight of each output level, finest first.
    """

    box: float
    obj: float
    cls: float
    balance: tuple[float, ...]


def loss_gains(hyp: Hyp, nl: int, nc: int, imgsz: int) -> LossGains:
    """``hyp``'s gains rescaled for ``nl`` output levels, ``nc`` classes and ``imgsz`` pixels, as YOLOv5's
    ``train.py`` does (its values are for 3 levels, 80 classes and 640 px): box ``x 3/nl``, classes
    ``x nc/80 x 3/nl``, objectness ``x (imgsz/640)^2 x 3/nl``."""
    return LossGains(box=hyp.box * 3 / nl, obj=hyp.obj * (imgsz / 640) ** 2 * 3 / nl,
                     cls=hyp.cls * nc / 80 * 3 / nl, balance=tuple(_BALANCE.get(nl, _BALANCE_DEFAULT)[:nl]))


def bernoulli_kl(logits: Tensor, reference_logits: Tensor) -> Tensor:
    """Elementwise KL(reference || logits) of Bernoulli variables given by logits (>= 0, 0 where they are
    equal): the BCE with logits against ``sigmoid(reference)`` minus the reference's entropy, written with
    log-sigmoids so that no two large terms cancel; its gradient is ``sigmoid(logits) - sigmoid(reference)``.
    Output distillation and the pruning search's head distortion compare detector outputs with it."""
    p = reference_logits.sigmoid()
    return (p * (F.logsigmoid(reference_logits) - F.logsigmoid(logits))
            + (1 - p) * (F.logsigmoid(-reference_logits) - F.logsigmoid(-logits)))


def bbox_ciou(box1: Tensor, box2: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU of matching boxes (Zheng et al. 2020), as YOLOv5 computes it.

    Args:
        box1, box2 (Tensor[..., 4]): ``cx, cy, w, h`` in any common unit; widths and heights > 0.
    Returns:
        Tensor[...]: IoU minus the normalised centre distance and the aspect-ratio penalty, in (-1, 1].
        The aspect-ratio trade-off weight ``alpha`` is treated as a constant, as in the paper.
    """
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.minimum(b1x2, b2x2) - torch.maximum(b1x1, b2x1)).clamp(0) * (
        torch.minimum(b1y2, b2y2) - torch.maximum(b1y1, b2y1)
    ).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.maximum(b1x2, b2x2) - torch.minimum(b1x1, b2x1)  # enclosing box
    ch = torch.maximum(b1y2, b2y2) - torch.minimum(b1y1, b2y1)
    c2 = cw**2 + ch**2 + eps  # squared diagonal of the enclosing box
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2  # squared centre distance
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class FocalBCE(nn.Module):
    """Focal loss (Lin et al. 2017) on top of ``BCEWithLogitsLoss``; mean over all elements."""

    def __init__(self, bce: nn.BCEWithLogitsLoss, gamma: float, alpha: float = 0.25) -> None:
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss(pos_weight=bce.pos_weight, reduction="none")
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        loss = self.bce(logits, target)
        p = logits.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)
        alpha_t = target * self.alpha + (1 - target) * (1 - self.alpha)
        return (loss * alpha_t * (1.0 - p_t) ** self.gamma).mean()


@dataclass
class LevelTargets:
    """Targets matched to one output level; ``n`` = number of (target, anchor, cell) matches.

    Attributes:
        image, anchor, gy, gx (Tensor[n] long): where the matched prediction lives in ``[B, na, ny, nx]``.
        box (Tensor[n, 4]): target ``cx, cy, w, h`` in grid units, ``cx, cy`` relative to the cell corner.
        anchor_wh (Tensor[n, 2]): the matched anchor's size in grid units.
        cls (Tensor[n] long): class index.
    """

    image: Tensor
    anchor: Tensor
    gy: Tensor
    gx: Tensor
    box: Tensor
    anchor_wh: Tensor
    cls: Tensor


def _detect_head(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return model.model[-1]


class DetectionLoss:
    """YOLOv5 loss for a model whose last layer is ``Detect`` (see docs/architecture.md).

    Args:
        model: the detection model (or a DDP wrapper of it); read for ``nc``, ``nl``, ``na`` and anchors.
        hyp: hyperparameters; gains are rescaled for ``nl``, ``nc`` and ``imgsz`` as YOLOv5's train.py does.
        imgsz: training image size in pixels.
    """

    def __init__(self, model: nn.Module, hyp: Hyp | None = None, imgsz: int = 640) -> None:
        hyp = hyp or Hyp()
        head = _detect_head(model)
        self.nc, self.nl, self.na = int(head.nc), int(head.nl), int(head.na)
        self.anchors = head.anchors.detach().float().clone()  # Tensor[nl, na, 2], grid units
        self.anchor_t = hyp.anchor_t
        gains = loss_gains(hyp, self.nl, self.nc, imgsz)
        self.balance = gains.balance
        self.box_gain, self.obj_gain, self.cls_gain = gains.box, gains.obj, gains.cls
        self.cls_pos = 1.0 - 0.5 * hyp.label_smoothing  # smoothed BCE targets
        self.cls_neg = 0.5 * hyp.label_smoothing
        device = self.anchors.device
        self.bce_cls: nn.Module = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([hyp.cls_pw], device=device))
        self.bce_obj: nn.Module = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([hyp.obj_pw], device=device))
        if hyp.fl_gamma > 0:
            self.bce_cls = FocalBCE(self.bce_cls, hyp.fl_gamma)
            self.bce_obj = FocalBCE(self.bce_obj, hyp.fl_gamma)

    def to(self, device: torch.device | str) -> "DetectionLoss":
        self.anchors = self.anchors.to(device)
        self.bce_cls.to(device)
        self.bce_obj.to(device)
        return self

    def __call__(self, preds: Sequence[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        """Compute the loss of one batch.

        Args:
            preds: nl raw outputs ``Tensor[B, na, ny, nx, nc + 5]`` (train-mode model output, logits).
            targets (Tensor[n, 6]): ``image_index, class, cx, cy, w, h``, box normalised to the image.
        Returns:
            ``(loss * B, items)``: the scalar total loss times the batch size (YOLOv5's convention) and
            the detached ``Tensor[3]`` of its box, objectness and class parts (per image).
        """
        if len(preds) != self.nl:
            raise ValueError(f"expected {self.nl} output levels, got {len(preds)}")
        device = preds[0].device
        if self.box_gain == self.obj_gain == self.cls_gain == 0:  # e.g. QAT by distillation alone
            return torch.zeros((), device=device), torch.zeros(3, device=device)  # no target assignment
        if self.anchors.device != device:
            self.to(device)
        lbox = torch.zeros((), device=device)
        lobj = torch.zeros((), device=device)
        lcls = torch.zeros((), device=device)
        for i, (p, t) in enumerate(zip(preds, self.build_targets(preds, targets.to(device)))):
            p = p.float()
            tobj = torch.zeros(p.shape[:4], device=device)
            n = t.image.shape[0]
            if n:
                ps = p[t.image, t.anchor, t.gy, t.gx]  # Tensor[n, no], the matched predictions
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * t.anchor_wh
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), t.box)
                lbox = lbox + (1.0 - iou).mean()
                # gr = 1: the objectness target is the IoU itself. Duplicate matches of one cell: last wins.
                tobj[t.image, t.anchor, t.gy, t.gx] = iou.detach().clamp(0)
                if self.nc > 1:  # a single class is learned through objectness alone
                    tcls = torch.full_like(ps[:, 5:], self.cls_neg)
                    tcls[torch.arange(n, device=device), t.cls] = self.cls_pos
                    lcls = lcls + self.bce_cls(ps[:, 5:], tcls)
            lobj = lobj + self.bce_obj(p[..., 4], tobj) * self.balance[i]
        lbox = lbox * self.box_gain
        lobj = lobj * self.obj_gain
        lcls = lcls * self.cls_gain
        batch_size = preds[0].shape[0]
        return (lbox + lobj + lcls) * batch_size, torch.stack((lbox, lobj, lcls)).detach()

    def build_targets(self, preds: Sequence[Tensor], targets: Tensor) -> list[LevelTargets]:
        """Match targets to anchors and cells of every level (vectorised over targets and anchors).

        A target is matched to anchor ``a`` of a level when ``max(w/aw, aw/w, h/ah, ah/h) < anchor_t``
        (sizes in grid units). Each match is used in the target's own cell and in the neighbouring cell
        across the nearer vertical and the nearer horizontal cell border (when the centre lies in the
        inner half of the cell towards that border and the neighbour is inside the grid).
        """
        device = targets.device
        nt = targets.shape[0]
        anchor_idx = torch.arange(self.na, device=device, dtype=torch.float32).view(self.na, 1).expand(self.na, nt)
        # Tensor[na, nt, 7]: image, class, cx, cy, w, h, anchor
        tg = torch.cat((targets.float().unsqueeze(0).expand(self.na, nt, 6), anchor_idx[..., None]), 2)
        offsets = _OFFSETS.to(device)
        out = []
        for i, p in enumerate(preds):
            ny, nx = p.shape[2], p.shape[3]
            anchors = self.anchors[i]
            scale = torch.tensor([1, 1, nx, ny, nx, ny, 1], device=device, dtype=torch.float32)
            t = tg * scale  # boxes in grid units
            if nt:
                ratio = t[..., 4:6] / anchors[:, None]  # Tensor[na, nt, 2]
                t = t[torch.max(ratio, 1 / ratio).max(2).values < self.anchor_t]
                gxy = t[:, 2:4]
                gxy_inv = torch.tensor([nx, ny], device=device) - gxy  # distance to the far borders
                left_up = (gxy % 1 < 0.5) & (gxy > 1)
                right_down = (gxy_inv % 1 < 0.5) & (gxy_inv > 1)
                use = torch.stack((torch.ones_like(left_up[:, 0]), left_up[:, 0], left_up[:, 1],
                                   right_down[:, 0], right_down[:, 1]))  # Tensor[5, m]
                t = t.unsqueeze(0).expand(5, -1, -1)[use]
                off = offsets[:, None].expand(5, gxy.shape[0], 2)[use]
            else:
                t = tg[0]
                off = torch.zeros((0, 2), device=device)
            gxy = t[:, 2:4]
            gij = (gxy - off).long()
            gx = gij[:, 0].clamp(0, nx - 1)  # only a centre exactly on the far border needs it
            gy = gij[:, 1].clamp(0, ny - 1)
            anchor = t[:, 6].long()
            out.append(LevelTargets(
                image=t[:, 0].long(), anchor=anchor, gy=gy, gx=gx,
                box=torch.cat((gxy - torch.stack((gx, gy), 1), t[:, 4:6]), 1), anchor_wh=anchors[anchor],
                cls=t[:, 1].long(),
            ))
        return out
