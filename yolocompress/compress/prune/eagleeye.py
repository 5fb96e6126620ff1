"""EagleEye (Li et al., ECCV 2020): sample pruning strategies under a FLOPs budget, score each sub-net after
adaptive BatchNorm, keep the best.

The pieces, each usable alone:

- ``CostModel``: FLOPs of any keep-mask without building the model (per-layer spatial sizes are measured
  once on the ``meta`` device; same convention as ``yolocompress.profile.gflops``: 2 x multiply-adds of
  convolutions and linear layers);
- ``Strategy`` sampling: one pruning ratio per searchable group; ``StrategySpace.uniform`` and ``.sample``
  (a random direction ``u ~ U[0, 1]^G`` scaled by the smallest factor that meets the budget, so every
  candidate sits just under the budget instead of being rejection-sampled);
- sensitivity-guided strategies (our addition to the paper's random sampling): ``StrategySpace.probes``
  moves one group at a time away from the uniform strategy, ``group_sensitivity`` turns the probes' scores
  into score-per-FLOP per group, and ``StrategySpace.guided`` builds strategies that prune the least
  sensitive groups most, from near-uniform to strongly uneven; they compete with the random ones on the
  same adaptive-BN score. On a half-width yolov5n the paper's random candidates all scored below the
  uniform strategy and the random-only search tied uniform after fine-tuning, while the guided picks beat
  it by 1.2-2.4 mAP50-95 points on three seeds (``benchmarks/RESULTS.md``);
- ``adaptive_bn``: reset every BatchNorm's running statistics and re-estimate them as a cumulative average
  (``momentum=None``) over a few training batches, in train mode, without gradients;
- ``SubnetScorer``: decoded images of the calibration and held-out batches cached once as uint8 tensors; a
  candidate costs one BN pass over the calibration batches and one batched evaluation (val.py's NMS and
  mAP) over the held-out ones.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from yolocompress.compress.prune.apply import ChannelRules
from yolocompress.compress.prune.graph import ChannelGraph
from yolocompress.errors import InputError


# ---------------------------------------------------------------------------------------------- FLOPs
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


# ---------------------------------------------------------------------------------------------- strategies
@dataclass
class Strategy:
    """One candidate: a ratio per searchable group, the resulting keep counts and FLOPs."""

    ratios: np.ndarray
    counts: dict[int, int]
    flops: float
    kind: str = "random"


@dataclass
class Probe:
    """A one-group move away from a centre strategy: ``position`` in ``StrategySpace.searchable``,
    ``direction`` ``"less"`` (fewer channels removed) or ``"more"``."""

    position: int
    direction: str
    strategy: Strategy


def group_sensitivity(center: Strategy, center_score: float, probes: Sequence[Probe],
                      scores: Sequence[float], n_groups: int) -> np.ndarray:
    """Score gained per FLOP kept, per searchable group, from scored one-group ``probes``.

    A "less" probe gives ``(score - center_score) / (flops - center.flops)`` (what keeping more channels
    buys), a "more" probe ``(center_score - score) / (center.flops - flops)`` (what removing more costs);
    a group's sensitivity is the mean of the two (or the one it has), NaN when it has none."""
    per_group: list[list[float]] = [[] for _ in range(n_groups)]
    for probe, score in zip(probes, scores, strict=True):
        d_flops = probe.strategy.flops - center.flops
        if d_flops != 0.0:
            per_group[probe.position].append((float(score) - center_score) / d_flops)
    return np.array([np.mean(v) if v else np.nan for v in per_group])


