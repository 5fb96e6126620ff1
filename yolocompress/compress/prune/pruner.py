"""The pruning stage: ``prune_model(model, data_cfg, PruneConfig(...)) -> (pruned_model, StageReport)``.

Dependency analysis (``graph``) -> L1 importance (``importance``) -> EagleEye search over per-group ratios
(``eagleeye``) -> physical removal (``apply``) -> fine-tuning with the project's ``Trainer``. Nothing here
prints or writes files (the Trainer's run folder is a temporary directory unless ``finetune_dir`` is given;
``search_log`` asks for the record that lets a killed search resume).
The report follows the stage contract (:mod:`yolocompress.compress.stage`): snapshots of the unpruned and
the final model, and the search's own figures in ``details``.

Budget. ``ratio=R`` means "remove the fraction R of the prunable channels": the budget is the FLOPs of the
*uniform* strategy (every searchable group pruned by R, rounded per ``ChannelRules``), and every EagleEye
candidate has at most that many FLOPs. Since a convolution's cost is ``c_in x c_out``, a layer whose input and
output groups are both pruned by R costs ``(1 - R)^2`` of the original; layers next to fixed channels (the
stem reading the image, the Detect convs) cost ``1 - R``; so the total lands between those (about 0.3 of
the original GFLOPs for YOLOv5 at R = 0.5; the report states the exact figure). ``target_gflops=G`` sets the
budget directly (at ``imgsz``).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch.nn as nn

from yolocompress.compress.distill.config import (DistillConfig, as_distill_config, distill_json,
                                                  distill_terms, kd_warnings)
from yolocompress.compress.prune.apply import ChannelRules, prune_channels
from yolocompress.compress.prune.eagleeye import (CostModel, Strategy, StrategySpace, SubnetScorer,
                                                  cache_data, group_sensitivity)
from yolocompress.compress.prune.graph import ChannelGraph, channel_graph
from yolocompress.compress.prune.importance import l1_importance
from yolocompress.compress.prune.searchlog import SearchLog, search_fingerprint
from yolocompress.compress.stage import Latency, ModelSnapshot, StageReport
from yolocompress.errors import InputError
from yolocompress.io.workdir import work_dir
from yolocompress.models.inputs import max_stride
from yolocompress.models.selectors import select_layers
from yolocompress.models.shapes import num_params
from yolocompress.progress import ProgressCallback, report

if TYPE_CHECKING:
    from yolocompress.profile.latency import LatencyResult

METRICS = ("map50_95", "map50", "fitness")


@dataclass(frozen=True)
class PruneConfig:
    """Settings of one pruning run (validated on construction; see the module doc for the budget).

    Attributes:
        ratio: fraction of prunable channels removed, 0 < ratio < 1 (budget: the uniform strategy's FLOPs).
        target_gflops: alternative budget, GFLOPs at ``imgsz`` (give ``ratio`` or this, not both).
        imgsz: image size (pixels) for FLOPs, the search and evaluation.
        candidates: strategies scored: the uniform one (when ``include_uniform``), ``guided``
            sensitivity-guided ones, the rest sampled at random as in the paper.
        guided: how many of the candidates are sensitivity-guided (0: the paper's random sampling only).
            They cost a probe phase first: the uniform strategy with each group in turn pruned
            ``probe_step`` less and ``probe_step`` more, about two scored sub-nets per searchable group
            (~100 for yolov5n). On the shipped yolov5n baseline at ratio 0.5 random candidates did not beat
            the uniform strategy after fine-tuning and guided ones did (``benchmarks/RESULTS.md``).
        calib_batches, calib_batch: adaptive-BN data, batches x images, from the train split.
        eval_images, eval_batch: held-out images each candidate is scored on (``eval_split``: ``"train"``,
            training images disjoint from the calibration images, as in the paper; or ``"val"``). With 64
            images the ranking of near-uniform candidates changes with the images drawn (rank correlation
            0.22-0.67 between draws on the shipped baseline); 256 make it reproducible (0.78-0.93;
            ``bench_prune.py stability``).
        metric: the score, ``map50_95``, ``map50`` or ``fitness``.
        finetune_epochs: epochs of fine-tuning of the winner (0: none); ``finetune_batch`` images per batch,
            gradients accumulated to ``finetune_nominal_batch`` images per optimizer step (YOLOv5: 64; smaller
            means more steps for the same compute, which helps a short CPU fine-tune).
        distill: distillation from the unpruned model during the fine-tune: a weight ``W`` (output KD at
            ``W``; 0: labels only) or a :class:`~yolocompress.compress.distill.config.DistillConfig` (output,
            feature or both; feature KD adds connectors for the pruned channel counts).
        bf16, channels_last: fine-tune with CPU bf16 autocast / NHWC (``TrainConfig``'s options).
        round_to, min_channels: ``ChannelRules`` (kept counts multiples of ``round_to``, >= ``min_channels``).
        max_ratio: the most any group is pruned.
        spread: how uneven sampled strategies may be: per-group ratios ``~ U[1 - spread, 1]`` before scaling
            to the budget (1: the paper's ``[0, max]`` sampling; smaller: closer to uniform).
        exclude: layer selectors never pruned: layer indices (``"0"``) or module paths (``"model.9.cv1"``, the
            module and everything under it); see :mod:`yolocompress.models.selectors`.
        seed: strategy sampling, data subsets and fine-tuning.
        latency: also measure ONNX Runtime latency (batch 1, ``latency_threads``) before and after (slow).
        eval_baseline: evaluate the unpruned model on the full val split for the report.
        finetune_dir: keep the Trainer's run folder here (default: a temporary folder, removed); it holds
            ``weights/last.pt`` after every epoch, which ``resume`` continues.
        search_log: record every scored probe and candidate in this JSON-lines file as it is scored
            (:mod:`~yolocompress.compress.prune.searchlog`); removed when ``prune_model`` returns.
        resume: continue the search recorded in ``search_log`` (same model, data and scoring settings): the
            sub-nets recorded there are not scored again; and continue the fine-tune from the
            ``weights/last.pt`` in ``finetune_dir`` when there is one. The result is that of an
            uninterrupted run (bit for bit on the CPU).
    """

    ratio: float | None = 0.5
    target_gflops: float | None = None
    imgsz: int = 640
    candidates: int = 20
    guided: int = 8
    probe_step: float = 0.25
    calib_batches: int = 8
    calib_batch: int = 16
    eval_images: int = 256
    eval_batch: int = 16
    eval_split: str = "train"
    metric: str = "map50_95"
    finetune_epochs: int = 10
    finetune_batch: int = 16
    finetune_nominal_batch: int = 64
    distill: float | DistillConfig = 0.0
    bf16: bool = False
    channels_last: bool = False
    round_to: int = 8
    min_channels: int = 8
    max_ratio: float = 0.8
    spread: float = 1.0
    exclude: tuple[str, ...] = ()
    include_uniform: bool = True
    seed: int = 0
    device: str = "cpu"
    workers: int = 0
    conf_thres: float = 0.001
    latency: bool = False
    latency_threads: int = 2
    eval_baseline: bool = True
    finetune_dir: str | None = None
    search_log: str | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.target_gflops is None):
            raise InputError("give exactly one budget: a ratio or a target GFLOPs")
        if self.ratio is not None and not 0.0 < float(self.ratio) < 1.0:
            raise InputError(f"ratio must be strictly between 0 and 1, got {self.ratio}")
        if self.target_gflops is not None and not float(self.target_gflops) > 0:
            raise InputError(f"target GFLOPs must be positive, got {self.target_gflops}")
        for name in ("imgsz", "candidates", "calib_batches", "calib_batch", "eval_images", "eval_batch",
                     "finetune_batch", "finetune_nominal_batch", "round_to", "min_channels", "latency_threads"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.imgsz % 32:
            raise InputError(f"imgsz must be a multiple of 32, got {self.imgsz}")
        if int(self.guided) < 0:
            raise InputError(f"guided must be >= 0, got {self.guided}")
        if not 0.0 < float(self.probe_step) < 1.0:
            raise InputError(f"probe_step must be strictly between 0 and 1, got {self.probe_step}")
        if int(self.finetune_epochs) < 0:
            raise InputError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        as_distill_config(self.distill)  # a weight >= 0 or a DistillConfig
        if not 0.0 < float(self.spread) <= 1.0:
            raise InputError(f"spread must be in (0, 1], got {self.spread}")
        if not 0.0 < float(self.max_ratio) < 1.0:
            raise InputError(f"max_ratio must be strictly between 0 and 1, got {self.max_ratio}")
        if self.metric not in METRICS:
            raise InputError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        object.__setattr__(self, "exclude", tuple(str(e) for e in self.exclude))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exclude"] = list(self.exclude)
        d["distill"] = distill_json(self.distill)
        return d


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
    """What the search works on: the analysed graph, the strategy space, the budget and the candidates."""

    graph: ChannelGraph
    space: StrategySpace
    strategies: list
    budget: float
    base_flops: float
    excluded: set[int]
    uniform: Strategy
    n_guided: int = 0   # sensitivity-guided strategies still to add (``add_guided``) after the probes


def add_guided(plan: SearchPlan, sensitivity: np.ndarray) -> None:
    """Append ``plan.n_guided`` sensitivity-guided strategies (``StrategySpace.guided``) to the candidates."""
    if plan.n_guided:
        plan.strategies.extend(plan.space.guided(sensitivity, plan.budget, plan.n_guided))
        plan.n_guided = 0


def plan_search(model: nn.Module, cfg: PruneConfig) -> SearchPlan:
    """Dependency analysis, L1 importance, the FLOPs budget and the candidate strategies, all deterministic in
    ``cfg.seed``: the uniform one first (when ``cfg.include_uniform``), then the random ones; the
    ``n_guided`` sensitivity-guided ones that complete ``cfg.candidates`` need scored probes and are added by
    ``add_guided``. ``model``: float32, CPU."""
    graph = channel_graph(model)
    importance = l1_importance(model, graph)
    rules = ChannelRules(min_channels=cfg.min_channels, round_to=cfg.round_to)
    excluded = resolve_exclusions(graph, cfg.exclude)
    cost = CostModel(model, graph, cfg.imgsz)
    max_ratio = max(cfg.max_ratio, cfg.ratio or 0.0)
    space = StrategySpace(graph, cost, importance, rules,
                          [g.index for g in graph.groups if g.index not in excluded], max_ratio)
    if not space.searchable:
        raise InputError("nothing to prune: no channel group has more than --min-channels channels")
    base_flops = cost.flops(graph.full_keep())
    if cfg.ratio is not None:
        uniform = space.uniform(cfg.ratio)
        budget = uniform.flops
    else:
        budget = cfg.target_gflops * 1e9
        if budget >= base_flops:
            raise InputError(f"impossible budget: target {cfg.target_gflops:g} GFLOPs is not below the "
                             f"model's {base_flops / 1e9:.4g} GFLOPs at {cfg.imgsz} px")
        uniform = space.uniform_for_budget(budget)
    rng = np.random.default_rng(cfg.seed)
    n_other = cfg.candidates - (1 if cfg.include_uniform else 0)
    n_guided = min(cfg.guided, n_other)
    strategies = [uniform] if cfg.include_uniform else []
    strategies += [space.sample(rng, budget, cfg.spread) for _ in range(n_other - n_guided)]
    return SearchPlan(graph, space, strategies, budget, base_flops, excluded, uniform, n_guided)


def _finite(value: Any) -> float | None:
    """``value`` as a float, ``None`` when it is NaN or infinite (reports store JSON-ready figures)."""
    v = float(value)
    return v if math.isfinite(v) else None


def _full_eval(model: nn.Module, data: Any, cfg: PruneConfig, on_progress: ProgressCallback | None = None
               ) -> tuple[dict[str, float], dict[str, float]]:
    """Full val-split evaluation: ``({map50, map50_95, fitness}, {class name: mAP50-95})``."""
    from yolocompress.engine.evaluator import evaluate_model

    r = evaluate_model(model, data, split="val", imgsz=cfg.imgsz, batch=cfg.eval_batch * 2,
                       conf_thres=cfg.conf_thres, device=cfg.device, workers=cfg.workers,
                       on_progress=on_progress)
    metrics = {"map50": float(r.map50), "map50_95": float(r.map50_95), "fitness": float(r.fitness)}
    return metrics, {str(c["name"]): float(c["map50_95"]) for c in r.per_class}


def ort_latency(model: nn.Module, imgsz: int, threads: int, warmup: int = 5, runs: int = 20) -> LatencyResult:
    """ONNX Runtime latency (batch 1, ``threads`` intra-op threads) of ``model`` exported at ``imgsz``."""
    from yolocompress.export.onnx import export_onnx
    from yolocompress.profile.latency import measure_ort_latency

    with work_dir("yc-prune-") as tmp:
        path = export_onnx(model.cpu().eval(), Path(tmp) / "m.onnx", imgsz=imgsz)
        return measure_ort_latency(path, threads=threads, warmup=warmup, runs=runs)


def _snapshot(model: nn.Module, cfg: PruneConfig, metrics: dict[str, float] | None = None,
              per_class: dict[str, float] | None = None, latency: Latency | None = None) -> ModelSnapshot:
    """The report's view of ``model``: params, GFLOPs at ``cfg.imgsz`` and what else was measured."""
    from yolocompress.profile import gflops

    return ModelSnapshot(
        imgsz=cfg.imgsz, params=num_params(model), gflops=_finite(gflops(model, cfg.imgsz)),
        map50=_finite(metrics["map50"]) if metrics else None,
        map50_95=_finite(metrics["map50_95"]) if metrics else None,
        per_class={k: v for k, v in (per_class or {}).items() if math.isfinite(v)},
        latency={"onnxruntime": latency} if latency is not None else {})


def _finetune(model: nn.Module, data: Any, cfg: PruneConfig, hyp: Any, teacher: nn.Module | None = None,
              on_progress: ProgressCallback | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The fine-tuned model (the ``finetune`` stage of :mod:`yolocompress.compress.finetune`) and what the
    report says of it: the fine-tune's details (per-epoch ``history``, ``resumed_from_epoch``, ...) and the
    distillation's (``method``, ``connectors``, the teacher's share of the time, ...; none without a
    teacher). With ``cfg.resume`` a ``weights/last.pt`` in ``cfg.finetune_dir`` is continued."""
    from yolocompress.compress.finetune import FinetuneConfig, finetune

    fc = FinetuneConfig(epochs=cfg.finetune_epochs, imgsz=cfg.imgsz, batch=cfg.finetune_batch,
                        nominal_batch=cfg.finetune_nominal_batch,
                        distill=cfg.distill if teacher is not None else 0.0, bf16=cfg.bf16,
                        channels_last=cfg.channels_last, seed=cfg.seed, device=cfg.device,
                        workers=cfg.workers)
    tuned, stage = finetune(model, data, fc, teacher=teacher, out_dir=cfg.finetune_dir,
                            resume=cfg.resume and cfg.finetune_dir is not None, on_progress=on_progress,
                            hyp=hyp)
    return tuned, dict(stage.details)


Best = tuple[float, int, "nn.Module | None"]  # (score, index, sub-net after adaptive BN or None)


def _score_sharded(base: nn.Module, plan: SearchPlan, strategies: list, scorer: SubnetScorer, metric: str,
                   ctx: Any, task: str, on_progress: ProgressCallback | None = None,
                   log: SearchLog | None = None) -> tuple[list[dict[str, Any]], dict[str, float], Best | None]:
    """Score this rank's share of ``strategies`` (index ``i`` on rank ``i % world_size``) and gather every
    rank's rows. Returns ``(rows in index order, seconds per phase summed over ranks, this rank's best
    (score, index, sub-net after adaptive BN, None when its row came from ``log``) or None)``. Rows recorded
    in ``log`` are taken from it, new ones are added to it."""
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
            if best_local is None or logged["score"] > best_local[0]:
                best_local = (logged["score"], i, None)
            if ctx.is_main:
                report(on_progress, task, len(local), len(mine), "net", {"best": best_local[0]})
            continue
        tb = time.perf_counter()
        sub = prune_channels(base, plan.graph, plan.space.keep(s.counts))
        phase["build"] += time.perf_counter() - tb
        score = scorer(sub)
        phase["bn_recalibration"] += score.bn_s
        phase["inference"] += score.inference_s
        phase["nms_map"] += score.nms_map_s
        value = score.value(metric)
        local.append({"index": i, "kind": s.kind, "gflops": s.flops / 1e9, "score": value,
                      "map50": score.map50, "map50_95": score.map50_95,
                      "mean_ratio": float(np.mean(s.ratios)) if len(s.ratios) else 0.0})
        if log is not None:
            log.add(task, s.counts, local[-1])
        if best_local is None or value > best_local[0]:
            best_local = (value, i, sub)
        if ctx.is_main:
            report(on_progress, task, len(local), len(mine), "net", {"best": best_local[0]})
    gathered = dist_utils.gather_objects((local, phase))
    rows = sorted((c for part, _ in gathered for c in part), key=lambda c: c["index"])
    total = {key: sum(p[key] for _, p in gathered) for key in phase}
    return rows, total, best_local


def _sensitivity(base: nn.Module, plan: SearchPlan, scorer: SubnetScorer, cfg: PruneConfig, ctx: Any,
                 on_progress: ProgressCallback | None = None, log: SearchLog | None = None
                 ) -> tuple[np.ndarray, int]:
    """Score the uniform strategy and its one-group probes; returns ``(score per FLOP per searchable group,
    number of sub-nets scored)``."""
    probes = plan.space.probes(plan.uniform, cfg.probe_step)
    rows, _, _ = _score_sharded(base, plan, [plan.uniform] + [p.strategy for p in probes], scorer,
                                cfg.metric, ctx, "probes", on_progress, log)
    scores = [r["score"] for r in rows]
    sens = group_sensitivity(plan.uniform, scores[0], probes, scores[1:], len(plan.space.searchable))
    return sens, len(rows)


def _search(base: nn.Module, plan: SearchPlan, scorer: SubnetScorer, cfg: PruneConfig, ctx: Any,
            on_progress: ProgressCallback | None, log: SearchLog | None = None
            ) -> tuple[list[dict[str, Any]], dict[str, float], int, nn.Module]:
    """Score this rank's share of the candidates, gather every rank's rows, pick the best.

    Returns ``(candidate rows in index order, seconds per phase summed over ranks, chosen index, the chosen
    sub-net after adaptive BN)``. Ties go to the lowest index, so the uniform candidate wins a tie.
    """
    candidates, total, best_local = _score_sharded(base, plan, plan.strategies, scorer, cfg.metric, ctx,
                                                   "eagleeye", on_progress, log)
    chosen = max(candidates, key=lambda c: (c["score"], -c["index"]))["index"]
    for c in candidates:
        c["chosen"] = c["index"] == chosen
    if best_local is not None and best_local[1] == chosen and best_local[2] is not None:
        winner = best_local[2]
    else:  # another rank scored it, or an earlier (killed) run did: rebuild (deterministic)
        winner = prune_channels(base, plan.graph, plan.space.keep(plan.strategies[chosen].counts))
        scorer(winner)
    return candidates, total, chosen, winner


def prune_model(model: nn.Module, data_cfg: Any, config: PruneConfig | None = None, hyp: Any = None,
                on_progress: ProgressCallback | None = None) -> tuple[nn.Module, StageReport]:
    """EagleEye channel pruning of ``model`` (a ``DetectionModel`` with BatchNorm; it is not modified).

    Args:
        model: the unfused model to prune.
        data_cfg: a ``DataConfig`` or ``data.yaml`` path (train split: adaptive BN and fine-tuning; val split:
            candidate scores and the reported mAPs).
        config: ``PruneConfig``.
        hyp: training hyperparameters for fine-tuning (``engine.loss.Hyp``; default YOLOv5's).
        on_progress: called with a ``ProgressEvent`` after each probe (task ``probes``), candidate
            (``eagleeye``), evaluation batch and fine-tune batch.
    Returns:
        ``(pruned model in eval mode on the CPU, StageReport)``: ``stage="prune"``; ``before`` / ``after``:
        snapshots of the unpruned and the final model (params, GFLOPs at ``imgsz``; val mAPs and per-class
        mAP50-95 of the baseline when ``eval_baseline``, of the final model always; ONNX Runtime latency when
        ``latency``); ``details``: ``imgsz``, ``budget_gflops``, ``chosen`` (candidate index),
        ``after_search`` / ``after_finetune`` (val ``map50``, ``map50_95``, ``fitness`` of the winner after
        adaptive BN and after fine-tuning; the latter ``None`` without fine-tuning), ``groups`` (every
        prunable group, channels before and after), ``candidates`` (kind, GFLOPs, held-out score, mean
        ratio), ``candidates_per_minute``, ``timing_s`` (seconds per phase; ``bn_recalibration``,
        ``inference``, ``nms_map`` summed over candidates), ``distributed_ranks``, ``probes`` (sub-nets
        scored for ``sensitivity``: score gained per GFLOP kept, per searchable group; empty without guided
        candidates) and ``notes``.
    """
    from yolocompress.compress.fuse import require_unfused
    from yolocompress.data.config import as_data_config
    from yolocompress.engine import distributed as dist_utils

    cfg = config or PruneConfig()
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    require_unfused(model, "pruning")
    data = as_data_config(data_cfg)
    if int(getattr(model, "nc", data.nc)) != data.nc:
        raise InputError(f"the model predicts {model.nc} classes but the data set has {data.nc}")
    stride = max_stride(model)
    if cfg.imgsz % stride:
        raise InputError(f"imgsz {cfg.imgsz} must be a multiple of the model's stride {stride}")
    ctx = dist_utils.context_from_env()
    device = dist_utils.resolve_device(cfg.device, ctx)
    owns_group = dist_utils.init_process_group(ctx, device)
    try:
        base = _base_model(model)
        kd = as_distill_config(cfg.distill) if cfg.finetune_epochs > 0 else None
        if kd is not None:  # its layers are checked now, not after the search (pruning keeps layers, strides)
            distill_terms(kd, base, base, cfg.imgsz, cfg.seed)

        # -- dependency analysis, importance, cost model, candidate strategies
        t0 = time.perf_counter()
        plan = plan_search(base, cfg)
        graph, strategies, budget, excluded = plan.graph, plan.strategies, plan.budget, plan.excluded
        timing["analysis"] = time.perf_counter() - t0

        # -- data, cached once
        data_cache = cache_data(data, cfg.imgsz, stride, cfg.calib_batches, cfg.calib_batch, cfg.eval_images,
                                cfg.eval_batch, cfg.seed, cfg.eval_split)
        timing["data"] = data_cache.load_s
        scorer = SubnetScorer(data_cache, data.nc, list(data.names), device, conf_thres=cfg.conf_thres)
        log = None
        if cfg.search_log:
            path = cfg.search_log if ctx.world_size == 1 else f"{cfg.search_log}.rank{ctx.rank}"
            log = SearchLog(path, search_fingerprint(base, data, cfg.to_dict()), cfg.resume)

        # -- probes (sensitivity per group) for the guided candidates, sharded over ranks
        sensitivity = np.full(len(plan.space.searchable), np.nan)
        n_probes = 0
        if plan.n_guided:
            t0 = time.perf_counter()
            sensitivity, n_probes = _sensitivity(base, plan, scorer, cfg, ctx, on_progress, log)
            add_guided(plan, sensitivity)
            timing["probes"] = time.perf_counter() - t0

        # -- search: candidates sharded over ranks
        t0 = time.perf_counter()
        candidates, phase, chosen, winner = _search(base, plan, scorer, cfg, ctx, on_progress, log)
        timing.update(phase)
        timing["search"] = time.perf_counter() - t0

        # -- metrics after the search, fine-tuning, metrics after fine-tuning
        t0 = time.perf_counter()
        baseline_metrics, baseline_classes = (_full_eval(base, data, cfg, on_progress) if cfg.eval_baseline
                                              else (None, None))
        after_search, final_classes = _full_eval(winner, data, cfg, on_progress)
        timing["eval"] = time.perf_counter() - t0
        after_finetune = finetune_details = None
        final = winner
        if cfg.finetune_epochs > 0:
            t0 = time.perf_counter()
            final, finetune_details = _finetune(winner, data, cfg, hyp, teacher=base, on_progress=on_progress)
            timing["finetune"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            after_finetune, final_classes = _full_eval(final, data, cfg, on_progress)
            timing["eval"] += time.perf_counter() - t0
        final = final.cpu().eval()

        base_latency = final_latency = None
        if cfg.latency:
            t0 = time.perf_counter()
            base_latency = Latency.from_result(ort_latency(base, cfg.imgsz, cfg.latency_threads))
            final_latency = Latency.from_result(ort_latency(final, cfg.imgsz, cfg.latency_threads))
            timing["latency"] = time.perf_counter() - t0
        before = _snapshot(base, cfg, baseline_metrics, baseline_classes, base_latency)
        after = _snapshot(final, cfg, after_finetune or after_search, final_classes, final_latency)
        counts = strategies[chosen].counts
        groups = [{"group": g.index, "name": g.name, "layer": g.layer_index, "channels": g.channels,
                   "kept": counts.get(g.index, g.channels),
                   "ratio": 1.0 - counts.get(g.index, g.channels) / g.channels,
                   "excluded": g.index in excluded, "searchable": g.index in plan.space.searchable}
                  for g in graph.groups]
        sens_rows = [{"group": g, "name": graph.groups[g].name, "layer": graph.groups[g].layer_index,
                      "score_per_gflop": None if not np.isfinite(v) else float(v) * 1e9}
                     for g, v in zip(plan.space.searchable, sensitivity)] if n_probes else []
        timing["total"] = time.perf_counter() - t_start
        search_s = timing.get("search", 0.0)
        details = {
            "imgsz": cfg.imgsz, "budget_gflops": budget / 1e9, "chosen": chosen,
            "after_search": after_search, "after_finetune": after_finetune, "finetune": finetune_details,
            "groups": groups,
            "candidates": candidates,
            "candidates_per_minute": 60.0 * len(candidates) / search_s if search_s > 0 else None,
            "timing_s": timing, "distributed_ranks": ctx.world_size, "probes": n_probes,
            "sensitivity": sens_rows,
            "notes": [f"budget = {budget / plan.base_flops:.3f} of the original FLOPs ("
                      f"{'the uniform strategy at ratio ' + str(cfg.ratio) if cfg.ratio else 'target GFLOPs'}"
                      ")"]}
        report = StageReport(stage="prune", config=cfg.to_dict(), before=before, after=after,
                             seconds=timing["total"], details=details,
                             warnings=tuple(kd_warnings((finetune_details or {}).get("history", []))))
        if log is not None:  # done: nothing to resume
            log.path.unlink(missing_ok=True)
        return final, report
    finally:
        if owns_group:
            dist_utils.destroy_process_group()


def _base_model(model: nn.Module) -> nn.Module:
    """A float32 CPU copy in eval mode: the original is never modified."""
    return copy.deepcopy(model).float().cpu().eval()
