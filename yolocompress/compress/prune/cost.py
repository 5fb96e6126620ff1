"""The FLOPs of a pruned model without building it: ``CostModel`` (per-layer spatial sizes are measured once
on the ``meta`` device; same convention as ``yolocompress.profile.gflops``: 2 x multiply-adds of convolutions
and linear layers)."""
from __future__ import annotations


import numpy as np
import torch
import torch.nn as nn

from yolocompress.compress.prune.graph import ChannelGraph


class CostModel:
    """FLOPs of a pruned model as a function of ``keep`` (``bool[n_units]``), at a fixed image size."""

    def __init__(self, model: nn.Module, graph: ChannelGraph, imgsz: int | tuple[int, int]):
        from yolocompress.profile.flops import meta_copy
        from yolocompress.models.inputs import image_hw

        h, w = image_hw(imgsz)
        net = meta_copy(model).eval()
        modules = dict(net.named_modules())
        sites: dict[str, int] = {}
        handles = []
        for rec in graph.layers:
            def hook(module, args, out, name=rec.name):
                sites[name] = int(np.prod(out.shape[2:])) if out.dim() == 4 else int(np.prod(out.shape[:-1]))
            handles.append(modules[rec.name].register_forward_hook(hook))
        try:
            with torch.no_grad():
                net(torch.zeros(1, int(getattr(model, "input_channels", 3)), h, w, device="meta"))
        finally:
            for handle in handles:
                handle.remove()
        self.graph = graph
        self.terms: list[tuple[str, np.ndarray, np.ndarray, float]] = []  # kind, in units, out units, factor
        self.constant = 0.0
        for rec in graph.layers:
            m = modules[rec.name]
            sites_n = sites.get(rec.name, 0)  # a layer the forward never reached costs nothing
            if rec.kind == "linear":
                factor = 2.0 * sites_n
            else:
                factor = 2.0 * float(np.prod(m.kernel_size)) * sites_n
            if rec.kind == "fixed":
                self.constant += factor * (m.in_channels // m.groups) * m.out_channels
                continue
            self.terms.append((rec.kind, graph.unit_of[rec.in_ids], graph.unit_of[rec.out_ids], factor))

    def flops(self, keep: np.ndarray) -> float:
        """FLOPs (not GFLOPs) of the model that keeps the units ``keep`` marks."""
        total = self.constant
        for kind, in_u, out_u, factor in self.terms:
            c_out = float(keep[out_u].sum())
            total += factor * c_out * (1.0 if kind == "depthwise" else float(keep[in_u].sum()))
        return total
