"""``yolocompress demo`` runs on the embedded default with no arguments."""
from __future__ import annotations

import json

import torch

import yolocompress.demo as demo
from yolocompress.cli import main
from yolocompress.io.checkpoint import save_model
from yolocompress.models import build_model


def test_demo_end_to_end_on_a_stand_in_baseline(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    model = build_model("yolov5n", nc=6)
    stand_in = save_model(model, tmp_path / "baseline.pt", imgsz=64)
    (tmp_path / "baseline.json").write_text(json.dumps({"model": "yolov5n", "map50": 0.0, "map50_95": 0.0}))
    monkeypatch.setattr(demo, "BASELINE_PATH", stand_in)
    monkeypatch.setattr(demo, "BASELINE_RECORD", tmp_path / "baseline.json")
    monkeypatch.setattr(demo, "DEMO_DATA", {"n_train": 2, "n_val": 6, "imgsz": 64, "seed": 0})
    monkeypatch.setenv("YOLOCOMPRESS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo.json"
    assert main(["demo", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["summary"]["nc"] == 6 and report["eval"]["images"] == 6
    assert "map50_95" in report["eval"]
    printed = capsys.readouterr().out
    assert "shipped baseline" in printed and "mAP50-95" in printed
    # the data set is generated once and reused
    assert (tmp_path / "cache").is_dir()
    assert demo.demo_data() == next((tmp_path / "cache").glob("*/data.yaml"))


def test_demo_without_baseline_fails_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "BASELINE_PATH", tmp_path / "missing.pt")
    monkeypatch.setattr(demo, "DEMO_DATA", {"n_train": 1, "n_val": 1, "imgsz": 64, "seed": 0})
    monkeypatch.setenv("YOLOCOMPRESS_CACHE", str(tmp_path / "cache"))
    assert main(["demo"]) == 1
    assert "baseline is missing" in capsys.readouterr().err
