"""The quantization plan derived from the exported graph."""
from __future__ import annotations

import onnx
import pytest

from yolocompress.compress.quant.plan import PlanConfig, build_plan, node_scope
from yolocompress.errors import InputError


def test_detect_convs_and_decode_stay_float(tiny_onnx):
    plan = build_plan(tiny_onnx, PlanConfig(head="float"))
    detect = {c.scope for c in plan.convs if c.reason == "detect"}
    assert detect == {"model.24.m.0", "model.24.m.1", "model.24.m.2"}
    assert {c.scope for c in plan.convs if c.head} == detect and not plan.int8_head
    proto = onnx.load(str(tiny_onnx))
    decode_types = {n.op_type for n in proto.graph.node if n.name in set(plan.decode)}
    assert {"Reshape", "Transpose", "Sigmoid"} <= decode_types
    assert not set(plan.decode) & set(plan.nodes)


def test_integer_head_convs(tiny_onnx):
    """head="int8" (default): the Detect convs are int8 but not quantize_static's (rewritten afterwards);
    their inputs are calibrated; their outputs and the decode stay float."""
    plan = build_plan(tiny_onnx)
    head = {c.scope for c in plan.int8_head}
    assert head == {"model.24.m.0", "model.24.m.1", "model.24.m.2"}
    assert not {c.name for c in plan.int8_head} & set(plan.nodes)
    proto = onnx.load(str(tiny_onnx))
    by_name = {n.name: n for n in proto.graph.node}
    assert all(by_name[c.name].input[0] in plan.tensors for c in plan.int8_head)
    assert not {by_name[c.name].output[0] for c in plan.int8_head} & set(plan.tensors)
    float_head = build_plan(tiny_onnx, PlanConfig(head="float"))
    assert plan.int8_mac_share > float_head.int8_mac_share
    # an excluded head conv is an fp32 conv again
    one = build_plan(tiny_onnx, PlanConfig(exclude=("model.24.m.1",)))
    assert {c.scope for c in one.int8_head} == head - {"model.24.m.1"}
    assert [c.scope for c in one.convs if c.reason == "excluded"] == ["model.24.m.1"]


def test_every_other_conv_is_planned_int8(tiny_onnx):
    plan = build_plan(tiny_onnx, PlanConfig(stem="int8", head="float"))
    proto = onnx.load(str(tiny_onnx))
    convs = [n.name for n in proto.graph.node if n.op_type == "Conv"]
    assert len(plan.convs) == len(convs) == 60
    assert {c.name for c in plan.int8_convs} == set(convs) - {c.name for c in plan.convs if c.reason == "detect"}
    assert all(c.name in plan.nodes for c in plan.int8_convs)
    # default: the stem (reads the image) stays float
    default = build_plan(tiny_onnx, PlanConfig(head="float"))
    assert [c.scope for c in default.convs if c.reason == "stem"] == ["model.0.conv"]
    assert 0.5 < default.int8_mac_share < plan.int8_mac_share < 1.0


def test_silu_modes_and_scale_sharing(tiny_onnx):
    q = build_plan(tiny_onnx, PlanConfig(silu="int8"))
    f = build_plan(tiny_onnx, PlanConfig(silu="float"))
    assert "Sigmoid" in q.op_types and "Sigmoid" not in f.op_types
    assert len(q.nodes) - len(f.nodes) == 2 * 57  # one Sigmoid + one Mul per body conv (3 Detect convs have none)
    proto = onnx.load(str(tiny_onnx))
    by_name = {n.name: n for n in proto.graph.node}
    groups = [set(g) for g in q.shared]
    for name in q.nodes:
        node = by_name[name]
        if node.op_type == "Concat":  # inputs and output in one group
            members = {*node.input, node.output[0]}
            assert any(members <= g for g in groups)
        if node.op_type == "MaxPool":
            assert any({node.input[0], node.output[0]} <= g for g in groups)
    assert {n.op_type for n in proto.graph.node if n.name in q.nodes} >= {"Add", "Concat", "MaxPool", "Resize"}


def test_exclude_selectors(tiny_onnx):
    plan = build_plan(tiny_onnx, PlanConfig(exclude=("model.17",)))
    excluded = {c.scope for c in plan.convs if c.reason == "excluded"}
    assert excluded and all(s.startswith("model.17.") for s in excluded)
    assert not [n for n in plan.nodes if node_scope(n).startswith("model.17.")]
    # the shared selector grammar: a layer index is short for its module path
    assert build_plan(tiny_onnx, PlanConfig(exclude=("17",))).nodes == plan.nodes
    with pytest.raises(InputError, match="model.99"):
        build_plan(tiny_onnx, PlanConfig(exclude=("model.99",)))
    with pytest.raises(InputError, match="silu"):
        PlanConfig(silu="fp16")


def test_node_scope():
    assert node_scope("/model/model.17/cv3/conv/Conv") == "model.17.cv3.conv"
    assert node_scope("/model/model.2/m/m.0/cv1/conv/Conv") == "model.2.m.0.cv1.conv"
    assert node_scope("Conv_12") == "Conv_12"


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        build_plan(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(InputError, match="not an ONNX model"):
        build_plan(junk)
