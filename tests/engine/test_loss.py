"""DetectionLoss: target assignment, CIoU, and the loss value on hand-computed cases."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, complete_box_iou_loss

from yolocompress.engine.loss import DetectionLoss, Hyp, bbox_ciou
from yolocompress.errors import InputError


def _fake_model(anchors, nc=1):
    """Just what the loss reads: ``model.model[-1]`` with nc, nl, na and anchors in grid units."""
    anchors = torch.tensor(anchors, dtype=torch.float32)
    head = SimpleNamespace(nc=nc, nl=anchors.shape[0], na=anchors.shape[1], anchors=anchors)
    return SimpleNamespace(model=[head])


def _matches(level):
    return sorted(zip(level.anchor.tolist(), level.gx.tolist(), level.gy.tolist()))


def test_single_target_assignment():
    # one 8x8 level; the target is 2x2 cells at (2.4, 5.6): anchors 1x1.5 and 2x2 match, 9x9 does not
    # (ratio 4.5 > 4); it sits in the left half of its column and the lower half of its row, so the
    # left and the lower neighbours are used too.
    model = _fake_model([[[1.0, 1.5], [2.0, 2.0], [9.0, 9.0]]])
    loss = DetectionLoss(model, Hyp(), imgsz=64)
    preds = [torch.zeros(1, 3, 8, 8, 6)]
    targets = torch.tensor([[0, 0, 2.4 / 8, 5.6 / 8, 0.25, 0.25]])
    (level,) = loss.build_targets(preds, targets)
    cells = [(2, 5), (1, 5), (2, 6)]
    assert _matches(level) == sorted((a, gx, gy) for a in (0, 1) for gx, gy in cells)
    boxes = {(a, gx, gy): b.tolist() for a, gx, gy, b in zip(level.anchor.tolist(), level.gx.tolist(),
                                                                level.gy.tolist(), level.box)}
    assert boxes[(0, 2, 5)] == pytest.approx([0.4, 0.6, 2.0, 2.0], abs=1e-5)
    assert boxes[(0, 1, 5)] == pytest.approx([1.4, 0.6, 2.0, 2.0], abs=1e-5)
    assert boxes[(1, 2, 6)] == pytest.approx([0.4, -0.4, 2.0, 2.0], abs=1e-5)
    assert level.anchor_wh[level.anchor == 1].tolist() == [[2.0, 2.0]] * 3
    assert set(level.image.tolist()) == {0} and set(level.cls.tolist()) == {0}


def test_neighbours_stop_at_grid_border_and_upper_right():
    model = _fake_model([[[2.0, 2.0]]])
    loss = DetectionLoss(model, Hyp(), imgsz=64)
    preds = [torch.zeros(2, 1, 8, 8, 6)]
    targets = torch.tensor([
        [0, 0, 0.3 / 8, 0.3 / 8, 0.25, 0.25],  # first cell, upper left quarter: no neighbour inside the grid
        [1, 0, 6.7 / 8, 1.8 / 8, 0.25, 0.25],  # right half, lower half: right and lower neighbours
    ])
    (level,) = loss.build_targets(preds, targets)
    by_image = {b: sorted((gx, gy) for bb, gx, gy in zip(level.image.tolist(), level.gx.tolist(),
                                                          level.gy.tolist()) if bb == b) for b in (0, 1)}
    assert by_image[0] == [(0, 0)]
    assert by_image[1] == sorted([(6, 1), (7, 1), (6, 2)])


def test_anchor_ratio_threshold_and_per_level():
    model = _fake_model([[[1.0, 1.0]], [[4.0, 4.0]]])
    loss = DetectionLoss(model, Hyp(anchor_t=4.0), imgsz=64)
    preds = [torch.zeros(1, 1, 8, 8, 6), torch.zeros(1, 1, 4, 4, 6)]
    # 5 cells wide at level 0 (ratio 5 > 4: rejected), 2.5 cells at level 1 (ratio 1.6: kept)
    targets = torch.tensor([[0, 0, 0.55, 0.55, 5 / 8, 5 / 8]])
    l0, l1 = loss.build_targets(preds, targets)
    assert l0.image.numel() == 0
    # centre (2.2, 2.2) on the 4x4 grid: own cell plus the left and upper neighbours
    assert _matches(l1) == sorted([(0, 2, 2), (0, 1, 2), (0, 2, 1)])
    # a centre exactly on a cell corner takes all four neighbours (YOLOv5 behaviour)
    _, l1 = loss.build_targets(preds, torch.tensor([[0, 0, 0.5, 0.5, 5 / 8, 5 / 8]]))
    assert l1.image.numel() == 5


def test_ciou_hand_computed_and_matches_torchvision():
    b1 = torch.tensor([1.0, 1.0, 2.0, 2.0])  # cx, cy, w, h
    b2 = torch.tensor([2.0, 1.0, 2.0, 4.0])
    iou = 2.0 / 10.0  # intersection 1x2, union 4 + 8 - 2
    v = 4 / math.pi**2 * (math.atan(2 / 4) - math.atan(2 / 2)) ** 2
    alpha = v / (v - iou + 1)
    expected = iou - (1.0 / 25.0 + v * alpha)  # centre distance 1, enclosing box 3x4 (diagonal^2 25)
    assert bbox_ciou(b1, b2).item() == pytest.approx(expected, abs=1e-6)

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 10
    wh = torch.rand(50, 2, generator=g) * 5 + 0.1
    boxes1 = torch.cat((xy, wh), 1)
    boxes2 = torch.cat((xy + torch.randn(50, 2, generator=g), wh * (torch.rand(50, 2, generator=g) + 0.5)), 1)
    ref = complete_box_iou_loss(box_convert(boxes1, "cxcywh", "xyxy"), box_convert(boxes2, "cxcywh", "xyxy"))
    torch.testing.assert_close(1 - bbox_ciou(boxes1, boxes2), ref, atol=1e-5, rtol=1e-5)


def test_loss_value_single_target():
    # zero logits: every prediction is the anchor box centred in its cell; sigmoid = 0.5 everywhere
    model = _fake_model([[[2.0, 2.0]]])
    hyp = Hyp()
    loss_fn = DetectionLoss(model, hyp, imgsz=64)
    preds = [torch.zeros(2, 1, 8, 8, 6)]
    targets = torch.tensor([[1, 0, 2.4 / 8, 5.6 / 8, 0.25, 0.25]])
    loss, items = loss_fn(preds, targets)

    pred_box = torch.tensor([0.5, 0.5, 2.0, 2.0]).expand(3, 4)
    target_box = torch.tensor([[0.4, 0.6, 2, 2], [1.4, 0.6, 2, 2], [0.4, -0.4, 2, 2]])
    ref_loss = complete_box_iou_loss(box_convert(pred_box, "cxcywh", "xyxy"),
                                     box_convert(target_box, "cxcywh", "xyxy"))
    lbox = ref_loss.mean() * hyp.box * 3 / 1
    tobj = torch.zeros(2, 1, 8, 8)
    for (gx, gy), ciou in zip([(2, 5), (1, 5), (2, 6)], 1 - ref_loss):
        tobj[1, 0, gy, gx] = ciou.clamp(min=0)
    lobj = F.binary_cross_entropy_with_logits(torch.zeros_like(tobj), tobj) * 4.0 * (64 / 640) ** 2 * 3
    assert items[0].item() == pytest.approx(lbox.item(), rel=1e-5)
    assert items[1].item() == pytest.approx(lobj.item(), rel=1e-5)
    assert items[2].item() == 0.0  # one class: learned through objectness only
    assert loss.item() == pytest.approx(2 * (lbox + lobj).item(), rel=1e-5)


def test_class_loss_with_label_smoothing_and_gains():
    model = _fake_model([[[2.0, 2.0]]] * 3, nc=4)
    hyp = Hyp(label_smoothing=0.1)
    loss_fn = DetectionLoss(model, hyp, imgsz=640)
    preds = [torch.zeros(1, 1, s, s, 9) for s in (8, 4, 2)]
    targets = torch.tensor([[0, 2, 0.75, 0.75, 0.2, 0.2]])
    _, items = loss_fn(preds, targets)
    # zero logits: BCE = log 2 whatever the (smoothed) target. The box is 1.6 and 0.8 cells at levels 0
    # and 1 (ratios 1.25, 2.5: matched) and 0.4 cells at level 2 (ratio 5: not); class loss is the sum of
    # the per-level means, gain cls * nc / 80 * 3 / nl
    n_levels = sum(lt.image.numel() > 0 for lt in loss_fn.build_targets(preds, targets))
    assert n_levels == 2
    assert items[2].item() == pytest.approx(2 * math.log(2) * 0.5 * 4 / 80, rel=1e-5)
    # smoothing changes the class targets: with confident logits the loss is no longer log 2
    preds[0][..., 5:] = torch.tensor([-5.0, -5.0, 5.0, -5.0])
    _, smoothed = loss_fn(preds, targets)
    _, sharp = DetectionLoss(model, Hyp(), imgsz=640)(preds, targets)
    assert smoothed[2] > sharp[2]


def test_no_targets_and_gradients():
    model = _fake_model([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]] * 3, nc=2)
    loss_fn = DetectionLoss(model, Hyp(), imgsz=64)
    preds = [torch.randn(2, 3, s, s, 7, requires_grad=True) for s in (8, 4, 2)]
    loss, items = loss_fn(preds, torch.zeros(0, 6))
    assert items[0] == 0 and items[2] == 0 and items[1] > 0
    loss.backward()
    assert all(p.grad is not None for p in preds)
    # with targets, gradients reach box and class channels too
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.2], [1, 0, 0.2, 0.3, 0.1, 0.4]])
    preds = [torch.randn(2, 3, s, s, 7, requires_grad=True) for s in (8, 4, 2)]
    loss, items = loss_fn(preds, targets)
    loss.backward()
    assert all(i > 0 for i in items)
    assert preds[0].grad[..., :4].abs().sum() > 0 and preds[0].grad[..., 5:].abs().sum() > 0


def test_zero_gains_skip_target_assignment(monkeypatch):
    """With box = obj = cls = 0 (QAT by distillation alone) the loss is 0 without assigning targets."""
    model = _fake_model([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]] * 3, nc=2)
    loss_fn = DetectionLoss(model, Hyp(box=0.0, obj=0.0, cls=0.0), imgsz=64)

    def fail(*args):
        raise AssertionError("build_targets called")

    monkeypatch.setattr(loss_fn, "build_targets", fail)
    preds = [torch.randn(2, 3, s, s, 7) for s in (8, 4, 2)]
    loss, items = loss_fn(preds, torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.2]]))
    assert float(loss) == 0 and items.tolist() == [0, 0, 0]


def test_hyp_validation():
    assert Hyp().lr0 == 0.01 and Hyp().anchor_t == 4.0
    with pytest.raises(InputError):
        Hyp(lr0=-1)
    with pytest.raises(InputError):
        Hyp(momentum=1.5)
    with pytest.raises(InputError, match="unknown hyp"):
        Hyp.from_dict({"lr0": 0.01, "lr_0": 0.02})
    assert Hyp.from_dict({"lr0": 0.02, "anchors": 3}).lr0 == 0.02
    # a whole YOLOv5 hyp file: augmentation keys go to the data package's settings; round trip
    flat = {**Hyp().to_dict(), "mosaic": 0.5, "copy_paste": 0.0, "lr0": 0.02}
    hyp = Hyp.from_dict(flat)
    assert hyp.augment.mosaic == 0.5 and hyp.lr0 == 0.02
    assert Hyp.from_dict(hyp.to_dict()) == hyp
    with pytest.raises(InputError):
        Hyp.from_dict({"fliplr": 2.0})
    with pytest.raises(InputError):
        Hyp(box="0.05")  # type: ignore[arg-type]
