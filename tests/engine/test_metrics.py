"""Matching against a literal loop of val.py's procedure; AP, P, R on hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from yolocompress.engine.metrics import (IOU_THRESHOLDS, ap_per_class, box_iou, compute_ap, fitness,
                                         match_predictions, smooth)


def brute_force_match(detections, labels, iouv):
    """val.py's two-step resolution written as loops, one threshold at a time.

    Pairs (label, detection) with IoU >= t and the same class, sorted by IoU descending; each detection
    keeps its first pair; the survivors are then taken in detection order and each label keeps its first.
    """
    iou = box_iou(labels[:, 1:], detections[:, :4]).tolist()
    out = torch.zeros(len(detections), len(iouv), dtype=torch.bool)
    for ti, t in enumerate(iouv.tolist()):
        pairs = [(iou[li][di], li, di) for li in range(len(labels)) for di in range(len(detections))
                 if iou[li][di] >= t and labels[li, 0] == detections[di, 5]]
        pairs.sort(key=lambda p: -p[0])
        per_det = {}
        for v, li, di in pairs:
            per_det.setdefault(di, li)
        per_label = {}
        for di in sorted(per_det):
            per_label.setdefault(per_det[di], di)
        for di in per_label.values():
            out[di, ti] = True
    return out


def _random_scene(seed, n_labels=8, n_dets=40, nc=3):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n_labels, 2, generator=g) * 200
    wh = 10 + torch.rand(n_labels, 2, generator=g) * 60
    labels = torch.cat((torch.randint(0, nc, (n_labels, 1), generator=g).float(), xy, xy + wh), 1)
    src = torch.randint(0, n_labels, (n_dets,), generator=g)
    jitter = torch.randn(n_dets, 4, generator=g) * 6
    boxes = labels[src, 1:] + jitter
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    other = torch.randint(0, nc, (n_dets,), generator=g).float()
    cls = torch.where(torch.rand(n_dets, generator=g) < 0.8, labels[src, 0], other)
    conf = torch.rand(n_dets, generator=g).sort(descending=True).values
    return torch.cat((boxes, conf[:, None], cls[:, None]), 1), labels


@pytest.mark.parametrize("seed", range(12))
def test_matching_equals_brute_force(seed):
    dets, labels = _random_scene(seed)
    want = brute_force_match(dets, labels, IOU_THRESHOLDS)
    assert torch.equal(match_predictions(dets, labels, IOU_THRESHOLDS), want)


def test_matching_label_goes_to_first_detection_not_best_iou():
    # Two detections choose the same label; the more confident (listed first) one wins even with lower IoU.
    labels = torch.tensor([[0, 0, 0, 100, 100.0]])
    dets = torch.tensor([[0, 0, 90, 90, 0.9, 0], [0, 0, 100, 99, 0.8, 0.0]])
    tp = match_predictions(dets, labels)
    assert tp[0, 0] and not tp[1, 0]
    assert not tp[0, -1] and tp[1, -1]  # at 0.95 only the second one passes (IoU 0.81 vs 0.99)


def test_matching_class_must_agree_and_empty_inputs():
    labels = torch.tensor([[1, 0, 0, 10, 10.0]])
    dets = torch.tensor([[0, 0, 10, 10, 0.9, 0.0]])
    assert not match_predictions(dets, labels).any()
    assert match_predictions(dets[:0], labels).shape == (0, 10)
    assert match_predictions(dets, labels[:0]).shape == (1, 10)


def test_smooth_box_filter():
    y = np.arange(20, dtype=float)
    s = smooth(y, 0.1)  # window round(20 * 0.1 * 2) // 2 + 1 = 3, edges padded with the end values
    np.testing.assert_allclose(s, [1 / 3, *range(1, 19), 56 / 3])
    assert len(smooth(np.zeros(1000), 0.1)) == 1000  # window 101


def test_compute_ap_envelope_and_101_point_trapezoid():
    # A single perfect detection: the envelope is 1 up to recall 1, but np.interp at recall 1 takes the
    # sentinel 0, and the trapezoid rule loses half of the last 1/100 step: val.py's familiar 0.995.
    assert compute_ap(np.array([1.0]), np.array([1.0])) == pytest.approx(0.995)
    # FP first, then two TPs of two labels: precision envelope 2/3 everywhere.
    assert compute_ap(np.array([0, 0.5, 1.0]), np.array([0, 0.5, 2 / 3])) == pytest.approx(2 / 3 * 0.995)
    # A dip in precision is filled by the envelope (max of what follows).
    assert compute_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(
        compute_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 2 / 3, 2 / 3])))
    # Between curve points the envelope is interpolated linearly (not a step as in pycocotools).
    x = np.linspace(0, 1, 101)
    assert compute_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(
        np.trapezoid(np.interp(x, [0, 0.5, 1, 1], [1, 1, 0.5, 0]), x))


def test_ap_per_class_perfect_predictions():
    tp = np.ones((4, 10), bool)
    m = ap_per_class(tp, np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]))
    assert m.classes.tolist() == [0, 1] and m.instances.tolist() == [2, 2]
    np.testing.assert_allclose(m.ap, 0.995)
    np.testing.assert_allclose(m.precision, 1.0)
    np.testing.assert_allclose(m.recall, 1.0)


def test_ap_per_class_fp_ranked_above_and_below():
    tp_col = np.array([False, True, True])
    tp = np.repeat(tp_col[:, None], 10, 1)
    above = ap_per_class(tp, np.array([0.9, 0.8, 0.7]), np.zeros(3), np.zeros(2))
    np.testing.assert_allclose(above.ap, 2 / 3 * 0.995)
    below = ap_per_class(tp, np.array([0.5, 0.8, 0.7]), np.zeros(3), np.zeros(2))
    np.testing.assert_allclose(below.ap, 0.995)


def test_ap_per_class_tp_only_at_loose_thresholds():
    # One label, one detection matched at IoU 0.5..0.7 only: AP 0.995 on 5 thresholds, 0 on the others.
    tp = np.array([[True] * 5 + [False] * 5])
    m = ap_per_class(tp, np.array([0.9]), np.array([0]), np.array([0]))
    np.testing.assert_allclose(m.ap[0, :5], 0.995)
    np.testing.assert_allclose(m.ap[0, 5:], 0.0, atol=1e-12)
    assert m.ap50_95[0] == pytest.approx(0.4975)


def test_ap_per_class_skips_classes_without_labels_and_zeros_classes_without_predictions():
    tp = np.array([[True] * 10, [False] * 10])
    m = ap_per_class(tp, np.array([0.9, 0.95]), np.array([0, 2]), np.array([0, 1, 1]))
    assert m.classes.tolist() == [0, 1]  # class 2 (predicted, no labels) is not reported
    assert m.instances.tolist() == [1, 2]
    np.testing.assert_allclose(m.ap[0], 0.995)
    np.testing.assert_allclose(m.ap[1], 0.0)
    assert m.precision[1] == 0 and m.recall[1] == 0


def test_ap_per_class_precision_recall_at_best_mean_f1():
    # Class 0: 10 labels, 10 detections, the 5 most confident correct. Confidences 0.95 .. 0.05.
    conf = np.linspace(0.95, 0.05, 10)
    tp = np.repeat((np.arange(10) < 5)[:, None], 10, 1)
    m = ap_per_class(tp, conf, np.zeros(10), np.zeros(10))
    # F1 peaks where exactly the 5 TPs are kept (P = 1, R = 0.5, conf 0.55); the curves are interpolated
    # linearly in confidence and the mean F1 box-filtered over 0.1 of confidence, so the operating point
    # lands a little below that peak, where precision has started to fall.
    assert m.precision[0] == pytest.approx(0.97, abs=0.03)
    assert m.recall[0] == pytest.approx(0.5)
    assert m.f1[0] == pytest.approx(2 * m.precision[0] * 0.5 / (m.precision[0] + 0.5))
    # Two classes: the operating point is shared, the F1 is averaged over classes first.
    two = ap_per_class(np.concatenate((tp, tp)), np.concatenate((conf, conf)), np.repeat([0, 1], 10),
                       np.repeat([0, 1], 10))
    np.testing.assert_allclose(two.precision, m.precision[0])


def test_ap_per_class_no_detections():
    m = ap_per_class(np.zeros((0, 10), bool), np.zeros(0), np.zeros(0), np.array([0, 1]))
    np.testing.assert_allclose(m.ap, 0)
    m = ap_per_class(np.zeros((0, 10), bool), np.zeros(0), np.zeros(0), np.zeros(0))
    assert m.ap.shape == (0, 10)


def test_fitness_weights():
    assert fitness(0.5, 0.3) == pytest.approx(0.05 + 0.27)
