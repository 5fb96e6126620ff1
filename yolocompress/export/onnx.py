"""ONNX export of a detector's decoded eval output, with a parity check against PyTorch.

The exported graph maps ``images`` (float32 Tensor[B, 3, H, W], RGB in 0..1) to ``output0`` (Tensor[B, N,
5 + nc]: ``cx, cy, w, h`` in input pixels, objectness, class scores) - the Ultralytics names and layout,
so tools written for Ultralytics ONNX files read ours. NMS is not part of the graph.

The TorchScript-based exporter (``dynamo=False``) is used: the dynamo exporter needs ``onnxscript`` (not a
dependency), and the tracer with constant folding gives a plain graph here - BatchNorm folded into Conv,
the Detect grids and anchor sizes folded into constants, no shape arithmetic when the shape is fixed.
"""
from __future__ import annotations

import ast
import copy
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolocompress.errors import CompressionError, InputError
from yolocompress.export.ort import create_session
from yolocompress.io.atomic import atomic_path
from yolocompress.models.inputs import check_image_size, image_hw, input_channels, max_stride

INPUT_NAME = "images"
OUTPUT_NAME = "output0"


class _DecodedOutput(nn.Module):
    """Wraps a detector so that forward returns only the decoded tensor of its eval-mode output."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y[0] if isinstance(y, (tuple, list)) else y


def _export_copy(model: nn.Module) -> nn.Module:
    """A float32, CPU, eval-mode, gradient-free deep copy (checkpoints often hold fp16 weights)."""
    net = copy.deepcopy(model).float().cpu().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _metadata(model: nn.Module, hw: tuple[int, int], batch: int, dynamic: bool) -> dict[str, str]:
    """``metadata_props`` entries, each value JSON (``stride``: the largest stride, as Ultralytics writes)."""
    meta = {"producer": "yolocompress", "imgsz": json.dumps(list(hw)),
            "batch": json.dumps(None if dynamic else batch)}
    names = getattr(model, "names", None)
    if names is not None:
        meta["names"] = json.dumps([str(n) for n in (names.values() if isinstance(names, dict) else names)])
    stride = max_stride(model)
    if stride is not None:
        meta["stride"] = json.dumps(stride)
    return meta


def export_onnx(model: nn.Module, path: str | os.PathLike, imgsz: int | tuple[int, int] = 640, batch: int = 1,
                dynamic: bool = False, opset: int = 17, simplify: bool = False) -> Path:
    """Export the decoded eval-mode output of ``model`` to ONNX at ``path``; returns ``path``.

    Args:
        model: a detector whose eval forward returns ``(Tensor[B, N, 5 + nc], ...)`` or that tensor; it is
            not modified (a float32 CPU copy is exported).
        imgsz: input size in pixels, ``int`` or ``(H, W)``; always fixed in the graph.
        batch: batch size of the graph (ignored when ``dynamic``).
        dynamic: make the batch dimension symbolic (``batch``). Height and width stay fixed: the Detect
            grids are baked in as constants for the export size, which keeps the graph small and fast.
        opset: ONNX opset version.
        simplify: run ``onnxslim`` over the graph (needs the optional ``onnxslim`` package).

    The file is written atomically and only after ``onnx.checker`` accepts it. Metadata (``names`` as a
    JSON list, ``stride``, ``imgsz``, ``batch``) is stored in ``metadata_props``; see ``read_onnx_metadata``.
    """
    import onnx

    hw = image_hw(imgsz)
    check_image_size(model, hw)
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    net = _export_copy(model)
    x = torch.zeros(batch, input_channels(net), *hw)
    wrapped = _DecodedOutput(net).eval()
    with torch.no_grad():
        y = wrapped(x)
    if not (isinstance(y, torch.Tensor) and y.ndim == 3 and y.shape[0] == batch):
        raise InputError(f"cannot export {type(model).__name__}: its eval output is not a decoded "
                         "Tensor[B, N, no]")
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
    path = Path(path)
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated upstream but gives the cleaner graph here, and the
            # tracer's warnings about Python-side shape checks are expected (shapes are fixed by design).
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(wrapped, (x,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
        proto = onnx.load(str(tmp))
        _clean_graph(proto)
        if simplify:
            proto = _simplify(proto)
        for key, value in _metadata(net, hw, batch, dynamic).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
    return path


_NON_FOLDABLE = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                 "Bernoulli"}


def _skip_identities(graph) -> None:
    """Drop Identity nodes (the tracer adds them for deduplicated initializers); rewire their consumers."""
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    kept = []
    for node in graph.node:
        for k, name in enumerate(node.input):
            node.input[k] = rename.get(name, name)
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _fold_constant_nodes(proto) -> bool:
    """Replace every node computable from constants alone by initializers holding its outputs.

    The tracer's own folding leaves the Detect grid construction (Range/Expand/Where chains) in the graph;
    after this pass the grids and anchor sizes are plain constant tensors. Returns whether anything changed.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = proto.graph
    known = {init.name for init in graph.initializer} | {""}  # "" = an omitted optional input
    folded = []
    for node in graph.node:
        has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                           for a in node.attribute)
        if node.op_type not in _NON_FOLDABLE and not has_subgraph and all(i in known for i in node.input):
            folded.append(node)
            known.update(node.output)
    if not folded:
        return False
    folded_ids = {id(n) for n in folded}
    remaining = [n for n in graph.node if id(n) not in folded_ids]
    needed = {i for n in remaining for i in n.input} | {o.name for o in graph.output}
    wanted = [o for n in folded for o in n.output if o in needed]
    if wanted:
        used = {i for n in folded for i in n.input}
        sub = helper.make_graph(folded, "fold", inputs=[],
                                outputs=[helper.make_value_info(name, onnx.TypeProto()) for name in wanted],
                                initializer=[init for init in graph.initializer if init.name in used])
        values = ReferenceEvaluator(helper.make_model(sub, opset_imports=proto.opset_import)).run(None, {})
        graph.initializer.extend(numpy_helper.from_array(np.asarray(v), name)
                                 for name, v in zip(wanted, values))
    del graph.node[:]
    graph.node.extend(remaining)
    _drop_unused_initializers(graph)
    return True


