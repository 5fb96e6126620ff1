"""EagleEye's search space (Li et al., ECCV 2020): pruning strategies under a FLOPs or latency budget.

- ``Strategy``: one pruning ratio per searchable group, its keep counts, FLOPs and (with a latency model)
  predicted latency ratio; ``Budget``: what every candidate must fit (FLOPs, or a predicted latency ratio
  of the original's); ``StrategySpace.uniform`` and ``.sample`` (a random direction ``u ~ U[0, 1]^G`` scaled
  by the smallest factor that meets the budget, so every candidate sits just under the budget instead of
  being rejection-sampled);
- sensitivity-guided strategies (our addition to the paper's random sampling): ``StrategySpace.probes``
  moves one group at a time away from the uniform strategy, ``group_sensitivity`` turns the probes' scores
  into score-per-FLOP per group, and ``StrategySpace.guided`` builds strategies that prune the least
  sensitive groups most, from near-uniform to strongly uneven; they compete with the random ones on the
  same adaptive-BN score. On a half-width yolov5n the paper's random candidates all scored below the
  uniform strategy and the random-only search tied uniform after fine-tuning, while the guided picks beat
  it by 1.2-2.4 mAP50-95 points on three seeds (``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from yolocompress.compress.prune.apply import ChannelRules
from yolocompress.compress.prune.cost import CostModel, LatencyCost
from yolocompress.compress.prune.graph import ChannelGraph
from yolocompress.errors import InputError


@dataclass
class Strategy:
    """One candidate: a ratio per searchable group, the resulting keep counts, FLOPs and predicted latency
    as a fraction of the unpruned model's (``None`` without a latency model)."""

    ratios: np.ndarray
    counts: dict[int, int]
    flops: float
    kind: str = "random"
    latency: float | None = None


@dataclass(frozen=True)
class Budget:
    """What every candidate must fit: at most ``flops`` FLOPs and, when ``latency`` is set, a predicted
    latency of at most that fraction of the unpruned model's (the space needs a latency model)."""

    flops: float = math.inf
    latency: float | None = None

    def fits(self, s: Strategy) -> bool:
        """``s`` is within both limits."""
        return s.flops <= self.flops and (self.latency is None or (s.latency is not None
                                                                   and s.latency <= self.latency))


def as_budget(budget: float | Budget) -> Budget:
    """A :class:`Budget`; a number is a FLOPs budget."""
    return budget if isinstance(budget, Budget) else Budget(flops=float(budget))


@dataclass
class Probe:
    """A one-group move away from a centre strategy: ``position`` in ``StrategySpace.searchable``,
    ``direction`` ``"less"`` (fewer channels removed) or ``"more"``."""

    position: int
    direction: str
    strategy: Strategy


def group_sensitivity(center: Strategy, center_score: float, probes: Sequence[Probe],
                      scores: Sequence[float], n_groups: int, cost: str = "flops") -> np.ndarray:
    """Score gained per FLOP kept (``cost="latency"``: per unit of predicted latency ratio kept), per
    searchable group, from scored one-group ``probes``.

    A "less" probe gives ``(score - center_score) / (flops - center.flops)`` (what keeping more channels
    buys), a "more" probe ``(center_score - score) / (center.flops - flops)`` (what removing more costs);
    a group's sensitivity is the mean of the two (or the one it has), NaN when it has none (a probe that
    does not change the cost, e.g. channels within one block of the latency table, gives none)."""
    if cost not in ("flops", "latency"):
        raise ValueError(f"cost must be 'flops' or 'latency', got {cost!r}")
    per_group: list[list[float]] = [[] for _ in range(n_groups)]
    for probe, score in zip(probes, scores, strict=True):
        if cost == "latency":
            if probe.strategy.latency is None or center.latency is None:
                raise ValueError("sensitivity per latency needs strategies with a predicted latency")
            d_cost = probe.strategy.latency - center.latency
        else:
            d_cost = probe.strategy.flops - center.flops
        if d_cost != 0.0:
            per_group[probe.position].append((float(score) - center_score) / d_cost)
    return np.array([np.mean(v) if v else np.nan for v in per_group])


