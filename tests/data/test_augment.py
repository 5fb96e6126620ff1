"""Augmentation building blocks: warp, box transform and filter, HSV, mosaic placement."""
from __future__ import annotations

import numpy as np
import torch

from yolocompress.data.augment import (AugmentConfig, augment_hsv, box_candidates, mosaic4, random_affine,
                                       transform_boxes, warp, xywhn_to_xyxy, xyxy_to_xywhn)


def _img(h=20, w=30, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def test_warp_identity_and_integer_shift():
    img = _img()
    assert torch.equal(warp(img, np.eye(3), (20, 30)), img)
    m = np.eye(3)
    m[0, 2], m[1, 2] = 3, -2  # output = input moved right 3, up 2
    out = warp(img, m, (20, 30))
    assert torch.equal(out[:, :18, 3:], img[:, 2:, :27])
    assert out[:, :, :3].eq(114).all() and out[:, 18:].eq(114).all()


def test_transform_boxes_rotation_gives_enclosing_box():
    m = np.array([[0.0, -1.0, 10.0], [1.0, 0.0, 0.0], [0, 0, 1]])  # 90 degrees, then x + 10
    out = transform_boxes(np.array([[1.0, 2.0, 4.0, 3.0]]), m, (50, 50))
    np.testing.assert_allclose(out, [[7.0, 1.0, 8.0, 4.0]])


def test_box_candidates():
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 100, 1.0]], dtype=float)
    after = np.array([[0, 0, 10, 10], [0, 0, 2, 10], [0, 0, 3, 3], [0, 0, 300, 2.5]], dtype=float)
    assert box_candidates(before, after).tolist() == [True, False, False, False]


def test_random_affine_keeps_boxes_on_their_pixels():
    """A white square on grey, warped with rotation/scale/shear/translate: its label box stays tight."""
    img = torch.full((3, 64, 64), 114, dtype=torch.uint8)
    img[:, 20:36, 24:40] = 255
    boxes = np.array([[1, 24, 20, 40, 36]], dtype=np.float32)
    cfg = AugmentConfig(degrees=0, translate=0.1, scale=0.3, shear=0)
    for seed in range(5):
        out, b = random_affine(img, boxes, cfg, np.random.default_rng(seed))
        ys, xs = torch.nonzero(out[0] > 200, as_tuple=True)
        assert len(b) == 1 and b[0, 0] == 1
        np.testing.assert_allclose(b[0, 1:], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1.5)


def test_hsv_identity_and_value_gain():
    img = _img()
    assert torch.equal(augment_hsv(img, (1, 1, 1)), img)
    # hue/saturation gains of 1 and a tiny value gain round-trip RGB -> HSV -> RGB within 1 level
    out = augment_hsv(img, (1, 1, 1.0001))
    assert (out.int() - img.int()).abs().max() <= 1
    dark = augment_hsv(img, (1, 1, 0.5))
    assert torch.allclose(dark.float(), img.float() * 0.5, atol=1.01)  # value scales every channel
    grey = augment_hsv(img, (1, 0, 1))
    assert (grey.max(0).values - grey.min(0).values).max() <= 1  # no saturation: grey


def test_mosaic4_places_tiles_around_centre():
    tiles = [torch.full((3, 10, 16), v, dtype=torch.uint8) for v in (10, 20, 30, 40)]
    labels = [np.array([[k, 0.5, 0.5, 1.0, 1.0]], dtype=np.float32) for k in range(4)]
    canvas, boxes = mosaic4(tiles, labels, s=16, center=(12, 20))
    assert canvas.shape == (3, 32, 32)
    # top-left tile ends at the centre and is cut at the left edge; the others start at it
    assert canvas[0, 10:20, 0:12].eq(10).all() and canvas[0, 10:20, 12:28].eq(20).all()
    assert canvas[0, 20:30, 0:12].eq(30).all() and canvas[0, 20:30, 12:28].eq(40).all()
    assert canvas[0, :10].eq(114).all() and canvas[0, :, 28:].eq(114).all()
    np.testing.assert_allclose(boxes, [[0, 0, 10, 12, 20], [1, 12, 10, 28, 20], [2, 0, 20, 12, 30],
                                       [3, 12, 20, 28, 30]])


def test_box_format_round_trip():
    labels = np.array([[2, 0.5, 0.25, 0.2, 0.1]], dtype=np.float32)
    xyxy = xywhn_to_xyxy(labels, 100, 40, padw=5, padh=2)
    np.testing.assert_allclose(xyxy, [[2, 45, 10, 65, 14]])
    np.testing.assert_allclose(xyxy_to_xywhn(xyxy, 110, 44), [[2, 55 / 110, 12 / 44, 20 / 110, 4 / 44]], rtol=1e-6)
