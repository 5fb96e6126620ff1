"""A latency budget for pruning (issue 18): the per-layer latency table prices strategies, every candidate of
a latency-budgeted search fits the budget, an unreachable one is exit 2, ``--prefer latency`` breaks
near-ties. The table is built from a deterministic stub timer (no real timing of layers here)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from yolocompress.cli import main
from yolocompress.compress.prune import ChannelRules, PruneConfig, channel_graph, prune_channels, prune_model
from yolocompress.compress.prune.cost import LatencyCost
from yolocompress.compress.prune import search as search_module
from yolocompress.compress.prune.search import (CALIBRATION_RANDOM, CALIBRATION_RATIOS, CALIBRATION_SESSIONS,
                                                add_guided, calibration_subnets, choose_candidate, plan_search)
from yolocompress.compress.prune.strategy import Strategy
from yolocompress.errors import InputError
from yolocompress.io.checkpoint import save_model
from yolocompress.profile import latency_table as latency_table_module
from yolocompress.profile.cpu import cpu_flags, cpu_name
from yolocompress.profile.latency_table import LayerShape, channel_block, latency_table

from .conftest import tiny_model

FAST = dict(imgsz=64, candidates=6, guided=0, calib_batches=2, calib_batch=4, eval_images=8, eval_batch=4,
            finetune_epochs=0, min_channels=1, round_to=1, eval_baseline=False)


class StubTimer:
    """Milliseconds from the layer's multiply-accumulates (a 20x20 layer costs more per MAC than a larger
    one, as small layers do on a CPU) plus a fixed cost per call; counts its calls."""

    def __init__(self, threads: int = 2):
        self.calls = 0

    def __call__(self, s: LayerShape) -> float:
        self.calls += 1
        macs = s.c_in * s.c_out * s.kernel[0] * s.kernel[1] * s.height * s.width / (
            s.stride[0] * s.stride[1] * s.groups)
        return 0.02 + macs / 1e6 * (2.0 if s.height <= 8 else 1.0)


STUB_FIXED_MS = 0.3  # what the stub's whole-model measurement adds to the convolutions' sum


class StubWholeModel:
    """``search.measured_ratios`` replaced: the stub table's sums plus ``STUB_FIXED_MS`` that does not shrink
    (so the calibration must find it); counts its calls and the sub-nets of the last one."""

    def __init__(self):
        self.calls = 0
        self.names: list[str] = []

    def ratio(self, model, subnet, imgsz):
        table = latency_table(model, imgsz, round_to=1, timer=StubTimer(), cpu="stub", cache=False)
        return (table.predict(subnet) + STUB_FIXED_MS) / (table.predict(model) + STUB_FIXED_MS)

    def __call__(self, model, subnets, imgsz, threads, sessions=3):
        self.calls += 1
        self.names, self.sessions = list(subnets), sessions
        return {name: self.ratio(model, sub, imgsz) for name, sub in subnets.items()}


@pytest.fixture(autouse=True)
def stub_timer(tmp_path, monkeypatch):
    """Every latency table here is measured by ``StubTimer`` (the default timer replaced) into a fresh
    cache folder with widths priced as they are (no channel block), and calibrated by ``StubWholeModel``."""
    monkeypatch.setenv("YOLOCOMPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(latency_table_module, "OrtLayerTimer", StubTimer)
    monkeypatch.setattr(latency_table_module, "channel_block", lambda flags=None: 1)  # the same on any CPU
    whole = StubWholeModel()
    monkeypatch.setattr(search_module, "measured_ratios", whole)
    return whole


@pytest.fixture(scope="module")
def model():
    return tiny_model("yolov5n", nc=6, width=0.25)


def test_latency_cost_of_a_keep_mask_is_the_tables_prediction_of_the_built_subnet(model):
    cfg = PruneConfig.from_flat(ratio=0.5, **FAST)
    plan = plan_search(model, cfg)
    graph = channel_graph(model)
    table = latency_table(model, 64, round_to=1, timer=StubTimer(), cpu="stub", cache=False)
    cost = LatencyCost(table, graph)
    assert cost.ratio(graph.full_keep()) == pytest.approx(1.0)
    for s in plan.strategies:
        keep = plan.space.keep(s.counts)
        sub = prune_channels(model, plan.graph, keep)
        assert cost.ms(keep) == pytest.approx(table.predict(sub), rel=1e-9)
        assert cost.ratio(keep) == pytest.approx(table.ratio(sub, model), rel=1e-9)


def test_the_table_is_calibrated_once_by_subnets_measured_whole_and_cached(model, stub_timer):
    cfg = PruneConfig.from_flat(ratio=None, target_latency=0.5, **FAST)
    plan = plan_search(model, cfg)
    assert stub_timer.calls == 1 and stub_timer.sessions == CALIBRATION_SESSIONS == 7   # the median of 7 sets
    table = plan.space.latency.table
    calibration = table.calibration
    # f = (m - p) / (1 - p) recovers the share of the original's stub latency that does not shrink
    full = latency_table(model, 64, round_to=1, timer=StubTimer(), cpu="stub", cache=False).predict(model)
    assert calibration["fixed_fraction"] == pytest.approx(STUB_FIXED_MS / (full + STUB_FIXED_MS), rel=1e-9)
    # uniform sub-nets at several ratios and uneven ones, all measured in one side-by-side call
    assert calibration["subnets"] == stub_timer.names == [f"uniform {r:g}" for r in CALIBRATION_RATIOS] + [
        f"random {k}" for k in range(CALIBRATION_RANDOM)]
    assert len(set(map(tuple, calibration_subnets(plan.space).values()))) == len(stub_timer.names)
    assert calibration["errors"] == pytest.approx([0.0] * len(stub_timer.names), abs=1e-9)
    # so every strategy's predicted ratio is the stub's whole-model ratio, not the plain sums'
    for s in plan.strategies[:3]:
        sub = prune_channels(model, plan.graph, plan.space.keep(s.counts))
        assert s.latency == pytest.approx(stub_timer.ratio(model, sub, 64), rel=1e-9)
    assert 0.45 < plan.strategies[0].latency <= 0.5
    # cached with the table: a second search measures nothing
    calls = stub_timer.calls
    again = plan_search(model, cfg)
    assert stub_timer.calls == calls
    assert again.space.latency.table.measured == 0
    assert again.space.latency.table.calibration == calibration
    assert json.loads(table.path.read_text())["calibration"] == calibration


def test_a_cached_table_without_a_calibration_is_calibrated_and_rewritten(model, stub_timer):
    table = latency_table(model, 64, threads=2, round_to=1)  # measured and cached, not calibrated
    assert table.calibration is None and json.loads(table.path.read_text())["calibration"] is None
    plan_search(model, PruneConfig.from_flat(ratio=0.5, latency_cap="uniform", **FAST))
    assert stub_timer.calls == 1
    assert json.loads(table.path.read_text())["calibration"]["fixed_fraction"] > 0


def test_every_candidate_of_a_latency_budget_fits_it_and_the_search_is_deterministic(model):
    cfg = PruneConfig.from_flat(ratio=None, target_latency=0.5, **{**FAST, "candidates": 8, "guided": 2})
    plan = plan_search(model, cfg)
    add_guided(plan, np.random.default_rng(1).random(len(plan.space.searchable)))
    assert [s.kind for s in plan.strategies] == ["uniform"] + ["random"] * 5 + ["guided"] * 2
    assert all(s.latency is not None and s.latency <= 0.5 for s in plan.strategies)
    assert all(s.latency > 0.45 for s in plan.strategies)  # scaled up to the budget, not far below it
    assert len({tuple(s.counts.values()) for s in plan.strategies}) == len(plan.strategies)
    # the uniform strategy is the least pruned uniform one within the budget
    less = plan.space.uniform(float(plan.uniform.ratios[0]) - 0.02)
    assert less.latency > 0.5 and plan.budget == plan.uniform.flops
    # the random ones are not held to the uniform one's FLOPs: some spend more FLOPs in cheap layers
    assert max(s.flops for s in plan.strategies) > plan.uniform.flops
    again = plan_search(model, cfg)
    assert [s.counts for s in again.strategies] == [s.counts for s in plan.strategies[:6]]


def test_a_latency_budget_shares_the_guided_candidates_between_both_rankings(model):
    cfg = PruneConfig.from_flat(ratio=None, target_latency=0.5, **{**FAST, "candidates": 8, "guided": 5})
    plan = plan_search(model, cfg)
    n = len(plan.space.searchable)
    rng = np.random.default_rng(1)
    per_latency, per_flop = rng.random(n), rng.random(n)
    add_guided(plan, {"latency": per_latency, "flops": per_flop})
    kinds = [s.kind for s in plan.strategies]
    assert kinds == ["uniform"] + ["random"] * 2 + ["guided-latency"] * 3 + ["guided-flops"] * 2
    assert all(s.latency <= 0.5 for s in plan.strategies)
    # each ranking's candidates are what that ranking alone builds (the same taus for its share)
    assert [s.counts for s in plan.strategies[3:6]] == [
        s.counts for s in plan.space.guided(per_latency, plan.limit, 3)]
    assert [s.counts for s in plan.strategies[6:]] == [
        s.counts for s in plan.space.guided(per_flop, plan.limit, 2)]


def test_a_budget_keeps_the_margin_of_the_most_under_predicted_calibration_subnet(model, stub_timer,
                                                                                  monkeypatch):
    exact = stub_timer.__call__

    def one_slow(model_, subnets, imgsz, threads, sessions=3):  # one calibration sub-net runs 8% slower
        ratios = exact(model_, subnets, imgsz, threads, sessions)
        return {name: r * (1.08 if name == "random 1" else 1.0) for name, r in ratios.items()}

    monkeypatch.setattr(search_module, "measured_ratios", one_slow)
    plan = plan_search(model, PruneConfig.from_flat(ratio=None, target_latency=0.5, **FAST))
    table = plan.space.latency.table
    errors = table.calibration["errors"]
    assert min(errors) < 0 and table.margin == pytest.approx(max(1 / (1 + e) - 1 for e in errors), rel=1e-12)
    assert 0.03 < table.margin < 0.08                     # the least-squares fit shares the 8% out
    assert plan.latency_margin == table.margin and plan.limit.latency == pytest.approx(0.5 / (1 + table.margin))
    assert all(s.latency <= 0.5 / (1 + table.margin) for s in plan.strategies)
    assert all(s.latency > 0.45 / (1 + table.margin) for s in plan.strategies)   # scaled up to the guard
    # a target reachable as such but not with the guard: refused, and the message says why
    smallest = plan.space.uniform(plan.space.max_ratio).latency
    with pytest.raises(InputError, match=r"less the latency table's margin of \d"):
        plan_search(model, PruneConfig.from_flat(ratio=None, target_latency=smallest * (1 + table.margin / 2),
                                                 **FAST))


def test_a_latency_cap_keeps_every_candidate_within_the_flops_budget_and_uniforms_predicted_latency(model):
    free = plan_search(model, PruneConfig.from_flat(ratio=0.5, **{**FAST, "candidates": 8, "guided": 2}))
    cfg = PruneConfig.from_flat(ratio=0.5, latency_cap="uniform", **{**FAST, "candidates": 8, "guided": 2})
    plan = plan_search(model, cfg)
    add_guided(plan, np.random.default_rng(1).random(len(plan.space.searchable)))
    assert plan.uniform.counts == free.uniform.counts and plan.budget == free.budget  # the same FLOPs budget
    assert plan.limit.latency == plan.uniform.latency
    assert all(s.flops <= plan.budget and s.latency <= plan.uniform.latency for s in plan.strategies)
    # uncapped, the stub timer's pricier small layers make some random strategies slower than uniform
    priced = [plan.space.strategy(s.ratios, s.kind).latency for s in free.strategies[1:]]
    assert max(priced) > plan.uniform.latency
    # the same seed gives the same capped strategies
    again = plan_search(model, cfg)
    assert [s.counts for s in again.strategies] == [s.counts for s in plan.strategies[:6]]


@pytest.mark.parametrize("flags,block", [(["avx2", "avx512f"], 16), (["avx2"], 8)])
def test_widths_default_to_the_cpus_channel_block_unless_told(monkeypatch, flags, block):
    monkeypatch.setattr(latency_table_module, "channel_block", channel_block)   # the real one (the stub's: 1)
    monkeypatch.setattr(latency_table_module, "cpu_flags", lambda: flags)
    assert PruneConfig(target_latency=0.5).channels.round_to == block
    assert PruneConfig.from_flat(target_latency=0.5, min_channels=4).channels == ChannelRules(4, block, False)
    assert PruneConfig.from_flat(target_latency=0.5, round_to=8).channels.round_to == 8   # given: kept
    # a FLOPs budget: the same block, and the narrowest width (min_channels) allowed below it
    assert PruneConfig(ratio=0.5).channels == PruneConfig().channels == ChannelRules(8, block, True)
    assert PruneConfig.from_flat(ratio=0.5, narrow=False).channels == ChannelRules(8, block, False)
    assert PruneConfig.from_flat(target_latency=0.5, narrow=True).channels.narrow   # given: kept
    assert PruneConfig(target_latency=0.5).to_dict()["channels"]["round_to"] == block   # reported as used
    with pytest.raises(ValueError, match="round_to is not set"):
        ChannelRules().keep_count(64, 0.5)


def test_a_latency_budget_below_what_min_channels_allows_is_refused(model):
    cfg = PruneConfig.from_flat(ratio=None, target_latency=0.01, **FAST)
    with pytest.raises(InputError, match=r"smallest reachable predicted ratio 0\.\d+"):
        plan_search(model, cfg)


@pytest.mark.parametrize("bad", [dict(target_latency=0.0), dict(target_latency=1.0),
                                 dict(target_latency=0.5, ratio=0.5), dict(target_latency=0.5,
                                                                           target_gflops=1.0),
                                 dict(prefer="speed"), dict(near_tie=-0.1), dict(latency_cap="gflops")])
def test_config_validation(bad):
    with pytest.raises(InputError):
        PruneConfig.from_flat(**{"ratio": None if "ratio" not in bad else bad["ratio"], **bad})


def row(index: int, score: float) -> dict:
    return {"index": index, "score": score}


def test_prefer_latency_picks_the_faster_of_near_tied_candidates():
    latencies = [0.50, 0.48, 0.41, 0.30]
    plan = SimpleNamespace(strategies=[Strategy(np.zeros(1), {}, 1.0, "random", lat) for lat in latencies])
    rows = [row(0, 0.300), row(1, 0.304), row(2, 0.301), row(3, 0.280)]
    accuracy = SimpleNamespace(prefer="accuracy", near_tie=0.005)
    latency = SimpleNamespace(prefer="latency", near_tie=0.005)
    assert choose_candidate(rows, plan, accuracy) == 1
    assert [r["latency_ratio"] for r in rows] == latencies
    assert choose_candidate(rows, plan, latency) == 2  # 0.301 is within 0.005 of 0.304, and faster
    assert choose_candidate(rows, plan, SimpleNamespace(prefer="latency", near_tie=0.0)) == 1
    assert choose_candidate(rows, plan, SimpleNamespace(prefer="latency", near_tie=0.03)) == 3


def test_prune_model_reports_the_latency_budget_predicted_and_measured(model, tiny_data):
    net = tiny_model("yolov5n", nc=tiny_data.nc, width=0.25)
    # the probes of the guided candidates on the neck only (the backbone excluded): fewer of them, faster
    cfg = PruneConfig.from_flat(ratio=None, target_latency=0.85, prefer="latency", near_tie=1.0,
                                latency_threads=1, probe_sides="less", exclude=tuple(map(str, range(9))),
                                **{**FAST, "candidates": 3, "guided": 2})
    _, report = prune_model(net, tiny_data, cfg)
    d = report.details
    budget, candidates = d["budget"], d["candidates"]
    assert budget["kind"] == "latency" and budget["target"] == 0.85
    assert budget["latency_margin"] == 0.0 and budget["search_limit"] == 0.85   # the stub is exactly affine
    assert all(c["latency_ratio"] <= 0.85 for c in candidates)
    # near_tie 1.0: every candidate ties, so the one predicted fastest is chosen
    assert d["chosen"] == min(candidates, key=lambda c: c["latency_ratio"])["index"]
    scored = [c for c in candidates if c["score"] is not None]   # (not rejected early)
    assert d["preference"] == {"prefer": "latency", "near_tie": 1.0, "by": "predicted latency",
                               "best_score_index": max(scored, key=lambda c: (c["score"], -c["index"]))[
                                   "index"], "chosen": d["chosen"]}
    assert budget["predicted_ratio"] == candidates[d["chosen"]]["latency_ratio"]
    assert budget["measured_ratio"] == pytest.approx(
        report.after.latency["onnxruntime"].median_ms / report.before.latency["onnxruntime"].median_ms)
    assert budget["prediction_error"] == pytest.approx(budget["measured_ratio"] / budget["predicted_ratio"] - 1)
    assert budget["uniform"]["predicted_ratio"] == candidates[0]["latency_ratio"]
    assert budget["uniform"]["measured_ratio"] > 0
    # the guided candidates: one per ranking, from the same probes; the report has both sensitivities
    assert d["sensitivity_cost"] == "both" and [c["kind"] for c in candidates] == [
        "uniform", "guided-latency", "guided-flops"]
    assert d["sensitivity"] and all({"score_per_latency", "score_per_gflop"} <= set(r)
                                    for r in d["sensitivity"])
    json.dumps(report.to_dict())  # JSON-ready


def test_a_flops_budget_reports_measured_latency_next_to_uniforms(tiny_data):
    net = tiny_model("yolov5n", nc=tiny_data.nc, width=0.25)
    cfg = PruneConfig.from_flat(ratio=0.5, latency=True, latency_threads=1, **{**FAST, "candidates": 3})
    _, report = prune_model(net, tiny_data, cfg)
    budget = report.details["budget"]
    assert budget["kind"] == "ratio" and budget["target"] == 0.5
    assert budget["predicted_ratio"] is None and budget["uniform"]["predicted_ratio"] is None  # no table
    assert 0 < budget["measured_ratio"] and 0 < budget["uniform"]["measured_ratio"]
    assert report.details["preference"]["prefer"] == "accuracy"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_data):
    path = tmp_path_factory.mktemp("prune-latency") / "tiny.pt"
    save_model(tiny_model("yolov5n", nc=tiny_data.nc, width=0.125), path, imgsz=64)
    return path


CLI_FAST = ["--imgsz", "64", "--candidates", "2", "--guided", "0", "--calib-batches", "2", "--eval-images", "8",
            "--batch", "4", "--min-channels", "1", "--round-to", "1", "--finetune-epochs", "0", "--quiet"]


@pytest.mark.parametrize("args, message", [
    (["--target-latency", "0.01"], "smallest reachable predicted ratio"),
    (["--target-latency", "1.5"], "target latency must be strictly between 0 and 1"),
    (["--target-latency", "0.5", "--ratio", "0.5"], "not both (got --ratio and --target-latency)"),
])
def test_cli_bad_latency_budgets_exit_2_with_one_line(checkpoint, tiny_data, tmp_path, capsys, args, message):
    folder = tmp_path / "out"
    folder.mkdir()
    code = main(["prune", str(checkpoint), "--data", str(tiny_data.yaml_path), *CLI_FAST, *args,
                 "-o", str(folder / "o.pt"), "--json", str(folder / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert list(folder.iterdir()) == []  # nothing written (the latency table's cache is elsewhere)


def test_cli_prints_the_predicted_and_measured_latency_ratio(checkpoint, tiny_data, tmp_path, capsys):
    out, report = tmp_path / "p.pt", tmp_path / "r.json"
    code = main(["prune", str(checkpoint), "--data", str(tiny_data.yaml_path), *CLI_FAST, "--target-latency",
                 "0.6", "--max-map-drop", "100", "-o", str(out), "--json", str(report)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    budget = json.loads(report.read_text())["details"]["budget"]
    assert f"chosen predicted {budget['predicted_ratio']:.3f}, measured {budget['measured_ratio']:.3f}" in printed
    assert "latency ratio (budget latency <= 0.6)" in printed and budget["round_to"] == 1   # --round-to 1
    assert budget["cpu"] == cpu_name() and budget["cpu_flags"] == cpu_flags()
    assert f"CPU: {cpu_name()}; ISA: {' '.join(cpu_flags()) or 'none listed'}" in printed  # beside them


def test_cli_latency_cap_holds_the_pick_to_uniforms_predicted_latency(checkpoint, tiny_data, tmp_path, capsys):
    out, report = tmp_path / "p.pt", tmp_path / "r.json"
    code = main(["prune", str(checkpoint), "--data", str(tiny_data.yaml_path), *CLI_FAST, "--ratio", "0.5",
                 "--latency-cap", "uniform", "--max-map-drop", "100", "-o", str(out), "--json", str(report)])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    details = json.loads(report.read_text())["details"]
    budget = details["budget"]
    assert budget["latency_cap"] == "uniform" and budget["kind"] == "ratio"
    assert budget["predicted_ratio"] <= budget["uniform"]["predicted_ratio"]
    assert all(c["latency_ratio"] <= budget["uniform"]["predicted_ratio"] for c in details["candidates"])
    assert "latency ratio (budget ratio, latency capped at uniform's): chosen predicted" in printed


def test_cli_names_the_margin_a_latency_budget_kept():
    from yolocompress.cli.prune import budget_lines

    budget = {"kind": "latency", "target": 0.5, "latency_margin": 0.043, "search_limit": 0.5 / 1.043,
              "predicted_ratio": 0.477, "measured_ratio": 0.49, "prediction_error": 0.49 / 0.477 - 1,
              "uniform": {"predicted_ratio": 0.474, "measured_ratio": 0.472}}
    preference = {"prefer": "accuracy", "chosen": 0, "best_score_index": 0}
    line = budget_lines(budget, preference, [])[0]
    assert "budget latency <= 0.5, candidates held to 0.479 predicted: margin 4.3%" in line
    assert "margin" not in budget_lines({**budget, "latency_margin": 0.0}, preference, [])[0]
    blocked = budget_lines({**budget, "round_to": 16}, preference, [])[0]
    assert "margin 4.3%, widths in multiples of 16)" in blocked
    narrowed = budget_lines({**budget, "round_to": 16, "narrow": True, "min_channels": 8}, preference, [])[0]
    assert "margin 4.3%, widths 8 or multiples of 16)" in narrowed
    assert "multiples" not in line   # a report without round_to (or with 1) says nothing of it
