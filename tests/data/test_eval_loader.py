"""The evaluation loader: val.py batch shapes, the batch contract, letterbox invertibility."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from yolocompress.data import build_eval_loader, load_data_config
from yolocompress.data.images import decode_rgb, load_resized


def test_fixture_batches_match_val_py(ultra_dir):
    """shapes-val (128 images of 256x256) at imgsz 256, batch 32, rect, pad 0.5, stride 32: val.py
    letterboxes every batch to 288x288 (ceil(256/32 + 0.5) * 32) with 16 px of grey on each side."""
    cfg = load_data_config(ultra_dir / "shapes-val" / "data.yaml")
    loader = build_eval_loader(cfg, "val", imgsz=256, batch=32, stride=32, pad=0.5, rect=True, label_cache=False)
    n_labels = sum(len(p.read_text().split("\n")) - 1 for p in (ultra_dir / "shapes-val" / "labels").glob("*.txt"))
    seen, boxes = [], 0
    for imgs, targets, paths, shapes in loader:
        assert imgs.shape == (32, 3, 288, 288) and imgs.dtype == torch.uint8
        assert targets.shape[1] == 6 and targets[:, 0].max() < 32
        assert all(s == ((256, 256), ((1.0, 1.0), (16.0, 16.0))) for s in shapes)
        assert imgs[:, :, :16].eq(114).all() and imgs[:, :, :, -16:].eq(114).all()
        seen += paths
        boxes += len(targets)
    assert len(seen) == 128 and len(set(seen)) == 128 and boxes == n_labels == 457
    assert seen == sorted(seen)  # equal aspect ratios keep file order (stable sort)


def test_square_mode_for_static_models(ultra_dir):
    cfg = load_data_config(ultra_dir / "shapes-val" / "data.yaml")
    loader = build_eval_loader(cfg, imgsz=256, batch=50, rect=False, label_cache=False)
    sizes = [tuple(b[0].shape) for b in loader]
    assert sizes == [(50, 3, 256, 256), (50, 3, 256, 256), (28, 3, 256, 256)]


@pytest.fixture
def mixed(make_dataset):
    """Landscape, portrait and small images (shrunk with INTER_AREA, enlarged bilinearly)."""
    images = {"land.jpg": (60, 100), "port.png": (120, 64), "small.png": (20, 30), "sq.jpg": (90, 90),
              "wide.png": (40, 128)}
    box = "0 0.30 0.40 0.20 0.30\n1 0.75 0.60 0.40 0.50\n2 0.5 0.5 1.0 1.0\n"
    return make_dataset(images, {k.split(".")[0]: box for k in images})


def _to_original(targets: torch.Tensor, shape, hw_in) -> np.ndarray:
    """Letterboxed normalised xywh -> original-image pixel xyxy through ``shapes`` (as val.py)."""
    (h0, w0), ((rh, rw), (pw, ph)) = shape
    H, W = hw_in
    cx, cy, w, h = (targets[:, 2:] * torch.tensor([W, H, W, H])).double().unbind(1)
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    xyxy[:, [0, 2]] = ((xyxy[:, [0, 2]] - pw) / rw).clamp(0, w0)
    xyxy[:, [1, 3]] = ((xyxy[:, [1, 3]] - ph) / rh).clamp(0, h0)
    return xyxy.numpy()


@pytest.mark.parametrize("rect", [True, False])
def test_boxes_map_back_to_original(mixed, rect):
    loader = build_eval_loader(mixed, imgsz=64, batch=2, rect=rect, label_cache=False)
    labels = np.array([[0.30, 0.40, 0.20, 0.30], [0.75, 0.60, 0.40, 0.50], [0.5, 0.5, 1.0, 1.0]])
    n = 0
    for imgs, targets, paths, shapes in loader:
        H, W = imgs.shape[-2:]
        assert H % 32 == 0 and W % 32 == 0 and (not rect or max(H, W) <= 64 + 32)
        for i, (path, shape) in enumerate(zip(paths, shapes)):
            (h0, w0), ((rh, rw), _) = shape
            expect = np.stack([(labels[:, 0] - labels[:, 2] / 2) * w0, (labels[:, 1] - labels[:, 3] / 2) * h0,
                               (labels[:, 0] + labels[:, 2] / 2) * w0, (labels[:, 1] + labels[:, 3] / 2) * h0], 1)
            got = _to_original(targets[targets[:, 0] == i], shape, (H, W))
            # the 1e-3 px edge clip of val.py's xyxy2xywhn, scaled back to the original
            np.testing.assert_allclose(got, expect, atol=2e-3 / min(rh, rw) + 1e-4)
            assert abs(rh - rw) < 0.05 and abs(max(h0, w0) * rh - 64) <= 1
            n += 1
    assert n == 5


def test_image_content_is_resized_original(mixed):
    loader = build_eval_loader(mixed, imgsz=64, batch=5, rect=True, label_cache=False)
    imgs, _, paths, shapes = next(iter(loader))
    for img, path, ((h0, w0), ((rh, rw), (pw, ph))) in zip(imgs, paths, shapes):
        resized = load_resized(decode_rgb(path)[0], 64, augment=False)
        h, w = resized.shape[1:]
        assert (h, w) == (round(h0 * rh), round(w0 * rw))
        top, left = int(round(ph - 0.1)), int(round(pw - 0.1))
        assert torch.equal(img[:, top:top + h, left:left + w], resized)
        assert img[:, :top].eq(114).all() and img[:, top + h:].eq(114).all()


def test_rect_batches_sorted_by_aspect_ratio(mixed):
    loader = build_eval_loader(mixed, imgsz=64, batch=2, rect=True, label_cache=False)
    ar = [h / w for b in loader for (h, w), _ in b[3]]
    assert ar == sorted(ar)
    assert [tuple(b[0].shape[-2:]) for b in loader] == [(64, 96), (96, 96), (96, 64)]


def test_ram_cache_and_workers_give_identical_batches(mixed):
    plain = list(build_eval_loader(mixed, imgsz=64, batch=2, label_cache=False))
    cached = build_eval_loader(mixed, imgsz=64, batch=2, cache=True, label_cache=False)
    assert cached.dataset._ram is not None and len(cached.dataset._ram) == 5
    workers = list(build_eval_loader(mixed, imgsz=64, batch=2, workers=2, label_cache=False))
    for other in (list(cached), list(cached), workers):
        for a, b in zip(plain, other):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2] and a[3] == b[3]


def test_imgsz_rounded_to_stride(mixed, caplog):
    loader = build_eval_loader(mixed, imgsz=70, batch=5, rect=False, label_cache=False)
    assert next(iter(loader))[0].shape[-2:] == (96, 96)
    assert "not a multiple of stride" in caplog.text
