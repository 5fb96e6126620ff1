"""Probes scored without NMS and mAP (issue 18, item 4): by the box loss against the labels or by the head
distortion from the unpruned model, on the probe sub-net's raw head outputs; candidates keep their mAP."""
from __future__ import annotations

import copy

import pytest
import torch

from yolocompress.compress.prune import PruneConfig, prune_channels, prune_model
from yolocompress.compress.prune.scoring import SubnetScorer, box_loss, cache_data, head_distortion
from yolocompress.compress.prune.search import plan_search
from yolocompress.errors import InputError

from .conftest import tiny_model

FAST = dict(imgsz=64, candidates=4, guided=2, calib_batches=2, calib_batch=4, eval_images=8, eval_batch=4,
            probe_metric="distortion", probe_images=4, probe_calib_batches=1, reject_images=4,
            reject_calib_batches=1, finetune_epochs=0, min_channels=1, round_to=1, eval_baseline=False)
NECK_ONLY = tuple(str(i) for i in range(9))  # layers 0-8 (the backbone) excluded: fewer probes, faster


def _scorer(data, eval_batch: int = 4) -> SubnetScorer:
    cache = cache_data(data, 64, 32, calib_batches=2, calib_batch=4, eval_images=8, eval_batch=eval_batch,
                       seed=0)
    return SubnetScorer(cache, data.nc, list(data.names))


def test_probe_metric_is_validated_with_one_line():
    with pytest.raises(InputError) as err:
        PruneConfig.from_flat(probe_metric="kl")
    assert str(err.value).startswith("probe_metric") and "\n" not in str(err.value)
    for metric in ("map", "box_loss", "distortion"):
        assert PruneConfig.from_flat(probe_metric=metric).search.probe_metric == metric


def test_head_distortion_is_zero_for_equal_outputs_and_grows_with_the_difference():
    torch.manual_seed(0)
    ref = [torch.randn(2, 3, 4, 4, 8), torch.randn(2, 3, 2, 2, 8)]
    assert head_distortion(ref, ref) == 0.0
    near = head_distortion([r + 0.1 * torch.randn_like(r) for r in ref], ref)
    far = head_distortion([r + 1.0 * torch.randn_like(r) for r in ref], ref)
    assert 0.0 < near < far
    with pytest.raises(ValueError):
        head_distortion(ref[:1], ref)


def test_unpruned_model_against_itself_is_zero_and_leaves_it_unchanged(tiny_data):
    model = tiny_model("yolov5n", nc=tiny_data.nc)
    before = copy.deepcopy(model.state_dict())
    scorer = _scorer(tiny_data).against(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # not modified
    score = scorer(copy.deepcopy(model), recalibrate=False)
    assert score.loss == pytest.approx(0.0, abs=1e-6) and score.map50_95 is None
    assert score.value("distortion") == -score.loss
    with pytest.raises(ValueError):
        score.value("map50_95")
    with pytest.raises(ValueError):          # the reference holds all the images: no head afterwards
        scorer.on_head(1, 4)


def test_distortion_grows_when_the_groups_are_pruned_harder(tiny_data):
    """Every searchable group pruned by more and more (the BN statistics of the channels kept as they were):
    0 for the unpruned model, then growing."""
    model = tiny_model("yolov5n", nc=tiny_data.nc)
    plan = plan_search(model, PruneConfig.from_flat(imgsz=64, ratio=0.25, round_to=1, min_channels=1,
                                                    candidates=1, guided=0))
    scorer = _scorer(tiny_data).against(model)
    distortions = []
    for r in (0.0, 0.25, 0.5, 0.75):
        sub = prune_channels(model, plan.graph, plan.space.keep(plan.space.uniform(r).counts))
        distortions.append(scorer(sub, recalibrate=False).loss)
    assert distortions[0] == pytest.approx(0.0, abs=1e-6)
    assert all(a < b for a, b in zip(distortions, distortions[1:])), distortions


def test_box_loss_matches_labels_to_their_images_across_batches(tiny_data):
    """The same images in batches of 4 or in one batch of 8: the same loss (each label's image index is
    counted over all the batches), and it is YOLOv5's box loss of the outputs."""
    model = tiny_model("yolov5n", nc=tiny_data.nc)
    in_fours = _scorer(tiny_data, eval_batch=4).by_box_loss(model)
    in_one = _scorer(tiny_data, eval_batch=8).by_box_loss(model)
    a = in_fours(copy.deepcopy(model), recalibrate=False)
    b = in_one(copy.deepcopy(model), recalibrate=False)
    assert a.loss > 0 and a.loss == pytest.approx(b.loss, rel=1e-4) and a.map50_95 is None
    assert a.value("box_loss") == -a.loss
    imgs, targets, *_ = in_one.data.eval_batches[0]
    assert torch.equal(in_fours.measure.keywords["targets"], targets)     # image indices 4..7 in batch 2
    assert targets[:, 0].max() >= 4
    with torch.no_grad():
        _, raw = copy.deepcopy(model).eval()(imgs.float() / 255)
    assert box_loss(raw, targets, in_one.measure.keywords["loss"]) == pytest.approx(b.loss, rel=1e-4)


@pytest.mark.parametrize("metric", ["box_loss", "distortion"])
def test_probes_skip_nms_and_map_and_give_one_sensitivity_per_group(tiny_data, monkeypatch, metric):
    import yolocompress.engine.evaluator as evaluator

    mapped: list[int] = []
    real = evaluator.Evaluation.run

    def counted(self, predictor, batches, *args, **kwargs):   # every NMS + mAP pass goes through it
        mapped.append(1)
        return real(self, predictor, batches, *args, **kwargs)

    monkeypatch.setattr(evaluator.Evaluation, "run", counted)
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    _, report = prune_model(model, tiny_data, PruneConfig.from_flat(   # the backbone excluded: fewer probes
        ratio=0.5, **{**FAST, "probe_metric": metric}, reject_below=0.0, exclude=NECK_ONLY))
    d = report.details
    n_groups = sum(g["searchable"] for g in d["groups"])
    assert d["probes"] > n_groups                            # both sides (the default) for most groups
    assert len(d["sensitivity"]) == n_groups
    assert all(r["score_per_gflop"] is not None for r in d["sensitivity"])
    assert len(set(r["score_per_gflop"] for r in d["sensitivity"])) > 1
    assert len(mapped) == 4 + 1    # NMS + mAP: the 4 candidates and the winner's val evaluation, no probe
    guided = [c for c in d["candidates"] if c["kind"] == "guided"]
    assert len(guided) == 2 and all(c["gflops"] <= d["budget_gflops"] * (1 + 1e-9) for c in guided)
    assert all(c["score"] is not None for c in d["candidates"])   # candidates: mAP scores, as before


def test_box_loss_probes_same_seed_same_sensitivity(tiny_data):
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    cfg = PruneConfig.from_flat(ratio=0.5, **{**FAST, "probe_metric": "box_loss", "probe_sides": "less"},
                                exclude=NECK_ONLY)
    a, ra = prune_model(model, tiny_data, cfg)
    b, rb = prune_model(model, tiny_data, cfg)
    assert ra.details["sensitivity"] == rb.details["sensitivity"]
    assert len(set(r["score_per_gflop"] for r in ra.details["sensitivity"])) > 1
    assert ra.details["chosen"] == rb.details["chosen"] and ra.details["groups"] == rb.details["groups"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
