"""EagleEye pieces and the ``prune_model`` loop on a tiny model and a tiny synthetic data set."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from yolocompress.compress.prune import PruneConfig, adaptive_bn, channel_graph, prune_model
from yolocompress.compress.prune.cost import CostModel
from yolocompress.compress.prune.scoring import SubnetScorer, cache_data
from yolocompress.compress.prune.strategy import Probe, Strategy, StrategySpace, group_sensitivity
from yolocompress.compress.stage import StageReport
from yolocompress.errors import InputError
from yolocompress.models.shapes import shape_spec

from .conftest import tiny_model

# guided=0: no probe phase (about 100 probes per search) unless a test is about the guided candidates
FAST = dict(imgsz=64, candidates=4, guided=0, calib_batches=2, calib_batch=4, eval_images=8, eval_batch=4,
            finetune_epochs=0, min_channels=1, round_to=1, eval_baseline=False)


def test_adaptive_bn_changes_statistics_not_weights():
    model = tiny_model("yolov5n", width=0.125)
    weights = {k: v.clone() for k, v in model.named_parameters()}
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=g) for _ in range(3)]
    adaptive_bn(model, batches)
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters())
    assert all(not torch.equal(m.running_mean, b) for m, b in zip(bns, before))
    assert all(m.momentum == 0.03 for m in bns) and not model.training
    assert all(int(m.num_batches_tracked) == 3 for m in bns)
    # a cumulative average: the stem BN's running mean is the mean of the three batch means
    stem = model.model[0]
    means = [stem.conv(b.float() / 255).mean((0, 2, 3)) for b in batches]
    assert torch.allclose(stem.bn.running_mean, torch.stack(means).mean(0), atol=1e-5)


def test_strategies_meet_the_budget():
    from yolocompress.compress.prune import ChannelRules, l1_importance

    model = tiny_model("yolov5n", width=0.25)
    graph = channel_graph(model)
    cost = CostModel(model, graph, 64)
    space = StrategySpace(graph, cost, l1_importance(model, graph), ChannelRules(8, 8),
                                   [g.index for g in graph.groups], max_ratio=0.8)
    budget = space.uniform(0.5).flops
    rng = np.random.default_rng(0)
    samples = [space.sample(rng, budget) for _ in range(5)]
    assert all(s.flops <= budget for s in samples)
    assert all(s.flops > 0.9 * budget for s in samples)  # scaled up to the budget, not far below it
    assert len({tuple(s.counts.values()) for s in samples}) == 5
    with pytest.raises(InputError, match="impossible budget"):
        space.sample(rng, 0.5 * space.smallest_flops())


def test_sampling_spread_keeps_strategies_near_uniform():
    from yolocompress.compress.prune import ChannelRules, l1_importance

    model = tiny_model("yolov5n", width=0.25)
    graph = channel_graph(model)
    space = StrategySpace(graph, CostModel(model, graph, 64), l1_importance(model, graph),
                                   ChannelRules(1, 1), [g.index for g in graph.groups], max_ratio=0.8)
    budget = space.uniform(0.5).flops
    rng = np.random.default_rng(0)
    near = [space.sample(rng, budget, spread=0.2) for _ in range(5)]
    wide = [space.sample(rng, budget) for _ in range(5)]
    assert all(s.flops <= budget for s in near + wide)
    assert all(s.ratios.min() >= 0.8 * s.ratios.max() - 1e-9 for s in near)  # U[0.8, 1] directions
    assert any(s.ratios.min() < 0.5 * s.ratios.max() for s in wide)          # the paper's U[0, 1]
    with pytest.raises(InputError, match="spread"):
        space.sample(rng, budget, spread=0.0)
    with pytest.raises(InputError, match="spread"):
        PruneConfig.from_flat(ratio=0.5, spread=1.5)


def _space(width: float = 0.25, rules=(1, 1)):
    from yolocompress.compress.prune import ChannelRules, l1_importance

    model = tiny_model("yolov5n", width=width)
    graph = channel_graph(model)
    return StrategySpace(graph, CostModel(model, graph, 64), l1_importance(model, graph),
                                  ChannelRules(*rules), [g.index for g in graph.groups], max_ratio=0.8)


def test_probes_move_one_group_each_way():
    space = _space(rules=(8, 8))
    center = space.uniform(0.5)
    probes = space.probes(center, 0.25)
    assert probes and {p.direction for p in probes} == {"less", "more"}
    for p in probes:
        changed = [g for g in space.searchable if p.strategy.counts[g] != center.counts[g]]
        assert changed == [space.searchable[p.position]]           # exactly its own group moved
        grew = p.strategy.counts[changed[0]] > center.counts[changed[0]]
        assert grew == (p.direction == "less")
        assert (p.strategy.flops > center.flops) == (p.direction == "less")
    # a group already at its 8-channel floor has no "more" probe (it would round to the same net)
    floor = [j for j, g in enumerate(space.searchable) if center.counts[g] == 8]
    assert floor and not any(p.position in floor and p.direction == "more" for p in probes)
    with pytest.raises(InputError, match="probe step"):
        space.probes(center, 1.0)


def test_group_sensitivity_is_score_per_flop_averaged_over_both_moves():
    s = lambda flops: Strategy(np.zeros(3), {}, flops)  # noqa: E731
    center = s(100.0)
    probes = [Probe(0, "less", s(120.0)), Probe(0, "more", s(90.0)),
              Probe(1, "more", s(80.0))]
    sens = group_sensitivity(center, 0.5, probes, [0.7, 0.45, 0.3], 3)
    assert sens[0] == pytest.approx((0.2 / 20 + 0.05 / 10) / 2)   # gain per FLOP kept, both directions
    assert sens[1] == pytest.approx(0.2 / 20) and np.isnan(sens[2])
    with pytest.raises(ValueError):
        group_sensitivity(center, 0.5, probes, [0.7], 3)


def test_group_sensitivity_per_latency_divides_by_the_predicted_latency_change():
    """``cost="latency"``: score per unit of predicted latency ratio; a probe that leaves the predicted
    latency as it is (channels within one block) gives nothing; ``auto`` is latency when it is bounded."""
    from yolocompress.compress.prune import PruneConfig
    from yolocompress.compress.prune.search import sensitivity_cost, sensitivity_costs

    s = lambda flops, latency: Strategy(np.zeros(3), {}, flops, latency=latency)  # noqa: E731
    center = s(100.0, 0.50)
    probes = [Probe(0, "less", s(120.0, 0.60)), Probe(0, "more", s(90.0, 0.45)),
              Probe(1, "more", s(80.0, 0.50)), Probe(2, "less", s(140.0, 0.52))]
    sens = group_sensitivity(center, 0.5, probes, [0.7, 0.45, 0.3, 0.6], 3, cost="latency")
    assert sens[0] == pytest.approx((0.2 / 0.10 + 0.05 / 0.05) / 2)
    assert np.isnan(sens[1]) and sens[2] == pytest.approx(0.1 / 0.02)
    by_flops = group_sensitivity(center, 0.5, probes, [0.7, 0.45, 0.3, 0.6], 3)
    assert by_flops[1] == pytest.approx(0.2 / 20)
    assert by_flops[2] < by_flops[0] and sens[2] > sens[0]   # the order flips
    with pytest.raises(ValueError, match="predicted latency"):
        group_sensitivity(s(100.0, None), 0.5, probes, [0.7, 0.45, 0.3, 0.6], 3, cost="latency")
    assert sensitivity_cost(PruneConfig.from_flat(ratio=0.5)) == "flops"
    assert sensitivity_cost(PruneConfig.from_flat(ratio=0.5, latency_cap="uniform")) == "latency"
    assert sensitivity_cost(PruneConfig.from_flat(target_latency=0.5)) == "both"
    assert sensitivity_costs(PruneConfig.from_flat(target_latency=0.5)) == ("latency", "flops")
    assert sensitivity_costs(PruneConfig.from_flat(ratio=0.5, latency_cap="uniform")) == ("latency",)
    assert sensitivity_cost(PruneConfig.from_flat(target_latency=0.5, sensitivity_cost="flops")) == "flops"
    with pytest.raises(InputError, match="sensitivity_cost"):
        PruneConfig.from_flat(ratio=0.5, sensitivity_cost="params")


def test_guided_strategies_prune_the_least_sensitive_groups_most():
    space = _space()
    budget = space.uniform(0.5).flops
    rng = np.random.default_rng(0)
    sens = rng.normal(size=len(space.searchable))
    sens[3] = np.nan
    guided = space.guided(sens, budget, 4)
    assert len(guided) == 4 and all(g.kind == "guided" and g.flops <= budget for g in guided)
    assert all(g.flops > 0.8 * budget for g in guided)   # scaled up to the budget (tiny groups: coarse steps)
    spans = [np.ptp(g.ratios) for g in guided]
    assert spans == sorted(spans) and spans[0] < spans[-1]         # from near-uniform to uneven
    last = guided[-1].ratios                                        # tau = 1: ratio ~ rank, before clipping
    known = np.flatnonzero(np.isfinite(sens))
    by_sensitivity = known[np.argsort(-sens[known])]
    top = space.searchable[by_sensitivity[0]]
    assert guided[-1].counts[top] == space.graph.groups[top].channels  # the most sensitive: kept whole
    assert np.all(np.diff(last[by_sensitivity]) >= -1e-12)          # less sensitive: pruned at least as much
    assert [g.counts for g in space.guided(sens, budget, 4)] == [g.counts for g in guided]  # deterministic
    with pytest.raises(ValueError, match="one sensitivity per searchable group"):
        space.guided(sens[:-1], budget, 2)


def test_guided_candidates_come_from_scored_probes(tiny_data):
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    neck = {**FAST, "exclude": tuple(str(i) for i in range(9))}   # backbone excluded: fewer probes, faster
    cfg = PruneConfig.from_flat(ratio=0.5, **{**neck, "candidates": 5, "guided": 2})
    _, report = prune_model(model, tiny_data, cfg)
    d = report.details
    kinds = [c["kind"] for c in d["candidates"]]
    assert kinds == ["uniform", "random", "random", "guided", "guided"]
    n_groups = sum(g["searchable"] for g in d["groups"])
    assert len(d["sensitivity"]) == n_groups and n_groups < d["probes"] <= 2 * n_groups + 1
    assert d["timing_s"]["probes"] > 0
    _, plain = prune_model(model, tiny_data,
                           PruneConfig.from_flat(ratio=0.5, **{**neck, "candidates": 5, "guided": 0}))
    p = plain.details
    assert [c["kind"] for c in p["candidates"]] == ["uniform"] + ["random"] * 4
    assert p["probes"] == 0 and p["sensitivity"] == [] and "probes" not in p["timing_s"]


def test_search_keeps_the_best_candidate_and_respects_the_budget(tiny_data, monkeypatch):
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    # untrained models score 0 everywhere: give every candidate a distinct score (its parameter count)
    real_call = SubnetScorer.__call__

    def scored(self, sub, recalibrate=True):
        s = real_call(self, sub, recalibrate)
        s.map50_95 = float(sum(p.numel() for p in sub.parameters())) / 1e6
        return s

    monkeypatch.setattr(SubnetScorer, "__call__", scored)
    pruned, report = prune_model(model, tiny_data, PruneConfig.from_flat(ratio=0.5, **FAST))
    details = report.details
    scores = [c["score"] for c in details["candidates"]]
    chosen = details["chosen"]
    assert len(scores) == 4 and details["candidates"][0]["kind"] == "uniform"
    assert chosen == int(np.argmax(scores)) and details["candidates"][chosen]["chosen"]
    assert all(c["gflops"] <= details["budget_gflops"] * (1 + 1e-9) for c in details["candidates"])
    assert report.after.gflops == pytest.approx(details["candidates"][chosen]["gflops"], rel=1e-9)
    assert report.after.params == sum(p.numel() for p in pruned.parameters())
    assert all(p.is_contiguous() for p in pruned.parameters())  # scored channels-last, returned as usual
    assert sum(p.numel() for p in pruned.parameters()) == pytest.approx(scores[chosen] * 1e6)
    d = report.to_dict()["details"]
    assert {"bn_recalibration", "inference", "nms_map", "search"} <= set(d["timing_s"])
    assert d["candidates_per_minute"] > 0 and len(d["groups"]) == len(channel_graph(model).groups)


def test_report_is_a_stage_report_that_round_trips_through_json(tiny_data):
    from yolocompress.profile import gflops

    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    cfg = PruneConfig.from_flat(ratio=0.5, **{**FAST, "candidates": 2, "guided": 0, "eval_baseline": True,
                                    "latency": True, "latency_threads": 1})
    pruned, r = prune_model(model, tiny_data, cfg)
    assert isinstance(r, StageReport) and r.stage == r.name == "prune" and r.warnings == ()
    assert r.config == cfg.to_dict() and r.seconds >= r.details["timing_s"]["search"] > 0
    assert StageReport.from_dict(json.loads(json.dumps(r.to_dict()))).to_dict() == r.to_dict()
    assert r.after.params == sum(p.numel() for p in pruned.parameters()) < r.before.params
    assert r.before.params == sum(p.numel() for p in model.parameters())
    assert r.after.gflops == pytest.approx(gflops(pruned, 64)) and r.before.imgsz == r.after.imgsz == 64
    assert r.before.map50_95 is not None and r.after.map50_95 == r.details["after_search"]["map50_95"]
    assert r.after.per_class and set(r.after.per_class) <= set(tiny_data.names)
    assert r.before.per_class and set(r.before.per_class) <= set(tiny_data.names)
    for snap in (r.before, r.after):
        lat = snap.latency["onnxruntime"]
        assert lat.backend == "onnxruntime" and lat.threads == 1 and lat.median_ms > 0
    assert {"imgsz", "budget_gflops", "chosen", "after_search", "after_finetune", "groups", "candidates",
            "candidates_per_minute", "timing_s", "distributed_ranks", "probes", "sensitivity",
            "notes", "finetune", "budget", "preference", "score_precision",
            "probe_precision", "sensitivity_cost"} == set(r.details)
    assert r.details["after_finetune"] is None and r.details["distributed_ranks"] == 1


def test_target_gflops_and_exclusions(tiny_data):
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    from yolocompress.profile import gflops

    target = 0.75 * gflops(model, 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, report = prune_model(model, tiny_data, PruneConfig.from_flat(ratio=None, target_gflops=target,
                                                               exclude=("0", "model.2.cv1"), **FAST))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the input is not modified
    assert gflops(pruned, 64) <= target
    for g in report.details["groups"]:
        if g["layer"] == 0 or g["name"].startswith("model.2.cv1"):
            assert g["excluded"] and g["kept"] == g["channels"]
    assert pruned.model[0].conv.out_channels == model.model[0].conv.out_channels
    with pytest.raises(InputError, match="matches no prunable layer"):
        prune_model(model, tiny_data, PruneConfig.from_flat(ratio=0.5, exclude=("model.99",), **FAST))
    with pytest.raises(InputError, match="impossible budget"):
        prune_model(model, tiny_data,
                    PruneConfig.from_flat(ratio=None, target_gflops=2 * gflops(model, 64), **FAST))


@pytest.mark.parametrize("bad", [dict(ratio=0.0), dict(ratio=1.0), dict(ratio=0.5, target_latency=0.5),
                                 dict(ratio=0.5, target_gflops=1.0), dict(candidates=0), dict(imgsz=50),
                                 dict(guided=-1), dict(probe_step=0.0), dict(probe_step=1.0)])
def test_config_validation(bad):
    with pytest.raises(InputError):
        PruneConfig.from_flat(**bad)


def test_one_budget_given_replaces_the_default_ratio():
    from yolocompress.compress.prune.config import DEFAULT_RATIO

    assert PruneConfig().ratio == DEFAULT_RATIO == PruneConfig(ratio=None).ratio
    by_latency, by_flops = PruneConfig(target_latency=0.4), PruneConfig.from_flat(target_gflops=1.5)
    assert (by_latency.ratio, by_latency.target_latency) == (None, 0.4)
    assert (by_flops.ratio, by_flops.target_gflops) == (None, 1.5)
    with pytest.raises(InputError, match="got ratio and target_gflops"):
        PruneConfig(ratio=DEFAULT_RATIO, target_gflops=1.5)


def test_fused_model_is_refused(tiny_data):
    from yolocompress.compress.fuse import fuse

    with pytest.raises(InputError, match="fused"):
        prune_model(fuse(tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)), tiny_data,
                    PruneConfig.from_flat(ratio=0.5, **FAST))


def test_same_seed_same_result_and_finetune_keeps_architecture(tiny_data):
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    neck = tuple(str(i) for i in range(9))   # the backbone excluded: fewer probes, the same checks
    cfg = PruneConfig.from_flat(ratio=0.4, **{**FAST, "candidates": 3, "guided": 1, "finetune_epochs": 1,
                                              "finetune_batch": 4,
                                              "probe_sides": "less"}, exclude=neck)  # the probes repeat too
    a, ra = prune_model(model, tiny_data, cfg)
    b, rb = prune_model(model, tiny_data, cfg)
    assert shape_spec(a) == shape_spec(b)
    assert [c["gflops"] for c in ra.details["candidates"]] == [c["gflops"] for c in rb.details["candidates"]]
    assert ra.details["after_finetune"] == rb.details["after_finetune"]
    assert ra.details["after_search"] == rb.details["after_search"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert shape_spec(a) != shape_spec(model)   # fine-tuned, still pruned
    assert sum(p.numel() for p in a.parameters()) < sum(p.numel() for p in model.parameters())
    c, rc = prune_model(model, tiny_data,
                        PruneConfig.from_flat(ratio=0.4, **{**FAST, "candidates": 3, "seed": 1}, exclude=neck))
    assert [x["gflops"] for x in rc.details["candidates"][1:]] != \
        [x["gflops"] for x in ra.details["candidates"][1:]]


def test_scored_images_are_training_images_disjoint_from_calibration(tiny_data):
    from yolocompress.data import build_eval_loader

    cache = cache_data(tiny_data, 64, 32, calib_batches=2, calib_batch=4, eval_images=8, eval_batch=4,
                                seed=0)
    calib = torch.cat(cache.calib)
    scored = torch.cat([b[0] for b in cache.eval_batches])
    assert cache.calib_images == 8 and cache.eval_images == 8
    train = build_eval_loader(tiny_data, "train", imgsz=64, batch=4, stride=32, rect=False).dataset
    everything = torch.stack([train[i][0] for i in range(len(train))])

    def rows(batch):  # index of each image in the training split
        return {int((everything == img).flatten(1).all(1).nonzero()[0]) for img in batch}

    assert len(rows(calib)) == 8 and len(rows(scored)) == 8 and not rows(calib) & rows(scored)
    val = cache_data(tiny_data, 64, 32, 2, 4, 8, 4, seed=0, eval_split="val")
    assert val.eval_images == 8 and not torch.equal(torch.cat([b[0] for b in val.eval_batches]), scored)


def test_fast_scoring_runs_a_fused_onednn_copy_with_the_same_outputs(tiny_data):
    from yolocompress.compress.onednn import OneDNNConvAct

    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.25)
    cache = cache_data(tiny_data, 64, 32, 2, 4, 8, 4, seed=0)
    names = [str(i) for i in range(tiny_data.nc)]
    fast = SubnetScorer(cache, tiny_data.nc, names)._inference_model(model)
    assert any(isinstance(m, OneDNNConvAct) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy; the model keeps BN
    x = cache.eval_batches[0][0].float() / 255
    with torch.inference_mode():
        want, got = model(x)[0], fast(x)[0]
    assert ((got - want).abs().max() / want.abs().max()) <= 1e-5
    plain = SubnetScorer(cache, tiny_data.nc, names, fast_inference=False)
    assert plain._inference_model(model) is model


def test_finetune_distills_from_the_unpruned_model(tiny_data, monkeypatch):
    """``distill > 0`` hands the Trainer an output-distillation term whose teacher is the unpruned model."""
    from yolocompress.compress.distill.output import OutputDistillation
    from yolocompress.engine import trainer as trainer_module

    seen = []

    class Spy(trainer_module.Trainer):
        def __init__(self, *args, extra_losses=(), **kwargs):
            seen.append(list(extra_losses))
            super().__init__(*args, extra_losses=extra_losses, **kwargs)

    monkeypatch.setattr(trainer_module, "Trainer", Spy)
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    cfg = PruneConfig.from_flat(ratio=0.4, **{**FAST, "candidates": 2, "finetune_epochs": 1,
                                              "finetune_batch": 4, "distill": 2.0})
    pruned, report = prune_model(model, tiny_data, cfg)
    (terms,) = seen
    (kd,) = terms
    assert isinstance(kd, OutputDistillation) and kd.weight == 2.0
    assert shape_spec(kd.teacher) == shape_spec(model) != shape_spec(pruned)
    assert report.details["after_finetune"] is not None
    with pytest.raises(InputError):
        PruneConfig.from_flat(ratio=0.5, distill=-1.0)


def test_grouped_l1_adds_the_weights_that_read_a_unit_and_its_batchnorm_scales():
    """``grouped_l1_importance`` = ``l1_importance`` (the producing filters) + every dense layer's input
    slice reading the unit + its BatchNorm scales: with those zeroed for one unit, nothing is added to that
    unit and the same to every other; ``search.importance`` picks it."""
    from yolocompress.compress.prune import channel_graph, l1_importance
    from yolocompress.compress.prune.importance import IMPORTANCES, grouped_l1_importance

    model = tiny_model("yolov5n")
    graph = channel_graph(model)
    l1, grouped = l1_importance(model, graph), grouped_l1_importance(model, graph)
    prunable = np.flatnonzero(~graph.unit_fixed)
    assert (grouped[prunable] > l1[prunable]).all()
    unit = int(graph.unit_of[graph.layers[3].out_ids[0]])
    with torch.no_grad():
        for rec in graph.layers:
            if rec.kind in ("conv", "linear"):
                model.get_submodule(rec.name).weight[:, np.flatnonzero(graph.unit_of[rec.in_ids] == unit)] = 0
        for norm in graph.norms:
            model.get_submodule(norm.name).weight[np.flatnonzero(graph.unit_of[norm.ids] == unit)] = 0
    # (zeroing a consumer's input slice also lowers that consumer's own filters' L1: compare what is added)
    added, added_after = grouped - l1, grouped_l1_importance(model, graph) - l1_importance(model, graph)
    assert added[unit] > 0 and added_after[unit] == pytest.approx(0.0, abs=1e-12)
    others = np.arange(len(added)) != unit
    assert np.allclose(added_after[others], added[others], rtol=1e-12, atol=1e-12)
    assert IMPORTANCES["grouped_l1"] is grouped_l1_importance
    with pytest.raises(InputError, match="importance"):
        PruneConfig.from_flat(ratio=0.5, importance="l2")


def test_iterative_grouped_l1_removes_what_the_pruned_subnets_grouped_l1_ranks_lowest():
    """Step ``t`` of ``iterative_grouped_l1_importance`` removes, in every group, the units that
    ``grouped_l1_importance`` of the sub-net actually pruned by steps ``1 .. t-1`` ranks lowest (units mapped
    between the two graphs through their BatchNorm channels); a unit removed later is worth more."""
    from yolocompress.compress.prune import prune_channels
    from yolocompress.compress.prune.importance import (IMPORTANCES, grouped_l1_importance,
                                                        iterative_grouped_l1_importance)

    model = tiny_model("yolov5n", width=0.5)
    graph = channel_graph(model)
    steps, last = 4, 0.6
    value = iterative_grouped_l1_importance(model, graph, steps=steps, last_ratio=last)
    keep = graph.full_keep()
    for t in range(1, steps + 1):
        sub = prune_channels(model, graph, keep)
        sub_graph = channel_graph(sub)
        old_of_new = np.full(sub_graph.n_units, -1)
        for old, new in zip(graph.norms, sub_graph.norms):
            assert old.name == new.name
            kept_old = graph.unit_of[old.ids][keep[graph.unit_of[old.ids]]]
            old_of_new[sub_graph.unit_of[new.ids]] = kept_old
        score = np.full(graph.n_units, np.nan)
        mapped = old_of_new >= 0
        score[old_of_new[mapped]] = grouped_l1_importance(sub, sub_graph)[mapped]
        removed_now = np.zeros(graph.n_units, dtype=bool)
        for group in graph.groups:
            alive = group.units[keep[group.units]]
            target = max(1, round(len(group.units) * (1 - last * t / steps)))
            lowest = alive[np.argsort(score[alive], kind="stable")][:len(alive) - target]
            assert set(lowest.tolist()) == set(group.units[np.floor(value[group.units]) == t].tolist())
            removed_now[lowest] = True
        assert removed_now.any()
        keep = keep & ~removed_now
    survivors = np.concatenate([g.units[keep[g.units]] for g in graph.groups])
    assert (np.floor(value[survivors]) == steps + 1).all()
    # not the one-shot order: the removal order differs from grouped L1's somewhere
    one_shot = grouped_l1_importance(model, graph)
    assert any(not np.array_equal(np.argsort(value[g.units]), np.argsort(one_shot[g.units]))
               for g in graph.groups)
    assert IMPORTANCES["iterative_grouped_l1"] is iterative_grouped_l1_importance
