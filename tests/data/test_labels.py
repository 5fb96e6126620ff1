"""Label parsing, the images->labels rule, split scanning, its report and its caches."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from yolocompress.data import load_data_config, load_split, scan_split
from yolocompress.data.labels import COORD_TOL, LabelError, label_path_for, parse_label_text
from yolocompress.data.scan import CACHE_SUFFIX, list_images
from yolocompress.errors import InputError

from .helpers import write_image


def test_label_path_rule():
    assert label_path_for("/d/images/train/a.jpg") == Path("/d/labels/train/a.txt")
    # only the last /images/ component is replaced
    assert label_path_for("/images/x/images/b.png") == Path("/images/x/labels/b.txt")
    assert label_path_for("/d/pics/c.jpeg") == Path("/d/pics/c.txt")


def test_parse_ok_polygon_and_duplicates():
    text = "1 0.5 0.5 0.2 0.4\n\n  0 0.1 0.2 0.3 0.4  \n1 0.5 0.5 0.2 0.4\n2 0.1 0.1 0.3 0.1 0.2 0.5\n"
    labels, dup = parse_label_text(text, nc=3)
    assert dup == 1
    np.testing.assert_allclose(labels, [[1, 0.5, 0.5, 0.2, 0.4], [0, 0.1, 0.2, 0.3, 0.4],
                                        [2, 0.2, 0.3, 0.2, 0.4]], atol=1e-6)
    assert labels.dtype == np.float32


def test_parse_tolerance_clips():
    labels, _ = parse_label_text(f"0 {1 + COORD_TOL / 2} 0.5 0.1 {-COORD_TOL / 2}\n", nc=1)
    assert labels[0, 1] == 1.0 and labels[0, 4] == 0.0


@pytest.mark.parametrize("text, message", [
    ("3 0.5 0.5 0.1 0.1", "line 1: class 3 out of range"),
    ("-1 0.5 0.5 0.1 0.1", "class -1 out of range"),
    ("0.5 0.5 0.5 0.1 0.1", "class 0.5 out of range"),
    ("0 0.5 0.5 0.1 0.1\n0 1.2 0.5 0.1 0.1", "line 2: coordinate 1.2 outside"),
    ("0 0.5 -0.01 0.1 0.1", "coordinate -0.01 outside"),
    ("0 0.5 0.5 0.1", "expected 5 values"),
    ("0 0.5 0.5 0.1 0.1 0.2", "got 6"),
    ("0 0.5 zero 0.1 0.1", "non-numeric value 'zero'"),
    ("0 nan 0.5 0.1 0.1", "non-finite"),
])
def test_parse_errors(text, message):
    with pytest.raises(LabelError, match=message):
        parse_label_text(text, nc=3)


def test_scan_report_counts_and_skips(make_dataset, caplog):
    images = {f"{n}.jpg": (32, 48) for n in ("ok", "nolabel", "empty", "cls", "coord", "cols", "dup")}
    labels = {"ok": "0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n", "nolabel": None, "empty": "", "cls": "7 0.5 0.5 0.1 0.1",
              "coord": "0 0.5 1.5 0.1 0.1", "cols": "0 0.5 0.5", "dup": "1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n"}
    data_yaml = make_dataset(images, labels)
    root = data_yaml.parent
    (root / "images" / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "labels" / "corrupt.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    # a JPEG missing only its end marker is restored in memory and kept
    good = write_image(root / "images" / "noeoi.jpg", 24, 24).read_bytes()
    (root / "images" / "noeoi.jpg").write_bytes(good[:-2])
    (root / "images" / "notes.md").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="yolocompress.data.scan"):
        index = scan_split(load_data_config(data_yaml), "val", cache=False)
    r = index.report
    assert (r.images, r.ok, r.missing, r.empty, r.corrupt, r.bad_labels, r.duplicates) == (9, 2, 2, 1, 1, 3, 1)
    assert r.usable == 5 and r.instances == 3
    assert [p.name for p in index.images] == ["dup.jpg", "empty.jpg", "noeoi.jpg", "nolabel.jpg", "ok.jpg"]
    assert index.image_hw.tolist() == [[32, 48], [32, 48], [24, 24], [32, 48], [32, 48]]
    reasons = {Path(i.path).name: (i.reason, i.skipped) for i in r.issues}
    assert "class 7 out of range" in reasons["cls.jpg"][0] and reasons["cls.jpg"][1]
    assert "outside [0, 1]" in reasons["coord.jpg"][0]
    assert "expected 5 values" in reasons["cols.jpg"][0]
    assert "corrupt image" in reasons["corrupt.jpg"][0]
    assert "end-of-image marker" in reasons["noeoi.jpg"][0] and not reasons["noeoi.jpg"][1]
    assert "duplicate" in reasons["dup.jpg"][0] and not reasons["dup.jpg"][1]
    assert "cls.jpg" in caplog.text  # skipped files are logged, never raised
    assert "9 images" in r.summary()


def test_label_file_with_bom_and_crlf(make_dataset):
    data_yaml = make_dataset({"a.jpg": (16, 16)}, {})
    (data_yaml.parent / "labels").mkdir()
    (data_yaml.parent / "labels" / "a.txt").write_bytes(b"\xef\xbb\xbf1 0.5 0.5 0.1 0.1\r\n0 0.2 0.2 0.1 0.1\r\n")
    index = scan_split(load_data_config(data_yaml), "val", cache=False)
    assert index.report.ok == 1 and index.labels[0][:, 0].tolist() == [1, 0]


def test_all_bad_raises_input_error(make_dataset):
    data_yaml = make_dataset({"a.jpg": (16, 16), "b.jpg": (16, 16)}, {"a": "5 0.5 0.5 0.1 0.1", "b": "0 2 2 2 2"})
    with pytest.raises(InputError, match="no usable images in the val split"):
        load_split(load_data_config(data_yaml), "val", cache=False)


def test_a_split_without_labels_is_refused_for_use_but_scans(make_dataset):
    data_yaml = make_dataset({"a.jpg": (16, 16), "b.jpg": (16, 16)}, {"a": "\n", "b": None})
    cfg = load_data_config(data_yaml)
    with pytest.raises(InputError, match=r"val split has no labels: none of its 2 usable images has a box "
                                         r"\(labels are read from .*labels/a.txt"):
        load_split(cfg, "val", cache=False)
    assert len(load_split(cfg, "val", cache=False, require_labels=False).images) == 2
    report = scan_split(cfg, "val", cache=False).report
    assert report.problems() == ("no labelled image (2 usable, all background: an empty or misplaced labels "
                                 "folder?)",)


def test_no_images_found(make_dataset):
    data_yaml = make_dataset({"a.jpg": (16, 16)}, {})
    (data_yaml.parent / "images" / "a.jpg").unlink()
    with pytest.raises(InputError, match="no images found"):
        scan_split(load_data_config(data_yaml), "val")


def test_txt_list_and_missing_image(tmp_path):
    write_image(tmp_path / "images" / "a.png", 20, 10)
    lst = tmp_path / "val.txt"
    lst.write_text("images/a.png\n./images/missing.jpg\n\n")
    assert list_images([lst]) == [(tmp_path / "images/a.png").resolve(), (tmp_path / "images/missing.jpg").resolve()]
    (tmp_path / "data.yaml").write_text("train: val.txt\nval: val.txt\nnames: [a]\n")
    index = scan_split(load_data_config(tmp_path / "data.yaml"), "val", cache=True)
    assert index.report.missing == 1 and index.report.corrupt == 1
    assert index.image_hw.tolist() == [[20, 10]]
    assert (tmp_path / ("val" + CACHE_SUFFIX)).is_file()  # cache beside a single .txt source


def test_disk_cache_reused_and_invalidated(make_dataset, monkeypatch):
    data_yaml = make_dataset({"a.jpg": (16, 16), "b.jpg": (16, 16)}, {"a": "0 0.5 0.5 0.1 0.1", "b": "1 0.5 0.5 0.2 0.2"})
    cfg = load_data_config(data_yaml)
    first = scan_split(cfg, "val")
    cache_file = data_yaml.parent / ("labels" + CACHE_SUFFIX)
    assert cache_file.is_file()

    from yolocompress.data import scan
    scan._MEMO.clear()
    calls = []
    monkeypatch.setattr(scan, "check_image", lambda *a: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    again = scan_split(cfg, "val")  # from the file: no image is checked
    assert calls == [] and again.report == first.report
    assert [lb.tolist() for lb in again.labels] == [lb.tolist() for lb in first.labels]
    np.testing.assert_array_equal(again.image_hw, first.image_hw)
    monkeypatch.undo()

    scan._MEMO.clear()
    label = data_yaml.parent / "labels" / "b.txt"
    label.write_text("9 0.5 0.5 0.2 0.2\n")  # edited label file: different size -> rescan
    os.utime(label, ns=(1, 1))
    changed = scan_split(cfg, "val")
    assert changed.report.bad_labels == 1 and len(changed) == 1


def test_cache_off_writes_nothing(make_dataset):
    data_yaml = make_dataset({"a.jpg": (16, 16)}, {"a": "0 0.5 0.5 0.1 0.1"})
    scan_split(load_data_config(data_yaml), "val", cache=False)
    assert not list(data_yaml.parent.glob("*" + CACHE_SUFFIX))


def test_damaged_cache_file_is_ignored(make_dataset):
    data_yaml = make_dataset({"a.jpg": (16, 16)}, {"a": "0 0.5 0.5 0.1 0.1"})
    (data_yaml.parent / ("labels" + CACHE_SUFFIX)).write_bytes(b"garbage")
    index = scan_split(load_data_config(data_yaml), "val")
    assert index.report.ok == 1
