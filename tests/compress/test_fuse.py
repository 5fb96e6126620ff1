"""BatchNorm folding and RepConv merging over every shipped config: exactness, idempotence, save/reload."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from yolocompress.compress.fuse import (
    fuse, fuse_structure, is_fused, relative_error, remaining_batchnorms, require_unfused,
)
from yolocompress.errors import InputError
from yolocompress.io.checkpoint import load_model, save_model
from yolocompress.models import DetectionModel, build_model, list_configs, load_config
from yolocompress.models.rep import RepConv

from .helpers import TOLERANCE, max_relative_error, outputs_with_features, randomize_batchnorms, randomize_detect


def _input(model: nn.Module, batch: int = 1, seed: int = 1) -> torch.Tensor:
    size = 128 if model.stride.max() > 32 else 64
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _tiny(name: str, nc: int = 3, width: float = 0.125) -> DetectionModel:
    cfg = load_config(name)
    cfg["width_multiple"] = width
    return build_model(cfg, nc=nc)


@pytest.mark.parametrize("name", list_configs())
def test_fused_outputs_match_unfused(name):
    torch.manual_seed(0)
    model = randomize_detect(randomize_batchnorms(build_model(name, nc=3))).eval()
    x = _input(model)
    fused = fuse(model)
    assert remaining_batchnorms(fused) == []
    assert not any(isinstance(m, RepConv) and not m.deployed for m in fused.modules())
    assert is_fused(fused) and not is_fused(model) and fused.yaml["fused"] is True
    error = max_relative_error(outputs_with_features(fused, x), outputs_with_features(model, x))
    assert error <= TOLERANCE, f"{name}: {error:.2e}"
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())


def test_one_fuse_function_at_every_level():
    import yolocompress
    from yolocompress.models import deploy

    model = randomize_batchnorms(_tiny("yolov5n")).eval()
    fused = yolocompress.fuse(model)
    assert remaining_batchnorms(fused) == [] and remaining_batchnorms(model)
    assert yolocompress.fuse is fuse is deploy.fuse
    assert "fuse_model" not in yolocompress.__all__


def test_fuse_twice_is_a_no_op():
    model = randomize_batchnorms(_tiny("yolov5s-rep")).eval()
    once = fuse(model)
    twice = fuse(once)
    assert twice is not once
    a, b = once.state_dict(), twice.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert str(once) == str(twice)
    assert fuse(once, inplace=True) is once


def test_fuse_copies_unless_inplace_and_keeps_the_mode():
    model = randomize_batchnorms(_tiny("yolov5n")).train()
    before = copy.deepcopy(model.state_dict())
    fused = fuse(model)
    assert fused.training and remaining_batchnorms(model) and not model.yaml.get("fused")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert fuse(model, inplace=True) is model and remaining_batchnorms(model) == []


def test_each_batchnorm_eps_is_used():
    model = randomize_batchnorms(_tiny("yolov5n")).eval()
    for i, bn in enumerate(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.eps = (1e-3, 1e-5, 0.1)[i % 3]
    x = _input(model)
    assert relative_error(model, fuse(model), x) <= TOLERANCE


@pytest.mark.parametrize("name", ["yolov5n", "yolov5s-rep", "yolov7-tiny-like", "yolov5-mobilenetv3-small"])
def test_fused_checkpoint_round_trip_is_exact(name, tmp_path):
    model = randomize_batchnorms(_tiny(name)).eval()
    fused = fuse(model)
    config = fused.resolved_config()
    assert config["fused"] is True
    path = save_model(fused, tmp_path / "fused.pt", imgsz=64)
    loaded = load_model(path)
    assert is_fused(loaded) and remaining_batchnorms(loaded) == []
    x = _input(model)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(outputs_with_features(loaded, x), outputs_with_features(fused, x)))
    # and the fused structure alone is rebuilt from the config, before any weights are loaded
    assert str(DetectionModel(config)) == str(fused)


def test_pruned_then_fused_round_trip(tmp_path):
    """Shape spec entries of modules that exist only after fusion (the merged RepConv kernel) are applied."""
    model = randomize_batchnorms(_tiny("yolov5n-rep", width=0.25)).eval()
    rep = model.model[1]  # RepConv 16 -> 32, stride 2: cut its outputs to 20 and layer 2's inputs to match
    keep = 20
    for branch in (rep.rbr_dense, rep.rbr_1x1):
        conv, bn = branch.conv, branch.bn
        new = nn.Conv2d(conv.in_channels, keep, conv.kernel_size, conv.stride, conv.padding, bias=False)
        new.weight.data = conv.weight.data[:keep].clone()
        newbn = nn.BatchNorm2d(keep, eps=bn.eps)
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(newbn, key).data = getattr(bn, key).data[:keep].clone()
        branch.conv, branch.bn = new, newbn
    c3 = model.model[2]
    for cv in (c3.cv1, c3.cv2):
        new = nn.Conv2d(keep, cv.conv.out_channels, 1, bias=False)
        new.weight.data = cv.conv.weight.data[:, :keep].clone()
        cv.conv = new
    model.eval()
    fused = fuse(model)
    assert fused.resolved_config()["shapes"]["model.1.rbr_reparam"]["out"] == keep
    x = _input(model)
    assert relative_error(model, fused, x) <= TOLERANCE
    loaded = load_model(save_model(fused, tmp_path / "pruned-fused.pt"))
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], fused(x)[0])


def test_fuse_structure_only_changes_structure():
    model = _tiny("yolov7-tiny-like")
    fused = fuse(model)
    skeleton = fuse_structure(_tiny("yolov7-tiny-like"))
    assert list(skeleton.state_dict()) == list(fused.state_dict())
    assert all(skeleton.state_dict()[k].shape == v.shape for k, v in fused.state_dict().items())


def test_bottleneck_csp_and_standalone_batchnorm():
    """BottleneckCSP's BN after the concat folds into cv3 / cv2; a stand-alone BatchNorm2d layer (whose input
    may be any earlier layer) has no fuser and stays - neighbouring layers are not folded across."""
    cfg = {"nc": 2, "anchors": [[10, 13, 16, 30]],
           "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 2, "BottleneckCSP", [32]], [-1, 1, "BatchNorm2d", []],
                        [-1, 1, "Conv", [32, 3, 2]]],
           "head": [[[3], 1, "Detect", ["nc", "anchors"]]]}
    model = randomize_batchnorms(DetectionModel(cfg)).eval()
    fused = fuse(model)
    assert remaining_batchnorms(fused) == ["model.2"]
    assert isinstance(fused.model[1].bn, nn.Identity) and fused.model[1].cv2.bias is not None
    assert relative_error(model, fused, torch.rand(2, 3, 64, 64)) <= TOLERANCE


def test_pruning_refuses_a_fused_model():
    model = _tiny("yolov5n")
    require_unfused(model)
    fused = fuse(model)
    with pytest.raises(InputError, match="fused.*unfused checkpoint"):
        require_unfused(fused, "pruning")
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert is_fused(plain) and not is_fused(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))


def test_fused_model_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from yolocompress.export.onnx import export_onnx, verify_onnx

    model = randomize_detect(randomize_batchnorms(_tiny("yolov7-tiny-like"))).eval()
    fused = fuse(model)
    path = export_onnx(fused, tmp_path / "fused.onnx", imgsz=64)
    assert verify_onnx(fused, path, 64) <= 1e-4
