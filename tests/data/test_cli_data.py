"""``yolocompress data synth`` and ``data check`` through the CLI entry point."""
from __future__ import annotations

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


def test_check_reports_problems_and_exits_2_when_nothing_is_usable(make_dataset, capsys):
    data_yaml = make_dataset({"a.jpg": (16, 16), "b.jpg": (16, 16)}, {"a": "0 0.5 0.5 0.1 0.1", "b": "9 0.5 0.5 0.1 0.1"})
    assert main(["data", "check", str(data_yaml), "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert "images/b.jpg" in text and "class 9" in text and "skipped" in text
    (data_yaml.parent / "labels" / "a.txt").write_text("0 0.5 0.5 0.1\n")
    assert main(["data", "check", str(data_yaml), "--no-cache"]) == 2
    assert "nothing usable" in capsys.readouterr().out
    assert not list(data_yaml.parent.glob("*.cache"))


def test_check_bad_inputs_exit_2(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "missing.yaml")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [oops\n")
    assert main(["data", "check", str(bad)]) == 2
    assert capsys.readouterr().err.count("yolocompress: error:") == 2
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--classes", "blob"]) == 2
