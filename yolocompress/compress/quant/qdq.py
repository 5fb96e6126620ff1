"""The QDQ model of a plan: ONNX Runtime's ``quantize_static`` fed with our ranges, and the graph passes
around it.

:func:`preprocess` prepares the fp32 graph (``quant_pre_process``, then :func:`unshare_conv_initializers`
and :func:`compact_broadcast_constants`); :func:`quantize_qdq` writes the QDQ model of a
:class:`~yolocompress.compress.quant.plan.QuantPlan` (only the planned nodes, symmetric int8 weights, the
calibration ranges passed as its cache) and rewrites the plan's integer head convs
(:mod:`~yolocompress.compress.quant.head`); :func:`copy_metadata` carries the model's metadata over.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from yolocompress.compress.quant.calibrate import quiet_ort_prints
from yolocompress.compress.quant.graph import OnnxGraph
from yolocompress.compress.quant.head import integer_head
from yolocompress.compress.quant.plan import QuantPlan
from yolocompress.errors import CompressionError, InputError
from yolocompress.io.workdir import work_dir


def quantize_qdq(fp32_path: str | os.PathLike, out_path: str | os.PathLike, plan: QuantPlan,
                 ranges: dict[str, tuple[float, float]], per_channel: bool = True,
                 activation_type: str = "u8", extra_options: dict[str, Any] | None = None,
                 hessians: dict[str, np.ndarray] | None = None) -> Path:
    """Write the QDQ model of ``plan`` with the given activation ranges (``quantize_static``, no calibration
    run: the ranges go in as its calibration cache), then turn the plan's integer head convs into integer
    MatMuls with float outputs (:func:`~yolocompress.compress.quant.head.integer_head`; their weights are
    rounded by GPTQ against ``hessians``, see :func:`~yolocompress.compress.quant.head.head_hessians`, or to
    nearest without them).
    ``extra_options`` are merged into ORT's (e.g. ``TensorQuantOverrides``)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    with work_dir("yolocompress-quant-") as tmp:
        cache = Path(tmp) / "ranges.json"
        data = {name: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
                for name, (lo, hi) in ranges.items()}
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), cache)
        options = {"WeightSymmetric": True, "ActivationSymmetric": False, **(extra_options or {})}
        quantize_static(
            str(fp32_path), str(out_path), calibration_data_reader=None, calibration_cache_path=cache,
            quant_format=QuantFormat.QDQ, calibrate_method=CalibrationMethod.MinMax,
            activation_type=QuantType.QUInt8 if activation_type == "u8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=False,
            nodes_to_quantize=list(plan.nodes), op_types_to_quantize=list(plan.op_types),
            extra_options=options)
    planned_head = [c.name for c in plan.int8_head]
    if planned_head:
        done = integer_head(out_path, planned_head, ranges, per_channel=per_channel, hessians=hessians)
        if sorted(done) != sorted(planned_head):
            missing = sorted(set(planned_head) - set(done))
            raise CompressionError(f"could not rewrite the Detect convs {', '.join(missing)} as integer "
                                   "MatMuls")
    return Path(out_path)


def unshare_conv_initializers(proto) -> bool:
    """Give every Conv of ``proto`` its own weight and bias initializers (in place); True if any changed.

    The TorchScript exporter deduplicates equal tensors, so two convolutions can share one bias initializer
    (common after BN folding). Quantizing one of them then puts a DequantizeLinear on the other's bias too,
    and a float conv with a non-constant bias loses ORT's fast NCHWc kernel (measured: the float stem
    conv ran about 2x slower).
    """
    import onnx

    inits = {init.name: init for init in proto.graph.initializer}
    uses: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            if name in inits:
                uses[name] = uses.get(name, 0) + 1
    changed = False
    for node in proto.graph.node:
        if node.op_type != "Conv":
            continue
        for k in range(1, len(node.input)):
            name = node.input[k]
            if name in inits and uses[name] > 1:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}__{node.name}"
                proto.graph.initializer.append(copy)
                node.input[k] = copy.name
                uses[name] -= 1
                changed = True
    return changed


_BROADCASTING_OPS = frozenset({"Add", "Sub", "Mul", "Div"})


def compact_broadcast_constants(proto, min_size: int = 1024) -> bool:
    """Store float initializers of ``proto`` that repeat along some axes in their broadcast form (in place);
    True if any changed.

    ``quant_pre_process`` constant-folds the exported ``Shape -> Expand`` of the Detect anchor sizes
    (:meth:`Detect._grids`) into full ``[1, na, ny, nx, 2]`` tensors: ~200 KB in a 2 MB yolov5n int8 file.
    Such a tensor becomes its distinct values (size 1 along every axis it repeats on) expanded by ``Expand``
    to the constant shape, which ONNX Runtime folds again when it loads the model. Only operands of
    element-wise arithmetic are touched.
    """
    import onnx
    from onnx import helper, numpy_helper

    g = OnnxGraph(proto)
    expands = []
    for init in proto.graph.initializer:
        # only operands of broadcasting arithmetic: weights (even all-zero ones) stay initializers
        ops = {n.op_type for n in g.consumers.get(init.name, [])}
        if init.data_type != onnx.TensorProto.FLOAT or not ops or not ops <= _BROADCASTING_OPS:
            continue
        full = g.constant(init.name)
        if full.size < min_size:
            continue
        compact = full
        for axis in range(full.ndim):
            if compact.shape[axis] > 1 and np.array_equal(compact, np.take(compact, [0], axis=axis).repeat(
                    compact.shape[axis], axis=axis)):
                compact = np.take(compact, [0], axis=axis)
        if compact.size * 4 > full.size:
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(compact), name + "/compact"))
        shape = numpy_helper.from_array(np.array(full.shape, np.int64), name + "/shape")
        proto.graph.initializer.append(shape)
        expands.append(helper.make_node("Expand", [name + "/compact", name + "/shape"], [name],
                                        name=name + "/Expand"))
    if expands:
        nodes = [*expands, *proto.graph.node]
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
    return bool(expands)


def preprocess(fp32: Path, pre: Path) -> None:
    """``quant_pre_process`` (ORT's shape inference and graph clean-up) of ``fp32`` into ``pre``, then
    :func:`unshare_conv_initializers` and :func:`compact_broadcast_constants` (one load, one save)."""
    import onnx
    from onnxruntime.quantization import quant_pre_process

    try:
        with quiet_ort_prints():
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    except Exception as exc:  # ORT raises assorted errors for graphs it cannot handle
        raise InputError(f"ONNX Runtime cannot prepare {fp32.name} for quantization: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    proto = onnx.load(str(pre))
    unshared = unshare_conv_initializers(proto)
    if compact_broadcast_constants(proto) or unshared:
        onnx.save(proto, str(pre))


def copy_metadata(src: Path, dst: Path) -> None:
    """Carry ``metadata_props`` (class names, stride, image size) over to the quantized file."""
    import onnx

    source = onnx.load(str(src), load_external_data=False)
    target = onnx.load(str(dst))
    have = {p.key for p in target.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in have:
            entry = target.metadata_props.add()
            entry.key, entry.value = prop.key, prop.value
    entry = target.metadata_props.add()
    entry.key, entry.value = "quantization", "int8 QDQ (yolocompress PTQ)"
    onnx.save(target, str(dst))



__all__ = ["compact_broadcast_constants", "copy_metadata", "preprocess", "quantize_qdq",
           "unshare_conv_initializers"]
