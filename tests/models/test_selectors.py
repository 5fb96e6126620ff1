"""One layer-selector grammar for prune's and quantize's ``exclude``: indices, module paths, node names."""
from __future__ import annotations

import pytest

from yolocompress.errors import InputError
from yolocompress.models.selectors import LayerSelector, select_layers

MODULES = {p: p for p in ("model.9", "model.9.cv1", "model.9.cv1.conv", "model.9.cv10.conv", "model.90.conv")}


@pytest.mark.parametrize("text, expected", [
    ("9", {"model.9", "model.9.cv1", "model.9.cv1.conv", "model.9.cv10.conv"}),
    ("09", {"model.9", "model.9.cv1", "model.9.cv1.conv", "model.9.cv10.conv"}),
    ("model.9.cv1", {"model.9.cv1", "model.9.cv1.conv"}),
    ("model.9.cv1.", {"model.9.cv1", "model.9.cv1.conv"}),
    (" model.9.cv1.conv ", {"model.9.cv1.conv"}),
    ("model.90", {"model.90.conv"}),
])
def test_module_selectors_match_the_module_and_what_is_under_it(text, expected):
    assert select_layers([text], MODULES, "layer", "hint") == expected


def test_onnx_node_names_match_that_node_only():
    nodes = {"/model.9/cv1/conv/Conv": "model.9.cv1.conv", "/model.9/cv1/act/Sigmoid": "model.9.cv1.act",
             "Conv_12": "Conv_12"}
    assert select_layers(["/model.9/cv1/conv/Conv"], nodes, "node", "hint") == {"/model.9/cv1/conv/Conv"}
    assert select_layers(["model.9.cv1"], nodes, "node", "hint") == {"/model.9/cv1/conv/Conv",
                                                                     "/model.9/cv1/act/Sigmoid"}
    assert select_layers(["Conv_12"], nodes, "node", "hint") == {"Conv_12"}
    assert LayerSelector.parse("/model.9/cv1/conv/Conv").is_node_name
    assert not LayerSelector.parse("model.9").is_node_name
    # a node name never selects a module path
    assert not LayerSelector.parse("/model.9/cv1/conv/Conv").matches("model.9.cv1.conv")


def test_a_selector_that_matches_nothing_is_an_error_naming_it():
    with pytest.raises(InputError, match=r"^--exclude 'model\.7\.nope' matches no prunable layer \(try 9\)$"):
        select_layers(["model.9", "model.7.nope"], MODULES, "prunable layer", "try 9")
    with pytest.raises(InputError, match=r"^stages\[0\]\.prune\.exclude: '99' matches no layer"):
        select_layers(["99"], MODULES, "layer", "hint", context="stages[0].prune.exclude:")
    with pytest.raises(InputError, match="empty layer selector"):
        select_layers([" "], MODULES, "layer", "hint")
