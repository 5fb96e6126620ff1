"""The EagleEye search of a pruning run: what it works on (``plan_search``: dependency analysis, L1
importance, the FLOPs budget, the candidate strategies), the probes of the sensitivity-guided candidates and the scoring
of every candidate, sharded over the ranks of a ``torchrun`` run and recorded in a search log
(:mod:`~yolocompress.compress.prune.searchlog`) so that a killed search resumes without scoring again.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from yolocompress.compress.prune.apply import prune_channels
from yolocompress.compress.prune.config import PruneConfig
from yolocompress.compress.prune.cost import CostModel, LatencyCost
from yolocompress.compress.prune.graph import ChannelGraph, channel_graph
from yolocompress.compress.prune.importance import IMPORTANCES
from yolocompress.compress.prune.scoring import SubnetScore, SubnetScorer, cache_data
from yolocompress.compress.prune.searchlog import SearchLog, search_fingerprint
from yolocompress.compress.prune.strategy import Budget, Strategy, StrategySpace, group_sensitivity
from yolocompress.errors import InputError
from yolocompress.models.selectors import select_layers
from yolocompress.progress import ProgressCallback, report


def resolve_exclusions(graph: ChannelGraph, selectors: tuple[str, ...],
                       context: str = "--exclude") -> set[int]:
    """Indices of groups touched by ``selectors`` (:mod:`yolocompress.models.selectors`); a selector that
    matches no prunable layer is an error whose line starts with ``context``."""
    names = {name: name for grp in graph.groups for name in grp.layers}
    chosen = select_layers(selectors, names, "prunable layer",
                           "use a layer index such as 9 or a module name such as model.9.cv1", context)
    return {grp.index for grp in graph.groups if chosen.intersection(grp.layers)}


@dataclass
class SearchPlan:
    """What the search works on: the analysed graph, the strategy space, the budget and the candidates.

    ``budget``: FLOPs (with a latency budget: the FLOPs of the uniform strategy that meets it);
    ``limit``: what every candidate fits (FLOPs, or a predicted latency ratio)."""

    graph: ChannelGraph
    space: StrategySpace
    strategies: list
    budget: float
    base_flops: float
    excluded: set[int]
    uniform: Strategy
    n_guided: int = 0   # sensitivity-guided strategies still to add (``add_guided``) after the probes
    limit: Budget | None = None  # None: FLOPs <= budget
    latency_margin: float = 0.0  # a latency budget's guard: candidates fit target / (1 + margin)


def add_guided(plan: SearchPlan, sensitivity: np.ndarray | Mapping[str, np.ndarray]) -> None:
    """Append ``plan.n_guided`` sensitivity-guided strategies (``StrategySpace.guided``) to the candidates.

    ``sensitivity``: one ranking (score per cost, per searchable group), or several by name (``{"latency":
    ..., "flops": ...}``), which share the guided candidates in the given order (the first gets the odd one);
    with more than one, each ranking's strategies are of kind ``"guided-<name>"``."""
    rankings = sensitivity if isinstance(sensitivity, Mapping) else {"": sensitivity}
    for k, (name, sens) in enumerate(rankings.items()):
        n = plan.n_guided // len(rankings) + (1 if k < plan.n_guided % len(rankings) else 0)
        if n:
            kind = f"guided-{name}" if len(rankings) > 1 else "guided"
            plan.strategies.extend(plan.space.guided(sens, plan.limit or plan.budget, n, kind=kind))
    plan.n_guided = 0


# the sub-nets measured whole to calibrate a latency table: the uniform strategy at these ratios, and this
# many random strategies at the FLOPs of the middle one (the uneven kind of sub-net a search picks)
CALIBRATION_RATIOS = (0.3, 0.5, 0.7)
CALIBRATION_RANDOM = 3
# fresh session sets the calibration sub-nets are timed in (the median of their ratios is kept): on a noisy
# 2-core machine one set's ratio moved by up to +-10% (2026-12-07, AMD EPYC, 256 px), and the guard takes the
# worst sub-net, so 3 sets let one noisy reading hold every candidate 18% under the budget
CALIBRATION_SESSIONS = 7


