"""The pruning stage: ``prune_model(model, data_cfg, PruneConfig(...)) -> (pruned_model, StageReport)``.

Its phases, each in its own function: the EagleEye search (:mod:`~yolocompress.compress.prune.search`:
dependency analysis ``graph``, L1 ``importance``, the candidate ``strategy`` space under the FLOPs ``cost``
budget, sub-nets built by ``apply`` and ``scoring`` with adaptive BN), the evaluations of the baseline and
the winner, the fine-tune (the ``finetune`` stage of :mod:`yolocompress.compress.finetune`), the ONNX
Runtime latencies and the report. Nothing here prints or writes files (the fine-tune's run folder is a
temporary directory unless ``finetune_dir`` is given; ``search_log`` asks for the record that lets a killed
search resume). The report follows the stage contract (:mod:`yolocompress.compress.stage`): snapshots of the
unpruned and the final model, and the search's own figures in ``details``. The settings and what the budget
means: :mod:`~yolocompress.compress.prune.config`.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch.nn as nn

from yolocompress.compress.distill.config import as_distill_config, kd_warnings
from yolocompress.compress.distill.feature import check_feature_layers
from yolocompress.compress.prune.apply import prune_channels
from yolocompress.compress.prune.config import PruneConfig
from yolocompress.compress.prune.search import (SearchResult, best_scored, plan_search, search,
                                                sensitivity_cost, time_side_by_side)
from yolocompress.compress.stage import Latency, ModelSnapshot, StageReport
from yolocompress.errors import InputError
from yolocompress.io.workdir import work_dir
from yolocompress.models.inputs import max_stride
from yolocompress.models.shapes import num_params
from yolocompress.progress import ProgressCallback

if TYPE_CHECKING:
    from yolocompress.profile.latency import LatencyResult

def _finite(value: Any) -> float | None:
    """``value`` as a float, ``None`` when it is NaN or infinite (reports store JSON-ready figures)."""
    v = float(value)
    return v if math.isfinite(v) else None


def _full_eval(model: nn.Module, data: Any, cfg: PruneConfig, on_progress: ProgressCallback | None = None
               ) -> tuple[dict[str, float], dict[str, float]]:
    """Full val-split evaluation: ``({map50, map50_95, fitness}, {class name: mAP50-95})``."""
    from yolocompress.engine.evaluator import evaluate_model

    batch = min(2 * cfg.search.eval_batch, 32)   # val.py's 32 (rectangular batches: the batch moves the mAP)
    r = evaluate_model(model, data, split="val", imgsz=cfg.imgsz, batch=batch,
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

    fc = FinetuneConfig(epochs=cfg.finetune.epochs, imgsz=cfg.imgsz, batch=cfg.finetune.batch,
                        nominal_batch=cfg.finetune.nominal_batch,
                        distill=cfg.finetune.distill if teacher is not None else 0.0, bf16=cfg.finetune.bf16,
                        channels_last=cfg.finetune.channels_last, seed=cfg.seed, device=cfg.device,
                        workers=cfg.workers)
    tuned, stage = finetune(model, data, fc, teacher=teacher, out_dir=cfg.finetune_dir,
                            resume=cfg.resume and cfg.finetune_dir is not None, on_progress=on_progress,
                            hyp=hyp)
    return tuned, dict(stage.details)


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
        scored for ``sensitivity``: score gained per GFLOP kept, ``score_per_gflop``, and/or per unit of
        predicted latency ratio kept, ``score_per_latency``, per searchable group; empty without guided
        candidates), ``sensitivity_cost`` (``"flops"``, ``"latency"`` or ``"both"``), ``score_precision``
        / ``probe_precision`` (``"fp32"`` or ``"bf16"``: what the candidates and the probes were scored in,
        ``SearchConfig.score_precision`` resolved on this CPU), ``budget`` (:func:`budget_summary`: the
        budget's kind and target, the chosen candidate's and the uniform strategy's predicted and measured
        latency ratios), ``preference`` (:func:`preference_summary`) and ``notes``. ONNX Runtime latencies
        (``before``/``after``, the ``budget``'s measured ratios) are measured when ``latency`` or
        ``target_latency``.
    """
    from yolocompress.engine import distributed as dist_utils

    cfg = config or PruneConfig()
    t_start = time.perf_counter()
    data, stride = _check_inputs(model, data_cfg, cfg)
    ctx = dist_utils.context_from_env()
    device = dist_utils.resolve_device(cfg.device, ctx)
    owns_group = dist_utils.init_process_group(ctx, device)
    try:
        base = _base_model(model)
        kd = as_distill_config(cfg.finetune.distill) if cfg.finetune.epochs > 0 else None
        if kd is not None and kd.feature_layers and kd.method in ("feature", "both"):
            # checked now, not after the search (pruning keeps layers and strides)
            check_feature_layers(base, kd.feature_layers)
        found = search(base, data, cfg, stride, device, ctx, on_progress)
        timing = dict(found.timing)
        final, measured = _evaluate_and_finetune(base, found.winner, data, cfg, hyp, timing, on_progress)
        latencies = _latencies(base, final, found, cfg, timing)
        timing["total"] = time.perf_counter() - t_start
        report = _report(base, final, cfg, found, measured, latencies, timing, ctx.world_size)
        if found.log is not None:  # done: nothing to resume
            found.log.path.unlink(missing_ok=True)
        return final, report
    finally:
        if owns_group:
            dist_utils.destroy_process_group()


