"""Detection metrics with the exact conventions of Ultralytics ``val.py``: matching, AP, P/R, fitness.

Users compare our numbers with the ones ``val.py`` prints, so every convention is kept, including the
less obvious ones (noted where they occur): the order in which one-to-one matches are resolved, the
precision/recall operating point at the maximum of the smoothed mean F1 curve, and AP as the trapezoid
integral of the 101-point interpolated precision envelope.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision
from torch import Tensor

# The ten IoU thresholds of mAP@0.5:0.95.
IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU ``Tensor[N, M]`` of ``boxes1 (Tensor[N, 4])`` and ``boxes2 (Tensor[M, 4])``, x1y1x2y2."""
    return torchvision.ops.box_iou(boxes1, boxes2)


def match_predictions(detections: Tensor, labels: Tensor, iouv: Tensor = IOU_THRESHOLDS) -> Tensor:
    """Mark each detection true positive or not at every IoU threshold (val.py's ``process_batch``).

    Args:
        detections: ``Tensor[k, 6]`` = ``x1, y1, x2, y2, conf, class``, in descending confidence order
            (as NMS returns them).
        labels: ``Tensor[n, 5]`` = ``class, x1, y1, x2, y2`` in the same pixel space as the detections.
        iouv: ``Tensor[T]`` IoU thresholds.

    Returns:
        ``bool Tensor[k, T]``: detection ``d`` is a true positive at threshold ``t``.

    val.py resolves one-to-one matches in two steps per threshold: each detection keeps its highest-IoU
    same-class label with IoU >= t; then each label keeps, of the detections that chose it, the one
    listed first (the most confident), not the one with the highest IoU. A detection's best label does
    not depend on ``t`` (the best same-class label passes ``t`` whenever any does), so both steps run for
    all thresholds at once.
    """
    k, n, nt = detections.shape[0], labels.shape[0], iouv.numel()
    device = detections.device
    if k == 0 or n == 0:
        return torch.zeros(k, nt, dtype=torch.bool, device=device)
    iou = box_iou(labels[:, 1:5], detections[:, :4])  # [n, k]
    iou = iou * (labels[:, 0:1] == detections[:, 5]).to(iou.dtype)
    best_iou, best_label = iou.max(0)  # [k]
    passes = best_iou[:, None] >= iouv.to(device=device, dtype=iou.dtype)[None]  # [k, T]

    # For every (label, threshold), the lowest detection index that chose that label and passes.
    det_index = torch.arange(k, device=device)[:, None].expand(k, nt)
    candidate = torch.where(passes, det_index, torch.full_like(det_index, k))
    slot = best_label[:, None] * nt + torch.arange(nt, device=device)[None]  # [k, T]
    first = torch.full((n * nt,), k, dtype=torch.long, device=device)
    first = first.scatter_reduce(0, slot.reshape(-1), candidate.reshape(-1), reduce="amin")
    return passes & (first[slot] == det_index)


def smooth(y: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Box-filter ``y`` with an odd window of ``fraction * len(y)`` elements, edges padded by repetition."""
    width = round(len(y) * fraction * 2) // 2 + 1
    pad = width // 2
    padded = np.concatenate((np.full(pad, y[0]), y, np.full(pad, y[-1])))
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under one precision-recall curve (points in descending-confidence order).

    The precision envelope (running maximum from the right, with sentinels at recall 0 and 1) is sampled
    at 101 evenly spaced recalls by linear interpolation and integrated with the trapezoid rule.
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    x = np.linspace(0, 1, 101)
    return float(np.trapezoid(np.interp(x, mrec, mpre), x))


@dataclass
class ClassMetrics:
    """Per-class results of :func:`ap_per_class`, one row per class that has labels.

    Attributes:
        classes: ``int ndarray[C]`` class indices, ascending.
        instances: ``int ndarray[C]`` labels per class.
        precision, recall, f1: ``ndarray[C]`` at the confidence maximising the smoothed mean F1.
        ap: ``ndarray[C, T]`` AP at each IoU threshold.
    """

    classes: np.ndarray
    instances: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    ap: np.ndarray

    @property
    def ap50(self) -> np.ndarray:
        """``ndarray[C]`` AP at IoU 0.5."""
        return self.ap[:, 0]

    @property
    def ap50_95(self) -> np.ndarray:
        """``ndarray[C]`` AP averaged over the IoU thresholds."""
        return self.ap.mean(1)


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                 eps: float = 1e-16) -> ClassMetrics:
    """Per-class precision, recall, F1 and AP over a whole data set (val.py's ``ap_per_class``).

    Args:
        tp: ``bool ndarray[D, T]`` true-positive flags of every detection at each IoU threshold.
        conf: ``ndarray[D]`` detection confidences.
        pred_cls: ``ndarray[D]`` detection classes.
        target_cls: ``ndarray[L]`` the class of every label.

    Classes with no labels are left out (their detections count nowhere); classes with labels but no
    detections get zeros. P and R are read off the curves at one confidence shared by all classes: the
    maximum of the mean F1 curve (sampled at 1000 confidences, box-filtered over 10% of them).
    """
    tp = np.asarray(tp, dtype=bool)
    if tp.ndim == 1:
        tp = tp[:, None]
    conf, pred_cls, target_cls = np.asarray(conf), np.asarray(pred_cls), np.asarray(target_cls)
    order = np.argsort(-conf)
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]

    classes, instances = np.unique(target_cls, return_counts=True)
    n_cls, n_iou = len(classes), tp.shape[1]
    px = np.linspace(0, 1, 1000)
    ap = np.zeros((n_cls, n_iou))
    p_curve, r_curve = np.zeros((n_cls, 1000)), np.zeros((n_cls, 1000))
    for ci, c in enumerate(classes):
        mine = pred_cls == c
        if not mine.any():
            continue
        tpc = tp[mine].cumsum(0)
        fpc = (~tp[mine]).cumsum(0)
        recall = tpc / (instances[ci] + eps)
        precision = tpc / (tpc + fpc)
        # Curves against confidence; x is negated because confidences decrease along the curve.
        r_curve[ci] = np.interp(-px, -conf[mine], recall[:, 0], left=0)
        p_curve[ci] = np.interp(-px, -conf[mine], precision[:, 0], left=1)
        for j in range(n_iou):
            ap[ci, j] = compute_ap(recall[:, j], precision[:, j])

    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    best = int(smooth(f1_curve.mean(0), 0.1).argmax()) if n_cls else 0
    return ClassMetrics(classes=classes.astype(int), instances=instances,
                        precision=p_curve[:, best], recall=r_curve[:, best], f1=f1_curve[:, best], ap=ap)


def fitness(map50: float, map50_95: float) -> float:
    """The single number checkpoints are ranked by: ``0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95``."""
    return 0.1 * map50 + 0.9 * map50_95
