"""Channel importance: which units of a group to keep.

EagleEye builds each candidate sub-net by keeping the filters with the largest L1 norm. A unit is a set of
coupled channels (``graph.py``), so its importance is the L1 norm of every filter that produces one of its
channels, summed over the coupled layers (e.g. a C3's ``cv1`` filter plus the ``cv2`` filters of every
Bottleneck added to it; a depth-wise filter tied to the unit counts too). Any function with the signature of
``l1_importance`` can replace it.
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
