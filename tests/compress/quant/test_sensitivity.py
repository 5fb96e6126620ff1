"""Per-layer sensitivity: ranking by the mAP gained when only one conv is float; exclusion of the worst."""
from __future__ import annotations

import pytest

from yolocompress.compress.quant.ptq import QuantConfig, calibrated_graph
from yolocompress.compress.quant.sensitivity import LayerSensitivity, SensitivityResult, layer_sensitivity, sensitivity
from yolocompress.errors import InputError


def test_ranking_on_a_few_layers(tiny_onnx, tiny_data, tmp_path):
    config = QuantConfig(calib_images=4)
    prepared = calibrated_graph(tiny_onnx, tiny_data, config, tmp_path)
    names = [c.name for c in prepared.plan.int8_convs[:3]]
    report = layer_sensitivity(prepared, tiny_data, config, tmp_path, images=4, layers=names)
    assert report.split == "train" and report.images == 4
    assert sorted(layer.name for layer in report.layers) == sorted(names)
    gains = [layer.gain for layer in report.layers]
    assert gains == sorted(gains, reverse=True)
    for layer in report.layers:
        assert layer.gain == pytest.approx(layer.map50_95 - report.int8_map50_95)
        assert layer.macs > 0 and layer.scope.startswith("model.")
    assert report.to_dict()["layers"][0]["name"] == report.layers[0].name


def test_worst_keeps_only_positive_gains():
    layers = [LayerSensitivity("a", "A", 1, 0.5, 0.02), LayerSensitivity("b", "B", 1, 0.48, 0.0),
              LayerSensitivity("c", "C", 1, 0.47, -0.01)]
    report = SensitivityResult(layers, 0.5, 0.48, 10, "train")
    assert [layer.name for layer in report.worst(2)] == ["A"]


def test_never_on_the_validation_split(tiny_onnx, tiny_data):
    with pytest.raises(InputError, match="validation"):
        sensitivity(tiny_onnx, tiny_data, QuantConfig(calib_images=2), split="val")