def time_side_by_side(models: Mapping[str, nn.Module], imgsz: int, threads: int, runs: int,
                      sessions: int = 1) -> list[dict[str, np.ndarray]]:
    """Each of ``models`` exported to ONNX once (at ``imgsz``, in a temporary folder) and timed on ONNX
    Runtime side by side (batch 1, ``threads`` threads, 5 warm-up calls, ``runs`` calls in 5 interleaved
    rounds: :func:`~yolocompress.profile.latency.time_onnx_files`), once per each of ``sessions`` fresh sets
    of sessions; milliseconds per call by name, one dict per set."""
    from yolocompress.export.onnx import export_onnx
    from yolocompress.io.workdir import work_dir
    from yolocompress.profile.latency import time_onnx_files

    with work_dir("yc-prune-latency-") as tmp:
        files = {name: export_onnx(m, Path(tmp) / f"{name}.onnx", imgsz=imgsz) for name, m in models.items()}
        return [time_onnx_files(files, imgsz, threads=threads, warmup=5, runs=runs, rounds=5)
                for _ in range(sessions)]


def measured_ratios(model: nn.Module, subnets: Mapping[str, nn.Module], imgsz: int, threads: int,
                    sessions: int = 3) -> dict[str, float]:
    """Each of ``subnets``' ONNX Runtime latency as a fraction of ``model``'s (batch 1, ``threads`` threads),
    all timed side by side: the median over ``sessions`` fresh sets of ONNX Runtime sessions of the ratio of
    their medians (5 interleaved rounds of 20 runs each: :func:`time_side_by_side`). One pair's ratio varies
    by about +-4% from set to set on a shared 2-core machine (yolov5n, uniform 0.5, 640 px: 0.509-0.551 over
    five pairs), more than within one set."""
    if "model" in subnets:
        raise ValueError("a sub-net cannot be named 'model' (the reference's name)")
    sets = time_side_by_side({"model": model, **subnets}, imgsz, threads, runs=20, sessions=sessions)
    return {name: float(np.median([np.median(t[name]) / np.median(t["model"]) for t in sets]))
            for name in subnets}


