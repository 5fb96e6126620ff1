"""Every shipped config builds, runs forward in train and eval mode, and names parameters like Ultralytics."""
from __future__ import annotations

import pytest
import torch

from yolocompress.models import DetectionModel, build_model, list_configs, load_config
from yolocompress.models.activations import parse_activation
from yolocompress.errors import InputError

CONFIGS = list_configs()

# Parameter counts of the Ultralytics releases (nc=80) for the configs that have published figures.
PUBLISHED_PARAMS = {
    "yolov5n": 1_872_157, "yolov5s": 7_235_389, "yolov5m": 21_190_557, "yolov5l": 46_563_709,
    "yolov5x": 86_749_405, "yolov5s-focus-v5.0": 7_276_605,
}


def test_all_product_configs_are_shipped():
    for name in ["yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x", "yolov5n6", "yolov5s6", "yolov5s-ghost",
                 "yolov5s-LeakyReLU", "yolov5s-focus-v5.0", "yolov5-mobilenetv3-small", "yolov5-shufflenetv2"]:
        assert name in CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_forward(name):
    torch.manual_seed(0)
    model = build_model(name, nc=3)
    size = 128 if model.stride.max() > 32 else 64
    x = torch.rand(2, 3, size, size)
    model.train()
    raw = model(x)
    assert len(raw) == model.detect.nl
    for level, (r, s) in enumerate(zip(raw, model.stride)):
        assert r.shape == (2, model.detect.na, size // int(s), size // int(s), 8), level
    model.eval()
    with torch.no_grad():
        decoded, raw_eval = model(x)
    n_cells = sum((size // int(s)) ** 2 for s in model.stride) * model.detect.na
    assert decoded.shape == (2, n_cells, 8)
    assert torch.isfinite(decoded).all()
    # decoded scores are probabilities, boxes are in pixels
    assert decoded[..., 4:].min() >= 0 and decoded[..., 4:].max() <= 1
    # first parameter name follows Ultralytics' layout
    first = next(iter(model.state_dict()))
    assert first.startswith("model.0.")


@pytest.mark.parametrize("name,params", sorted(PUBLISHED_PARAMS.items()))
def test_parameter_counts_match_ultralytics(name, params):
    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == params


def test_anchors_are_in_grid_units_and_grow_with_stride():
    model = build_model("yolov5n")
    pixels = model.detect.anchors * model.stride.view(-1, 1, 1)
    assert torch.allclose(pixels[0], torch.tensor([[10., 13.], [16., 30.], [33., 23.]]))
    area = pixels.prod(-1).mean(-1)
    assert (area[1:] > area[:-1]).all()


def test_leaky_relu_config_uses_leaky_relu():
    model = build_model("yolov5s-LeakyReLU")
    acts = {type(m.act).__name__ for m in model.modules() if hasattr(m, "uses_default_act")}
    assert acts == {"LeakyReLU", "Identity"} or acts == {"LeakyReLU"}
    slope = next(m.act for m in model.modules() if hasattr(m, "uses_default_act") and m.uses_default_act)
    assert slope.negative_slope == pytest.approx(0.1)


def test_config_activation_reaches_repconv_and_every_block():
    """yolov7-tiny-like names LeakyReLU(0.1): every default activation, RepConv's included, uses it."""
    model = build_model("yolov7-tiny-like")
    kinds = {type(m.act).__name__ for m in model.modules() if getattr(m, "uses_default_act", False)}
    assert kinds == {"LeakyReLU"}
    reps = [m for m in model.modules() if type(m).__name__ == "RepConv"]
    assert len(reps) == 3 and all(isinstance(m.act, torch.nn.LeakyReLU) for m in reps)
    assert not any(isinstance(m, torch.nn.SiLU) for m in model.modules())


def test_sppcspc_blocks():
    from yolocompress.models.common import SPPCSPC, SPPCSPCTiny

    x = torch.rand(2, 16, 20, 20)
    full, tiny = SPPCSPC(16, 8).eval(), SPPCSPCTiny(16, 8).eval()
    assert full(x).shape == tiny(x).shape == (2, 8, 20, 20)
    assert not hasattr(tiny, "cv3") and hasattr(full, "cv6")
    assert sum(p.numel() for p in tiny.parameters()) < sum(p.numel() for p in full.parameters())
    assert tiny.cv5.conv.in_channels == 4 * 8 and tiny.cv7.conv.in_channels == 2 * 8  # c_ = 2 * c2 * e


@pytest.mark.parametrize("spec", ["nn.Hardswish()", "Mish", "nn.FReLU()", "AconC", "MetaAconC", "ReLU"])
def test_configurable_activation(spec):
    cfg = {"nc": 2, "depth_multiple": 0.33, "width_multiple": 0.125, "activation": spec,
           "anchors": [[10, 13, 16, 30, 33, 23]],
           "backbone": [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "C3", [32]], [-1, 1, "Conv", [64, 3, 2]]],
           "head": [[[-1], 1, "Detect", ["nc", "anchors"]]]}
    model = DetectionModel(cfg).eval()
    with torch.no_grad():
        out, _ = model(torch.rand(1, 3, 64, 64))
    assert out.shape[-1] == 7
    assert parse_activation(spec).name in {type(m).__name__ for m in model.modules()} | {"Mish"}


def test_bad_activation_is_an_input_error():
    with pytest.raises(InputError):
        parse_activation("__import__('os').system('true')")


def test_unknown_module_and_missing_config():
    with pytest.raises(InputError, match="unknown module"):
        DetectionModel({"nc": 1, "anchors": [[1, 2]], "backbone": [[-1, 1, "Nope", [8]]], "head": []})
    with pytest.raises(InputError, match="not found"):
        build_model("no-such-config")


def test_resolved_config_rebuilds_identical_model():
    torch.manual_seed(1)
    model = build_model("yolov5-shufflenetv2", nc=4).eval()
    clone = DetectionModel(model.resolved_config()).eval()
    clone.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[0], clone(x)[0])


@pytest.mark.parametrize("name", CONFIGS)
def test_config_exports_to_onnx_and_matches(name, tmp_path):
    from yolocompress.export.onnx import export_onnx, verify_onnx

    cfg = load_config(name)
    if float(cfg.get("width_multiple", 1.0)) > 0.5:  # m / l / x: the same graph at a quarter of the channels
        cfg["width_multiple"] = float(cfg["width_multiple"]) / 4  # (full width: seconds of ONNX serialization)
    torch.manual_seed(0)
    model = build_model(cfg, nc=3).eval()
    size = 128 if model.stride.max() > 32 else 64
    path = export_onnx(model, tmp_path / f"{name}.onnx", imgsz=size)
    assert verify_onnx(model, path, imgsz=size) < 1e-3


def test_relative_from_indices_below_minus_one():
    cfg = {"nc": 2, "anchors": [[10, 13, 16, 30, 33, 23]],
           "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [24, 3, 1]], [[-1, -2], 1, "Concat", [1]],
                        [-1, 1, "Conv", [32, 3, 2]]],
           "head": [[[-1], 1, "Detect", ["nc", "anchors"]]]}
    model = DetectionModel(cfg).eval()
    assert model.layer_specs[2].c2 == 40
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64))[0].shape[-1] == 7
