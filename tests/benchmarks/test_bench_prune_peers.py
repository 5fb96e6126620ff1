"""benchmarks/bench_prune_peers.py's Torch-Pruning step on a tiny random yolov5n at 64 px: it meets the GFLOPs
budget (or says it did not), leaves the original and Detect's output convs alone, and its result still runs,
exports to ONNX with our exporter (parity with PyTorch) and survives our checkpoint format. Skipped without
Torch-Pruning (pyproject's ``bench`` extra)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from yolocompress.models import build_model
from yolocompress.models.shapes import num_params, shape_spec
from yolocompress.profile import gflops

pytest.importorskip("torch_pruning")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_prune_peers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_prune_peers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("yolov5n", nc=3).eval()


@pytest.mark.parametrize("method, global_pruning", [("tp-magnitude", False), ("tp-groupnorm", False),
                                                    ("tp-magnitude", True)])
def test_tp_prune_meets_the_budget_and_the_result_runs_exports_and_saves(bench, model, method,
                                                                          global_pruning):
    base, spec = gflops(model, 64), shape_spec(model)
    target = 0.5 * base
    pruned, info = bench.tp_prune(model, method, target, 64, steps=20, max_ratio=0.8, round_to=8,
                                  global_pruning=global_pruning)
    assert info["reached_budget"] and 0 < info["tp_steps"] <= 20
    assert gflops(pruned, 64) <= target
    assert num_params(pruned) < num_params(model)
    assert shape_spec(model) == spec  # TP pruned a copy
    assert [c.out_channels for c in pruned.model[-1].m] == [c.out_channels for c in model.model[-1].m]
    kept = [c.out_channels for _, c in pruned.named_modules() if isinstance(c, torch.nn.Conv2d)]
    assert all(k % 8 == 0 for k in kept[:-3])  # round_to, except Detect's outputs (3 x (nc + 5) each)
    checks = bench.checks(pruned, 64)
    assert checks["onnx_parity_error"] < 1e-3 and checks["checkpoint_round_trip"]
    assert checks["output_shape"] == [1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 8]


def test_tp_prune_says_when_max_ratio_stops_it_short_of_the_budget(bench, model):
    pruned, info = bench.tp_prune(model, "tp-magnitude", 0.05 * gflops(model, 64), 64, steps=4,
                                  max_ratio=0.25, round_to=8)
    assert not info["reached_budget"] and info["tp_steps"] == 4
    assert gflops(pruned, 64) > 0.05 * gflops(model, 64)