def calibration_subnets(space: StrategySpace) -> dict[str, np.ndarray]:
    """The keep masks of the sub-nets a latency table is calibrated with, by name: the uniform strategy at
    each of ``CALIBRATION_RATIOS`` and ``CALIBRATION_RANDOM`` random strategies (a fixed seed) at the FLOPs
    of the middle one. One uniform sub-net alone fitted the calibration to its own error: at 256 px it was
    predicted 10% slow while uneven sub-nets were within 0-8%, so they came out 5-14% fast."""
    middle = space.uniform(CALIBRATION_RATIOS[len(CALIBRATION_RATIOS) // 2])
    rng = np.random.default_rng(0)
    strategies = {f"uniform {r:g}": space.uniform(r) for r in CALIBRATION_RATIOS}
    strategies.update({f"random {k}": space.sample(rng, middle.flops) for k in range(CALIBRATION_RANDOM)})
    return {name: space.keep(s.counts) for name, s in strategies.items()}


def latency_cost(model: nn.Module, graph: ChannelGraph, cfg: PruneConfig,
                 space: StrategySpace | None = None) -> LatencyCost:
    """The predicted latency of ``model``'s sub-nets: its per-layer latency table at ``cfg.imgsz`` with
    ``cfg.latency_threads`` threads and ``cfg.channels.round_to`` (read from the cache folder, else measured
    with ONNX Runtime now and cached: :func:`~yolocompress.profile.latency_table.latency_table`). A table
    without a calibration is calibrated once (and cached) when ``space`` is given: the sub-nets of
    :func:`calibration_subnets` are built and measured whole beside ``model`` (:func:`measured_ratios`, a few
    seconds at 256 px, about two minutes for yolov5s at 640), which fits the share of the latency that the
    convolutions' sum leaves out (least squares over the sub-nets)."""
    from yolocompress.profile.latency_table import latency_table

    table = latency_table(model, cfg.imgsz, threads=cfg.latency_threads, round_to=cfg.channels.round_to)
    cost = LatencyCost(table, graph)
    if table.calibration is None and space is not None:
        keeps = calibration_subnets(space)
        subnets = {name: prune_channels(model, graph, keep) for name, keep in keeps.items()}
        measured = measured_ratios(model, subnets, cfg.imgsz, cfg.latency_threads, CALIBRATION_SESSIONS)
        table.calibrated([cost.ms(keep) / cost.full_ms for keep in keeps.values()],
                         [measured[name] for name in keeps], subnets=list(keeps),
                         runs=f"median of {CALIBRATION_SESSIONS} session sets, each 5 interleaved rounds x 20, "
                              "side by side")
    return cost


def ratio_budget(space: StrategySpace, ratio: float) -> float | None:
    """The FLOPs budget of ``--ratio``, when it is not simply the uniform strategy's at ``ratio`` in ``space``
    (``None``): with narrow widths (``ChannelRules.narrow``, ``round_to`` above ``min_channels``), the
    uniform strategy's FLOPs in widths of ``min_channels`` (8: the same budget on every CPU, whatever its
    channel block, and Torch-Pruning's uniform widths); the search's candidates, the uniform one included,
    then keep widths of ``min_channels`` or multiples of ``round_to`` within it."""
    rules = space.rules
    if not rules.narrow or rules.round_to <= rules.min_channels:
        return None
    fine = replace(rules, round_to=rules.min_channels, narrow=False)
    counts = {g: fine.keep_count(space.graph.groups[g].channels, ratio) for g in space.searchable}
    return space.cost.flops(space.keep(counts))


def plan_search(model: nn.Module, cfg: PruneConfig) -> SearchPlan:
    """Dependency analysis, L1 importance, the budget and the candidate strategies, all deterministic in
    ``cfg.seed``: the uniform one first (when ``cfg.search.include_uniform``), then the random ones; the
    ``n_guided`` sensitivity-guided ones that complete ``cfg.search.candidates`` need scored probes and are
    added by ``add_guided``. With ``cfg.target_latency`` (or ``cfg.search.prefer == "latency"``) every
    strategy carries its predicted latency ratio (:func:`latency_cost`); with ``cfg.target_latency``
    every candidate's is at most the target divided by ``1 +`` the table's :attr:`~yolocompress.profile.
    latency_table.LatencyTable.margin` (so that a pick the table under-predicts as much as its worst
    calibration sub-net still measures within the target), with ``cfg.search.latency_cap == "uniform"`` at
    most the uniform strategy's (and its FLOPs within the FLOPs budget). ``model``: float32, CPU."""
    graph = channel_graph(model)
    importance = IMPORTANCES[cfg.search.importance](model, graph)
    rules = cfg.channels
    excluded = resolve_exclusions(graph, cfg.exclude)
    cost = CostModel(model, graph, cfg.imgsz)
    max_ratio = max(cfg.search.max_ratio, cfg.ratio or 0.0)
    space = StrategySpace(graph, cost, importance, rules,
                          [g.index for g in graph.groups if g.index not in excluded], max_ratio)
    if not space.searchable:
        raise InputError("nothing to prune: no channel group has more than --min-channels channels")
    if (cfg.target_latency is not None or cfg.search.prefer == "latency" or cfg.latency_capped
            or "latency" in sensitivity_costs(cfg)):
        space.latency = latency_cost(model, graph, cfg, space)
    base_flops = cost.flops(graph.full_keep())
    limit, margin = None, 0.0
    if cfg.target_latency is not None:
        margin = space.latency.table.margin
        limit = Budget(latency=float(cfg.target_latency) / (1.0 + margin))
        try:
            uniform = space.uniform_for_budget(limit)
        except InputError as exc:
            if not margin:
                raise
            raise InputError(f"{exc}; that is the target {cfg.target_latency:g} less the latency table's "
                             f"margin of {100 * margin:.1f}% (its most under-predicted calibration sub-net)"
                             ) from None
        budget = uniform.flops
    elif cfg.ratio is not None:
        budget = ratio_budget(space, cfg.ratio)
        if budget is None:
            uniform = space.uniform(cfg.ratio)
            budget = uniform.flops
        else:
            uniform = space.uniform_for_budget(budget)
    else:
        budget = cfg.target_gflops * 1e9
        if budget >= base_flops:
            raise InputError(f"impossible budget: target {cfg.target_gflops:g} GFLOPs is not below the "
                             f"model's {base_flops / 1e9:.4g} GFLOPs at {cfg.imgsz} px")
        uniform = space.uniform_for_budget(budget)
    if cfg.latency_capped:
        limit = Budget(flops=budget, latency=uniform.latency)
    rng = np.random.default_rng(cfg.seed)
    n_other = cfg.search.candidates - (1 if cfg.search.include_uniform else 0)
    n_guided = min(cfg.search.guided, n_other)
    strategies = [uniform] if cfg.search.include_uniform else []
    strategies += [space.sample(rng, limit or budget, cfg.search.spread) for _ in range(n_other - n_guided)]
    return SearchPlan(graph, space, strategies, budget, base_flops, excluded, uniform, n_guided, limit,
                      margin)


def best_scored(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The best-scoring row among ``rows`` (rows rejected early, score ``None``, are skipped; ties: the
    lowest index, so the uniform candidate wins a tie)."""
    return max((c for c in rows if c["score"] is not None), key=lambda c: (c["score"], -c["index"]))


def choose_candidate(rows: list[dict[str, Any]], plan: SearchPlan, search_cfg: Any) -> int:
    """The index of the chosen candidate among the scored ``rows`` (those rejected early, score ``None``, are
    not chosen): the best score (ties: the lowest index,
    so the uniform candidate wins a tie); with ``search_cfg.prefer == "latency"``, the lowest predicted
    latency among the candidates whose score is within ``search_cfg.near_tie`` of the best (ties: the
    better score, then the lower index). Adds each row's ``latency_ratio`` (predicted; ``None`` without a
    latency model)."""
    for row in rows:
        row["latency_ratio"] = plan.strategies[row["index"]].latency
    best = best_scored(rows)
    if search_cfg.prefer != "latency":
        return best["index"]
    near = [c for c in rows if c["score"] is not None and c["score"] >= best["score"] - search_cfg.near_tie]
    return min(near, key=lambda c: (c["latency_ratio"], -c["score"], c["index"]))["index"]


Best = tuple[float, int, "nn.Module | None"]  # (score, index, sub-net after adaptive BN or None)


@dataclass(frozen=True)
class EarlyReject:
    """Score a candidate on ``head`` (the first of the data: ``SubnetScorer.on_head``) first and drop it,
    unscored in full, when that score is below ``floor``. ``staged``: the head has every calibration batch
    and whole held-out batches, so a kept candidate's full score adds only the other held-out images to the
    head's (``SubnetScorer.in_stages``); else it is scored again on all of them, its BN statistics continued
    from the head's."""

    head: SubnetScorer
    floor: float
    staged: bool = False

    @classmethod
    def of(cls, scorer: SubnetScorer, head: SubnetScorer, floor: float) -> EarlyReject:
        """The rejection of candidates scored by ``scorer`` on ``head`` (``scorer.on_head(...)``), staged
        when it can be."""
        staged = (len(head.data.calib) == len(scorer.data.calib)
                  and scorer.data.split(head.data.eval_images) is not None)
        return cls(head, floor, staged)


def _score(sub: nn.Module, scorer: SubnetScorer, metric: str, early: EarlyReject | None,
           phase: dict[str, float]) -> tuple[SubnetScore | None, float | None]:
    """``(score, its metric on early.head)`` of ``sub`` (None: not scored), its seconds added to ``phase``. A
    candidate kept after its head score is scored in full by adding the other held-out images to the head's
    (``early.staged``) or by continuing its BN statistics: either way the same score as without ``early``,
    to the bit."""
    def timed(score: SubnetScore) -> SubnetScore:
        phase["bn_recalibration"] += score.bn_s
        phase["inference"] += score.inference_s
        phase["nms_map"] += score.nms_map_s
        return score

    head = None
    if early is not None and early.staged:
        head_score, full = scorer.in_stages(sub, early.head.data.eval_images, early.floor, metric)
        return (None if full is None else timed(full)), timed(head_score).value(metric)
    if early is not None:
        head = timed(early.head(sub)).value(metric)
        if head < early.floor:
            return None, head
    return timed((scorer if early is None else scorer.continuing(len(early.head.data.calib)))(sub)), head


def _best_info(best: Best | None) -> dict[str, float]:
    """The progress event's info: the best score so far (none before a candidate was scored in full)."""
    return {} if best is None else {"best": best[0]}


def _score_sharded(base: nn.Module, plan: SearchPlan, strategies: list, scorer: SubnetScorer, metric: str,
                   ctx: Any, task: str, on_progress: ProgressCallback | None = None,
                   log: SearchLog | None = None, early: EarlyReject | None = None
                   ) -> tuple[list[dict[str, Any]], dict[str, float], Best | None]:
    """Score this rank's share of ``strategies`` (index ``i`` on rank ``i % world_size``) and gather every
    rank's rows. Returns ``(rows in index order, seconds per phase summed over ranks, this rank's best
    (score, index, sub-net after adaptive BN, None when its row came from ``log``) or None)``. Rows recorded
    in ``log`` are taken from it, new ones are added to it. With ``early``, a row dropped by it has
    ``"rejected": True``, ``"score": None`` and its ``"head_score"``."""
    from yolocompress.engine import distributed as dist_utils

    mine = list(range(ctx.rank, len(strategies), ctx.world_size))
    local: list[dict[str, Any]] = []
    phase = {"build": 0.0, "bn_recalibration": 0.0, "inference": 0.0, "nms_map": 0.0}
    best_local: Best | None = None
    for i in mine:
        s = strategies[i]
        logged = log.get(task, i, s.counts) if log is not None else None
        if logged is not None:  # scored before a kill: not again
            local.append(logged)
            if logged["score"] is not None and (best_local is None or logged["score"] > best_local[0]):
                best_local = (logged["score"], i, None)
            if ctx.is_main:
                report(on_progress, task, len(local), len(mine), "net", _best_info(best_local))
            continue
        tb = time.perf_counter()
        sub = prune_channels(base, plan.graph, plan.space.keep(s.counts))
        phase["build"] += time.perf_counter() - tb
        score, head = _score(sub, scorer, metric, early, phase)
        value = None if score is None else score.value(metric)
        local.append({"index": i, "kind": s.kind, "gflops": s.flops / 1e9, "score": value,
                      "map50": None if score is None else score.map50,
                      "map50_95": None if score is None else score.map50_95,
                      "head_score": head, "rejected": score is None,
                      "mean_ratio": float(np.mean(s.ratios)) if len(s.ratios) else 0.0})
        if log is not None:
            log.add(task, s.counts, local[-1])
        if value is not None and (best_local is None or value > best_local[0]):
            best_local = (value, i, sub)
        if ctx.is_main:
            report(on_progress, task, len(local), len(mine), "net", _best_info(best_local))
    gathered = dist_utils.gather_objects((local, phase))
    rows = sorted((c for part, _ in gathered for c in part), key=lambda c: c["index"])
    total = {key: sum(p[key] for _, p in gathered) for key in phase}
    return rows, total, best_local


def _probe_sensitivity(base: nn.Module, plan: SearchPlan, scorer: SubnetScorer, cfg: PruneConfig, ctx: Any,
                       on_progress: ProgressCallback | None = None, log: SearchLog | None = None
                       ) -> tuple[dict[str, np.ndarray], int]:
    """Score the uniform strategy and its one-group probes (the sides ``cfg.search.probe_sides``) on the first
    ``probe_calib_batches`` and ``probe_images`` of ``scorer``'s data, by ``cfg.search.metric`` or (with
    ``probe_metric`` ``"box_loss"`` or ``"distortion"``) by minus their box loss or their head distortion
    from ``base``; returns ``({cost: score per unit of it per searchable group} for each cost of
    :func:`sensitivity_costs`, number of sub-nets scored)``: the same probes give every ranking."""
    s = cfg.search
    probes = [p for p in plan.space.probes(plan.uniform, s.probe_step)
              if s.probe_sides in ("both", p.direction)]
    head = scorer.on_head(s.probe_calib_batches, s.probe_images)
    metric = s.metric if s.probe_metric == "map" else s.probe_metric
    if s.probe_metric == "box_loss":
        head = head.by_box_loss(base)
    elif s.probe_metric == "distortion":
        head = head.against(base)
    rows, _, _ = _score_sharded(base, plan, [plan.uniform] + [p.strategy for p in probes], head, metric,
                                ctx, "probes", on_progress, log)
    scores = [r["score"] for r in rows]
    sens = {cost: group_sensitivity(plan.uniform, scores[0], probes, scores[1:], len(plan.space.searchable),
                                    cost) for cost in sensitivity_costs(cfg)}
    return sens, len(rows)


def sensitivity_cost(cfg: PruneConfig) -> str:
    """What the probes' score changes are divided by (``SearchConfig.sensitivity_cost`` resolved): the
    setting when not ``"auto"``; with ``"auto"``, ``"both"`` under a latency budget (``target_latency``: the
    guided candidates are shared by the two rankings, since which one wins depends on the machine's latency
    table), ``"latency"`` under the uniform latency cap, else ``"flops"``."""
    setting = cfg.search.sensitivity_cost
    if setting == "auto":
        if cfg.target_latency is not None:
            return "both"
        return "latency" if cfg.latency_capped else "flops"
    return setting


def sensitivity_costs(cfg: PruneConfig) -> tuple[str, ...]:
    """The rankings of the guided candidates, in the order they share them: ``("latency", "flops")`` for
    :func:`sensitivity_cost` ``"both"``, else that one."""
    cost = sensitivity_cost(cfg)
    return ("latency", "flops") if cost == "both" else (cost,)


def _score_candidates(base: nn.Module, plan: SearchPlan, scorer: SubnetScorer, cfg: PruneConfig, ctx: Any,
                      on_progress: ProgressCallback | None, log: SearchLog | None = None,
                      early: EarlyReject | None = None
                      ) -> tuple[list[dict[str, Any]], dict[str, float], int, nn.Module]:
    """Score this rank's share of the candidates, gather every rank's rows, pick the best of those scored in
    full (``early`` drops the hopeless ones first).

    Returns ``(candidate rows in index order, seconds per phase summed over ranks, chosen index, the chosen
    sub-net after adaptive BN in fp32)``. Ties go to the lowest index, so the uniform candidate wins a tie.
    """
    candidates, total, best_local = _score_sharded(base, plan, plan.strategies, scorer, cfg.search.metric,
                                                    ctx, "eagleeye", on_progress, log, early)
    chosen = choose_candidate(candidates, plan, cfg.search)
    for c in candidates:
        c["chosen"] = c["index"] == chosen
    fp32 = replace(scorer, bf16=False)
    if best_local is not None and best_local[1] == chosen and best_local[2] is not None:
        winner = best_local[2]
        if scorer.bf16:  # the chosen sub-net leaves the search with fp32 statistics
            fp32.calibrate(winner)
    else:  # another rank scored it, or an earlier (killed) run did: rebuild (deterministic), BN statistics only
        winner = prune_channels(base, plan.graph, plan.space.keep(plan.strategies[chosen].counts))
        fp32.calibrate(winner)
    return candidates, total, chosen, winner


def score_precision(setting: str, device: Any) -> str:
    """The precision the scoring passes run in for ``SearchConfig.score_precision`` ``setting`` on
    ``device``: ``"auto"`` is ``"bf16"`` on a CPU with bf16 units
    (:func:`~yolocompress.profile.cpu.native_bf16`), else ``"fp32"``; a GPU always scores in fp32."""
    from yolocompress.profile.cpu import native_bf16

    if torch.device(device).type != "cpu":
        return "fp32"
    if setting == "auto":
        return "bf16" if native_bf16() else "fp32"
    return setting


@dataclass
class SearchResult:
    """What the search found: its plan, every candidate's row, the chosen one (index and sub-net after
    adaptive BN, in fp32), the probes' sensitivity per searchable group by cost (``{"flops": ...}``,
    ``{"latency": ...}`` or both: :func:`sensitivity_costs`; empty without guided candidates), the number of
    probes scored, seconds per phase, the search log (``None`` without one) and the precision the candidates
    and the probes were scored in (:func:`score_precision`)."""

    plan: SearchPlan
    candidates: list[dict[str, Any]]
    chosen: int
    winner: nn.Module
    sensitivity: dict[str, np.ndarray]
    probes: int
    timing: dict[str, float]
    log: SearchLog | None
    precision: str = "fp32"
    probe_precision: str = "fp32"


def search(base: nn.Module, data: Any, cfg: PruneConfig, stride: int, device: Any, ctx: Any,
           on_progress: ProgressCallback | None = None) -> SearchResult:
    """EagleEye on ``base`` (float32, CPU, eval mode): plan, cache the data once, score the probes (for the
    guided candidates) and the candidates, sharded over the ranks of ``ctx``; every scored sub-net is recorded
    in ``cfg.search_log`` when given (and taken from it with ``cfg.resume``). Timing keys: ``analysis``,
    ``data``, ``probes``, ``build``, ``bn_recalibration``, ``inference``, ``nms_map``, ``search``.

    With ``cfg.search.reject_below`` > 0, a candidate whose score on the first ``reject_calib_batches`` and
    ``reject_images`` is below ``reject_below`` times the uniform strategy's score there (computed on every
    rank: the same floor everywhere) is not scored in full; the uniform candidate is never dropped."""
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    plan = plan_search(base, cfg)
    timing["analysis"] = time.perf_counter() - t0
    s = cfg.search
    data_cache = cache_data(data, cfg.imgsz, stride, s.calib_batches, s.calib_batch, s.eval_images, s.eval_batch,
                            cfg.seed, s.eval_split)
    timing["data"] = data_cache.load_s
    precision = score_precision(s.score_precision, device)
    probe_precision = score_precision(s.probe_precision, device)
    scorer = SubnetScorer(data_cache, data.nc, list(data.names), device, conf_thres=s.score_conf_thres,
                          bf16=precision == "bf16")
    log = None
    if cfg.search_log:
        path = cfg.search_log if ctx.world_size == 1 else f"{cfg.search_log}.rank{ctx.rank}"
        scoring = {"imgsz": cfg.imgsz, "seed": cfg.seed, "conf_thres": cfg.conf_thres, **asdict(s),
                   "score_precision": precision, "probe_precision": probe_precision}
        log = SearchLog(path, search_fingerprint(base, data, scoring), cfg.resume)
    sensitivity: dict[str, np.ndarray] = {}
    n_probes = 0
    if plan.n_guided:  # probes (sensitivity per group) for the guided candidates
        t0 = time.perf_counter()
        probe_scorer = replace(scorer, bf16=probe_precision == "bf16")
        sensitivity, n_probes = _probe_sensitivity(base, plan, probe_scorer, cfg, ctx, on_progress, log)
        add_guided(plan, sensitivity)
        timing["probes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    early = None
    if s.reject_below > 0 and len(plan.strategies) > 1:  # every rank: the floor from the uniform strategy
        head = scorer.on_head(s.reject_calib_batches, s.reject_images)
        uniform = prune_channels(base, plan.graph, plan.space.keep(plan.uniform.counts))
        early = EarlyReject.of(scorer, head, s.reject_below * head(uniform).value(s.metric))
    candidates, phase, chosen, winner = _score_candidates(base, plan, scorer, cfg, ctx, on_progress, log,
                                                          early)
    timing.update(phase)
    timing["search"] = time.perf_counter() - t0
    return SearchResult(plan, candidates, chosen, winner, sensitivity, n_probes, timing, log, precision,
                        probe_precision)


__all__ = ["SearchPlan", "SearchResult", "add_guided", "best_scored", "choose_candidate", "latency_cost",
           "plan_search", "resolve_exclusions", "score_precision", "search", "sensitivity_cost",
           "sensitivity_costs"]
