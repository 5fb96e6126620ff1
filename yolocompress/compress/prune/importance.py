"""Channel importance: which units of a group to keep.

EagleEye builds each candidate sub-net by keeping the filters with the largest L1 norm. A unit is a set of
coupled channels (``graph.py``), so its importance is the L1 norm of every filter that produces one of its
channels, summed over the coupled layers (e.g. a C3's ``cv1`` filter plus the ``cv2`` filters of every
Bottleneck added to it; a depth-wise filter tied to the unit counts too). ``grouped_l1_importance`` adds
the weights that read the unit's channels (every consumer's input slice) and its BatchNorms' scales: the
magnitude of every coupled layer, the grouped criterion of Torch-Pruning's ``MagnitudeImportance`` (DepGraph,
Fang et al., CVPR 2023). Any function with the signature of ``l1_importance`` can replace them
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


IMPORTANCES: dict[str, Importance] = {"l1": l1_importance, "grouped_l1": grouped_l1_importance}
