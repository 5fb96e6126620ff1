"""A shape spec describes a model whose channels were cut, and rebuilds it without pickles."""
from __future__ import annotations

import torch
import torch.nn as nn

from yolocompress.models import DetectionModel, build_model
from yolocompress.models.shapes import apply_shape_spec, shape_spec


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
    assert apply_shape_spec(model, spec) == 1
    assert model.model[0].bn.num_features == 3