def _drop_unused_initializers(graph) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _fold_static_dims(proto) -> bool:
    """Make ``Gather(Shape(x), i)`` a constant where dimension ``i`` of ``x`` is static.

    With a dynamic batch the tracer reads every dimension through Shape ops, which would keep the Detect
    grid construction in the graph (run at every inference); only the batch needs to stay symbolic.
    """
    import onnx
    from onnx import numpy_helper

    graph = proto.graph
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    dims: dict[str, list[int | None]] = {}
    for vi in [*inferred.input, *inferred.value_info, *inferred.output]:
        if vi.type.tensor_type.HasField("shape"):
            shape = vi.type.tensor_type.shape
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    shapes = {n.output[0]: n for n in graph.node if n.op_type == "Shape"}
    changed = False
    kept = []
    for node in graph.node:
        shape_node = shapes.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        source = dims.get(shape_node.input[0]) if shape_node is not None else None
        if source is not None and node.input[1] in consts:
            attrs = {a.name: a.i for a in shape_node.attribute}
            source = source[attrs.get("start", 0):attrs.get("end", len(source))]
            index = consts[node.input[1]]
            picked = [source[int(i)] for i in index.flat]
            if all(d is not None for d in picked):
                value = np.array(picked, dtype=np.int64).reshape(index.shape)
                graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
                changed = True
                continue
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return changed


def _clean_graph(proto) -> None:
    """Fold everything that does not depend on the input into constants (a small, dependency-free onnxsim)."""
    _skip_identities(proto.graph)
    for _ in range(10):  # each round can expose more constants; the YOLOv5 graphs settle in two
        changed = _fold_constant_nodes(proto)
        changed = _fold_static_dims(proto) or changed
        if not changed:
            break
    # Shape nodes whose every use was folded away
    used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
    kept = [n for n in proto.graph.node if n.op_type != "Shape" or n.output[0] in used]
    del proto.graph.node[:]
    proto.graph.node.extend(kept)


def _simplify(proto):
    try:
        import onnxslim
    except ImportError as exc:
        raise InputError("simplify needs the optional package onnxslim (pip install onnxslim)") from exc
    return onnxslim.slim(proto)


