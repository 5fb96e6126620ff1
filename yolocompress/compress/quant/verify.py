"""Check what ONNX Runtime really runs: which planned convolutions became integer kernels, and how close the
int8 model's output stays to fp32 (:func:`output_sqnr`).

A QDQ model only states an intent; ONNX Runtime's graph optimizer decides, per node, whether
``DequantizeLinear -> Conv -> QuantizeLinear`` becomes an integer kernel (``QLinearConv``, or
``ConvInteger`` for dynamic quantization) or stays a float ``Conv`` between Q/DQ pairs (slower than fp32).
:func:`integer_kernel_report` loads the graph ORT optimized (``SessionOptions.optimized_model_filepath``)
and maps each kernel back to the convolution it came from through its weight initializer.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yolocompress.compress.quant.head import conv_name_of
from yolocompress.compress.quant.numerics import sqnr_db
from yolocompress.compress.quant.plan import QuantPlan
from yolocompress.io.workdir import work_dir

# MatMulIntegerToFloat: a Detect conv rewritten by compress.quant.head (integer kernel, float output;
# MatMulInteger where ORT did not fuse the scaling into it)
INTEGER_CONV_OPS = ("QLinearConv", "ConvInteger", "MatMulIntegerToFloat", "MatMulInteger")


@dataclass(frozen=True)
class KernelCheckResult:
    """Integer-kernel coverage of the convolutions after ONNX Runtime's optimizations.

    Attributes:
        convs: convolutions in the graph.
        integer_convs: those running as integer kernels.
        integer_mac_share: share of all conv multiply-adds run by integer kernels (0..1).
        planned: convolutions the plan put in int8.
        planned_integer: planned ones that did become integer kernels.
        planned_mac_share: share of the planned convs' multiply-adds run by integer kernels (0..1).
        stayed_float: module paths of planned convs that ORT left float (should be empty).
        op_counts: op type -> count in the optimized graph.
    """

    convs: int
    integer_convs: int
    integer_mac_share: float
    planned: int
    planned_integer: int
    planned_mac_share: float
    stayed_float: list[str]
    op_counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def optimized_graph(path: str | os.PathLike, out_path: str | os.PathLike):
    """Open ``path`` with full ORT optimizations (as a deployment does) and return the optimized ``ModelProto``
    (written to ``out_path`` on the way)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(out_path)
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return onnx.load(str(out_path))


def _conv_weights(qdq_proto) -> dict[str, str]:
    """``{weight initializer feeding a conv (through its DequantizeLinear, if any): conv name}``; the
    MatMulInteger that replaced a Detect conv counts as that conv."""
    producer = {out: n for n in qdq_proto.graph.node for out in n.output}
    weights = {}
    for node in qdq_proto.graph.node:
        if node.op_type not in ("Conv", "MatMulInteger"):
            continue
        w = node.input[1]
        dq = producer.get(w)
        source = dq.input[0] if dq is not None and dq.op_type == "DequantizeLinear" else w
        weights[source] = conv_name_of(node.name)
    return weights


def integer_kernel_report(int8_path: str | os.PathLike, plan: QuantPlan) -> KernelCheckResult:
    """Which of the plan's convolutions run as integer kernels once ONNX Runtime optimized ``int8_path``."""
    import onnx

    qdq = onnx.load(str(int8_path))
    by_weight = _conv_weights(qdq)
    with work_dir("yolocompress-verify-") as tmp:
        opt = optimized_graph(int8_path, Path(tmp) / "optimized.onnx")
    integer: set[str] = set()
    counts: dict[str, int] = {}
    for node in opt.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        if node.op_type not in INTEGER_CONV_OPS:
            continue
        weight = node.input[3] if node.op_type == "QLinearConv" else node.input[1]
        name = by_weight.get(weight)
        if name is None:  # fall back on the optimizer's naming: '<conv name>_token_<k>'
            name = next((c.name for c in plan.convs if node.name.startswith(c.name)), None)
        if name is not None:
            integer.add(name)
    total = sum(c.macs for c in plan.convs) or 1
    planned = plan.int8_convs
    planned_total = sum(c.macs for c in planned) or 1
    return KernelCheckResult(
        convs=len(plan.convs),
        integer_convs=sum(c.name in integer for c in plan.convs),
        integer_mac_share=sum(c.macs for c in plan.convs if c.name in integer) / total,
        planned=len(planned),
        planned_integer=sum(c.name in integer for c in planned),
        planned_mac_share=sum(c.macs for c in planned if c.name in integer) / planned_total,
        stayed_float=[c.scope for c in planned if c.name not in integer],
        op_counts=dict(sorted(counts.items(), key=lambda kv: -kv[1])),
    )


def output_sqnr(fp32_path: str | os.PathLike, int8_path: str | os.PathLike,
                images: np.ndarray) -> tuple[float, float]:
    """SQNR in dB of the int8 model's decoded output against fp32: (all columns, score columns 4:)."""
    from yolocompress.export.ort import create_session

    a, b = create_session(fp32_path), create_session(int8_path)
    name = a.get_inputs()[0].name
    sig = noise = sig_s = noise_s = 0.0
    for k in range(len(images)):
        x = {name: images[k:k + 1]}
        ref, out = a.run(None, x)[0].astype(np.float64), b.run(None, x)[0].astype(np.float64)
        sig += float((ref ** 2).sum())
        noise += float(((ref - out) ** 2).sum())
        sig_s += float((ref[..., 4:] ** 2).sum())
        noise_s += float(((ref[..., 4:] - out[..., 4:]) ** 2).sum())
    return sqnr_db(sig, noise), sqnr_db(sig_s, noise_s)