class StrategySpace:
    """The searchable groups of a graph and the mapping ratios -> keep mask -> FLOPs."""

    def __init__(self, graph: ChannelGraph, cost: CostModel, importance: np.ndarray, rules: ChannelRules,
                 searchable: Sequence[int], max_ratio: float):
        self.graph, self.cost, self.importance, self.rules = graph, cost, importance, rules
        self.searchable = [g for g in searchable if rules.prunable(graph.groups[g].channels)]
        self.max_ratio = float(max_ratio)
        # rank units once: the L1 order never changes between candidates
        self._order = {}
        for g in self.searchable:
            units = graph.groups[g].units
            self._order[g] = units[np.lexsort((np.arange(len(units)), -importance[units]))]

    def counts(self, ratios: np.ndarray) -> dict[int, int]:
        return {g: self.rules.keep_count(self.graph.groups[g].channels, float(r))
                for g, r in zip(self.searchable, ratios)}

    def keep(self, counts: dict[int, int]) -> np.ndarray:
        keep = self.graph.full_keep()
        for g, k in counts.items():
            keep[self._order[g][k:]] = False
        return keep

    def strategy(self, ratios: np.ndarray, kind: str) -> Strategy:
        counts = self.counts(ratios)
        flops = self.cost.flops(self.keep(counts))
        return Strategy(np.asarray(ratios, dtype=np.float64), counts, flops, kind)

    def uniform(self, ratio: float) -> Strategy:
        return self.strategy(np.full(len(self.searchable), ratio), "uniform")

    def smallest_flops(self) -> float:
        return self.uniform(self.max_ratio).flops

    def uniform_for_budget(self, budget: float) -> Strategy:
        """The least-pruned uniform strategy with FLOPs <= ``budget``."""
        return self._scaled(np.ones(len(self.searchable)), budget, "uniform")

    def sample(self, rng: np.random.Generator, budget: float, spread: float = 1.0) -> Strategy:
        """A random direction ``u ~ U[1 - spread, 1]^G``, scaled until its FLOPs just fit ``budget``.

        ``spread=1`` is the paper's sampling (every group's ratio anywhere in ``[0, max]``); a smaller spread
        keeps the per-group ratios within a factor ``1 - spread`` of each other, i.e. near the uniform
        strategy, for models too small to survive very uneven cuts."""
        if not 0.0 < spread <= 1.0:
            raise InputError(f"sampling spread must be in (0, 1], got {spread}")
        return self._scaled(rng.uniform(1.0 - spread, 1.0, len(self.searchable)), budget, "random")

    def probes(self, center: Strategy, step: float) -> list[Probe]:
        """One-group moves away from ``center``: each searchable group pruned ``step`` less and ``step`` more
        (clipped to ``[0, max_ratio]``), every other group as in ``center``. A move that rounds to the same
        kept channels (a group already at its minimum, say) is left out."""
        if not 0.0 < step < 1.0:
            raise InputError(f"probe step must be strictly between 0 and 1, got {step}")
        out: list[Probe] = []
        for j, g in enumerate(self.searchable):
            for direction, r in (("less", max(0.0, center.ratios[j] - step)),
                                 ("more", min(self.max_ratio, center.ratios[j] + step))):
                ratios = center.ratios.copy()
                ratios[j] = r
                s = self.strategy(ratios, "probe")
                if s.counts[g] != center.counts[g]:
                    out.append(Probe(j, direction, s))
        return out

    def guided(self, sensitivity: np.ndarray, budget: float, n: int) -> list[Strategy]:
        """``n`` strategies that prune the groups in the inverse order of their ``sensitivity`` (score per
        FLOP, one value per searchable group, NaN: unknown), each scaled to just fit ``budget``.

        With ``z_j`` the group's sensitivity rank in ``[0, 1]`` (0: the most sensitive per FLOP; unknown
        groups sit in the middle) the i-th strategy (``tau = i / n``) sets ``u_j = 1 - tau (1 - z_j)``
        before scaling: ``tau`` near 0 is the uniform strategy, ``tau = 1`` keeps the most sensitive group
        whole and prunes the least sensitive ones the most. Adaptive BN then picks among them."""
        sens = np.asarray(sensitivity, dtype=np.float64)
        if sens.shape != (len(self.searchable),):
            raise ValueError(f"need one sensitivity per searchable group ({len(self.searchable)}), "
                             f"got shape {sens.shape}")
        z = np.full(len(sens), 0.5)
        known = np.flatnonzero(np.isfinite(sens))
        if len(known) > 1:
            order = known[np.lexsort((known, -sens[known]))]   # most sensitive first, ties by position
            z[order] = np.arange(len(order)) / (len(order) - 1)
        return [self._scaled(1.0 - (i / n) * (1.0 - z), budget, "guided") for i in range(1, n + 1)]

    def _scaled(self, u: np.ndarray, budget: float, kind: str) -> Strategy:
        u = np.maximum(u, 1e-6)
        lo, hi = 0.0, self.max_ratio / float(u.min())   # at hi every group sits at max_ratio

        def at(s: float) -> Strategy:
            return self.strategy(np.minimum(self.max_ratio, s * u), kind)

        best = at(hi)
        if best.flops > budget:
            raise InputError(f"impossible budget: {budget / 1e9:.4g} GFLOPs is below the smallest reachable "
                             f"({best.flops / 1e9:.4g} GFLOPs at max ratio {self.max_ratio:g})")
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            cand = at(mid)
            if cand.flops <= budget:
                hi, best = mid, cand
            else:
                lo = mid
        return best


# ---------------------------------------------------------------------------------------------- adaptive BN
def adaptive_bn(model: nn.Module, batches: Sequence[torch.Tensor],
                device: str | torch.device = "cpu") -> None:
    """Re-estimate every BatchNorm's running statistics on ``batches`` (uint8 Tensor[B, 3, H, W]) in place.

    Running stats are reset and accumulated as a plain average over the batches (``momentum=None``), in train
    mode and without gradients; weights are untouched. The model's momenta and train/eval mode are restored.
    """
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for imgs in batches:
                model(imgs.to(device).float().div_(255))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


# ---------------------------------------------------------------------------------------------- scoring
@dataclass
class CachedData:
    """Decoded, letterboxed images kept in RAM for the whole search."""

    calib: list[torch.Tensor]                                   # uint8 [B, 3, S, S]
    eval_batches: list[tuple[torch.Tensor, torch.Tensor, list, list]]   # loader batches
    calib_images: int
    eval_images: int
    load_s: float


