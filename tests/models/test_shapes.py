"""A shape spec describes a model whose channels were cut, and rebuilds it without pickles."""
from __future__ import annotations

import torch
import torch.nn as nn

from yolocompress.models import DetectionModel, build_model
from yolocompress.models.inputs import max_stride
from yolocompress.models.shapes import apply_shape_spec, num_params, shape_spec


def _slim_first_conv(model: DetectionModel, keep: int) -> None:
    """Keep the first ``keep`` output channels of layer 0 and the matching inputs of layer 1 (by hand)."""
    conv0, bn0, conv1 = model.model[0].conv, model.model[0].bn, model.model[1].conv
    new0 = nn.Conv2d(conv0.in_channels, keep, conv0.kernel_size, conv0.stride, conv0.padding, bias=False)
    new0.weight.data = conv0.weight.data[:keep].clone()
    newbn = nn.BatchNorm2d(keep, eps=bn0.eps, momentum=bn0.momentum)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(newbn, name).data = getattr(bn0, name).data[:keep].clone()
    new1 = nn.Conv2d(keep, conv1.out_channels, conv1.kernel_size, conv1.stride, conv1.padding, bias=False)
    new1.weight.data = conv1.weight.data[:, :keep].clone()
    model.model[0].conv, model.model[0].bn, model.model[1].conv = new0, newbn, new1


def test_slimmed_model_round_trips_through_resolved_config():
    torch.manual_seed(0)
    model = build_model("yolov5n", nc=2).eval()
    _slim_first_conv(model, keep=5)
    model.eval()  # the hand-made modules start in training mode
    config = model.resolved_config()
    assert config["shapes"]["model.0.conv"]["out"] == 5
    rebuilt = DetectionModel(config).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[0], rebuilt(x)[0])


def test_apply_shape_spec_counts_replacements():
    model = build_model("yolov5n", nc=2)
    spec = shape_spec(model)
    assert apply_shape_spec(model, spec) == 0
    spec["model.0.bn"] = {"type": "BatchNorm2d", "features": 3}
    before = model.model[0].np
    assert apply_shape_spec(model, spec) == 1
    assert model.model[0].bn.num_features == 3
    # the layer's Ultralytics ``np`` follows the resized module (BN: 2 x 16 -> 2 x 3 parameters)
    assert model.model[0].np == num_params(model.model[0]) == before - 2 * (16 - 3)


def test_num_params_counts_shared_parameters_once():
    conv = nn.Conv2d(2, 3, 1)  # 6 weights + 3 biases
    assert num_params(nn.Sequential(conv, conv)) == 9
    assert num_params(nn.BatchNorm2d(4)) == 8  # running statistics are buffers


def test_max_stride():
    assert max_stride(build_model("yolov5n", nc=2)) == 32
    assert max_stride(build_model("yolov5n6", nc=2)) == 64
    assert max_stride(nn.Sequential(nn.ReLU())) is None
