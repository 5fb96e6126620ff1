"""Detect output convs as integer MatMuls with float outputs (compress/quant/head.py)."""
from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from yolocompress.compress.quant.head import (
    find_head_patterns, gptq_weight, head_hessians, integer_head, quantize_weight,
)
from yolocompress.compress.quant.plan import PlanConfig, build_plan
from yolocompress.compress.quant.ptq import QuantConfig, quantize_ptq
from yolocompress.compress.quant.qat import fake_quant_weight
from yolocompress.compress.quant.verify import optimized_graph, output_sqnr
from yolocompress.export.ort import create_session

HEAD = ("model.24.m.0", "model.24.m.1", "model.24.m.2")


@pytest.fixture(scope="module")
def float_head(tiny_onnx, tiny_data, tmp_path_factory):
    """The tiny model quantized with fp32 Detect convs, and its plan."""
    out = tmp_path_factory.mktemp("head") / "float-head.onnx"
    path, _ = quantize_ptq(tiny_onnx, tiny_data, QuantConfig(calib_images=4, head="float"), output=out)
    return path, build_plan(tiny_onnx, PlanConfig())


def _images(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).random((n, 3, 64, 64), dtype=np.float32)


def _run(path, images):
    session = create_session(path)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[k:k + 1]})[0] for k in range(len(images))])


def test_rewrite_is_exact_to_the_quantized_weights(float_head, tmp_path):
    """The rewritten graph computes what the float-head graph computes with the int8-rounded Detect weights:
    same input tensor, same weights, only the kernel and the summation order differ."""
    path, plan = float_head
    names = [c.name for c in plan.int8_head]
    rewritten = tmp_path / "int8-head.onnx"
    shutil.copyfile(path, rewritten)
    assert sorted(integer_head(rewritten, names, {})) == sorted(names)

    proto = onnx.load(str(path))  # reference: fp32 convs with the dequantized int8 weights
    inits = {i.name: i for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.name in names:
            w = numpy_helper.to_array(inits[node.input[1]])
            q, scale = quantize_weight(w)
            rounded = (q * scale[:, None, None, None]).astype(np.float32)
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(rounded, node.input[1]))
    reference = tmp_path / "reference.onnx"
    onnx.save(proto, str(reference))

    images = _images()
    ref, out = _run(reference, images), _run(rewritten, images)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()  # float rounding of the accumulation only
    optimized = optimized_graph(rewritten, tmp_path / "opt.onnx").graph.node
    fused = [n for n in optimized if n.op_type == "MatMulIntegerToFloat"]
    assert len(fused) == 3
    # scales and bias inside the integer kernel: no float Mul/Add pass over the head outputs is left
    assert all(len(n.input) == 7 and n.input[6] for n in fused)
    assert not [n for n in optimized if "int8_head" in n.name and n.op_type in ("Add", "Mul", "Cast")]


def test_quantized_weights_match_qat_fake_quant():
    w = np.random.default_rng(1).standard_normal((18, 8, 1, 1)).astype(np.float32)
    w[3] = 0.0  # an all-zero output channel keeps scale 1 and stays zero
    q, scale = quantize_weight(w)
    assert q.dtype == np.int8 and np.abs(q).max() == 127 and q[3].max() == q[3].min() == 0
    fake = fake_quant_weight(torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(q * scale[:, None, None, None], fake, rtol=0, atol=1e-7)
    q_t, scale_t = quantize_weight(w, per_channel=False)
    assert scale_t.shape == (1,) and np.abs(q_t).max() == 127


def test_only_the_detect_pattern_is_rewritten(tiny_onnx):
    proto = onnx.load(str(tiny_onnx))
    convs = [n.name for n in proto.graph.node if n.op_type == "Conv"]
    found = find_head_patterns(proto, convs)
    assert sorted(p.conv.name.split("/")[2] + "." + p.conv.name.split("/")[3] for p in found.values()) == [
        "model.24.m.0", "model.24.m.1", "model.24.m.2"]
    assert {p.shape[1:3] for p in found.values()} == {(3, 8)}  # 3 anchors x (3 classes + 5)


def test_inserts_input_quantization_when_missing(tiny_onnx, tmp_path):
    """On a graph without Q/DQ (fp32 export) the rewrite quantizes the head inputs from the given ranges."""
    plan = build_plan(tiny_onnx)
    proto = onnx.load(str(tiny_onnx))
    by_name = {n.name: n for n in proto.graph.node}
    images = _images(2)
    ranges = {}
    for site in plan.int8_head:  # a fixed range covering the SiLU outputs of this model
        x = by_name[site.name].input[0]
        ranges[x] = (-0.5, 8.0)
    path = tmp_path / "fp32-int8-head.onnx"
    shutil.copyfile(tiny_onnx, path)
    assert len(integer_head(path, [c.name for c in plan.int8_head], ranges)) == 3
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("QuantizeLinear") == 3 and ops.count("MatMulInteger") == 3
    sqnr, _ = output_sqnr(tiny_onnx, path, images)
    assert sqnr > 30
    with pytest.raises(ValueError, match="no calibrated range"):
        shutil.copyfile(tiny_onnx, path)
        integer_head(path, [c.name for c in plan.int8_head], {})


def test_gptq_rounding_beats_round_to_nearest():
    """On correlated inputs GPTQ's rounding gives a smaller output error than rounding each weight to nearest,
    with the same scales and range."""
    rng = np.random.default_rng(3)
    mix = rng.standard_normal((32, 32))
    x = np.maximum(rng.standard_normal((4096, 32)) @ mix, 0)  # correlated, non-negative like SiLU outputs
    x[:, 5] = 0.0  # a channel that never fires
    w = rng.standard_normal((12, 32)).astype(np.float32)
    hessian = x.T @ x / len(x)
    q_rtn, s_rtn = quantize_weight(w)
    q_gptq, s_gptq = gptq_weight(w, hessian)
    np.testing.assert_array_equal(s_rtn, s_gptq)
    assert q_gptq.dtype == np.int8 and np.abs(q_gptq.astype(int)).max() <= 127

    def err(q, s):
        return float(((x @ (w - q * s[:, None]).T) ** 2).mean())

    assert err(q_gptq, s_gptq) < 0.85 * err(q_rtn, s_rtn)  # measured 0.75


def test_hessians_of_the_head_inputs(tiny_onnx):
    plan = build_plan(tiny_onnx)
    names = [c.name for c in plan.int8_head]
    hessians = head_hessians(tiny_onnx, names, _images(3))
    assert sorted(hessians) == sorted(names)
    for h in hessians.values():
        assert h.shape[0] == h.shape[1] and np.allclose(h, h.T)
        assert np.linalg.eigvalsh(h).min() > -1e-6  # a second moment is positive semi-definite
