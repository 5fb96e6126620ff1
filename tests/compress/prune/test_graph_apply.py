"""Dependency analysis + physical removal, over every shipped config.

The central check: prune random channels of every group, then compare the pruned model with the *original*
model whose layers ignore the removed channels (their input columns in every consuming conv / linear set to
zero). The two compute the same function exactly iff the coupling is right: a missed residual / concat /
depth-wise / SE coupling either breaks the forward pass or changes the outputs.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from yolocompress.compress.prune import ChannelRules, CostModel, channel_graph, prune_channels
from yolocompress.compress.prune.graph import UnsupportedModuleError
from yolocompress.io.checkpoint import load_model, save_model
from yolocompress.models import DetectionModel, build_model, list_configs, load_config
from yolocompress.profile import gflops

from ..helpers import max_relative_error, outputs_with_features
from .conftest import tiny_model

CONFIGS = list_configs()
IMGSZ = 64


def random_keep(graph, seed: int) -> np.ndarray:
    """Keep a random subset (at least one) of every group's units."""
    rng = np.random.default_rng(seed)
    keep = graph.full_keep()
    for grp in graph.groups:
        n = grp.channels
        k = int(rng.integers(1, n + 1))
        keep[rng.choice(grp.units, n - k, replace=False)] = False
    return keep


def ignore_removed(model, graph, keep):
    """In place: zero every conv / linear input column that reads a removed channel."""
    with torch.no_grad():
        for rec in graph.layers:
            if rec.kind in ("conv", "linear"):
                mask = torch.from_numpy(~graph.kept_mask(rec.in_ids, keep))
                model.get_submodule(rec.name).weight[:, mask] = 0
    return model


@pytest.mark.parametrize("name", CONFIGS)
def test_random_pruning_is_exact(name, tmp_path):
    model = tiny_model(name)
    graph = channel_graph(model)
    assert graph.groups, "every shipped config has something to prune"
    keep = random_keep(graph, seed=len(name))
    assert not keep.all()
    pruned = prune_channels(model, graph, keep)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())

    # kept channels carry the original weights exactly
    for rec in graph.layers:
        old, new = model.get_submodule(rec.name).weight, pruned.get_submodule(rec.name).weight
        out_idx = torch.from_numpy(np.flatnonzero(graph.kept_mask(rec.out_ids, keep)))
        expected = old[out_idx]
        if rec.kind in ("conv", "linear", "fixed"):
            expected = expected[:, torch.from_numpy(np.flatnonzero(graph.kept_mask(rec.in_ids, keep)))]
        assert torch.equal(new, expected), rec.name
    for rec in graph.norms:
        idx = torch.from_numpy(np.flatnonzero(graph.kept_mask(rec.ids, keep)))
        old, new = model.get_submodule(rec.name), pruned.get_submodule(rec.name)
        assert torch.equal(new.running_var, old.running_var[idx]) and torch.equal(new.weight, old.weight[idx])

    # same function as the original with the removed channels ignored (eval mode), same output shapes
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    reference = outputs_with_features(ignore_removed(tiny_model(name), graph, keep), x)
    ours = outputs_with_features(pruned, x)
    nl = pruned.detect.nl
    detect = f"model.{len(model.model) - 1}.m"
    for i in range(nl):  # the features entering Detect: the original's kept channels
        mask = torch.from_numpy(graph.kept_mask(graph.layer(f"{detect}.{i}").in_ids, keep))
        reference[1 + nl + i] = reference[1 + nl + i][:, mask]
    assert [o.shape for o in ours] == [r.shape for r in reference]
    assert max_relative_error(ours, reference) < 1e-5

    # train mode runs (on a copy: it updates BN statistics) with the original's shapes; backward works
    trained = copy.deepcopy(pruned).train()
    raw = trained(x)
    assert [r.shape for r in raw] == [r.shape for r in model.train()(x)]
    sum(r.sum() for r in raw).backward()
    model.eval()

    # FLOPs of the cost model = the profiler's count of the built model
    assert CostModel(model, graph, IMGSZ).flops(keep) == pytest.approx(gflops(pruned, IMGSZ) * 1e9, rel=1e-9)

    # our format: rebuilt from config + shape spec + state_dict, no pickle; identical outputs
    path = save_model(pruned, tmp_path / "pruned.pt", imgsz=IMGSZ)
    loaded = load_model(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), pruned.state_dict().values()))
    assert max_relative_error(outputs_with_features(loaded, x), ours) == 0.0
    rebuilt = DetectionModel(pruned.resolved_config())
    rebuilt.load_state_dict(pruned.state_dict())


