"""Channel importance: which units of a group to keep.

EagleEye builds each candidate sub-net by keeping the filters with the largest L1 norm. A unit is a set of
coupled channels (``graph.py``), so its importance is the L1 norm of every filter that produces one of its
channels, summed over the coupled layers (e.g. a C3's ``cv1`` filter plus the ``cv2`` filters of every
Bottleneck added to it; a depth-wise filter tied to the unit counts too). ``grouped_l1_importance`` adds
the weights that read the unit's channels (every consumer's input slice) and its BatchNorms' scales: the
magnitude of every coupled layer, the grouped criterion of Torch-Pruning's ``MagnitudeImportance`` (DepGraph,
Fang et al., CVPR 2023). ``iterative_grouped_l1_importance`` ranks the units by when step-wise pruning with
that criterion, recomputed on what is left after each step, removes them: what Torch-Pruning's iterative
pruners keep. Any function with the signature of ``l1_importance`` can replace them
(``IMPORTANCES``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from yolocompress.compress.prune.graph import ChannelGraph

Importance = Callable[[nn.Module, ChannelGraph], np.ndarray]


def l1_importance(model: nn.Module, graph: ChannelGraph) -> np.ndarray:
    """``float64[n_units]``: the summed L1 norms of the filters producing each unit's channels."""
    score = np.zeros(graph.n_units, dtype=np.float64)
    with torch.no_grad():
        for rec in graph.layers:
            if rec.kind == "fixed":
                continue
            weight = model.get_submodule(rec.name).weight
            per_filter = weight.detach().abs().flatten(1).sum(1).double().cpu().numpy()
            np.add.at(score, graph.unit_of[rec.out_ids], per_filter)
    return score


def grouped_l1_importance(model: nn.Module, graph: ChannelGraph) -> np.ndarray:
    """``float64[n_units]``: :func:`l1_importance` plus, summed per unit, the L1 norms of every dense layer's
    weights that read its channels (a conv's input-channel slice, a linear layer's input column) and the
    absolute scales of its BatchNorms. Units of one group share their layers, so the sum ranks them as a
    mean over the coupled layers would."""
    score = l1_importance(model, graph)
    with torch.no_grad():
        for rec in graph.layers:
            if rec.kind not in ("conv", "linear"):   # depth-wise: its filter is its output's, counted above
                continue
            weight = model.get_submodule(rec.name).weight.detach().abs()
            per_input = weight.transpose(0, 1).flatten(1).sum(1).double().cpu().numpy()
            np.add.at(score, graph.unit_of[rec.in_ids], per_input)
        for norm in graph.norms:
            scale = model.get_submodule(norm.name).weight.detach().abs().double().cpu().numpy()
            np.add.at(score, graph.unit_of[norm.ids], scale)
    return score


def _magnitude_tables(model: nn.Module, graph: ChannelGraph
                      ) -> tuple[list[tuple[np.ndarray, np.ndarray | None, np.ndarray]], np.ndarray]:
    """Per non-fixed layer ``(output units, input units or None for depth-wise, |weight| summed to
    [out, in] or [out])``, and the summed BatchNorm scales per unit."""
    layers = []
    bn = np.zeros(graph.n_units, dtype=np.float64)
    with torch.no_grad():
        for rec in graph.layers:
            if rec.kind == "fixed":
                continue
            weight = model.get_submodule(rec.name).weight.detach().abs().double()
            if rec.kind == "depthwise":
                layers.append((graph.unit_of[rec.out_ids], None, weight.flatten(1).sum(1).cpu().numpy()))
            else:  # conv [out, in, kh, kw] or linear [out, in]
                per_pair = weight.flatten(2).sum(2) if weight.ndim > 2 else weight
                layers.append((graph.unit_of[rec.out_ids], graph.unit_of[rec.in_ids], per_pair.cpu().numpy()))
        for norm in graph.norms:
            np.add.at(bn, graph.unit_of[norm.ids], model.get_submodule(norm.name).weight.detach().abs()
                      .double().cpu().numpy())
    return layers, bn


def _grouped_l1_of_kept(layers: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]], bn: np.ndarray,
                        keep: np.ndarray) -> np.ndarray:
    """Grouped L1 per unit counting only the weights that connect to kept units (a filter's kept inputs, an
    input slice's kept filters): the grouped L1 of the sub-net ``keep`` builds."""
    score = bn.copy()
    for out_units, in_units, weight in layers:
        if in_units is None:
            np.add.at(score, out_units, weight)
            continue
        np.add.at(score, out_units, weight @ keep[in_units])
        np.add.at(score, in_units, keep[out_units] @ weight)
    return score


def iterative_grouped_l1_importance(model: nn.Module, graph: ChannelGraph, steps: int = 40,
                                    last_ratio: float = 0.95) -> np.ndarray:
    """``float64[n_units]``: the order in which step-wise uniform pruning by :func:`grouped_l1_importance`
    removes the units, the importance recomputed after every step on the weights that still connect to kept
    units (as Torch-Pruning's iterative pruners do). Step ``t`` of ``steps`` prunes every group to
    ``1 - last_ratio * t / steps`` of its units; a unit's value is the step that removed it (``steps + 1``:
    never) plus its rank among the units of its group removed with it, so a larger value is kept longer."""
    layers, bn = _magnitude_tables(model, graph)
    keep = np.ones(graph.n_units, dtype=np.float64)
    value = np.zeros(graph.n_units, dtype=np.float64)
    for t in range(1, steps + 2):   # step steps + 1 ranks the survivors
        score = _grouped_l1_of_kept(layers, bn, keep)
        kept_share = 1.0 - last_ratio * t / steps
        for group in graph.groups:
            alive = group.units[keep[group.units] > 0]
            order = alive[np.lexsort((alive, score[alive]))]   # least important first, ties by unit id
            if t <= steps:
                order = order[:max(0, len(alive) - max(1, round(len(group.units) * kept_share)))]
                keep[order] = 0.0
            value[order] = t + np.arange(len(order)) / (len(order) + 1.0)
    return value


IMPORTANCES: dict[str, Importance] = {"l1": l1_importance, "grouped_l1": grouped_l1_importance,
                                      "iterative_grouped_l1": iterative_grouped_l1_importance}
