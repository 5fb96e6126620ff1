"""No silent ruin: ``compress.accuracy.check_accuracy`` on stage reports (warning past 5 points, the likely
cause, ``--max-map-drop``), and the recipe runner's warning sharing its bound."""
from __future__ import annotations

import pytest

from yolocompress.compress.accuracy import RUIN_POINTS, check_accuracy
from yolocompress.compress.stage import ModelSnapshot, StageReport
from yolocompress.errors import CompressionError, InputError


def _report(stage: str, before: float | None, after: float | None, **config) -> StageReport:
    return StageReport(stage=stage, config=config, before=ModelSnapshot(imgsz=64, map50_95=before),
                       after=ModelSnapshot(imgsz=64, map50_95=after), warnings=("an earlier warning",))


def test_a_ruinous_prune_is_warned_about_with_its_cause_and_recorded():
    # issue 19's case: ratio 0.5, one fine-tune epoch, 0.821 -> 0.025
    report, verdict = check_accuracy(_report("prune", 0.821, 0.025, ratio=0.5, finetune_epochs=1))
    assert verdict.ruinous and not verdict.failed and verdict.drop == pytest.approx(79.6)
    assert "fell 79.60 points in prune (0.8210 -> 0.0250)" in verdict.warning
    assert "about 150 fine-tune epochs" in verdict.warning and "ratio 0.5" in verdict.warning
    assert "this run fine-tuned 1 epochs" in verdict.warning
    assert report.warnings == ("an earlier warning", verdict.warning)
    acc = report.details["accuracy"]
    assert acc["drop_points"] == pytest.approx(79.6) and acc["failed"] is False
    assert acc["ruin_points"] == RUIN_POINTS
    assert StageReport.from_dict(report.to_dict()) == report
    # today's prune reports nest the fine-tune settings (PruneConfig.to_dict()); the flat one above is older
    nested = check_accuracy(_report("prune", 0.821, 0.025, ratio=0.5, finetune={"epochs": 3}))[1]
    assert "this run fine-tuned 3 epochs" in nested.warning


@pytest.mark.parametrize("stage, hint", [("quantize", "--auto-exclude"), ("distill", "teacher")])
def test_each_stage_names_its_own_likely_cause(stage, hint):
    assert hint in check_accuracy(_report(stage, 0.80, 0.70))[1].warning


def test_five_points_exactly_and_gains_are_not_warned_about():
    for before, after in ((0.80, 0.80 - RUIN_POINTS / 100), (0.50, 0.60), (0.80, 0.79)):
        report, verdict = check_accuracy(_report("quantize", before, after))
        assert verdict.warning is None and report.warnings == ("an earlier warning",)


def test_max_map_drop_fails_past_the_limit_only():
    assert not check_accuracy(_report("prune", 0.80, 0.79), max_drop=1.0)[1].failed  # exactly 1 point
    verdict = check_accuracy(_report("prune", 0.80, 0.785), max_drop=1.0)[1]
    assert verdict.failed and verdict.warning is None  # a small drop: a failure, not a ruin warning
    with pytest.raises(CompressionError, match=r"fell 1.50 points in prune, more than --max-map-drop 1 .*"
                                               r"written"):
        verdict.raise_if_failed()
    assert CompressionError.exit_code == 1


def test_an_unmeasured_stage_passes_without_a_limit_and_fails_with_one():
    assert not check_accuracy(_report("quantize", None, 0.5))[1].failed
    verdict = check_accuracy(_report("quantize", None, 0.5), max_drop=2.0)[1]
    assert verdict.failed and "not measured" in verdict.failure()
    with pytest.raises(InputError, match=">= 0"):
        check_accuracy(_report("prune", 0.8, 0.7), max_drop=-1.0)


def test_the_recipe_warning_uses_the_same_bound_and_prune_advice():
    from yolocompress.recipe.runner import accuracy_warnings

    rows = [{"stage": "baseline", "type": "baseline", "map50_95": 0.80},
            {"stage": "prune", "type": "prune", "map50_95": 0.80 - (RUIN_POINTS + 1) / 100}]
    (warning,) = accuracy_warnings(rows)
    assert "about 150 fine-tune epochs" in warning
