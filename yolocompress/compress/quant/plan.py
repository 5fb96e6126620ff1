"""The quantization plan: which tensors of an exported detector get QuantizeLinear/DequantizeLinear pairs.

The plan is derived by walking the ONNX graph, never from node names (they change between exporters):

- the **decode** part is everything between the graph output and the first convolutions found walking back
  from it (Reshape/Transpose/Sigmoid/grid arithmetic/Concat); those convolutions are the **Detect output
  convs**. Their outputs and the decode stay float: one int8 tensor holding pixel coordinates and
  probabilities destroys the scores. With ``head="int8"`` (the default) a Detect conv still computes in an
  integer kernel with a float output (:mod:`~yolocompress.compress.quant.head`: int8 input and weights,
  ``MatMulIntegerToFloat``); with ``head="float"`` it is an fp32 conv;
- every other convolution gets quantized input and output (so ONNX Runtime fuses DQ -> Conv -> Q into an
  integer kernel), except the **stem** (a convolution reading the graph input) when ``stem="float"``: a
  3-channel input gives the integer kernels nothing to vectorise over and ran 3x *slower* than fp32 on the
  measured CPU (see benchmarks/RESULTS.md);
- SiLU (``Mul(x, Sigmoid(x))``) is quantized (QLinearSigmoid + QLinearMul) or left float, selectable;
  LeakyReLU is quantized (QLinearLeakyRelu);
- residual Adds (two activation inputs), Concat, MaxPool and Resize are quantized; the inputs and output
  of a Concat, and the input and output of MaxPool / Resize, share one scale (``shared``), so the integer
  Concat is a copy and SPPF's pooling chain needs no requantization.

``QuantPlan`` is the single source of truth: PTQ passes ``plan.nodes`` to ``quantize_static`` and calibrates
``plan.tensors``; verification checks that every conv in ``plan.int8_convs`` became an integer kernel.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from yolocompress.compress.quant.graph import OnnxGraph
from yolocompress.compress.quant.head import find_head_patterns
from yolocompress.errors import InputError
from yolocompress.models.selectors import select_layers

SILU_MODES = ("int8", "float")
STEM_MODES = ("int8", "float")
HEAD_MODES = ("int8", "float")

# Element-wise / data-movement ops that the plan quantizes when they sit in the quantized body.
_SCALE_SHARING_OPS = ("MaxPool", "Resize")


@dataclass(frozen=True)
class PlanConfig:
    """Choices a user can make about the plan.

    Attributes:
        silu: ``"int8"`` (QLinearSigmoid + QLinearMul) or ``"float"`` (dequantize, SiLU in fp32, quantize).
        stem: ``"int8"`` or ``"float"`` for convolutions that read the graph input directly.
        head: ``"int8"``: the Detect output convs run as integer kernels with float outputs (int8 input and
            weights; the decode stays float); ``"float"``: they run in fp32.
        exclude: selectors of nodes to keep float (:mod:`yolocompress.models.selectors`): an ONNX node name,
            a layer index such as ``17``, or a module path such as ``model.17`` or ``model.17.cv3.conv``
            (the nodes of that module and everything under it). A selector that matches no quantizable node
            is an error (like NNCF's ``IgnoredScope(validate=True)``).
        float_prefix: keep the first N layers (``model.0`` .. ``model.N-1``) float, as if excluded: at the
            highest resolution with the fewest channels the integer kernels gain least and the int8 SiLU costs
            most.
    """

    silu: str = "int8"
    stem: str = "float"
    head: str = "int8"
    exclude: tuple[str, ...] = ()
    float_prefix: int = 0

    def __post_init__(self) -> None:
        if self.silu not in SILU_MODES:
            raise InputError(f"silu must be one of {', '.join(SILU_MODES)}, got {self.silu!r}")
        if self.stem not in STEM_MODES:
            raise InputError(f"stem must be one of {', '.join(STEM_MODES)}, got {self.stem!r}")
        if self.head not in HEAD_MODES:
            raise InputError(f"head must be one of {', '.join(HEAD_MODES)}, got {self.head!r}")
        object.__setattr__(self, "exclude", tuple(str(s) for s in self.exclude))
        prefix = self.float_prefix
        if not isinstance(prefix, int) or isinstance(prefix, bool) or prefix < 0:
            raise InputError(f"float_prefix must be a layer count >= 0, got {self.float_prefix!r}")

    @property
    def selectors(self) -> tuple[str, ...]:
        """``exclude`` and the selectors of the float prefix (``model.0`` .. ``model.{float_prefix - 1}``)."""
        return (*self.exclude, *(f"model.{i}" for i in range(self.float_prefix)))


@dataclass(frozen=True)
class ConvSite:
    """One convolution of the graph: ONNX node name, module path, multiply-adds per image, and its fate.

    ``reason`` is ``"int8"`` for a planned integer conv, else why it stays float: ``"detect"``, ``"stem"``,
    ``"excluded"``. ``head`` marks a Detect output conv (integer kernel with a float output when int8).
    """

    name: str
    scope: str
    macs: int
    reason: str
    head: bool = False

    @property
    def int8(self) -> bool:
        return self.reason == "int8"


@dataclass(frozen=True)
class QuantPlan:
    """Where Q/DQ go in one ONNX graph.

    Attributes:
        nodes: names of the nodes to quantize (``quantize_static(nodes_to_quantize=...)``).
        op_types: their op types.
        tensors: activation tensors that get a Q/DQ pair (inputs and outputs of ``nodes``).
        shared: groups of tensors that must share one scale and zero point.
        convs: every convolution with its fate (:class:`ConvSite`).
        decode: names of the float decode nodes after the Detect convs.
        config: the :class:`PlanConfig` it was built with.
    """

    nodes: tuple[str, ...]
    op_types: tuple[str, ...]
    tensors: tuple[str, ...]
    shared: tuple[tuple[str, ...], ...]
    convs: tuple[ConvSite, ...]
    decode: tuple[str, ...]
    config: PlanConfig = field(default_factory=PlanConfig)

    @property
    def int8_convs(self) -> tuple[ConvSite, ...]:
        return tuple(c for c in self.convs if c.int8)

    @property
    def int8_head(self) -> tuple[ConvSite, ...]:
        """Detect output convs planned as integer kernels with float outputs (rewritten after
        ``quantize_static`` by :func:`~yolocompress.compress.quant.head.integer_head`)."""
        return tuple(c for c in self.convs if c.int8 and c.head)

    @property
    def float_convs(self) -> tuple[ConvSite, ...]:
        return tuple(c for c in self.convs if not c.int8)

    @property
    def int8_mac_share(self) -> float:
        """Share of all conv multiply-adds that the plan puts in integer kernels (0..1)."""
        total = sum(c.macs for c in self.convs)
        return sum(c.macs for c in self.int8_convs) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "nodes": list(self.nodes), "op_types": list(self.op_types),
                "tensors": list(self.tensors), "shared": [list(g) for g in self.shared],
                "convs": [asdict(c) for c in self.convs], "decode": list(self.decode),
                "int8_mac_share": self.int8_mac_share}


def node_scope(name: str) -> str:
    """Module path of a node from the TorchScript exporter's name, as ``named_modules`` of the detector
    spells it: ``/model/model.2/m/m.0/cv1/conv/Conv`` -> ``model.2.m.0.cv1.conv`` (the export wrapper's
    leading ``model`` and the op name are dropped; a called ``nn.Sequential`` appears both as ``m`` and in
    ``m.0``, so a component that the next one extends is dropped). Other names are returned unchanged."""
    if not name.startswith("/"):
        return name
    parts = [p for p in name.split("/") if p]
    if len(parts) >= 2 and parts[0] == "model":
        parts = parts[1:]
    if len(parts) == 1:
        return parts[0]
    parts = parts[:-1]
    kept = [p for p, nxt in zip(parts, [*parts[1:], None]) if nxt is None or not nxt.startswith(p + ".")]
    return ".".join(kept)


def _decode_part(g: OnnxGraph) -> tuple[set[str], list[Any]]:
    """Walk back from the graph outputs to the first convolutions: (decode node names, head convs)."""
    decode: set[str] = set()
    head: dict[str, Any] = {}
    stack = [g.producer[o] for o in g.outputs if o in g.producer]
    while stack:
        node = stack.pop()
        if node.op_type == "Conv":
            head[node.name] = node
            continue
        if node.name in decode:
            continue
        decode.add(node.name)
        stack.extend(g.producer[i] for i in g.activations(node.input) if i in g.producer)
    return decode, list(head.values())


def _silu_pairs(g: OnnxGraph) -> dict[str, Any]:
    """``{sigmoid name: mul node}`` for every ``Mul(x, Sigmoid(x))``."""
    pairs = {}
    for node in g.nodes:
        if node.op_type != "Sigmoid":
            continue
        x, s = node.input[0], node.output[0]
        for mul in g.consumers.get(s, []):
            if mul.op_type == "Mul" and set(mul.input) == {x, s}:
                pairs[node.name] = mul
    return pairs


def _conv_macs(proto) -> dict[str, int]:
    """Multiply-adds of every Conv per forward pass (output shape from ONNX shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    weights = {init.name: list(init.dims) for init in proto.graph.initializer}
    macs = {}
    for node in proto.graph.node:
        if node.op_type != "Conv":
            continue
        w = weights.get(node.input[1])
        out = shapes.get(node.output[0])
        if w is None or out is None:
            macs[node.name] = 0
            continue
        spatial = 1
        for d in out[2:]:
            spatial *= d
        per_out = 1
        for d in w[1:]:
            per_out *= d
        macs[node.name] = int(out[0] * w[0] * per_out * spatial)
    return macs


def build_plan(model: str | os.PathLike | Any, config: PlanConfig | None = None) -> QuantPlan:
    """Derive the quantization plan of an exported detector (a path or an ``onnx.ModelProto``).

    Raises ``InputError`` when the graph has no convolution outside the decode part (nothing to quantize)
    or when an ``exclude`` selector matches no quantizable node.
    """
    config = config or PlanConfig()
    proto = _load_graph(model)
    g = OnnxGraph(proto)
    decode, head = _decode_part(g)
    head_names = {n.name for n in head}
    candidates, conv_reason = _candidates(g, config, decode, head_names)
    nodes = _apply_exclusions(candidates, conv_reason, config)
    head_inputs = [n.input[0] for n in head if conv_reason[n.name] == "int8"]
    macs = _conv_macs(proto)
    convs = tuple(ConvSite(n.name, node_scope(n.name), macs.get(n.name, 0), conv_reason[n.name],
                           head=n.name in head_names)
                  for n in g.nodes if n.op_type == "Conv")
    return QuantPlan(nodes=tuple(n.name for n in nodes), op_types=tuple(sorted({n.op_type for n in nodes})),
                     tensors=tuple(_planned_tensors(nodes, head_inputs, g)), shared=_shared_groups(nodes, g),
                     convs=convs, decode=tuple(n.name for n in g.nodes if n.name in decode), config=config)


def _load_graph(model: str | os.PathLike | Any) -> Any:
    """The ``onnx.ModelProto`` of a path (or the given proto), checked to have a name on every node."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise InputError(f"model file not found: {path}")
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # DecodeError and friends
            raise InputError(f"not an ONNX model: {path}") from exc
    else:
        proto = model
    unnamed = [n for n in proto.graph.node if not n.name]
    if unnamed:
        raise InputError(f"the graph has {len(unnamed)} unnamed nodes ({unnamed[0].op_type}, ...); "
                         "quantization selects nodes by name: export with yolocompress export")
    return proto


def _candidates(g: OnnxGraph, config: PlanConfig, decode: set[str],
                head_names: set[str]) -> tuple[list[Any], dict[str, str]]:
    """The quantizable nodes of the body in graph order, and ``{conv name: int8 or why it stays float}``."""
    silu = _silu_pairs(g)
    silu_muls = {m.name for m in silu.values()}
    integer_head = set(find_head_patterns(g, head_names)) if config.head == "int8" else set()
    candidates: list[Any] = []
    conv_reason: dict[str, str] = {}
    for node in g.nodes:
        if node.name in decode:
            continue
        op = node.op_type
        if op == "Conv":
            if node.name in head_names:
                # an integer head conv is rewritten after quantize_static, which must leave it alone
                conv_reason[node.name] = "int8" if node.name in integer_head else "detect"
                continue
            if config.stem == "float" and node.input[0] in g.inputs:
                conv_reason[node.name] = "stem"
                continue
            conv_reason[node.name] = "int8"
            candidates.append(node)
        elif op == "Sigmoid" and node.name in silu or op == "Mul" and node.name in silu_muls:
            if config.silu == "int8":
                candidates.append(node)
        elif op == "Add" and len(g.activations(node.input)) == 2:
            candidates.append(node)
        elif op == "LeakyRelu":  # ORT's QLinearLeakyRelu (a lookup table): LeakyReLU models, YOLOv7-tiny
            candidates.append(node)
        elif op in ("Concat", *_SCALE_SHARING_OPS):
            candidates.append(node)
    if not any(reason == "int8" for reason in conv_reason.values()):
        raise InputError("no convolution to quantize: the graph has none outside the Detect head and decode")
    return candidates, conv_reason


def _apply_exclusions(candidates: list[Any], conv_reason: dict[str, str], config: PlanConfig) -> list[Any]:
    """The candidates the ``exclude`` / float-prefix selectors leave; marks excluded convs in ``conv_reason``."""
    quantizable = {n.name: node_scope(n.name) for n in candidates}
    quantizable.update({name: node_scope(name) for name, reason in conv_reason.items() if reason == "int8"})
    examples = ", ".join(sorted({node_scope(c.name) for c in candidates if c.op_type == "Conv"})[:4])
    excluded = select_layers(config.selectors, quantizable, "quantizable node",
                             f"module paths look like {examples}, ...")
    for name in excluded:
        if conv_reason.get(name) == "int8":
            conv_reason[name] = "excluded"
    return [n for n in candidates if n.name not in excluded]


def _planned_tensors(nodes: Sequence[Any], head_inputs: Sequence[str], g: OnnxGraph) -> list[str]:
    """Activation tensors that get Q/DQ: inputs and outputs of ``nodes``, then the int8 head convs' inputs."""
    tensors: list[str] = []
    seen: set[str] = set()
    for node in nodes:
        for t in g.activations([*node.input, *node.output]):
            if t not in seen:
                seen.add(t)
                tensors.append(t)
    return tensors + [t for t in dict.fromkeys(head_inputs) if t not in seen]


def _shared_groups(nodes: Sequence[Any], g: OnnxGraph) -> tuple[tuple[str, ...], ...]:
    """Union-find over the tensors of Concat (inputs + output) and MaxPool/Resize (input + output)."""
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent.setdefault(t, t) != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for node in nodes:
        if node.op_type == "Concat":
            members = g.activations([*node.input, *node.output])
        elif node.op_type in _SCALE_SHARING_OPS:
            members = [node.input[0], node.output[0]]
        else:
            continue
        root = find(members[0])
        for t in members[1:]:
            parent[find(t)] = root
    groups: dict[str, list[str]] = defaultdict(list)
    for t in parent:
        groups[find(t)].append(t)
    return tuple(tuple(v) for v in groups.values() if len(v) > 1)
