"""``yolocompress demo`` compresses the embedded default with the shipped demo recipe, no arguments needed."""
from __future__ import annotations

import json

import torch

import yolocompress.demo as demo
from yolocompress.cli import main
from yolocompress.io.checkpoint import save_model
from yolocompress.models import build_model, load_config

# The demo recipe, shortened for a tiny stand-in baseline (the real one is timed in benchmarks/RESULTS.md).
FAST = ["--set", "stages.0.prune.search.calib_batch=2", "--set", "stages.0.prune.search.eval_images=4",
        "--set", "stages.0.prune.search.candidates=2", "--set", "stages.1.finetune.epochs=1",
        "--set", "stages.1.finetune.batch=2", "--set", "stages.3.quantize.calib_images=2",
        "--set", "measure.runs=2", "--set", "measure.warmup=1"]


def test_demo_compresses_a_stand_in_baseline(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    cfg = load_config("yolov5n")
    cfg["width_multiple"] = 0.125
    stand_in = save_model(build_model(cfg, nc=6), tmp_path / "baseline.pt", imgsz=64)
    (tmp_path / "baseline.json").write_text(json.dumps({"model": "yolov5n", "map50": 0.0, "map50_95": 0.0}))
    monkeypatch.setattr(demo, "BASELINE_PATH", stand_in)
    monkeypatch.setattr(demo, "BASELINE_RECORD", tmp_path / "baseline.json")
    monkeypatch.setattr(demo, "DEMO_DATA", {"n_train": 4, "n_val": 4, "imgsz": 64, "seed": 0})
    monkeypatch.setenv("YOLOCOMPRESS_CACHE", str(tmp_path / "cache"))
    out, report_json = tmp_path / "demo", tmp_path / "demo.json"
    assert main(["demo", "--out", str(out), "--json", str(report_json), *FAST]) == 0
    report = json.loads(report_json.read_text())
    assert [r["stage"] for r in report["rows"]] == ["baseline", "prune", "finetune", "fuse", "quantize"]
    assert report["rows"][-1]["kind"] == "onnx" and report["rows"][1]["params"] < report["rows"][0]["params"]
    printed = capsys.readouterr().out
    assert "before / after" in printed and "quantize" in printed and "tradeoff.png" in printed
    assert (out / "tradeoff.png").is_file() and (out / "report.md").is_file()
    # the data set is generated once and reused; a second demo resumes instead of recomputing
    assert demo.demo_data() == next((tmp_path / "cache").glob("*/data.yaml"))
    assert main(["demo", "--out", str(out), *FAST]) == 0
    assert capsys.readouterr().err.count("skipped (--resume)") == 5


def test_demo_without_baseline_fails_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "BASELINE_PATH", tmp_path / "missing.pt")
    monkeypatch.setattr(demo, "DEMO_DATA", {"n_train": 1, "n_val": 1, "imgsz": 64, "seed": 0})
    monkeypatch.setenv("YOLOCOMPRESS_CACHE", str(tmp_path / "cache"))
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 1
    assert "baseline is missing" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
