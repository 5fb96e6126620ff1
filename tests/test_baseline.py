"""The shipped baseline: small, pickle-free, and its recorded metrics reproduce on the demo val split."""
from __future__ import annotations

import json

import pytest
import torch

from yolocompress.data.synthetic import DEFAULT_CLASSES, synthesize_dataset
from yolocompress.demo import BASELINE_PATH, BASELINE_RECORD, DEMO_DATA
from yolocompress.engine.evaluator import evaluate_model
from yolocompress.io.checkpoint import load_model_with_info


def test_baseline_is_small_and_plain_data():
    assert BASELINE_PATH.is_file()
    assert BASELINE_PATH.stat().st_size < 5_000_000
    raw = torch.load(BASELINE_PATH, weights_only=True)  # no allowlist: plain tensors and containers
    assert raw["format"] == "yolocompress"


def test_baseline_record_describes_the_model():
    record = json.loads(BASELINE_RECORD.read_text())
    model, info = load_model_with_info(BASELINE_PATH)
    assert model.names == list(DEFAULT_CLASSES) and model.nc == len(DEFAULT_CLASSES)
    assert info.imgsz == record["imgsz"] == DEMO_DATA["imgsz"]
    assert record["data"]["seed"] == DEMO_DATA["seed"] and record["data"]["n_val"] == DEMO_DATA["n_val"]
    assert info.metrics["map50_95"] == pytest.approx(record["map50_95"])
    assert record["command"].startswith("PYTHONPATH=. python3 benchmarks/train_baseline.py")
    assert len(record["curve"]) == record["epochs"]


def test_recorded_metrics_reproduce_on_the_demo_val_split(tmp_path):
    # val images depend only on (seed, split, index): one train image is enough to get the same val split
    data_yaml = synthesize_dataset(tmp_path / "demo", n_train=1, n_val=DEMO_DATA["n_val"],
                                   imgsz=DEMO_DATA["imgsz"], seed=DEMO_DATA["seed"])
    record = json.loads(BASELINE_RECORD.read_text())
    result = evaluate_model(BASELINE_PATH, data_yaml, imgsz=record["imgsz"], batch=32, label_cache=False)
    assert result.map50 == pytest.approx(record["map50"], abs=1e-4)
    assert result.map50_95 == pytest.approx(record["map50_95"], abs=1e-4)