class StrategySpace:
    """The searchable groups of a graph and the mapping ratios -> keep mask -> FLOPs (and, with ``latency``,
    predicted latency ratio)."""

    def __init__(self, graph: ChannelGraph, cost: CostModel, importance: np.ndarray, rules: ChannelRules,
                 searchable: Sequence[int], max_ratio: float, latency: LatencyCost | None = None):
        self.graph, self.cost, self.importance, self.rules = graph, cost, importance, rules
        self.latency = latency
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
        keep = self.keep(counts)
        latency = self.latency.ratio(keep) if self.latency is not None else None
        return Strategy(np.asarray(ratios, dtype=np.float64), counts, self.cost.flops(keep), kind, latency)

    def uniform(self, ratio: float) -> Strategy:
        return self.strategy(np.full(len(self.searchable), ratio), "uniform")

    def smallest_flops(self) -> float:
        return self.uniform(self.max_ratio).flops

    def uniform_for_budget(self, budget: float | Budget) -> Strategy:
        """The least-pruned uniform strategy within ``budget`` (a number: FLOPs)."""
        return self._scaled(np.ones(len(self.searchable)), budget, "uniform")

    def sample(self, rng: np.random.Generator, budget: float | Budget, spread: float = 1.0) -> Strategy:
        """A random direction ``u ~ U[1 - spread, 1]^G``, scaled until it just fits ``budget`` (a number:
        FLOPs).

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

    def guided(self, sensitivity: np.ndarray, budget: float | Budget, n: int,
               kind: str = "guided") -> list[Strategy]:
        """``n`` strategies that prune the groups in the inverse order of their ``sensitivity`` (score per
        FLOP or per latency, one value per searchable group, NaN: unknown), each scaled to just fit
        ``budget``.

        With ``z_j`` the group's sensitivity rank in ``[0, 1]`` (0: the most sensitive per cost; unknown
        groups sit in the middle) the i-th strategy (``tau = i / n``) sets ``u_j = 1 - tau (1 - z_j)``
        before scaling: ``tau`` near 0 is the uniform strategy, ``tau = 1`` keeps the most sensitive group
        whole and prunes the least sensitive ones the most. Adaptive BN then picks among them. ``kind``: the
        strategies' kind."""
        sens = np.asarray(sensitivity, dtype=np.float64)
        if sens.shape != (len(self.searchable),):
            raise ValueError(f"need one sensitivity per searchable group ({len(self.searchable)}), "
                             f"got shape {sens.shape}")
        z = np.full(len(sens), 0.5)
        known = np.flatnonzero(np.isfinite(sens))
        if len(known) > 1:
            order = known[np.lexsort((known, -sens[known]))]   # most sensitive first, ties by position
            z[order] = np.arange(len(order)) / (len(order) - 1)
        return [self._scaled(1.0 - (i / n) * (1.0 - z), budget, kind) for i in range(1, n + 1)]

    def _scaled(self, u: np.ndarray, budget: float | Budget, kind: str) -> Strategy:
        """``u`` scaled by the smallest factor (bisection) whose strategy fits ``budget``; every strategy
        returned fits (the bisection keeps the last one that did), whether or not the cost is monotone."""
        budget = as_budget(budget)
        if budget.latency is not None and self.latency is None:
            raise ValueError("a latency budget needs a StrategySpace with a latency model")
        u = np.maximum(u, 1e-6)
        lo, hi = 0.0, self.max_ratio / float(u.min())   # at hi every group sits at max_ratio

        def at(s: float) -> Strategy:
            return self.strategy(np.minimum(self.max_ratio, s * u), kind)

        best = at(hi)
        if best.flops > budget.flops:
            raise InputError(f"impossible budget: {budget.flops / 1e9:.4g} GFLOPs is below the smallest "
                             f"reachable ({best.flops / 1e9:.4g} GFLOPs at max ratio {self.max_ratio:g})")
        if not budget.fits(best):
            raise InputError(f"impossible latency budget: {budget.latency:g} of the original's latency is "
                             f"below the smallest reachable predicted ratio {best.latency:.3f} (every group "
                             f"pruned by max ratio {self.max_ratio:g}, at least --min-channels kept)")
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            cand = at(mid)
            if budget.fits(cand):
                hi, best = mid, cand
            else:
                lo = mid
        return best
