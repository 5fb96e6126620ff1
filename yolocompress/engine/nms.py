"""Non-maximum suppression over decoded YOLO outputs, with the conventions of Ultralytics ``val.py``.

The whole batch goes through one vectorised pass: candidates of every image are gathered together,
ranked inside their image, and suppressed with ``torchvision.ops.nms`` run on each ``(image, class)``
group (class-aware NMS, as ``batched_nms`` defines it) so boxes of different images or classes never
suppress each other. There is no time
limit: a slow machine gets the same boxes as a fast one.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torchvision
from torch import Tensor

# The kernel behind ``torchvision.ops.nms`` (registered when torchvision is imported), called without the
# wrapper's per-call checks and usage logging: NMS makes one call per (image, class) group.
_NMS_KERNEL = getattr(torch.ops, torchvision.__name__).nms   # torch.ops.torchvision.nms

# Boxes entering NMS per image are capped at this many (highest confidence first), as val.py does.
MAX_NMS = 30000


def xywh2xyxy(boxes: Tensor) -> Tensor:
    """Convert ``boxes (Tensor[..., 4])`` from centre-x, centre-y, width, height to corners."""
    xy, half_wh = boxes[..., :2], boxes[..., 2:4] / 2
    return torch.cat((xy - half_wh, xy + half_wh), -1)


def _rank_within_group(group: Tensor) -> Tensor:
    """Position of each element inside its run of equal ``group`` values (``group`` sorted ascending)."""
    n = group.numel()
    positions = torch.arange(n, device=group.device)
    if n == 0:
        return positions
    starts = torch.ones(n, dtype=torch.bool, device=group.device)
    starts[1:] = group[1:] != group[:-1]
    # Index of the first element of each run, propagated forward with a running max.
    first = torch.where(starts, positions, torch.zeros_like(positions)).cummax(0).values
    return positions - first


def _keep_top_per_image(image: Tensor, score: Tensor, limit: int) -> Tensor:
    """Indices, grouped by image and by descending ``score`` inside each, of at most ``limit`` per image."""
    # One sort on a composite key (image ascending, then score descending); exact in float64.
    s = score.double()
    span = float(s.max() - s.min()) + 1.0 if s.numel() else 1.0
    order = (image.double() * span - s).argsort()
    keep = _rank_within_group(image[order]) < limit
    return order[keep]


def _nms_per_group(boxes: Tensor, scores: Tensor, group: Tensor, iou_thres: float) -> Tensor:
    """Greedy NMS run separately inside each ``group`` value; returns kept indices.

    ``torchvision.ops.batched_nms`` does the same, but on the CPU with many groups (images x classes)
    its per-group masking of the whole tensor costs far more than the suppression itself. Here the boxes
    are sorted by group once and each contiguous run is suppressed on its own (a slice of the sorted boxes,
    in their input order: the same boxes kept as ``torchvision.ops.nms`` on each group).
    """
    if group.numel() == 0:
        return group.new_zeros(0)
    order = group.argsort(stable=True)
    sizes = torch.unique_consecutive(group[order], return_counts=True)[1].tolist()
    boxes, scores = boxes[order], scores[order]   # one gather; each group is then a slice (a view)
    positions = torch.arange(len(order), device=order.device)
    kept, start = [], 0
    for size in sizes:
        end = start + size
        kept.append(positions[start:end] if size == 1 else
                    _NMS_KERNEL(boxes[start:end], scores[start:end], iou_thres).add_(start))
        start = end
    return order[torch.cat(kept)]


def _nms_until_max_det(boxes: Tensor, scores: Tensor, group: Tensor, image: Tensor, batch: int,
                       iou_thres: float, max_det: int) -> Tensor:
    """Class-aware NMS of each image's best-ranked boxes, widened until ``max_det`` survivors are certain.

    Greedy NMS decides a box from the boxes ranked above it only, so NMS over an image's ``m`` most
    confident boxes keeps exactly what full NMS keeps among them. Once that is ``max_det`` boxes, nothing
    ranked lower can reach the output, so the rest of the image never needs suppressing. This is exact,
    not an approximation, and saves most of the work when a weak model floods NMS with candidates.
    ``boxes`` etc. must be grouped by ``image`` with descending ``scores`` inside each image.
    """
    rank = _rank_within_group(image)
    per_image = torch.bincount(image, minlength=batch)
    pending = per_image > 0
    prefix = torch.full_like(per_image, max(2 * max_det, 512))
    kept = []
    while bool(pending.any()):
        sel = (pending[image] & (rank < prefix[image])).nonzero(as_tuple=True)[0]
        keep = sel[_nms_per_group(boxes[sel], scores[sel], group[sel], iou_thres)]
        survivors = torch.bincount(image[keep], minlength=batch)
        done = (survivors >= max_det) | (per_image <= prefix)
        kept.append(keep[done[image[keep]]])
        pending &= ~done
        # Widen an unresolved image by its survival rate so far (with a margin), at least doubling.
        wanted = prefix * (1.25 * max_det / survivors.clamp(min=1))
        prefix = torch.maximum(2 * prefix, wanted.ceil().long())
    return torch.cat(kept) if kept else image.new_zeros(0)


def non_max_suppression(
    pred: Tensor,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    multi_label: bool = True,
    agnostic: bool = False,
    classes: Sequence[int] | None = None,
    max_nms: int = MAX_NMS,
) -> list[Tensor]:
    """Suppress overlapping detections, image by image, the way ``val.py`` does.

    Args:
        pred: decoded model output ``Tensor[B, N, 5 + nc]``: ``cx, cy, w, h`` in input pixels, objectness,
            then per-class scores (both already sigmoid-ed). A ``(decoded, raw)`` tuple is accepted too.
        conf_thres: a box is a candidate when its objectness exceeds this; each kept (box, class) pair must
            also have ``obj * cls`` above it.
        iou_thres: IoU above which a lower-scored box of the same image and class is suppressed.
        max_det: most detections kept per image.
        multi_label: every class scoring above ``conf_thres`` yields its own box (val.py's setting);
            otherwise only the best class of each box is kept.
        agnostic: suppress across classes as well.
        classes: keep only these class indices.
        max_nms: most boxes per image entering NMS (highest confidence first).

    Returns:
        One ``Tensor[k, 6]`` per image: ``x1, y1, x2, y2`` (input pixels), ``conf``, ``class``, sorted by
        descending confidence.
    """
    if isinstance(pred, (list, tuple)):
        pred = pred[0]
    if pred.dim() != 3 or pred.shape[-1] < 6:
        raise ValueError(f"expected decoded predictions [B, N, 5 + nc], got {tuple(pred.shape)}")
    batch, _, width = pred.shape
    nc = width - 5
    multi_label = multi_label and nc > 1

    image, anchor = (pred[..., 4] > conf_thres).nonzero(as_tuple=True)
    candidates = pred[image, anchor].float()
    scores = candidates[:, 5:] * candidates[:, 4:5]  # conf = obj * cls
    boxes = xywh2xyxy(candidates[:, :4])

    if multi_label:
        row, cls = (scores > conf_thres).nonzero(as_tuple=True)
        conf = scores[row, cls]
    else:
        conf, cls = scores.max(1)
        row = (conf > conf_thres).nonzero(as_tuple=True)[0]
        conf, cls = conf[row], cls[row]
    boxes, image = boxes[row], image[row]

    if classes is not None:
        wanted = torch.as_tensor(list(classes), device=cls.device, dtype=cls.dtype)
        keep = torch.isin(cls, wanted)
        boxes, conf, cls, image = boxes[keep], conf[keep], cls[keep], image[keep]

    keep = _keep_top_per_image(image, conf, max_nms)  # grouped by image, descending conf in each
    boxes, conf, cls, image = boxes[keep], conf[keep], cls[keep], image[keep]

    group = image if agnostic else image * nc + cls
    keep = _nms_until_max_det(boxes, conf, group, image, batch, iou_thres, max_det)
    keep = keep[_keep_top_per_image(image[keep], conf[keep], max_det)]

    dets = torch.cat((boxes[keep], conf[keep, None], cls[keep, None].to(boxes.dtype)), 1)
    counts = torch.bincount(image[keep], minlength=batch).tolist()
    return list(dets.split(counts))
