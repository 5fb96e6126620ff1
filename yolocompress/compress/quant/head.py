"""Detect output convs as integer matrix products with float outputs (``head="int8"`` in the plan).

A Detect output conv is a 1x1 convolution whose output holds box coordinates and scores side by side, so its
*output* must stay float (one int8 scale for pixels and probabilities destroys the scores). Its *input* is
already int8 (the output of the quantized body) and its weights quantize like any other conv's. ONNX Runtime
has an integer kernel with a float output for exactly that, ``MatMulIntegerToFloat`` (u8 x s8, VNNI, with the
scales and the bias applied as the accumulators are written). There is no such kernel for ``Conv``: a float
Detect conv runs in fp32 with NCHWc layout changes around it.

So the QDQ graph's pattern (what every YOLOv5 Detect exports)::

    x -> Conv(W[N, C, 1, 1], b) -> Reshape[bs, na, no, ny, nx] -> Transpose(0, 1, 3, 4, 2) -> decode

becomes, with the same output tensor and standard ONNX ops only::

    x_u8 -> Transpose(0, 2, 3, 1) -> MatMulInteger(W_int8[C, N]) -> Cast(float) -> Mul(x_scale * w_scale)
         -> Add(b) -> Reshape[-1, ny, nx, na, no] -> Transpose(0, 3, 1, 2, 4) -> decode

which ORT's ``MatMulIntegerToFloatFusion`` turns into one ``MatMulIntegerToFloat`` with the bias inside: one
pass over the largest float tensor of the model fewer than ``DQ -> MatMul -> Add`` (ORT's QDQ fusion of
that has no bias input, and fuses ``MatMul + Add`` into a float Gemm first). The fusion wants the scale product
as a ``Mul`` node: a product of two initializers would be constant-folded before it runs, so ``x_scale`` enters
through a ``DequantizeLinear`` of the constant 1 (ORT keeps DequantizeLinear nodes out of constant folding).
ORT cancels the NHWC transpose against the layout of its NHWC integer body, and the last Transpose moves
whole ``no``-float rows. Weights are symmetric int8 in [-127, 127], per output channel or per tensor, with
the scales ``quantize_static`` gives conv weights, rounded to nearest or by GPTQ (:func:`gptq_weight`).
(Measured alternatives: the ``DQ -> MatMul -> Add`` form, 3-5% slower end to end on yolov5n when memory
bandwidth is scarce; a ``Gemm`` with an int32 bias, run as ``QGemm``, 3% slower.)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from yolocompress.compress.quant.graph import OnnxGraph
from yolocompress.compress.quant.numerics import WMAX, ort_scale_zero_point

MATMUL_SUFFIX = "_as_MatMul"


@dataclass(frozen=True)
class HeadPattern:
    """The nodes of one Detect output conv that :func:`integer_head` rewrites."""

    conv: Any
    reshape: Any
    transpose: Any
    shape: tuple[int, int, int, int, int]  # bs, na, no, ny, nx


def matmul_name(conv_name: str) -> str:
    """Name of the MatMul that replaces a conv (its module path, :func:`plan.node_scope`, is the conv's)."""
    return conv_name + MATMUL_SUFFIX


def conv_name_of(node_name: str) -> str:
    """The conv a rewritten MatMul stands for (other names unchanged)."""
    return node_name[:-len(MATMUL_SUFFIX)] if node_name.endswith(MATMUL_SUFFIX) else node_name


def _attr(node, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def find_head_patterns(graph: OnnxGraph | Any, conv_names: Iterable[str]) -> dict[str, HeadPattern]:
    """The convs among ``conv_names`` that have the rewritable Detect pattern (1x1, stride 1, no padding or
    groups, constant weight and bias, output only into ``Reshape[bs, na, no, ny, nx] -> Transpose(0, 1, 3,
    4, 2)``), keyed by conv name. Others are left out (they stay float convs). ``graph``: an
    :class:`OnnxGraph` or the ``ModelProto`` to index."""
    g = graph if isinstance(graph, OnnxGraph) else OnnxGraph(graph)
    wanted = set(conv_names)
    consumers = g.consumers
    outputs = set(g.outputs)
    found = {}
    for conv in g.nodes:
        if conv.op_type != "Conv" or conv.name not in wanted or len(conv.input) < 3:
            continue
        w, b = g.constant(conv.input[1]), g.constant(conv.input[2])
        if w is None or b is None or w.ndim != 4 or w.shape[2:] != (1, 1):
            continue
        if (_attr(conv, "group", 1) != 1 or any(s != 1 for s in _attr(conv, "strides", [1, 1]))
                or any(p != 0 for p in _attr(conv, "pads", [0, 0, 0, 0]))):
            continue
        nexts = consumers.get(conv.output[0], [])
        if len(nexts) != 1 or nexts[0].op_type != "Reshape" or conv.output[0] in outputs:
            continue
        reshape = nexts[0]
        shape = g.constant(reshape.input[1])
        after = consumers.get(reshape.output[0], [])
        if shape is None or shape.shape != (5,) or len(after) != 1 or reshape.output[0] in outputs:
            continue
        transpose = after[0]
        if transpose.op_type != "Transpose" or list(_attr(transpose, "perm", [])) != [0, 1, 3, 4, 2]:
            continue
        bs, na, no, ny, nx = (int(v) for v in shape)
        if min(bs, na, no, ny, nx) < 1 or na * no != w.shape[0]:
            continue
        found[conv.name] = HeadPattern(conv, reshape, transpose, (bs, na, no, ny, nx))
    return found


def quantize_weight(w: np.ndarray, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights ``[N, ...] -> (int8 [N, ...], scale [N] or [1])`` as ``quantize_static``
    quantizes conv weights (``WeightSymmetric``, range [-127, 127])."""
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    amax = np.abs(flat).max(1) if per_channel else np.full(1, np.abs(flat).max())
    scale = np.where(amax > 0, amax / WMAX, 1.0).astype(np.float32)
    per_row = scale if per_channel else np.full(len(flat), scale[0], np.float32)
    q = np.clip(np.round(flat / per_row[:, None].astype(np.float64)), -WMAX, WMAX).astype(np.int8)
    return q.reshape(w.shape), scale


def head_hessians(fp32_path: str | os.PathLike, conv_names: Iterable[str], images: np.ndarray,
                  max_images: int = 64) -> dict[str, np.ndarray]:
    """``{conv name: X^T X / rows}`` of each named conv's input over up to ``max_images`` of ``images``
    (``float32 [n, 3, h, w]``), every pixel one row ``[C]``: the second moment GPTQ rounds against."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(fp32_path))
    wanted = set(conv_names)
    inputs = {n.name: n.input[0] for n in proto.graph.node if n.op_type == "Conv" and n.name in wanted}
    have = {o.name for o in proto.graph.output}
    for tensor in dict.fromkeys(inputs.values()):
        if tensor not in have:
            proto.graph.output.add().name = tensor
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feed = session.get_inputs()[0].name
    sums: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {}
    picks = np.unique(np.linspace(0, len(images) - 1, num=min(max_images, len(images))).round().astype(int))
    for k in picks:
        outs = dict(zip(names, session.run(None, {feed: images[k:k + 1]})))
        for tensor in set(inputs.values()):
            x = outs[tensor].astype(np.float64)
            x = x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])  # pixels x channels
            sums[tensor] = sums.get(tensor, 0) + x.T @ x
            rows[tensor] = rows.get(tensor, 0) + len(x)
    return {name: sums[t] / rows[t] for name, t in inputs.items()}


def gptq_weight(w: np.ndarray, hessian: np.ndarray, per_channel: bool = True, damp: float = 0.01
                ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights ``[N, C] -> (int8 [N, C], scale)`` rounded by GPTQ (Frantar et al., ICLR 2023):
    input channels are quantized one at a time, largest second moment first ("act-order"), and each rounding
    error is compensated on the channels not yet quantized, minimising ``E||x (W - Q)^T||^2`` for inputs with
    second moment ``hessian [C, C]``.

    The scales are :func:`quantize_weight`'s (max |w| / 127 per row); only the rounding differs. ``damp`` adds
    that fraction of the mean diagonal to the diagonal (a channel that never fires stays well-posed).
    """
    order = np.argsort(-np.diag(hessian), kind="stable")
    _, scale = quantize_weight(w, per_channel)
    per_row = (scale if per_channel else np.full(len(w), scale[0])).astype(np.float64)
    work = w.astype(np.float64)[:, order]
    h = hessian.astype(np.float64)[np.ix_(order, order)]
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    work[:, dead] = 0.0
    h[np.diag_indices_from(h)] += damp * float(np.mean(np.diag(h)))
    # upper Cholesky factor of H^-1: row i holds the update of channels i.. after quantizing channel i
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    q = np.zeros(work.shape, np.int8)
    for i in range(work.shape[1]):
        col = np.clip(np.round(work[:, i] / per_row), -WMAX, WMAX)
        q[:, i] = col.astype(np.int8)
        err = (work[:, i] - col * per_row) / u[i, i]
        work[:, i + 1:] -= np.outer(err, u[i, i + 1:])
    out = np.empty_like(q)
    out[:, order] = q
    return out, scale


def integer_head(path: str | os.PathLike, conv_names: Iterable[str], ranges: dict[str, tuple[float, float]],
                 per_channel: bool = True, hessians: dict[str, np.ndarray] | None = None) -> list[str]:
    """Rewrite the Detect output convs ``conv_names`` of the QDQ model at ``path`` (in place) as integer
    matrix products with float outputs; returns the names of the convs rewritten.

    The product reads the uint8 tensor behind the conv input's DequantizeLinear; an input without one gets a
    QuantizeLinear from ``ranges`` (uint8, ORT's formula). Weights are rounded to nearest, or by GPTQ against
    ``hessians[conv name]`` (:func:`head_hessians`).
    """
    import onnx

    proto = onnx.load(str(path))
    g = OnnxGraph(proto)
    patterns = find_head_patterns(g, conv_names)
    if not patterns:
        return []
    # conv name -> replacement nodes (placed where the conv was)
    new_nodes = {name: _rewrite_conv(name, p, g, proto.graph, ranges, per_channel, (hessians or {}).get(name))
                 for name, p in patterns.items()}
    dropped = {n.name for p in patterns.values() for n in (p.conv, p.reshape, p.transpose)}
    _splice(proto.graph, new_nodes, dropped)
    _drop_unused(proto.graph)
    onnx.save(proto, str(path))
    return list(patterns)


def _rewrite_conv(name: str, p: HeadPattern, g: OnnxGraph, graph: Any, ranges: dict[str, tuple[float, float]],
                  per_channel: bool, hessian: np.ndarray | None) -> list[Any]:
    """Add the initializers of one Detect conv's integer replacement to ``graph``; return its nodes."""
    from onnx import numpy_helper

    conv = p.conv
    _, na, no, ny, nx = p.shape
    w, b = g.constant(conv.input[1]), g.constant(conv.input[2])
    n_out, c_in = w.shape[:2]
    if hessian is not None:
        q, scale = gptq_weight(w.reshape(n_out, c_in), hessian, per_channel)
    else:
        q, scale = quantize_weight(w.reshape(n_out, c_in), per_channel)
    pre = name + "/int8_head"
    (x_u8, x_scale, x_zero_point), nodes = _uint8_input(name, conv, g, graph, ranges)
    graph.initializer.extend([
        numpy_helper.from_array(np.ascontiguousarray(q.T), pre + "/weight_int8"),
        numpy_helper.from_array(scale if per_channel else scale.reshape(()), pre + "/weight_scale"),
        numpy_helper.from_array(np.zeros(len(scale), np.int8) if per_channel else np.array(0, np.int8),
                                pre + "/weight_zero_point"),
        numpy_helper.from_array(np.array(1, np.int8), pre + "/one"),
        numpy_helper.from_array(np.array([-1, ny, nx, na, no], np.int64), pre + "/nhwc_shape"),
        numpy_helper.from_array(b.reshape(-1).astype(np.float32), pre + "/bias")])
    return nodes + _matmul_nodes(name, x_u8, x_scale, x_zero_point, p.transpose.output[0])


def _uint8_input(name: str, conv: Any, g: OnnxGraph, graph: Any,
                 ranges: dict[str, tuple[float, float]]) -> tuple[tuple[str, str, str], list[Any]]:
    """The uint8 input of conv ``name`` as ``(tensor, scale, zero point)``, and the nodes that make it."""
    from onnx import helper, numpy_helper

    source = g.producer.get(conv.input[0])
    if source is not None and source.op_type == "DequantizeLinear" and len(source.input) == 3:
        x_u8, x_scale, x_zero_point = source.input
        return (x_u8, x_scale, x_zero_point), []
    x = conv.input[0]
    if x not in ranges:
        raise ValueError(f"no calibrated range for the input of {name} ({x})")
    scale_value, zp = ort_scale_zero_point(*ranges[x])
    pre = name + "/int8_head"
    x_u8, x_scale, x_zero_point = pre + "/x_q", pre + "/x_scale", pre + "/x_zero_point"
    graph.initializer.extend([numpy_helper.from_array(np.array(scale_value, np.float32), x_scale),
                              numpy_helper.from_array(np.array(zp, np.uint8), x_zero_point)])
    quantize = helper.make_node("QuantizeLinear", [x, x_scale, x_zero_point], [x_u8],
                                name=pre + "/QuantizeLinear")
    return (x_u8, x_scale, x_zero_point), [quantize]


def _matmul_nodes(name: str, x_u8: str, x_scale: str, x_zero_point: str, output: str) -> list[Any]:
    """The nodes of conv ``name`` as ``MatMulInteger`` with a float, anchor-shaped output named ``output``."""
    from onnx import TensorProto, helper

    pre = name + "/int8_head"
    return [
        helper.make_node("Transpose", [x_u8], [pre + "/x_nhwc"], perm=[0, 2, 3, 1], name=pre + "/ToNHWC"),
        helper.make_node("MatMulInteger", [pre + "/x_nhwc", pre + "/weight_int8", x_zero_point,
                                           pre + "/weight_zero_point"], [pre + "/accumulators"],
                         name=matmul_name(name)),
        helper.make_node("Cast", [pre + "/accumulators"], [pre + "/accumulators_float"],
                         to=TensorProto.FLOAT, name=pre + "/Cast"),
        # x_scale as a DequantizeLinear output: not constant-folded, so the scale product stays the Mul
        # node that ORT's MatMulIntegerToFloatFusion looks for
        helper.make_node("DequantizeLinear", [pre + "/one", x_scale], [pre + "/input_scale"],
                         name=pre + "/InputScale"),
        helper.make_node("Mul", [pre + "/input_scale", pre + "/weight_scale"], [pre + "/scale"],
                         name=pre + "/ScaleProduct"),
        helper.make_node("Mul", [pre + "/accumulators_float", pre + "/scale"], [pre + "/matmul"],
                         name=pre + "/Scale"),
        helper.make_node("Add", [pre + "/matmul", pre + "/bias"], [pre + "/biased"], name=pre + "/AddBias"),
        helper.make_node("Reshape", [pre + "/biased", pre + "/nhwc_shape"], [pre + "/anchors_last"],
                         name=pre + "/Reshape"),
        helper.make_node("Transpose", [pre + "/anchors_last"], [output], perm=[0, 3, 1, 2, 4],
                         name=pre + "/ToAnchors"),
    ]


def _splice(graph: Any, new_nodes: dict[str, list[Any]], dropped: set[str]) -> None:
    """Put each conv's replacement nodes where the conv was and drop the ``dropped`` nodes (in place)."""
    import onnx

    ordered = []
    for node in graph.node:
        if node.name in new_nodes:
            ordered.extend(new_nodes[node.name])
        if node.name not in dropped:
            kept = onnx.NodeProto()
            kept.CopyFrom(node)
            ordered.append(kept)
    # the replacement sits where the conv was; its output is consumed where the old Transpose's was, which
    # came later, so the order stays topological
    del graph.node[:]
    graph.node.extend(ordered)


def _drop_unused(graph) -> None:
    """Remove the Constant and DequantizeLinear nodes whose outputs nothing reads any more (the old Reshape's
    shape, a head input's DequantizeLinear), then the initializers nothing reads."""
    import onnx

    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        orphans = [n for n in graph.node if n.op_type in ("Constant", "DequantizeLinear")
                   and not any(o in used for o in n.output)]
        if not orphans:
            break
        for node in orphans:
            graph.node.remove(node)
    keep = []
    for init in graph.initializer:
        if init.name in used:
            keep.append(onnx.TensorProto())
            keep[-1].CopyFrom(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)


__all__ = ["HeadPattern", "find_head_patterns", "integer_head", "quantize_weight", "gptq_weight",
           "head_hessians", "matmul_name", "conv_name_of"]
