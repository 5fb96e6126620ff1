"""Faster searches (issue 18): probes on the head of the cached data and one side only; candidates rejected
early on the head."""
from __future__ import annotations

import pytest
import torch

from yolocompress.compress.prune import PruneConfig, prune_model
from yolocompress.compress.prune.scoring import SubnetScore, SubnetScorer, cache_data
from yolocompress.errors import InputError

from .conftest import tiny_model

FAST = dict(imgsz=64, candidates=4, guided=2, calib_batches=2, calib_batch=4, eval_images=8, eval_batch=4,
            probe_metric="map", probe_sides="less", probe_images=4, probe_calib_batches=1, reject_images=4,
            reject_calib_batches=1, finetune_epochs=0, min_channels=1, round_to=1, eval_baseline=False)


@pytest.mark.parametrize("bad, name", [(dict(probe_images=0), "probe_images"),
                                       (dict(probe_calib_batches=0), "probe_calib_batches"),
                                       (dict(probe_sides="left"), "probe_sides"),
                                       (dict(reject_below=1.5), "reject_below"),
                                       (dict(reject_images=0), "reject_images"),
                                       (dict(reject_calib_batches=0), "reject_calib_batches"),
                                       (dict(score_conf_thres=1.0), "score_conf_thres"),
                                       (dict(score_conf_thres=-0.1), "score_conf_thres")])
def test_probe_settings_are_validated_with_one_line(bad, name):
    with pytest.raises(InputError) as err:
        PruneConfig.from_flat(**bad)
    assert str(err.value).startswith(name) and "\n" not in str(err.value)


def test_head_of_the_cached_data_cuts_images_and_their_labels(tiny_data):
    cache = cache_data(tiny_data, 64, 32, calib_batches=2, calib_batch=4, eval_images=8, eval_batch=4, seed=0)
    head = cache.head(1, 6)
    assert len(head.calib) == 1 and head.calib[0] is cache.calib[0] and head.calib_images == 4
    assert head.eval_images == 6 and [len(b[0]) for b in head.eval_batches] == [4, 2]
    assert head.eval_batches[0] is cache.eval_batches[0]
    imgs, targets, paths, shapes = head.eval_batches[1]
    full = cache.eval_batches[1]
    assert torch.equal(imgs, full[0][:2]) and paths == full[2][:2] and shapes == full[3][:2]
    assert len(full[1]) > len(targets) > 0 and torch.equal(targets, full[1][full[1][:, 0] < 2])
    everything = cache.head(5, 100)                      # more than there is: all of it
    assert everything.eval_images == 8 and len(everything.calib) == 2
    with pytest.raises(ValueError):
        cache.head(1, 0)


