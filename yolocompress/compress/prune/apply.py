"""Physical channel removal: build a smaller model (real, smaller Conv2d / BatchNorm2d / Linear layers).

``keep`` is a ``bool[n_units]`` over the units of a ``ChannelGraph``; every tensor keeps exactly the channels
whose unit is kept, in their original order, and every kept filter keeps its original weights (sliced). The
result is an ordinary ``DetectionModel`` whose ``resolved_config()`` (layers + shape spec) rebuilds it through
``DetectionModel(config)`` and a state_dict, with no pickle.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from yolocompress.compress.prune.graph import ChannelGraph
from yolocompress.errors import InputError
from yolocompress.models.shapes import refresh_layer_params


@dataclass(frozen=True)
class ChannelRules:
    """How many units of a group may be kept.

    ``min_channels``: never keep fewer units than this (groups with no more units are not pruned);
    ``round_to``: keep a multiple of this many units (hardware-friendly widths), unless all are kept; ``None``
    (the default): not chosen yet, which ``PruneConfig`` sets (``config.default_round_to``: the CPU's channel block);
    the rules cannot be applied before.
    ``narrow``: a group may also keep exactly ``min_channels`` units when that is fewer than ``round_to``
    (widths ``min_channels``, ``round_to``, ``2 * round_to``, ...: with 8 and 16, a 16-channel group may go
    to 8 as in Torch-Pruning's uniform widths, while wider groups stay in ONNX Runtime's 16-channel blocks);
    ``None``: not chosen yet (``PruneConfig`` sets it by its budget, ``config.default_narrow``).
    """

    min_channels: int = 8
    round_to: int | None = None
    narrow: bool | None = None

    def __post_init__(self) -> None:
        if self.min_channels < 1 or (self.round_to is not None and self.round_to < 1):
            raise InputError(f"min_channels and round_to must be >= 1, got {self.min_channels}, "
                             f"{self.round_to}")

    def floor(self, n: int) -> int:
        """The fewest units a group of ``n`` may keep."""
        if self.round_to is None:
            raise ValueError("ChannelRules.round_to is not set (PruneConfig sets it by the budget)")
        if self.narrow:
            return min(n, self.min_channels)
        low = max(self.min_channels, self.round_to if n >= self.round_to else 1)
        return min(n, low)

    def keep_count(self, n: int, ratio: float) -> int:
        """Units kept when a group of ``n`` units is pruned by ``ratio`` (0 keeps all): ``n * (1 - ratio)``
        rounded to the nearest allowed width (a multiple of ``round_to``; with ``narrow`` also
        ``min_channels``)."""
        if ratio <= 0:
            return n
        low = self.floor(n)
        k = n * (1.0 - ratio)
        if self.narrow and self.min_channels < self.round_to and k < (self.min_channels + self.round_to) / 2:
            k = self.min_channels
        elif self.round_to > 1:
            k = math.floor(k / self.round_to + 0.5) * self.round_to
        else:
            k = math.floor(k + 0.5)
        return int(min(n, max(low, k)))

    def prunable(self, n: int) -> bool:
        return self.floor(n) < n


def keep_from_counts(graph: ChannelGraph, importance: np.ndarray, counts: dict[int, int]) -> np.ndarray:
    """``bool[n_units]`` keeping, in each group ``g`` of ``counts``, its ``counts[g]`` most important units.

    Ties are broken by unit order, so the result is deterministic. Groups not in ``counts`` keep everything.
    """
    keep = graph.full_keep()
    for g, k in counts.items():
        units = graph.groups[g].units
        if k >= len(units):
            continue
        if k < 1:
            raise ValueError(f"group {g} would keep {k} channels")
        order = np.lexsort((np.arange(len(units)), -importance[units]))  # most important first, stable
        keep[units[order[k:]]] = False
    return keep


def _index(mask: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.flatnonzero(mask)).to(device)


def _pruned_conv(conv: nn.Conv2d, in_mask: np.ndarray, out_mask: np.ndarray, depthwise: bool) -> nn.Conv2d:
    dev = conv.weight.device
    oi = _index(out_mask, dev)
    c_out = int(out_mask.sum())
    c_in = c_out if depthwise else int(in_mask.sum())
    new = nn.Conv2d(c_in, c_out, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    groups=c_out if depthwise else conv.groups, bias=conv.bias is not None,
                    padding_mode=conv.padding_mode).to(device=dev, dtype=conv.weight.dtype)
    with torch.no_grad():
        w = conv.weight.index_select(0, oi)
        if not depthwise:
            w = w.index_select(1, _index(in_mask, dev))
        new.weight.copy_(w)
        if conv.bias is not None:
            new.bias.copy_(conv.bias.index_select(0, oi))
    new.weight.requires_grad_(conv.weight.requires_grad)
    return new


def _pruned_linear(lin: nn.Linear, in_mask: np.ndarray, out_mask: np.ndarray) -> nn.Linear:
    dev = lin.weight.device
    oi, ii = _index(out_mask, dev), _index(in_mask, dev)
    new = nn.Linear(len(ii), len(oi), bias=lin.bias is not None).to(device=dev, dtype=lin.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(lin.weight.index_select(0, oi).index_select(1, ii))
        if lin.bias is not None:
            new.bias.copy_(lin.bias.index_select(0, oi))
    return new


def _pruned_norm(bn: nn.BatchNorm2d, mask: np.ndarray) -> nn.BatchNorm2d:
    dev = bn.running_mean.device if bn.running_mean is not None else torch.device("cpu")
    idx = _index(mask, dev)
    new = nn.BatchNorm2d(len(idx), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                         track_running_stats=bn.track_running_stats).to(dev)
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight.index_select(0, idx))
            new.bias.copy_(bn.bias.index_select(0, idx))
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean.index_select(0, idx))
            new.running_var.copy_(bn.running_var.index_select(0, idx))
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def prune_channels(model: nn.Module, graph: ChannelGraph, keep: np.ndarray) -> nn.Module:
    """A pruned copy of ``model`` (the analysed model; it is not modified) keeping the units ``keep`` marks.

    Args:
        model: the ``DetectionModel`` that ``graph`` was built from.
        graph: its ``channel_graph``.
        keep: ``bool[graph.n_units]``; fixed units must be kept.
    """
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (graph.n_units,):
        raise ValueError(f"keep must have {graph.n_units} entries, got {keep.shape}")
    if not keep[graph.unit_fixed].all():
        raise ValueError("a fixed channel unit (input, Detect output, shuffle) cannot be removed")
    pruned = copy.deepcopy(model)
    for rec in graph.layers:
        in_mask, out_mask = graph.kept_mask(rec.in_ids, keep), graph.kept_mask(rec.out_ids, keep)
        if in_mask.all() and out_mask.all():
            continue
        if not out_mask.any():
            raise ValueError(f"{rec.name} would lose every output channel")
        old = pruned.get_submodule(rec.name)
        if rec.kind == "linear":
            pruned.set_submodule(rec.name, _pruned_linear(old, in_mask, out_mask), strict=True)
        else:
            new = _pruned_conv(old, in_mask, out_mask, depthwise=rec.kind == "depthwise")
            pruned.set_submodule(rec.name, new, strict=True)
    for rec in graph.norms:
        mask = graph.kept_mask(rec.ids, keep)
        if not mask.all():
            pruned.set_submodule(rec.name, _pruned_norm(pruned.get_submodule(rec.name), mask), strict=True)
    refresh_layer_params(pruned)
    detect = getattr(pruned, "detect", None)
    if detect is not None:
        detect._grid_cache = {}
    return pruned
