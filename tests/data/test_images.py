"""Decoding, YOLOv5-compatible resizing (INTER_AREA / INTER_LINEAR), letterbox and rect batch shapes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from yolocompress.data.images import (ImageDecodeError, decode_rgb, letterbox, load_resized, rect_batches,
                                      resize_area)

from .helpers import write_image


def test_decode_png_and_jpeg(tmp_path):
    png = decode_rgb(write_image(tmp_path / "a.png", 40, 60))[0]
    jpg, note = decode_rgb(write_image(tmp_path / "a.jpg", 40, 60))
    assert png.shape == jpg.shape == (3, 40, 60) and png.dtype == torch.uint8 and note == ""
    assert (png.int() - jpg.int()).abs().float().mean() < 8  # same content, JPEG q95


def test_decode_errors(tmp_path):
    with pytest.raises(ImageDecodeError, match="cannot read"):
        decode_rgb(tmp_path / "missing.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_rgb(tmp_path / "empty.png")
    (tmp_path / "bad.bmp").write_bytes(b"BM garbage")
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_rgb(tmp_path / "bad.bmp")


def test_area_resize_weights():
    # 3 -> 2 columns: out0 = (p0 + p1/2) / 1.5, out1 = (p1/2 + p2) / 1.5 (OpenCV's area weights)
    row = torch.tensor([30.0, 90.0, 150.0])
    img = row.view(1, 1, 3).expand(3, 2, 3).to(torch.uint8).contiguous()
    out = resize_area(img, (2, 2))
    assert out[0, 0].tolist() == [round((30 + 45) / 1.5), round((45 + 150) / 1.5)]
    # integer factor 2x2: block mean rounded half up
    img = torch.tensor([[1, 2], [2, 2]], dtype=torch.uint8).expand(3, 2, 2).contiguous()
    assert resize_area(img, (1, 1)).flatten().tolist() == [2, 2, 2]


def test_area_resize_matches_opencv():
    import cv2  # test-only dependency (opencv-python-headless): the reference INTER_AREA
    rng = np.random.default_rng(0)
    for h0, w0, h, w in [(480, 640, 192, 256), (333, 500, 214, 320), (256, 256, 64, 64), (100, 150, 50, 50)]:
        im = rng.integers(0, 256, (h0, w0, 3), dtype=np.uint8)
        ref = cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)
        out = resize_area(torch.from_numpy(im).permute(2, 0, 1), (h, w)).permute(1, 2, 0).numpy()
        assert np.abs(out.astype(int) - ref).max() <= 1
        assert (out != ref).mean() < 1e-3


@pytest.mark.parametrize("hw, imgsz, expect", [((480, 640), 256, (192, 256)), ((1000, 750), 640, (640, 480)),
                                               ((100, 50), 256, (256, 128)), ((64, 64), 64, (64, 64))])
def test_load_resized_sizes(hw, imgsz, expect):
    img = torch.zeros((3, *hw), dtype=torch.uint8)
    assert tuple(load_resized(img, imgsz, augment=False).shape[1:]) == expect
    assert tuple(load_resized(img, imgsz, augment=True).shape[1:]) == expect


def test_letterbox_odd_padding_goes_right_and_bottom():
    img = torch.full((3, 5, 8), 7, dtype=torch.uint8)
    out, r, (pw, ph) = letterbox(img, (10, 11), scaleup=False)
    assert r == 1.0 and (pw, ph) == (1.5, 2.5)
    rows = (out[0] == 7).any(1).nonzero().flatten().tolist()
    cols = (out[0] == 7).any(0).nonzero().flatten().tolist()
    assert rows == [2, 3, 4, 5, 6] and cols == list(range(1, 9))
    assert out[:, 0].eq(114).all() and out[:, :, -1].eq(114).all()
    # scaleup: shrink-or-grow to fit, centred
    out, r, (pw, ph) = letterbox(img, (16, 16), scaleup=True)
    assert r == 2.0 and out.shape == (3, 16, 16) and (pw, ph) == (0.0, 3.0)


def _rect_reference(hw: np.ndarray, batch: int, imgsz: int, stride: int, pad: float) -> list[list[int]]:
    """The brief's formula, written out plainly."""
    ar = np.sort(hw[:, 0] / hw[:, 1], kind="stable")
    shapes = []
    for i in range(0, len(ar), batch):
        a = ar[i:i + batch]
        rel = [a.max(), 1] if a.max() < 1 else ([1, 1 / a.min()] if a.min() > 1 else [1, 1])
        shapes.append([math.ceil(v * imgsz / stride + pad) * stride for v in rel])
    return shapes


def test_rect_batches():
    hw = np.array([[480, 640], [640, 480], [500, 500], [300, 900], [720, 1280], [1000, 400], [375, 500]])
    order, shapes = rect_batches(hw, batch=3, imgsz=640, stride=32, pad=0.5)
    ar = hw[:, 0] / hw[:, 1]
    assert (np.diff(ar[order]) >= 0).all()
    assert shapes.tolist() == _rect_reference(hw, 3, 640, 32, 0.5)
    assert shapes.tolist() == [[512, 672], [672, 672], [672, 288]]
    # square images at 256 / stride 32 / pad 0.5 -> 288 x 288, as val.py
    _, shapes = rect_batches(np.full((5, 2), 256), batch=32, imgsz=256, stride=32, pad=0.5)
    assert shapes.tolist() == [[288, 288]]