def _subset_batches(dataset, indices: Sequence[int], batch: int) -> list[tuple]:
    from yolocompress.data import collate

    return [collate([dataset[i] for i in indices[j:j + batch]]) for j in range(0, len(indices), batch)]


def _sample(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """``k`` of ``range(n)`` in increasing order, at random (all of them when ``k >= n``)."""
    return np.sort(rng.permutation(n)[:k]).tolist() if k < n else list(range(n))


def cache_data(data_cfg: Any, imgsz: int, stride: int, calib_batches: int, calib_batch: int, eval_images: int,
               eval_batch: int, seed: int, eval_split: str = "train") -> CachedData:
    """Load ``calib_batches`` x ``calib_batch`` random training images and ``eval_images`` random held-out
    images once, letterboxed to ``imgsz`` squares (no augmentation).

    With ``eval_split="train"`` (the default, as in the EagleEye paper) the scored images are training images
    disjoint from the calibration images, so the strategy is chosen without looking at the validation split
    that reports the final mAP; ``"val"`` scores on a subset of the validation split instead."""
    from yolocompress.data import build_eval_loader

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    train = build_eval_loader(data_cfg, "train", imgsz=imgsz, batch=calib_batch, stride=stride,
                              rect=False).dataset
    n_calib = min(len(train), calib_batches * calib_batch)
    calib_idx = _sample(rng, len(train), n_calib)
    calib = [b[0].contiguous(memory_format=torch.channels_last)
             for b in _subset_batches(train, calib_idx, calib_batch)]
    if eval_split == "train":
        held = train
        rest = sorted(set(range(len(train))) - set(calib_idx)) or list(range(len(train)))  # tiny sets: overlap
        idx = [rest[i] for i in _sample(rng, len(rest), min(len(rest), eval_images))]
    else:
        held = build_eval_loader(data_cfg, eval_split, imgsz=imgsz, batch=eval_batch, stride=stride,
                                 rect=False).dataset
        idx = _sample(rng, len(held), min(len(held), eval_images))
    n_eval = len(idx)
    eval_batches = [(b[0].contiguous(memory_format=torch.channels_last), *b[1:])
                    for b in _subset_batches(held, idx, eval_batch)]
    if not calib or not eval_batches:
        raise InputError("pruning needs at least one training image and one held-out image")
    return CachedData(calib, eval_batches, n_calib, n_eval, time.perf_counter() - t0)


@dataclass
class SubnetScore:
    """A candidate's held-out metrics and what scoring it cost (seconds)."""

    map50: float
    map50_95: float
    fitness: float
    bn_s: float
    inference_s: float
    nms_map_s: float

    def value(self, metric: str) -> float:
        return {"map50_95": self.map50_95, "map50": self.map50, "fitness": self.fitness}[metric]


@dataclass
class SubnetScorer:
    """Score sub-nets on cached data: adaptive BN (optional) then val.py metrics on the held-out batches.

    The model runs in channels-last memory format while it is scored (oneDNN's fast path: about 1.8x faster
    BN re-calibration on a CPU) and is returned to the default format afterwards. With ``fast_inference``
    (default) the held-out pass on a CPU runs a fused copy with oneDNN conv+activation kernels
    (``compress.onednn``; the same outputs to float rounding, about 1.6x faster inference).
    """

    data: CachedData
    nc: int
    names: list[str]
    device: str | torch.device = "cpu"
    conf_thres: float = 0.001
    iou_thres: float = 0.6
    fast_inference: bool = True

    def _inference_model(self, model: nn.Module) -> nn.Module:
        if not self.fast_inference or torch.device(self.device).type != "cpu":
            return model
        from yolocompress.compress.fuse import fuse
        from yolocompress.compress.onednn import accelerate_cpu

        return accelerate_cpu(fuse(model.eval()), inplace=True)

    def __call__(self, model: nn.Module, recalibrate: bool = True) -> SubnetScore:
        from yolocompress.engine.evaluator import evaluate
        from yolocompress.engine.predictors import TorchPredictor

        model.to(self.device, memory_format=torch.channels_last)
        try:
            t0 = time.perf_counter()
            if recalibrate:
                adaptive_bn(model, self.data.calib, self.device)
            bn_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            scored = self._inference_model(model)
            prepare_s = time.perf_counter() - t1
            result = evaluate(TorchPredictor(scored, self.device), self.data.eval_batches, self.nc, self.names,
                              conf_thres=self.conf_thres, iou_thres=self.iou_thres, device=self.device)
        finally:
            model.to(memory_format=torch.contiguous_format)
        n = max(result.images, 1)
        sp = result.speed_ms
        inference_s = prepare_s + (sp["pre"] + sp["inference"]) * n / 1000
        return SubnetScore(result.map50, result.map50_95, result.fitness, bn_s, inference_s,
                           (sp["nms"] + sp["metrics"]) * n / 1000)
