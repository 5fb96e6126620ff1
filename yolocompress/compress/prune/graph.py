"""Dependency analysis: which output channels of which layers are coupled (kept or removed together).

How it works. Every tensor is described by its *channel layout*: a 1-D integer array holding, for each of its
channels, a global *element id*. A (non-grouped) convolution or linear layer creates fresh ids for its
outputs; everything else only moves ids around, following each module's forward code:

- ``torch.cat`` concatenates layouts (Concat, C3, SPP/SPPF, GhostConv, ELAN, Focus's space-to-depth);
- an element-wise op between two tensors (residual add, SE's channel scaling, FReLU's max, RepConv's branch
  sum) *unifies* the two layouts position by position (union-find over element ids);
- a depth-wise convolution (groups == in == out) and BatchNorm keep their input's ids, so they are tied to it;
- ShuffleNetV2's ``chunk`` + ``channel_shuffle`` only give the same result after pruning if both halves keep
  identical counts at identical positions; rather than tie units across a whole stage we mark the block's
  concatenated (shuffled) channels *fixed*; each branch's hidden width stays prunable (exact, conservative);
- other grouped convolutions fix their input and output channels (no shipped config has one);
- the image's input channels and the Detect convs' ``na * (nc + 5)`` outputs are fixed.

After the walk, the union-find classes of element ids are the prunable *units* (removing a unit removes every
channel carrying one of its ids, in every tensor) and the units that share an allocated space form a
``ChannelGroup`` (e.g. a C3's ``cv1`` output together with every Bottleneck's ``cv2`` output it is added to).

Why a handler per module type and not a generic tracer: ``torch.fx`` cannot trace Detect, Shuffle_Block or
SELayer (they unpack ``x.shape``) without making them leaves, which then need handlers anyway; a forward-hook
tracer sees modules but not the functional ops (``cat``, ``+``, ``chunk``, ``view``) that carry the coupling.
A handler registry mirrors each block's ``forward`` in a few lines, covers every shipped config exactly,
and an unknown module type is a clear error instead of a silently wrong pruning (``register_handler`` adds
one). The property test in ``tests/compress/prune`` checks every shipped config by comparing a pruned model
against the original with the removed channels' consumers zeroed (same outputs iff the coupling is exact).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch.nn as nn

from yolocompress.errors import InputError
from yolocompress.models import activations, backbones, common, elan, rep
from yolocompress.models.detect import Detect

Layout = np.ndarray  # int64 element ids, one per channel of a tensor


@dataclass
class LayerRecord:
    """A Conv2d or Linear layer: the element ids of its input and output channels.

    ``kind`` is ``"conv"`` (dense, groups == 1), ``"depthwise"`` (output ids are the input ids), ``"fixed"``
    (another grouped conv: every channel fixed) or ``"linear"``.
    """

    name: str
    kind: str
    in_ids: Layout
    out_ids: Layout


@dataclass
class NormRecord:
    """A BatchNorm2d and the element ids of its channels."""

    name: str
    ids: Layout


@dataclass
class ChannelGroup:
    """Coupled channels pruned as one: ``units`` (ids into ``ChannelGraph.unit_*``) and where they live.

    ``layers``: names of the Conv2d / Linear layers whose outputs carry these units; ``layer_index``: the
    top-level layer (``model.<i>``) of the first of them; ``channels``: prunable units (the number counted
    by ``--ratio``); ``fixed``: units of the group that must stay.
    """

    index: int
    name: str
    layer_index: int
    units: np.ndarray
    layers: list[str]
    fixed: int = 0

    @property
    def channels(self) -> int:
        return int(len(self.units))


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


class UnsupportedModuleError(InputError):
    """A module type without a channel handler (or one whose pruned form cannot be stored)."""


Handler = Callable[["ChannelTracer", str, nn.Module, Layout], Layout]
_HANDLERS: dict[type, Handler] = {}


def register_handler(*types: type) -> Callable[[Handler], Handler]:
    """Decorator: ``handler(tracer, name, module, layout) -> output layout`` for ``types`` and subclasses."""
    def deco(fn: Handler) -> Handler:
        for t in types:
            _HANDLERS[t] = fn
        return fn
    return deco


def handler_for(module: nn.Module) -> Handler:
    for t in type(module).__mro__:
        if t in _HANDLERS:
            return _HANDLERS[t]
    raise UnsupportedModuleError(f"pruning does not know how channels flow through {type(module).__name__}; "
                                 f"register a handler (yolocompress.compress.prune.graph.register_handler)")


class ChannelTracer:
    """Walks a model with the handlers, allocating element ids and recording layers and couplings."""

    def __init__(self) -> None:
        self.uf = _UnionFind()
        self.space_start: list[int] = []   # first element id of every allocated space
        self.fixed: set[int] = set()
        self.layers: list[LayerRecord] = []
        self.norms: list[NormRecord] = []

    # -- primitives
    def new(self, n: int) -> Layout:
        ids = self.uf.add(n)
        self.space_start.append(int(ids[0]) if n else len(self.uf.parent))
        return ids

    def fix(self, ids: Layout) -> None:
        self.fixed.update(int(i) for i in ids)

    def unify(self, a: Layout, b: Layout) -> Layout:
        """Element-wise op between tensors with layouts ``a`` and ``b`` (same length): tie position-wise."""
        if len(a) != len(b):
            raise ValueError(f"element-wise op between {len(a)} and {len(b)} channels")
        for x, y in zip(a.tolist(), b.tolist()):
            self.uf.union(x, y)
        return a

    @staticmethod
    def cat(layouts: Sequence[Layout]) -> Layout:
        return np.concatenate(list(layouts)).astype(np.int64)

    def visit(self, name: str, module: nn.Module, x: Layout) -> Layout:
        return handler_for(module)(self, name, module, x)

    def child(self, name: str, parent: nn.Module, attr: str, x: Layout) -> Layout:
        return self.visit(f"{name}.{attr}" if name else attr, getattr(parent, attr), x)

    # -- leaf layers
    def conv(self, name: str, conv: nn.Conv2d, x: Layout) -> Layout:
        if conv.in_channels != len(x):
            raise ValueError(f"{name}: expects {conv.in_channels} input channels, layout has {len(x)}")
        if conv.groups == 1:
            out, kind = self.new(conv.out_channels), "conv"
        elif conv.groups == conv.in_channels == conv.out_channels:
            out, kind = x, "depthwise"
        else:
            out, kind = self.new(conv.out_channels), "fixed"
            self.fix(x)
            self.fix(out)
        self.layers.append(LayerRecord(name, kind, x, out))
        return out

    def linear(self, name: str, lin: nn.Linear, x: Layout) -> Layout:
        out = self.new(lin.out_features)
        self.layers.append(LayerRecord(name, "linear", x, out))
        return out

    def norm(self, name: str, bn: nn.BatchNorm2d, x: Layout) -> Layout:
        self.norms.append(NormRecord(name, x))
        return x


# ---------------------------------------------------------------------------------------------- handlers
def _passthrough(tracer: ChannelTracer, name: str, m: nn.Module, x: Layout) -> Layout:
    return x


register_handler(nn.SiLU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Sigmoid, nn.Identity, nn.Mish,
                 nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Upsample, nn.Dropout,
                 activations.h_sigmoid, activations.h_swish, activations.Mish)(_passthrough)
register_handler(nn.Conv2d)(lambda t, n, m, x: t.conv(n, m, x))
register_handler(nn.Linear)(lambda t, n, m, x: t.linear(n, m, x))
register_handler(nn.BatchNorm2d)(lambda t, n, m, x: t.norm(n, m, x))


@register_handler(nn.Sequential)
def _sequential(t: ChannelTracer, name: str, m: nn.Sequential, x: Layout) -> Layout:
    for key, child in m.named_children():
        x = t.visit(f"{name}.{key}", child, x)
    return x


@register_handler(activations.FReLU)
def _frelu(t: ChannelTracer, name: str, m: activations.FReLU, x: Layout) -> Layout:
    y = t.child(name, m, "bn", t.child(name, m, "conv", x))
    return t.unify(x, y)  # max(x, y): element-wise


@register_handler(activations.AconC, activations.MetaAconC)
def _acon(t: ChannelTracer, name: str, m: nn.Module, x: Layout) -> Layout:
    raise UnsupportedModuleError(f"{name}: {type(m).__name__} keeps per-channel parameters that a pruned "
                                 "model's shape spec cannot store; pruning supports the other activations")


@register_handler(common.Conv)
def _conv_bn_act(t: ChannelTracer, name: str, m: common.Conv, x: Layout) -> Layout:
    for attr in ("conv", "bn", "act"):
        if getattr(m, attr, None) is not None:
            x = t.child(name, m, attr, x)
    return x


@register_handler(common.Focus)
def _focus(t: ChannelTracer, name: str, m: common.Focus, x: Layout) -> Layout:
    return t.child(name, m, "conv", t.cat([x] * 4))  # 2x2 space-to-depth: four copies of the input channels


@register_handler(common.Bottleneck)
def _bottleneck(t: ChannelTracer, name: str, m: common.Bottleneck, x: Layout) -> Layout:
    y = t.child(name, m, "cv2", t.child(name, m, "cv1", x))
    return t.unify(y, x) if m.add else y


@register_handler(common.BottleneckCSP)
def _bottleneck_csp(t: ChannelTracer, name: str, m: common.BottleneckCSP, x: Layout) -> Layout:
    y1 = t.child(name, m, "cv3", t.child(name, m, "m", t.child(name, m, "cv1", x)))
    y2 = t.child(name, m, "cv2", x)
    y = t.child(name, m, "act", t.child(name, m, "bn", t.cat([y1, y2])))
    return t.child(name, m, "cv4", y)


@register_handler(common.C3)
def _c3(t: ChannelTracer, name: str, m: common.C3, x: Layout) -> Layout:
    a = t.child(name, m, "m", t.child(name, m, "cv1", x))
    return t.child(name, m, "cv3", t.cat([a, t.child(name, m, "cv2", x)]))


@register_handler(common.GhostConv)
def _ghost_conv(t: ChannelTracer, name: str, m: common.GhostConv, x: Layout) -> Layout:
    y = t.child(name, m, "cv1", x)
    return t.cat([y, t.child(name, m, "cv2", y)])  # cv2 is depth-wise: same ids as y


@register_handler(common.GhostBottleneck)
def _ghost_bottleneck(t: ChannelTracer, name: str, m: common.GhostBottleneck, x: Layout) -> Layout:
    return t.unify(t.child(name, m, "conv", x), t.child(name, m, "shortcut", x))


@register_handler(common.SPP)
def _spp(t: ChannelTracer, name: str, m: common.SPP, x: Layout) -> Layout:
    x = t.child(name, m, "cv1", x)  # max-pools keep channels
    return t.child(name, m, "cv2", t.cat([x] * (len(m.m) + 1)))


@register_handler(common.SPPF)
def _sppf(t: ChannelTracer, name: str, m: common.SPPF, x: Layout) -> Layout:
    x = t.child(name, m, "cv1", x)
    return t.child(name, m, "cv2", t.cat([x] * 4))


@register_handler(common.SPPCSPC)
def _sppcspc(t: ChannelTracer, name: str, m: common.SPPCSPC, x: Layout) -> Layout:
    tiny = isinstance(m, common.SPPCSPCTiny)
    y = t.child(name, m, "cv1", x)
    if not tiny:
        y = t.child(name, m, "cv4", t.child(name, m, "cv3", y))
    y = t.child(name, m, "cv5", t.cat([y] * (len(m.m) + 1)))
    if not tiny:
        y = t.child(name, m, "cv6", y)
    return t.child(name, m, "cv7", t.cat([y, t.child(name, m, "cv2", x)]))


@register_handler(backbones.conv_bn_relu_maxpool, backbones.conv_bn_hswish)
def _stem(t: ChannelTracer, name: str, m: nn.Module, x: Layout) -> Layout:
    for key, child in m.named_children():
        x = t.visit(f"{name}.{key}", child, x)
    return x


def _shuffle(ids: Layout, groups: int) -> Layout:
    return ids.reshape(groups, -1).T.reshape(-1)  # exactly backbones.channel_shuffle on the id layout


@register_handler(backbones.Shuffle_Block)
def _shuffle_block(t: ChannelTracer, name: str, m: backbones.Shuffle_Block, x: Layout) -> Layout:
    if m.stride == 1:
        t.fix(x)  # chunk(2) splits at half of whatever count arrives
        half = len(x) // 2
        out = t.cat([x[:half], t.child(name, m, "branch2", x[half:])])
    else:
        out = t.cat([t.child(name, m, "branch1", x), t.child(name, m, "branch2", x)])
    t.fix(out)  # channel_shuffle interleaves by position: keep the shuffled channels whole
    return _shuffle(out, 2)


@register_handler(backbones.SELayer)
def _se(t: ChannelTracer, name: str, m: backbones.SELayer, x: Layout) -> Layout:
    scale = t.child(name, m, "fc", t.child(name, m, "avg_pool", x))  # Linear -> ReLU -> Linear -> h_sigmoid
    return t.unify(x, scale)  # x * scale


@register_handler(backbones.MobileNet_Block)
def _mobilenet_block(t: ChannelTracer, name: str, m: backbones.MobileNet_Block, x: Layout) -> Layout:
    y = t.child(name, m, "conv", x)
    return t.unify(y, x) if m.identity else y


@register_handler(rep.RepConv)
def _repconv(t: ChannelTracer, name: str, m: rep.RepConv, x: Layout) -> Layout:
    if m.rbr_reparam is not None:
        return t.child(name, m, "act", t.child(name, m, "rbr_reparam", x))
    y = t.unify(t.child(name, m, "rbr_dense", x), t.child(name, m, "rbr_1x1", x))
    if m.rbr_identity is not None:
        y = t.unify(y, t.child(name, m, "rbr_identity", x))
    return t.child(name, m, "act", y)


@register_handler(elan.ELAN)
def _elan(t: ChannelTracer, name: str, m: elan.ELAN, x: Layout) -> Layout:
    ys = [t.child(name, m, "cv1", x), t.child(name, m, "cv2", x)]
    for i, block in enumerate(m.m):
        ys.append(t.visit(f"{name}.m.{i}", block, ys[-1]))
    return t.child(name, m, "cv3", t.cat(ys))


@register_handler(common.Concat)
def _concat(t: ChannelTracer, name: str, m: common.Concat, xs: list[Layout]) -> Layout:
    return t.cat(xs)


@register_handler(Detect)
def _detect(t: ChannelTracer, name: str, m: Detect, xs: list[Layout]) -> Layout:
    outs = []
    for i, (conv, x) in enumerate(zip(m.m, xs)):
        out = t.conv(f"{name}.m.{i}", conv, x)
        t.fix(out)  # na * (nc + 5) outputs, whatever the pruning
        outs.append(out)
    return t.cat(outs)


# ---------------------------------------------------------------------------------------------- the graph
@dataclass
class ChannelGraph:
    """The result of the dependency analysis of one model.

    Attributes:
        layers, norms: every Conv2d / Linear and BatchNorm2d with the element ids of its channels.
        unit_of: ``int64[n_elements]``, the unit (coupled channel set) of every element id.
        unit_fixed: ``bool[n_units]``, units that must be kept (input image, Detect outputs, shuffles, ...).
        groups: the prunable ``ChannelGroup``s (at least one unit that is not fixed), in model order.
    """

    layers: list[LayerRecord]
    norms: list[NormRecord]
    unit_of: np.ndarray
    unit_fixed: np.ndarray
    groups: list[ChannelGroup] = field(default_factory=list)

    @property
    def n_units(self) -> int:
        return int(len(self.unit_fixed))

    def layer(self, name: str) -> LayerRecord:
        for rec in self.layers:
            if rec.name == name:
                return rec
        raise KeyError(name)

    def full_keep(self) -> np.ndarray:
        """``bool[n_units]`` keeping every unit (the unpruned model)."""
        return np.ones(self.n_units, dtype=bool)

    def kept_mask(self, ids: Layout, keep: np.ndarray) -> np.ndarray:
        """``bool[len(ids)]``: which channels of a tensor with layout ``ids`` survive ``keep``."""
        return keep[self.unit_of[ids]]


def _layer_index(name: str) -> int:
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "model" and parts[1].isdigit() else -1


def trace_model(model: nn.Module) -> tuple[ChannelTracer, list[Layout]]:
    """Walk a ``DetectionModel``'s layers; returns the tracer and every layer's output layout."""
    t = ChannelTracer()
    ch = int(getattr(model, "input_channels", 3))
    x = t.new(ch)
    t.fix(x)
    outputs: list[Layout] = []
    for i, layer in enumerate(model.model):
        f = layer.f
        if f != -1:
            x = outputs[f] if isinstance(f, int) else [x if j == -1 else outputs[j] for j in f]
        elif isinstance(layer, (common.Concat, Detect)):
            x = [x]
        x = t.visit(f"model.{i}", layer, x)
        outputs.append(x)
    return t, outputs


def channel_graph(model: nn.Module) -> ChannelGraph:
    """Analyse ``model`` (a ``DetectionModel``, unfused): coupled channel units and prunable groups."""
    t, _ = trace_model(model)
    roots = t.uf.roots()
    uniq, unit_of = np.unique(roots, return_inverse=True)
    unit_of = unit_of.astype(np.int64)
    n_units = len(uniq)
    unit_fixed = np.zeros(n_units, dtype=bool)
    if t.fixed:
        unit_fixed[unit_of[np.fromiter(t.fixed, dtype=np.int64)]] = True
    # groups: units connected through a shared space (the allocation an element came from)
    starts = np.array(t.space_start, dtype=np.int64)
    space_of = np.searchsorted(starts, np.arange(len(roots)), side="right") - 1
    guf = _UnionFind()
    guf.add(n_units)
    first_elem_of_space = {}
    for e, s in enumerate(space_of.tolist()):
        u = int(unit_of[e])
        if s in first_elem_of_space:
            guf.union(first_elem_of_space[s], u)
        else:
            first_elem_of_space[s] = u
    group_root = guf.roots()
    graph = ChannelGraph(t.layers, t.norms, unit_of, unit_fixed)
    # order groups by the first producing layer, name them after it
    seen: dict[int, ChannelGroup] = {}
    for rec in t.layers:
        if rec.kind not in ("conv", "linear", "depthwise"):
            continue
        for u in np.unique(unit_of[rec.out_ids]).tolist():
            root = int(group_root[u])
            grp = seen.get(root)
            if grp is None:
                grp = seen[root] = ChannelGroup(index=-1, name=rec.name, layer_index=_layer_index(rec.name),
                                                units=np.zeros(0, np.int64), layers=[])
            if rec.name not in grp.layers:
                grp.layers.append(rec.name)
    members: dict[int, list[int]] = {}
    for u, root in enumerate(group_root.tolist()):
        members.setdefault(root, []).append(u)
    for root, grp in seen.items():
        units = np.array(members[root], dtype=np.int64)
        free = units[~unit_fixed[units]]
        if len(free) == 0:
            continue
        grp.units, grp.fixed = free, int(len(units) - len(free))
        grp.index = len(graph.groups)
        graph.groups.append(grp)
    return graph
