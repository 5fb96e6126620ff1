"""NMS against a naive per-image, per-class greedy reference."""
from __future__ import annotations

import torch

from yolocompress.engine.nms import non_max_suppression, xywh2xyxy


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def naive_nms(pred, conf_thres, iou_thres, max_det, multi_label=True, agnostic=False, classes=None):
    """Readable loops: the behaviour the vectorised version must reproduce."""
    out = []
    nc = pred.shape[2] - 5
    for image in pred.tolist():
        cands = []
        for row in image:
            obj = row[4]
            if obj <= conf_thres:
                continue
            box = xywh2xyxy(torch.tensor(row[:4])).tolist()
            scores = [obj * s for s in row[5:]]
            if multi_label and nc > 1:
                cands += [(box, s, c) for c, s in enumerate(scores) if s > conf_thres]
            else:
                c = max(range(nc), key=lambda k: scores[k])
                if scores[c] > conf_thres:
                    cands.append((box, scores[c], c))
        if classes is not None:
            cands = [x for x in cands if x[2] in classes]
        cands.sort(key=lambda x: -x[1])
        kept = []
        for box, score, c in cands:
            if all(_iou(box, k[0]) <= iou_thres for k in kept if agnostic or k[2] == c):
                kept.append((box, score, c))
        out.append(kept[:max_det])
    return out


def _random_pred(batch=3, n=400, nc=4, size=128.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Clustered boxes so that suppression has work to do.
    centres = torch.rand(batch, 12, 2, generator=g) * size
    pick = torch.randint(0, 12, (batch, n), generator=g)
    xy = torch.gather(centres, 1, pick[..., None].expand(-1, -1, 2))
    xy = xy + torch.randn(batch, n, 2, generator=g) * 4
    wh = 10 + torch.rand(batch, n, 2, generator=g) * 30
    obj = torch.rand(batch, n, 1, generator=g) ** 2
    cls = torch.rand(batch, n, nc, generator=g)
    return torch.cat((xy, wh, obj, cls), 2)


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == (len(w), 6)
        if not w:
            continue
        ref = torch.tensor([b + [s, c] for b, s, c in w])
        torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-4)


def test_matches_naive_reference_multilabel():
    pred = _random_pred()
    _assert_same(non_max_suppression(pred, 0.1, 0.5, max_det=300), naive_nms(pred, 0.1, 0.5, 300))


def test_matches_naive_reference_single_label_agnostic_and_classes():
    pred = _random_pred(seed=1)
    _assert_same(non_max_suppression(pred, 0.05, 0.45, max_det=300, multi_label=False),
                 naive_nms(pred, 0.05, 0.45, 300, multi_label=False))
    _assert_same(non_max_suppression(pred, 0.05, 0.45, max_det=300, agnostic=True),
                 naive_nms(pred, 0.05, 0.45, 300, agnostic=True))
    _assert_same(non_max_suppression(pred, 0.05, 0.45, max_det=300, classes=[1, 3]),
                 naive_nms(pred, 0.05, 0.45, 300, classes=[1, 3]))


def test_max_det_keeps_most_confident_per_image():
    pred = _random_pred(n=250, seed=2)
    out = non_max_suppression(pred, 0.001, 0.9, max_det=7)
    ref = naive_nms(pred, 0.001, 0.9, 7)
    _assert_same(out, ref)
    assert all(len(o) == 7 for o in out)


def test_candidates_filtered_by_objectness_before_class_score():
    # obj 0.002 > conf_thres but obj * cls = 0.0018 < conf_thres: no box. obj 0.0009 < thres: none either.
    pred = torch.tensor([[[50, 50, 10, 10, 0.002, 0.9, 0.1], [20, 20, 10, 10, 0.0009, 1.0, 1.0]]])
    assert non_max_suppression(pred, 0.001, 0.6)[0].shape == (1, 6)  # only class 0 (0.0018 > 0.001)
    pred[0, 0, 5] = 0.4
    assert non_max_suppression(pred, 0.001, 0.6)[0].shape == (0, 6)


def test_multilabel_yields_one_box_per_class_over_threshold():
    pred = torch.tensor([[[50, 50, 20, 20, 0.8, 0.9, 0.5, 0.0001]]])
    out = non_max_suppression(pred, 0.01, 0.6)[0]
    assert out[:, 5].tolist() == [0.0, 1.0]
    torch.testing.assert_close(out[:, 4], torch.tensor([0.72, 0.4]))
    torch.testing.assert_close(out[0, :4], torch.tensor([40.0, 40.0, 60.0, 60.0]))


def test_max_nms_cap_and_empty_images():
    pred = _random_pred(batch=2, n=300, seed=3)
    pred[1, :, 4] = 0  # second image: nothing passes
    out = non_max_suppression(pred, 0.01, 0.5, max_nms=50)
    assert out[1].shape == (0, 6)
    # With the cap, only the 50 most confident (box, class) pairs of image 0 can survive.
    scores = (pred[0, :, 5:] * pred[0, :, 4:5]).flatten()
    fiftieth = scores[scores > 0.01].sort(descending=True).values[49]
    assert (out[0][:, 4] >= fiftieth).all()
    assert non_max_suppression(torch.zeros(0, 10, 8))[:] == []


def test_accepts_model_tuple_output():
    pred = _random_pred(batch=1, n=50)
    a = non_max_suppression((pred, [torch.zeros(1)]), 0.1, 0.5)
    b = non_max_suppression(pred, 0.1, 0.5)
    torch.testing.assert_close(a[0], b[0])


def test_widening_prefix_is_exact():
    # Thousands of candidates per image: NMS starts on each image's best-ranked boxes and widens until
    # max_det survivors are certain. The result must equal full NMS truncated to max_det.
    pred = _random_pred(batch=4, n=3000, nc=3, size=400.0, seed=4)
    pred[..., 4] = pred[..., 4].clamp(min=0.01)
    for max_det in (5, 300, 2000):
        full = non_max_suppression(pred, 0.001, 0.6, max_det=10**6)
        cut = non_max_suppression(pred, 0.001, 0.6, max_det=max_det)
        for a, b in zip(cut, full):
            assert torch.equal(a, b[:max_det])
