"""``yolocompress data synth`` and ``data check`` through the CLI entry point."""
from __future__ import annotations

import pytest

from yolocompress.cli import main


def test_synth_then_check(tmp_path, capsys):
    out = tmp_path / "shapes"
    assert main(["data", "synth", "--out", str(out), "--n-train", "3", "--n-val", "2", "--imgsz", "64",
                 "--classes", "circle,star", "--seed", "1"]) == 0
    assert "data.yaml" in capsys.readouterr().out
    assert "names:\n- circle\n- star" in (out / "data.yaml").read_text()
    assert main(["data", "check", str(out / "data.yaml"), "--split", "train"]) == 0
    text = capsys.readouterr().out
    assert "train split" in text and "usable" in text
    # a second synth into the same folder is refused unless --overwrite
    assert main(["data", "synth", "--out", str(out), "--n-train", "1", "--n-val", "1", "--imgsz", "32"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(out), "--n-train", "1", "--n-val", "1", "--imgsz", "32",
                 "--overwrite"]) == 0


def test_check_reports_problems_and_exits_1_with_their_counts(make_dataset, capsys):
    data_yaml = make_dataset({"a.jpg": (16, 16), "b.jpg": (16, 16), "c.jpg": (16, 16)},
                             {"a": "0 0.5 0.5 0.1 0.1", "b": "9 0.5 0.5 0.1 0.1", "c": "0 0.5 0.5 0.1 0.1"})
    assert main(["data", "check", str(data_yaml), "--no-cache"]) == 1  # an out-of-range class id is an error
    text = " ".join(capsys.readouterr().out.split())
    assert "images/b.jpg" in text and "class 9" in text and "skipped" in text
    assert "failed the check: 1 image with bad labels (skipped)" in text
    (data_yaml.parent / "images" / "c.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (data_yaml.parent / "labels" / "a.txt").write_text("0 0.5 0.5 0.1\n")
    assert main(["data", "check", str(data_yaml), "--no-cache"]) == 1
    text = " ".join(capsys.readouterr().out.split())
    assert "1 corrupt image (skipped); 2 images with bad labels (skipped); no labelled image" in text
    assert not list(data_yaml.parent.glob("*.cache"))


def test_check_fails_an_empty_labels_folder_and_passes_a_clean_split(make_dataset, capsys):
    clean = make_dataset({"a.jpg": (16, 16), "b.jpg": (16, 16)}, {"a": "0 0.5 0.5 0.1 0.1", "b": None})
    assert main(["data", "check", str(clean), "--no-cache"]) == 0  # one background image is fine
    assert "failed" not in capsys.readouterr().out
    empty = make_dataset({"a.jpg": (16, 16), "b.jpg": (16, 16)}, {})
    (empty.parent / "labels").mkdir()
    assert main(["data", "check", str(empty), "--no-cache"]) == 1
    text = " ".join(capsys.readouterr().out.split())
    assert "failed the check: no labelled image (2 usable, all background" in text


def test_check_bad_inputs_exit_2(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "missing.yaml")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [oops\n")
    assert main(["data", "check", str(bad)]) == 2
    assert capsys.readouterr().err.count("yolocompress: error:") == 2
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--classes", "blob"]) == 2


def test_eval_train_and_quantize_refuse_a_split_without_labels(make_dataset, tmp_path, capsys):
    from yolocompress.io.checkpoint import save_model
    from yolocompress.models import DetectionModel, load_config

    cfg = load_config("yolov5n")
    cfg.update(width_multiple=0.0625, nc=3)
    model = tmp_path / "tiny.pt"
    save_model(DetectionModel(cfg), model, imgsz=64)
    data = str(make_dataset({"a.jpg": (64, 64), "b.jpg": (64, 64)}, {"a": "", "b": None}))
    commands = {
        "eval": ["eval", str(model), "--data", data, "--batch", "2"],
        "train": ["train", str(model), "--data", data, "--epochs", "1", "--imgsz", "64", "--batch", "2",
                  "--workers", "0", "--out", str(tmp_path / "run"), "--noval"],
        "quantize": ["quantize", str(model), "--data", data, "-o", str(tmp_path / "int8.onnx"),
                     "--calib-images", "2"],
    }
    for name, args in commands.items():
        assert main(args) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "split has no labels: none of its 2 usable images has a box" in err, err
    assert not (tmp_path / "int8.onnx").exists() and not (tmp_path / "run" / "weights" / "last.pt").exists()


def test_check_fails_a_split_without_image_files_which_is_bad_input_elsewhere(make_dataset, capsys):
    """No image files at all: ``data check`` reports a failed check (exit 1); for a command that needs the
    split it is bad input (an InputError: exit 2)."""
    data = make_dataset({"a.jpg": (16, 16)}, {"a": "0 0.5 0.5 0.2 0.2"})
    images = data.parent / "images"
    for f in images.iterdir():
        f.unlink()
    assert main(["data", "check", str(data), "--no-cache"]) == 1
    assert "split failed the check: no images found in val split" in capsys.readouterr().out
    from yolocompress.data.config import load_data_config
    from yolocompress.data.scan import scan_split
    from yolocompress.errors import EmptySplitError, InputError

    with pytest.raises(EmptySplitError, match="no images found in val split") as info:
        scan_split(load_data_config(data), "val", cache=False)
    assert isinstance(info.value, InputError)  # exit 2 wherever the split is used as input