@pytest.mark.parametrize("name", ["yolov5n", "yolov5s-ghost", "yolov5-mobilenetv3-small"])
def test_all_kept_is_identical(name):
    model = tiny_model(name)
    graph = channel_graph(model)
    pruned = prune_channels(model, graph, graph.full_keep())
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    a, b = outputs_with_features(model, x), outputs_with_features(pruned, x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert pruned is not model and model.detect.m[0].weight.data_ptr() != pruned.detect.m[0].weight.data_ptr()


def _group_of(graph, layer_name):
    return [g for g in graph.groups if layer_name in g.layers]


def test_coupling_of_blocks():
    g = channel_graph(build_model("yolov5n", nc=3))
    # C3: cv1's output is added to every Bottleneck's cv2 output
    (grp,) = _group_of(g, "model.2.cv1.conv")
    assert set(grp.layers) == {"model.2.cv1.conv", "model.2.m.0.cv2.conv"}
    # the head's C3 has no shortcut: cv1 alone
    (grp,) = _group_of(g, "model.13.cv1.conv")
    assert grp.layers == ["model.13.cv1.conv"]
    # Detect keeps its na * (nc + 5) outputs, its inputs are prunable
    rec = g.layer("model.24.m.0")
    assert g.unit_fixed[g.unit_of[rec.out_ids]].all() and not g.unit_fixed[g.unit_of[rec.in_ids]].any()
    # the stem reads the fixed image channels
    assert g.unit_fixed[g.unit_of[g.layer("model.0.conv").in_ids]].all()


def test_coupling_of_light_blocks():
    g = channel_graph(build_model("yolov5s-ghost", nc=3))
    # GhostConv: the cheap depth-wise half carries the primary half's ids
    rec = g.layer("model.1.cv2.conv")
    assert rec.kind == "depthwise" and np.array_equal(rec.out_ids, g.layer("model.1.cv1.conv").out_ids)
    g = channel_graph(build_model("yolov5-shufflenetv2", nc=3))
    # ShuffleNetV2: the shuffled block outputs are fixed, the branches' hidden width is prunable
    assert g.unit_fixed[g.unit_of[g.layer("model.2.0.branch2.5").out_ids]].all()
    assert _group_of(g, "model.2.0.branch2.0")
    g = channel_graph(build_model("yolov5-mobilenetv3-small", nc=3))
    # SE: both Linear layers take part; the excitation is tied to the channels it scales
    (grp,) = _group_of(g, "model.5.conv.0")
    assert "model.5.conv.5.fc.2" in grp.layers
    assert _group_of(g, "model.5.conv.5.fc.0")  # the squeeze width is a group of its own
    g = channel_graph(build_model("yolov5n-rep", nc=3))
    (grp,) = _group_of(g, "model.1.rbr_dense.conv")
    assert "model.1.rbr_1x1.conv" in grp.layers


def test_fixed_units_cannot_be_removed():
    model = build_model("yolov5n", nc=3)
    g = channel_graph(model)
    keep = g.full_keep()
    keep[np.flatnonzero(g.unit_fixed)[0]] = False
    with pytest.raises(ValueError, match="fixed"):
        prune_channels(model, g, keep)


def test_unsupported_activation_is_refused():
    cfg = load_config("yolov5n")
    cfg["activation"] = "AconC"
    cfg["width_multiple"] = 0.0625
    with pytest.raises(UnsupportedModuleError, match="AconC"):
        channel_graph(build_model(cfg, nc=3))


def test_channel_rules():
    rules = ChannelRules(min_channels=8, round_to=8)
    assert rules.keep_count(64, 0.5) == 32 and rules.keep_count(64, 0.0) == 64
    assert rules.keep_count(64, 0.3) == 48 and rules.keep_count(64, 0.95) == 8
    assert rules.keep_count(16, 0.5) == 8 and not rules.prunable(8) and rules.prunable(16)
    assert rules.keep_count(12, 0.5) == 8  # rounded to a multiple of 8 when possible
    free = ChannelRules(min_channels=1, round_to=1)
    assert free.keep_count(10, 0.55) == 5 and free.keep_count(3, 0.9) == 1


def test_narrow_channel_rules_allow_min_channels_below_round_to():
    blocks = ChannelRules(min_channels=8, round_to=16, narrow=False)
    narrow = ChannelRules(min_channels=8, round_to=16, narrow=True)
    assert not blocks.prunable(16) and blocks.keep_count(32, 0.9) == 16   # 16s only
    assert narrow.prunable(16) and narrow.keep_count(16, 0.5) == 8 and narrow.keep_count(32, 0.9) == 8
    assert narrow.keep_count(32, 0.5) == 16 and narrow.keep_count(64, 0.5) == 32   # Torch-Pruning's widths
    # n * (1 - ratio) goes to the nearest allowed width: 8, or a multiple of 16
    assert [narrow.keep_count(64, r) for r in (0.85, 0.78, 0.7, 0.6)] == [8, 16, 16, 32]
    widths = {narrow.keep_count(n, r / 20) for n in (16, 32, 48, 64, 128) for r in range(20)}
    assert widths and all(w == 8 or w % 16 == 0 for w in widths)
    assert not narrow.prunable(8)   # min_channels is still the floor
    same = ChannelRules(min_channels=8, round_to=8, narrow=True)   # round_to <= min_channels: no change
    assert all(same.keep_count(n, r / 10) == ChannelRules(8, 8).keep_count(n, r / 10)
               for n in (8, 16, 40, 64) for r in range(10))


@pytest.mark.parametrize("name", ["yolov5s-ghost", "yolov5-mobilenetv3-small", "yolov7-tiny-like"])
def test_pruned_models_export_and_fuse(name, tmp_path):
    from yolocompress.compress.fuse import fuse
    from yolocompress.export.onnx import export_onnx, verify_onnx

    model = tiny_model(name)
    graph = channel_graph(model)
    pruned = prune_channels(model, graph, random_keep(graph, seed=3))
    path = export_onnx(pruned, tmp_path / "p.onnx", imgsz=IMGSZ)
    assert verify_onnx(pruned, path, imgsz=IMGSZ) < 1e-3
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    fused = outputs_with_features(fuse(pruned), x)
    assert max_relative_error(fused, outputs_with_features(pruned, x)) < 1e-4
