"""Cross-check of matching and AP against pycocotools ``COCOeval`` on synthetic detections.

Our metrics follow Ultralytics ``val.py``; pycocotools is the other reference users know. The two agree on
what a true positive is whenever the one-to-one assignment is unambiguous, and differ systematically in
how a precision-recall curve becomes a number:

* Matching. COCO walks detections by score and gives each the best still-free ground truth; val.py gives
  each detection its best ground truth (taken or not), then each ground truth its most confident claimant.
  With well-separated objects (each detection overlaps one ground truth) the flags are identical: checked
  flag by flag below. With overlapping objects they can differ (a detection whose best ground truth is taken
  is a miss for val.py but may match its second best in COCO).
* Interpolation. COCO samples the precision envelope as a right-continuous step at 101 recalls, with
  precision 0 beyond the highest recall reached, and averages the 101 samples. val.py linearly interpolates
  the envelope between curve points, with sentinels (recall 0, precision 1) and (recall 1, precision 0), and
  integrates the 101 samples with the trapezoid rule. Hence: a perfect curve is 1.0 in COCO and 0.995 in
  val.py; between points val.py's linear interpolation is never below COCO's step; and beyond the highest
  recall val.py keeps the triangle down to (1, 0) that COCO counts as 0, which is what makes val.py's
  numbers higher for curves that stop early (low recall at strict IoU thresholds).
* Scope. COCO keeps the 100 best detections per image and category (maxDets) and reports area ranges and
  crowd regions; the scenes here stay under 100 per image, use no crowd boxes, and compare the 'all' range.

The tests pin the matching exactly, recompute COCO's own AP from our flags (proving the bookkeeping is the
same), and bound the val.py-vs-COCO gap on these scenes by what the interpolation difference explains.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from yolocompress.engine.metrics import IOU_THRESHOLDS, ap_per_class, match_predictions

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

NC = 3
CELL = 64
GRID = 4  # images are GRID * CELL pixels square


def _scene(seed: int, n_images: int = 40, separated: bool = True):
    """Ground truths and plausible post-NMS detections (sorted by confidence) per image."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_images):
        n_gt = int(rng.integers(0, 7))
        cells = rng.choice(GRID * GRID, size=n_gt, replace=False)
        gts = []
        for c in cells:
            cx, cy = (c % GRID + 0.5) * CELL, (c // GRID + 0.5) * CELL
            w, h = rng.uniform(16, 44, 2)
            gts.append((int(rng.integers(0, NC)), cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            if not separated and rng.random() < 0.5:  # a same-class twin shifted by a fraction of its size
                dx, dy = rng.uniform(-0.25, 0.25, 2) * (w, h)
                gts.append((gts[-1][0], cx - w / 2 + dx, cy - h / 2 + dy, cx + w / 2 + dx, cy + h / 2 + dy))
        dets = []
        for cls, x1, y1, x2, y2 in gts:
            for _ in range(int(rng.choice([0, 1, 1, 1, 2, 3]))):  # misses, hits and duplicates
                scale = np.array([x2 - x1, y2 - y1, x2 - x1, y2 - y1])
                box = np.array([x1, y1, x2, y2]) + rng.normal(0, rng.choice([0.02, 0.08, 0.2]), 4) * scale
                box[2:] = np.maximum(box[2:], box[:2] + 2)
                c = cls if rng.random() < 0.85 else int(rng.integers(0, NC))
                dets.append((*box, rng.beta(2, 2) if c == cls else rng.beta(1, 3), c))
        free = [c for c in range(GRID * GRID) if separated and c not in set(cells.tolist())]
        for c in rng.permutation(free)[: int(rng.integers(0, 4))]:  # background false positives
            cx, cy = (c % GRID + 0.5) * CELL, (c // GRID + 0.5) * CELL
            w, h = rng.uniform(16, 44, 2)
            score, cls = rng.beta(1, 4), int(rng.integers(0, NC))
            dets.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score, cls))
        gt = torch.tensor(gts, dtype=torch.float64).reshape(-1, 5)
        dt = torch.tensor(dets, dtype=torch.float64).reshape(-1, 6)
        dt = dt[dt[:, 4].argsort(descending=True)]
        images.append((gt, dt))
    return images


def _ours(images):
    tp, conf, pred_cls, target_cls = [], [], [], []
    for gt, dt in images:
        tp.append(match_predictions(dt, gt, IOU_THRESHOLDS.double()))
        conf.append(dt[:, 4])
        pred_cls.append(dt[:, 5])
        target_cls.append(gt[:, 0])
    cat = lambda xs: torch.cat(xs).numpy()  # noqa: E731
    return cat(tp), cat(conf), cat(pred_cls), cat(target_cls)


def _coco(images):
    gt_json = {"images": [], "annotations": [], "categories": [{"id": c} for c in range(NC)]}
    dt_json = []
    for i, (gt, dt) in enumerate(images):
        gt_json["images"].append({"id": i, "width": GRID * CELL, "height": GRID * CELL})
        for c, x1, y1, x2, y2 in gt.tolist():
            gt_json["annotations"].append({"id": len(gt_json["annotations"]) + 1, "image_id": i,
                                           "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1],
                                           "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        for x1, y1, x2, y2, s, c in dt.tolist():
            dt_json.append({"image_id": i, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_json
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dt_json)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _coco_flags(ev, images):
    """COCO's TP flag of each of our detections at each threshold (area 'all', maxDets 100)."""
    flags = []
    per_image = {(e["image_id"], e["category_id"]): e for e in ev.evalImgs
                 if e is not None and e["aRng"] == [0, 1e10]}
    for i, (_, dt) in enumerate(images):
        out = np.zeros((len(dt), 10), bool)
        for c in range(NC):
            e = per_image.get((i, c))
            if e is None:
                continue
            rows = np.nonzero(dt[:, 5].numpy() == c)[0]  # ann ids follow our order, scores descending
            order = np.argsort(-dt[rows, 4].numpy(), kind="stable")
            out[rows[order]] = (e["dtMatches"] > 0).T
        flags.append(out)
    return np.concatenate(flags)


def _coco_style_ap(tp, conf, pred_cls, target_cls):
    """COCO's interpolation applied to our flags: envelope sampled as a step at 101 recalls, averaged."""
    recall_points = np.linspace(0, 1, 101)
    classes = np.unique(target_cls)
    ap = np.zeros((len(classes), tp.shape[1]))
    order = np.argsort(-conf, kind="mergesort")
    tp, pred_cls = tp[order], pred_cls[order]
    for ci, c in enumerate(classes):
        mine = tp[pred_cls == c]
        n_gt = (target_cls == c).sum()
        for j in range(tp.shape[1]):
            tps = np.cumsum(mine[:, j])
            rec = tps / n_gt
            pre = tps / np.arange(1, len(tps) + 1)
            pre = np.maximum.accumulate(pre[::-1])[::-1] if len(pre) else pre
            idx = np.searchsorted(rec, recall_points, side="left")
            ap[ci, j] = np.where(idx < len(pre), pre[np.minimum(idx, len(pre) - 1)], 0).mean()
    return ap


@pytest.mark.parametrize("seed", [0, 1])
def test_flags_equal_coco_when_objects_are_separated(seed):
    images = _scene(seed)
    ev = _coco(images)
    tp, *_ = _ours(images)
    np.testing.assert_array_equal(tp, _coco_flags(ev, images))


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_interpolation_of_our_flags_reproduces_cocoeval(seed):
    images = _scene(seed)
    ev = _coco(images)
    ours = _ours(images)
    coco_ap = _coco_style_ap(*ours)
    assert coco_ap.mean() == pytest.approx(ev.stats[0], abs=1e-9)
    assert coco_ap[:, 0].mean() == pytest.approx(ev.stats[1], abs=1e-9)


def _tail_triangles(tp, conf, pred_cls, m):
    """Per (class, threshold): area val.py counts beyond the highest recall and COCO does not.

    The curve ends at the highest recall R with the precision P of the last detection (trailing false
    positives included, as they are the last curve points at recall R); from there val.py interpolates
    linearly down to its sentinel (recall 1, precision 0): 0.5 * (1 - R) * P.
    """
    order = np.argsort(-conf)
    tp, pred_cls = tp[order], pred_cls[order]
    out = np.zeros_like(m.ap)
    for ci, c in enumerate(m.classes):
        mine = tp[pred_cls == c]
        for j in range(mine.shape[1]):
            hits = mine[:, j].sum()
            if hits:
                out[ci, j] = 0.5 * (1 - hits / m.instances[ci]) * hits / len(mine)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_val_py_map_vs_cocoeval_gap_is_the_tail_triangle(seed):
    """With identical flags, val.py's AP exceeds COCO's by the tail triangle, to within 0.01 per curve.

    Observed on these scenes (max recall ~0.7 at IoU 0.5, lower at strict IoU): val.py - COCO is
    +0.058..+0.076 for mAP50 and +0.059..+0.067 for mAP50-95, and (gap - triangle) per class and threshold
    stays within -0.0072..+0.0013: the remainder is val.py's linear interpolation between curve points
    (never below COCO's step) against the discrete sampling where the curve meets the triangle. The
    tolerance asserted is 0.01 per curve and 0.005 on the means.
    """
    images = _scene(seed)
    ev = _coco(images)
    tp, conf, pred_cls, target_cls = _ours(images)
    m = ap_per_class(tp, conf, pred_cls, target_cls)
    triangles = _tail_triangles(tp, conf, pred_cls, m)
    residual = m.ap - _coco_style_ap(tp, conf, pred_cls, target_cls) - triangles
    assert np.abs(residual).max() <= 0.01
    assert m.ap50.mean() - ev.stats[1] == pytest.approx(triangles[:, 0].mean(), abs=0.005)
    assert m.ap50_95.mean() - ev.stats[0] == pytest.approx(triangles.mean(), abs=0.005)


def test_overlapping_objects_matching_differs_rarely():
    """Same-class objects overlapping in pairs: the two matching rules disagree on a few flags.

    Observed: 1.6-2.3% of (detection, threshold) flags differ, COCO's greedy fallback to a second-best
    ground truth finds 2-3% more true positives, and COCO's interpolation applied to our flags lands
    0.014-0.021 below COCOeval's mAP50-95.
    """
    images = _scene(3, n_images=60, separated=False)
    ev = _coco(images)
    tp, conf, pred_cls, target_cls = _ours(images)
    coco_flags = _coco_flags(ev, images)
    assert 0 < (tp != coco_flags).mean() < 0.03
    assert coco_flags.sum() >= tp.sum() >= 0.95 * coco_flags.sum()
    coco_ap = _coco_style_ap(tp, conf, pred_cls, target_cls)
    assert abs(coco_ap.mean() - ev.stats[0]) <= 0.03