def _check_inputs(model: nn.Module, data_cfg: Any, cfg: PruneConfig) -> tuple[Any, int]:
    """The ``DataConfig`` and the model's largest stride, once the model is unfused, its classes match the
    data set's and ``cfg.imgsz`` fits its stride (else ``InputError``)."""
    from yolocompress.compress.fuse import require_unfused
    from yolocompress.data.config import as_data_config

    require_unfused(model, "pruning")
    data = as_data_config(data_cfg)
    if int(getattr(model, "nc", data.nc)) != data.nc:
        raise InputError(f"the model predicts {model.nc} classes but the data set has {data.nc}")
    stride = max_stride(model)
    if cfg.imgsz % stride:
        raise InputError(f"imgsz {cfg.imgsz} must be a multiple of the model's stride {stride}")
    return data, stride


def _evaluate_and_finetune(base: nn.Module, winner: nn.Module, data: Any, cfg: PruneConfig, hyp: Any,
                           timing: dict[str, float], on_progress: ProgressCallback | None
                           ) -> tuple[nn.Module, dict[str, Any]]:
    """The final model (the winner, fine-tuned when ``cfg.finetune.epochs``) and its measurements:
    ``baseline`` / ``baseline_classes`` (``None`` without ``cfg.eval_baseline``), ``after_search``,
    ``after_finetune`` (``None`` without fine-tuning), ``final_classes`` and the fine-tune's ``finetune``
    details. Adds ``eval`` and ``finetune`` seconds to ``timing``."""
    t0 = time.perf_counter()
    baseline, baseline_classes = (_full_eval(base, data, cfg, on_progress) if cfg.eval_baseline
                                  else (None, None))
    after_search, final_classes = _full_eval(winner, data, cfg, on_progress)
    timing["eval"] = time.perf_counter() - t0
    after_finetune = finetune_details = None
    final = winner
    if cfg.finetune.epochs > 0:
        t0 = time.perf_counter()
        final, finetune_details = _finetune(winner, data, cfg, hyp, teacher=base, on_progress=on_progress)
        timing["finetune"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        after_finetune, final_classes = _full_eval(final, data, cfg, on_progress)
        timing["eval"] += time.perf_counter() - t0
    return final.cpu().eval(), {"baseline": baseline, "baseline_classes": baseline_classes,
                                "after_search": after_search, "after_finetune": after_finetune,
                                "final_classes": final_classes, "finetune": finetune_details}


def _latencies(base: nn.Module, final: nn.Module, found: SearchResult, cfg: PruneConfig,
               timing: dict[str, float]) -> dict[str, LatencyResult]:
    """ONNX Runtime latency (batch 1, ``cfg.latency_threads`` threads) of the unpruned model
    (``original``), the final one (``chosen``) and, when the chosen strategy is not the uniform one, the
    uniform strategy's sub-net (``uniform``), timed side by side
    (:func:`~yolocompress.profile.latency.interleaved_times`) so that their ratios hold on a busy machine;
    measured when ``cfg.latency`` or ``cfg.target_latency`` (else empty)."""
    from yolocompress.profile.latency import latency_from_times

    if not cfg.latency and cfg.target_latency is None:
        return {}
    t0 = time.perf_counter()
    plan = found.plan
    models = {"original": base, "chosen": final}
    if plan.strategies[found.chosen].counts != plan.uniform.counts:
        models["uniform"] = prune_channels(base, plan.graph, plan.space.keep(plan.uniform.counts))
    times = time_side_by_side({name: m.cpu().eval() for name, m in models.items()}, cfg.imgsz,
                              cfg.latency_threads, runs=30)[0]
    timing["latency"] = time.perf_counter() - t0
    return {name: latency_from_times(t, cfg.latency_threads, "onnxruntime", cfg.imgsz)
            for name, t in times.items()}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def budget_summary(cfg: PruneConfig, found: SearchResult, latencies: dict[str, LatencyResult]
                   ) -> dict[str, Any]:
    """The report's ``budget``: its ``kind`` (``latency``, ``gflops`` or ``ratio``) and ``target``, the
    chosen candidate's ``gflops_ratio`` (of the original's FLOPs), ``predicted_ratio`` (its latency as a
    fraction of the original's by the per-layer latency table; ``None`` without one), ``measured_ratio``
    (medians measured side by side; ``None`` when not measured), ``predicted_ms`` (the predicted ratio times
    the original's measured latency: the table's sum of convolutions overestimates a whole model, its
    ratio does not need to) and ``prediction_error`` (``measured / predicted - 1``); ``uniform``: the same
    ratios of the uniform strategy's sub-net; ``latency_cap``: ``"uniform"`` when a FLOPs budget also held
    every candidate to the uniform strategy's predicted latency (``SearchConfig.latency_cap``), else
    ``"none"``; ``round_to``: the kept widths' multiple (``PruneConfig.channels``, by default the CPU's channel
    block); ``narrow``: whether a group could also keep ``min_channels`` (also reported) below ``round_to``
    (``ChannelRules.narrow``); with a latency budget, ``latency_margin`` (the latency table's guard) and
    ``search_limit`` (the predicted ratio every candidate was held to: ``target / (1 + latency_margin)``);
    ``cpu`` and ``cpu_flags``: the CPU the latencies were measured on (``None`` and ``[]`` when none was
    measured)."""
    plan = found.plan
    chosen = plan.strategies[found.chosen]
    original = latencies["original"].median_ms if latencies else None
    measured = {name: _ratio(lat.median_ms, original) for name, lat in latencies.items()}
    if latencies and "uniform" not in latencies:  # the chosen one is the uniform strategy
        measured["uniform"] = measured["chosen"]
    kind, target = (("latency", cfg.target_latency) if cfg.target_latency is not None
                    else ("ratio", cfg.ratio) if cfg.ratio is not None else ("gflops", cfg.target_gflops))
    predicted, measured_ratio = chosen.latency, measured.get("chosen")
    return {
        "kind": kind, "target": target, "latency_cap": "uniform" if cfg.latency_capped else "none",
        "round_to": cfg.channels.round_to, "narrow": cfg.channels.narrow,
        "min_channels": cfg.channels.min_channels,
        "gflops_ratio": chosen.flops / plan.base_flops,
        "predicted_ratio": predicted, "measured_ratio": measured_ratio,
        "predicted_ms": None if predicted is None or original is None else predicted * original,
        "measured_ms": latencies["chosen"].median_ms if latencies else None, "original_ms": original,
        "prediction_error": None if predicted is None or measured_ratio is None
        else measured_ratio / predicted - 1.0,
        "uniform": {"gflops_ratio": plan.uniform.flops / plan.base_flops,
                    "predicted_ratio": plan.uniform.latency, "measured_ratio": measured.get("uniform")},
        "cpu": latencies["original"].cpu if latencies else None,
        "cpu_flags": list(latencies["original"].cpu_flags) if latencies else [],
        **({"latency_margin": plan.latency_margin, "search_limit": plan.limit.latency}
           if cfg.target_latency is not None else {})}


def preference_summary(cfg: PruneConfig, found: SearchResult) -> dict[str, Any]:
    """The report's ``preference``: what broke near-ties (``prefer``: ``accuracy`` or ``latency``, by
    *predicted* latency), the ``near_tie`` score tolerance, the best-scoring candidate's index and the
    chosen one's."""
    return {"prefer": cfg.search.prefer, "near_tie": cfg.search.near_tie,
            "by": "predicted latency" if cfg.search.prefer == "latency" else "score",
            "best_score_index": best_scored(found.candidates)["index"], "chosen": found.chosen}


def _report(base: nn.Module, final: nn.Module, cfg: PruneConfig, found: SearchResult,
            measured: dict[str, Any], latencies: dict[str, LatencyResult],
            timing: dict[str, float], ranks: int) -> StageReport:
    """The stage's report (see :func:`prune_model`)."""
    plan, graph = found.plan, found.plan.graph
    lat = {name: Latency.from_result(r) for name, r in latencies.items()}
    before = _snapshot(base, cfg, measured["baseline"], measured["baseline_classes"], lat.get("original"))
    after = _snapshot(final, cfg, measured["after_finetune"] or measured["after_search"],
                      measured["final_classes"], lat.get("chosen"))
    counts = plan.strategies[found.chosen].counts
    groups = [{"group": g.index, "name": g.name, "layer": g.layer_index, "channels": g.channels,
               "kept": counts.get(g.index, g.channels),
               "ratio": 1.0 - counts.get(g.index, g.channels) / g.channels,
               "excluded": g.index in plan.excluded, "searchable": g.index in plan.space.searchable}
              for g in graph.groups]
    cost = sensitivity_cost(cfg)
    sens_keys = {"latency": ("score_per_latency", 1.0), "flops": ("score_per_gflop", 1e9)}
    sens_rows = [{"group": g, "name": graph.groups[g].name, "layer": graph.groups[g].layer_index,
                  **{sens_keys[c][0]: None if not np.isfinite(v[j]) else float(v[j]) * sens_keys[c][1]
                     for c, v in found.sensitivity.items()}}
                 for j, g in enumerate(plan.space.searchable)] if found.probes else []
    search_s = timing.get("search", 0.0)
    fraction = plan.budget / plan.base_flops
    if cfg.target_latency is not None:
        note = (f"budget = a predicted latency of at most {cfg.target_latency:g} of the original's (the "
                f"uniform strategy within it has {fraction:.3f} of the original FLOPs)")
    else:
        budget = f"the uniform strategy at ratio {cfg.ratio}" if cfg.ratio else "target GFLOPs"
        note = f"budget = {fraction:.3f} of the original FLOPs ({budget})"
        if cfg.latency_capped:
            note += ", every candidate's predicted latency at most the uniform strategy's"
    details = {
        "imgsz": cfg.imgsz, "budget_gflops": plan.budget / 1e9, "chosen": found.chosen,
        "after_search": measured["after_search"], "after_finetune": measured["after_finetune"],
        "finetune": measured["finetune"], "groups": groups, "candidates": found.candidates,
        "candidates_per_minute": 60.0 * len(found.candidates) / search_s if search_s > 0 else None,
        "timing_s": timing, "distributed_ranks": ranks, "probes": found.probes, "sensitivity": sens_rows,
        "score_precision": found.precision, "probe_precision": found.probe_precision,
        "sensitivity_cost": cost,
        "budget": budget_summary(cfg, found, latencies), "preference": preference_summary(cfg, found),
        "notes": [note]}
    return StageReport(stage="prune", config=cfg.to_dict(), before=before, after=after,
                       seconds=timing["total"], details=details,
                       warnings=tuple(kd_warnings((measured["finetune"] or {}).get("history", []))))


def _base_model(model: nn.Module) -> nn.Module:
    """A float32 CPU copy in eval mode: the original is never modified."""
    return copy.deepcopy(model).float().cpu().eval()


__all__ = ["PruneConfig", "ort_latency", "plan_search", "prune_model"]