def _recording_scorer(monkeypatch) -> list[tuple[int, int]]:
    """Record (calibration batches, scored images) of every scored sub-net; the score is made to depend on
    the BN statistics adaptive BN re-estimated (an untrained tiny model scores 0 everywhere), so the pick
    depends on the data the search drew and on every probe."""
    seen: list[tuple[int, int]] = []
    real_call = SubnetScorer.__call__

    def scored(self, sub, recalibrate=True):
        s = real_call(self, sub, recalibrate)
        seen.append((len(self.data.calib), self.data.eval_images))
        norms = [m for m in sub.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        s.map50_95 = float(sum(m.running_var.sum() - m.running_mean.abs().sum() for m in norms))
        return s

    monkeypatch.setattr(SubnetScorer, "__call__", scored)
    return seen


def test_probes_are_scored_on_the_head_one_side_and_candidates_on_everything(tiny_data, monkeypatch):
    seen = _recording_scorer(monkeypatch)
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    neck = dict(FAST, exclude=tuple(str(i) for i in range(9)))   # the backbone excluded: fewer probes, faster
    _, report = prune_model(model, tiny_data, PruneConfig.from_flat(ratio=0.5, **neck, reject_below=0.0))
    d = report.details
    n_groups = sum(g["searchable"] for g in d["groups"])
    assert 1 < d["probes"] <= n_groups + 1                   # the centre and one move per group
    assert seen[:d["probes"]] == [(1, 4)] * d["probes"]
    assert set(seen[d["probes"]:]) == {(2, 8)} and len(d["candidates"]) == 4
    seen.clear()
    _, both = prune_model(model, tiny_data, PruneConfig.from_flat(
        ratio=0.5, **{**neck, "probe_sides": "both", "probe_images": 8, "probe_calib_batches": 2,
                      "reject_below": 0.0}))
    assert both.details["probes"] > d["probes"] and set(seen) == {(2, 8)}   # the search before issue 18


def test_faster_search_same_seed_same_pick(tiny_data, monkeypatch):
    _recording_scorer(monkeypatch)
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    cfg = PruneConfig.from_flat(ratio=0.5, **FAST, exclude=tuple(str(i) for i in range(9)))  # neck: faster
    a, ra = prune_model(model, tiny_data, cfg)
    b, rb = prune_model(model, tiny_data, cfg)
    da, db = ra.details, rb.details
    assert da["probes"] > 1 and da["candidates"][da["chosen"]]["kind"] == "guided"   # the probes decided
    assert da["chosen"] == db["chosen"] and da["groups"] == db["groups"]
    assert [c["score"] for c in da["candidates"]] == [c["score"] for c in db["candidates"]]
    assert da["sensitivity"] == db["sensitivity"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_adaptive_bn_continued_equals_one_pass_to_the_bit(tiny_data):
    from yolocompress.compress.prune import adaptive_bn

    cache = cache_data(tiny_data, 64, 32, calib_batches=2, calib_batch=4, eval_images=8, eval_batch=4, seed=0)
    once, twice = tiny_model("yolov5n", nc=tiny_data.nc), tiny_model("yolov5n", nc=tiny_data.nc)
    adaptive_bn(once, cache.calib)
    adaptive_bn(twice, cache.calib[:1])
    first = [b.clone() for n, b in twice.named_buffers() if n.endswith("running_mean")]
    adaptive_bn(twice, cache.calib[1:], reset=False)
    assert all(torch.equal(x, y) for x, y in zip(once.state_dict().values(), twice.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(first, (b for n, b in twice.named_buffers()
                                                             if n.endswith("running_mean"))))


def test_early_rejection_never_drops_the_eventual_best(tiny_data, monkeypatch):
    """A stub score (the sub-net's parameter count, on the head and on all the data alike): rejection drops
    the candidates below ``reject_below`` x uniform, and the pick and every kept score are as without it."""
    calls: list[str] = []

    def scored(self, sub, recalibrate=True):
        calls.append("head" if self.data.eval_images == 4 else "full")
        return SubnetScore(0.0, sum(p.numel() for p in sub.parameters()) / 1e6, 0.0, 0.0, 0.0, 0.0)

    monkeypatch.setattr(SubnetScorer, "__call__", scored)
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.25)
    flat = {**FAST, "candidates": 12, "guided": 4, "min_channels": 2, "round_to": 2}
    _, plain = prune_model(model, tiny_data, PruneConfig.from_flat(ratio=0.5, **flat, reject_below=0.0))
    calls.clear()
    _, fast = prune_model(model, tiny_data, PruneConfig.from_flat(ratio=0.5, **flat, reject_below=0.97))
    p, f = plain.details["candidates"], fast.details["candidates"]
    uniform = p[0]["score"]
    rejected = [c["index"] for c in f if c["rejected"]]
    assert rejected == [c["index"] for c in p if c["score"] < 0.97 * uniform] and 0 < len(rejected) < 11
    assert all(f[i]["score"] is None and f[i]["head_score"] == p[i]["score"] for i in rejected)
    assert [c["score"] for c in f if not c["rejected"]] == \
        [c["score"] for c in p if c["index"] not in rejected]
    assert fast.details["chosen"] == plain.details["chosen"] and not f[fast.details["chosen"]]["rejected"]
    assert calls.count("full") == 12 - len(rejected)   # the rejected are never scored on all the data
    assert not any(c["rejected"] for c in p)


def test_a_search_with_early_rejection_resumes_to_the_same_result(tiny_data, monkeypatch, tmp_path):
    def scored(self, sub, recalibrate=True):
        return SubnetScore(0.0, sum(p.numel() for p in sub.parameters()) / 1e6, 0.0, 0.0, 0.0, 0.0)

    class Killed(BaseException):
        pass

    def kill(event):
        if event.task == "eagleeye" and event.done == 5:
            raise Killed

    monkeypatch.setattr(SubnetScorer, "__call__", scored)
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.25)
    flat = {**FAST, "candidates": 12, "guided": 4, "min_channels": 2, "round_to": 2, "reject_below": 0.97}
    _, full = prune_model(model, tiny_data, PruneConfig.from_flat(ratio=0.5, **flat))
    log = tmp_path / "s.search.jsonl"
    with pytest.raises(Killed):
        prune_model(model, tiny_data, PruneConfig.from_flat(ratio=0.5, **flat, search_log=str(log)),
                    on_progress=kill)
    _, resumed = prune_model(model, tiny_data, PruneConfig.from_flat(ratio=0.5, **flat, search_log=str(log),
                                                                      resume=True))
    assert any(c["rejected"] for c in full.details["candidates"])
    for key in ("candidates", "chosen", "sensitivity", "groups"):
        assert resumed.details[key] == full.details[key], key


def test_candidates_are_scored_at_the_search_threshold_and_the_result_at_val_py_s(tiny_data, monkeypatch):
    """``score_conf_thres`` is the NMS threshold of the candidates' (and the early rejection's) scoring;
    the final evaluation keeps ``PruneConfig.conf_thres`` (val.py's 0.001)."""
    from yolocompress.engine import evaluator

    scored: list[float] = []
    real_call = SubnetScorer.__call__

    def recording(self, sub, recalibrate=True):
        scored.append(self.conf_thres)
        return real_call(self, sub, recalibrate)

    evaluated: list[float] = []
    real_eval = evaluator.evaluate_model

    def evaluating(*args, **kwargs):
        evaluated.append(kwargs["conf_thres"])
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(SubnetScorer, "__call__", recording)
    monkeypatch.setattr(evaluator, "evaluate_model", evaluating)
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    cfg = PruneConfig.from_flat(ratio=0.5, **{**FAST, "guided": 0}, score_conf_thres=0.05)
    prune_model(model, tiny_data, cfg)
    assert scored and set(scored) == {0.05}
    assert evaluated and set(evaluated) == {0.001} and PruneConfig().search.score_conf_thres == 0.01


class LabelEcho:
    """A stand-in for a sub-net's held-out predictions: each cached batch's labels as detections, shifted by
    a noise that depends on the sub-net (its parameter count) and the batch, so that sub-nets score apart
    and a sub-net scores the same every time it is evaluated."""

    def __init__(self, cache, nc):
        self.by_images = {self.key(imgs.double() / 255): (k, targets, imgs.shape[-1])
                          for k, (imgs, targets, *_) in enumerate(cache.eval_batches)}
        self.nc = nc

    @staticmethod
    def key(imgs: torch.Tensor) -> int:
        return int(imgs.double().mul(255).round().sum())

    def __call__(self, model):
        params = sum(p.numel() for p in model.parameters())

        def predict(imgs):
            k, targets, size = self.by_images[self.key(imgs)]
            g = torch.Generator().manual_seed(params * 1000 + k)
            out = torch.zeros(len(imgs), 8, 5 + self.nc)
            for row, (i, c, *xywh) in enumerate(targets.tolist()):
                box = torch.tensor(xywh) * size + torch.randn(4, generator=g) * (params % 7 + 1) / 2
                out[int(i), row % 8, :4], out[int(i), row % 8, 4] = box, 1.0
                out[int(i), row % 8, 5 + int(c)] = float(torch.rand(1, generator=g)) * 0.9 + 0.1
            return out

        return predict


def test_staged_scoring_counts_the_head_s_images_once_and_equals_a_full_score_to_the_bit(tiny_data,
                                                                                         monkeypatch):
    """``SubnetScorer.in_stages``: BN on every calibration batch, the head's batches scored first; a kept
    sub-net's full score equals ``scorer(sub)`` to the bit, a rejected one has none; a head inside a batch is
    refused."""
    cache = cache_data(tiny_data, 64, 32, calib_batches=2, calib_batch=4, eval_images=8, eval_batch=4, seed=0)
    monkeypatch.setattr(SubnetScorer, "_predictor", lambda self, model: LabelEcho(cache, tiny_data.nc)(model))
    scorer = SubnetScorer(cache, tiny_data.nc, list(tiny_data.names))
    model = tiny_model("yolov5n", nc=tiny_data.nc)
    full = scorer(model)
    head, staged = scorer.in_stages(model, 4, floor=-1.0, metric="map50_95")
    assert 0 < full.map50_95 < 1 and head.map50_95 != full.map50_95
    assert (staged.map50, staged.map50_95, staged.fitness) == (full.map50, full.map50_95, full.fitness)
    on_head = scorer.on_head(2, 4)(model)
    assert (head.map50, head.map50_95) == (on_head.map50, on_head.map50_95)
    rejected_head, none = scorer.in_stages(model, 4, floor=head.map50_95 + 1e-9, metric="map50_95")
    assert none is None and rejected_head.map50_95 == head.map50_95
    for inside in (2, 8):   # inside a batch; no image left after it
        with pytest.raises(ValueError, match="whole batches"):
            scorer.in_stages(model, inside, floor=-1.0, metric="map50_95")
    from yolocompress.compress.prune.search import EarlyReject

    assert EarlyReject.of(scorer, scorer.on_head(2, 4), 0.0).staged
    assert not EarlyReject.of(scorer, scorer.on_head(1, 4), 0.0).staged   # BN continued after the head
    assert not EarlyReject.of(scorer, scorer.on_head(2, 2), 0.0).staged   # the head ends inside a batch


def test_staged_early_rejection_keeps_the_pick_and_every_kept_score(tiny_data, monkeypatch):
    """With the head on every calibration batch and whole held-out batches, the search scores candidates in
    stages: the rejected are those whose head score is below the floor, the kept ones and the pick are
    those of a search without rejection."""
    from yolocompress.compress.prune import search as search_module

    staged_calls = []
    real_in_stages = SubnetScorer.in_stages

    def in_stages(self, model, head_images, floor, metric):
        staged_calls.append(head_images)
        return real_in_stages(self, model, head_images, floor, metric)

    cache = cache_data(tiny_data, 64, 32, calib_batches=2, calib_batch=4, eval_images=8, eval_batch=4, seed=0)
    monkeypatch.setattr(SubnetScorer, "_predictor", lambda self, model: LabelEcho(cache, tiny_data.nc)(model))
    monkeypatch.setattr(SubnetScorer, "in_stages", in_stages)
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.25)
    flat = {**FAST, "candidates": 10, "guided": 0, "min_channels": 2, "round_to": 2,
            "reject_calib_batches": 2, "reject_images": 4}
    _, plain = prune_model(model, tiny_data, PruneConfig.from_flat(ratio=0.5, **flat, reject_below=0.0))
    assert not staged_calls
    floor_of = {}
    real_of = search_module.EarlyReject.of.__func__

    def of(cls, scorer, head, floor):
        early = real_of(cls, scorer, head, floor)
        floor_of["early"] = early
        return early

    monkeypatch.setattr(search_module.EarlyReject, "of", classmethod(of))
    _, fast = prune_model(model, tiny_data, PruneConfig.from_flat(ratio=0.5, **flat, reject_below=0.99))
    early = floor_of["early"]
    p, f = plain.details["candidates"], fast.details["candidates"]
    assert early.staged and staged_calls == [4] * 10   # every candidate in stages (uniform: at its floor)
    rejected = [c["index"] for c in f if c["rejected"]]
    assert rejected == [c["index"] for c in f if c["head_score"] < early.floor]
    assert 0 < len(rejected) < 9
    kept = [c["score"] for c in f if not c["rejected"]]
    assert kept == [c["score"] for c in p if c["index"] not in rejected]
    assert fast.details["chosen"] == plain.details["chosen"]
