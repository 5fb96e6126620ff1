"""The cost of a pruned model without building it: its FLOPs (``CostModel``: per-layer spatial sizes are
measured once on the ``meta`` device; same convention as ``yolocompress.profile.gflops``: 2 x multiply-adds of
convolutions and linear layers) and its predicted latency on this machine (``LatencyCost``, from a per-layer
latency table)."""
from __future__ import annotations


import numpy as np
import torch
import torch.nn as nn

from yolocompress.compress.prune.graph import ChannelGraph
from yolocompress.profile.latency_table import LatencyTable


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


class LatencyCost:
    """Predicted latency of a pruned model as a function of ``keep``, from a per-layer latency table
    (:class:`~yolocompress.profile.latency_table.LatencyTable` of the unpruned model): the sum of its
    convolutions' milliseconds at the kept widths, without building the sub-net. The table leaves out what
    is not a convolution (concatenations, resampling, Detect's decoding), so budgets use :meth:`ratio`, the
    prediction relative to the unpruned model's, not the absolute milliseconds."""

    def __init__(self, table: LatencyTable, graph: ChannelGraph):
        self.table, self.graph = table, graph
        timed = {site.name for site in table.sites}
        # name, in units, out units, depthwise
        self.terms: list[tuple[str, np.ndarray, np.ndarray, bool]] = []
        self.constant = 0.0
        for rec in graph.layers:
            if rec.name not in timed:  # a linear layer, or a conv the forward never reached
                continue
            if rec.kind == "fixed":
                self.constant += table.layer_ms(rec.name, len(rec.in_ids), len(rec.out_ids))
                continue
            self.terms.append((rec.name, graph.unit_of[rec.in_ids], graph.unit_of[rec.out_ids],
                               rec.kind == "depthwise"))
        self.full_ms = self.ms(graph.full_keep())

    def ms(self, keep: np.ndarray) -> float:
        """Predicted milliseconds of the convolutions of the model that keeps the units ``keep`` marks."""
        total = self.constant
        for name, in_u, out_u, depthwise in self.terms:
            c_out = int(keep[out_u].sum())
            total += self.table.layer_ms(name, c_out if depthwise else int(keep[in_u].sum()), c_out)
        return total

    def ratio(self, keep: np.ndarray) -> float:
        """:meth:`ms` as a fraction of the unpruned model's, calibrated by the table
        (:meth:`~yolocompress.profile.latency_table.LatencyTable.calibrate_ratio`)."""
        return self.table.calibrate_ratio(self.ms(keep) / self.full_ms)
