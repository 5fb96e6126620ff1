"""The synthetic shapes data set: determinism, tight labels, a valid data.yaml, argument checks."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from yolocompress.data import SHAPES, build_eval_loader, load_data_config, scan_split, synthesize_dataset
from yolocompress.data.synthetic import _coverage, _extent, _grid, _sdf, _shape
from yolocompress.errors import InputError


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(n_train=6, n_val=3, imgsz=64)
    a = synthesize_dataset(tmp_path / "a", seed=7, **kw).parent
    b = synthesize_dataset(tmp_path / "b", seed=7, **kw).parent
    c = synthesize_dataset(tmp_path / "c", seed=8, **kw).parent
    assert _digest(a) == _digest(b) != _digest(c)
    assert len(list((a / "images" / "train").glob("*.jpg"))) == 6
    assert len(list((a / "labels" / "val").glob("*.txt"))) == 3
    assert not list(tmp_path.glob(".*"))  # no temporary folders left behind


def test_output_is_a_clean_data_set(tmp_path):
    data_yaml = synthesize_dataset(tmp_path / "ds", n_train=12, n_val=6, imgsz=96, classes=("star", "ring", "cross"))
    cfg = load_data_config(data_yaml)
    assert cfg.names == ["star", "ring", "cross"] and cfg.nc == 3
    for split in ("train", "val"):
        report = scan_split(cfg, split, cache=False).report
        assert report.skipped == 0 and report.duplicates == 0 and report.issues == ()
        assert report.instances >= report.images  # about 3.5 objects per image
    imgs, targets, _, _ = next(iter(build_eval_loader(cfg, imgsz=96, batch=6, label_cache=False)))
    assert imgs.shape == (6, 3, 128, 128)
    wh = targets[:, 4:] * 128
    assert wh.max(1).values.min() >= 8 - 1e-3 and wh.max() <= 48 + 1e-3  # 8 px .. half the image


@pytest.mark.parametrize("kind", SHAPES)
def test_label_extent_is_tight_to_drawn_pixels(kind):
    """Labels are the shape's exact extent: every pixel with ink lies within a pixel of it, and the
    half-covered pixels reach it within 2 px (the sharp tips of stars are thinner than a pixel)."""
    rng = np.random.default_rng(SHAPES.index(kind))
    for size in (8.0, 23.0, 60.0):
        geometry = _shape(kind, size, rng)
        ys, xs = _grid(80, 80)
        coverage = _coverage(_sdf(geometry, xs - 40.3, ys - 39.6))
        x1, y1, x2, y2 = _extent(geometry)
        label = np.array([x1 + 40.3, y1 + 39.6, x2 + 40.3, y2 + 39.6])
        for covered, tol in ((coverage > 0, 1.0), (coverage >= 0.5, 2.0)):
            rows, cols = np.nonzero(covered)
            drawn = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
            np.testing.assert_allclose(drawn, label, atol=tol)
        assert max(x2 - x1, y2 - y1) == pytest.approx(size)


def test_existing_folder_and_overwrite(tmp_path):
    out = tmp_path / "ds"
    synthesize_dataset(out, n_train=1, n_val=1, imgsz=32, seed=0)
    with pytest.raises(InputError, match="already exists"):
        synthesize_dataset(out, n_train=1, n_val=1, imgsz=32, seed=1)
    synthesize_dataset(out, n_train=2, n_val=1, imgsz=32, seed=1, overwrite=True)
    assert len(list((out / "images" / "train").glob("*.jpg"))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize("kw, message", [({"classes": ("circle", "blob")}, "unknown shape"),
                                         ({"classes": ("circle", "circle")}, "without repeats"),
                                         ({"n_val": 0}, "must be >= 1"), ({"imgsz": 16}, "imgsz"),
                                         ({"seed": -1}, "seed")])
def test_bad_arguments(tmp_path, kw, message):
    with pytest.raises(InputError, match=message):
        synthesize_dataset(tmp_path / "x", **{"n_train": 1, "n_val": 1, "imgsz": 32, **kw})
    assert not (tmp_path / "x").exists()