@dataclass(frozen=True)
class OnnxMetadata:
    """What an exported detector says about itself (``None`` where the file does not say)."""

    names: list[str] | None
    stride: int | None
    imgsz: tuple[int, int] | None
    batch: int | None


def _parse_value(text: str):
    """JSON (ours), else a Python literal (Ultralytics writes ``str(dict)``), else the raw string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_onnx_metadata(path: str | os.PathLike) -> OnnxMetadata:
    """Class names, stride, image size and batch stored in an ONNX file (ours or an Ultralytics export)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for non-ONNX files
        raise InputError(f"not an ONNX model: {path}") from exc
    props = {p.key: _parse_value(p.value) for p in proto.metadata_props}
    names = props.get("names")
    if isinstance(names, dict):  # Ultralytics: {0: 'person', ...}
        names = [names[k] for k in sorted(names, key=int)]
    stride = props.get("stride")
    if isinstance(stride, list) and stride:  # per-level strides
        stride = max(stride)
    imgsz = props.get("imgsz")
    if isinstance(imgsz, int):
        imgsz = [imgsz, imgsz]
    batch = props.get("batch")
    return OnnxMetadata(
        names=[str(n) for n in names] if isinstance(names, list) else None,
        stride=int(stride) if isinstance(stride, (int, float)) else None,
        imgsz=(int(imgsz[0]), int(imgsz[1])) if isinstance(imgsz, list) and len(imgsz) == 2 else None,
        batch=batch if isinstance(batch, int) else None,
    )


def verify_onnx(model: nn.Module, path: str | os.PathLike, imgsz: int | tuple[int, int] = 640,
                batch: int | None = None, seed: int = 0) -> float:
    """Maximum relative error of the ONNX Runtime output against PyTorch's decoded eval output.

    The error of each element is ``|ort - torch| / max(|torch|, 1)``: relative for box coordinates (pixels),
    absolute for scores in 0..1, where a relative error near 0 is meaningless. Inputs are uniform random
    in 0..1 (``seed``); ``batch`` defaults to the file's fixed batch, or 1 for a dynamic one.
    """
    hw = image_hw(imgsz)
    session = create_session(path, optimize=True)
    inp = session.get_inputs()[0]
    if batch is None:
        batch = inp.shape[0] if isinstance(inp.shape[0], int) else 1
    net = _export_copy(model)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, input_channels(net), *hw, generator=generator)
    with torch.no_grad():
        ref = _DecodedOutput(net)(x).numpy()
    try:
        out = session.run([OUTPUT_NAME], {inp.name: x.numpy()})[0]
    except Exception as exc:  # onnxruntime's own error types
        raise InputError(f"ONNX Runtime cannot run {path} on a {list(x.shape)} input: "
                         f"{str(exc).splitlines()[0]}") from exc
    if out.shape != ref.shape:
        raise CompressionError(f"ONNX output shape {list(out.shape)} != PyTorch {list(ref.shape)}")
    return float(np.max(np.abs(out - ref) / np.maximum(np.abs(ref), 1.0)))


# ``export_checked``'s default bound on the decoded output's error against PyTorch (see ``verify_onnx``).
PARITY_TOLERANCE = 1e-3


def export_checked(model: nn.Module, path: str | os.PathLike, imgsz: int | tuple[int, int] = 640,
                   batch: int = 1, dynamic: bool = False, opset: int = 17, simplify: bool = False,
                   verify: bool = True, tolerance: float = PARITY_TOLERANCE) -> tuple[Path, float | None]:
    """:func:`export_onnx`, then (with ``verify``) :func:`verify_onnx`: the path and the parity error
    (``None``: not checked). Raises ``CompressionError`` when the error exceeds ``tolerance``; the file is kept so that
    it can be inspected."""
    out = export_onnx(model, path, imgsz=imgsz, batch=batch, dynamic=dynamic, opset=opset, simplify=simplify)
    error = verify_onnx(model, out, imgsz) if verify else None
    if error is not None and error > tolerance:
        raise CompressionError(f"{out}: ONNX Runtime output differs from PyTorch (max relative error "
                               f"{error:.2e} > {tolerance:.0e})")
    return out, error
