"""No silent ruin: the accuracy a stage cost, a loud warning past 5 mAP50-95 points, an optional hard limit.

Every command that changes a model and measures it (prune, quantize, distill, a recipe run) feeds its
:class:`~yolocompress.compress.stage.StageReport` to :func:`check_accuracy`; the CLI only renders the
verdict (and exits 1 when ``--max-map-drop`` is exceeded, after the outputs are written). Points are
mAP50-95 x 100: 0.821 -> 0.025 is a drop of 79.6 points.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from yolocompress.compress.stage import StageReport
from yolocompress.errors import CompressionError, InputError

# A model this many mAP50-95 points below its input is reported loudly, whatever limit the user set.
RUIN_POINTS = 5.0
# Fine-tune epochs that brought a nano model pruned at ratio 0.5 back within about half a point of its
# baseline (benchmarks/RESULTS.md, "EagleEye pruning": -0.54 after 150 epochs).
PRUNE_RECOVERY_EPOCHS = 150
PRUNE_RECOVERY = ("a pruned model needs a long fine-tune to win its accuracy back: ratio 0.5 on a nano model "
                  f"needs about {PRUNE_RECOVERY_EPOCHS} fine-tune epochs")
_EPS = 1e-9  # float noise at a bound: a drop of exactly the limit passes


def prune_hint(ratio: float | None, finetune_epochs: int | None) -> str:
    """The likely cause of a large drop after pruning, and what wins the accuracy back."""
    amount = f"ratio {ratio:g}" if ratio else "this FLOPs budget"
    ran = "no fine-tune was run" if not finetune_epochs else f"this run fine-tuned {finetune_epochs} epochs"
    return (f"{PRUNE_RECOVERY} ({amount}; {ran}; see benchmarks/RESULTS.md); prune less, or fine-tune longer "
            "(--finetune-epochs, or `yolocompress train` on the pruned file)")


def _hint(report: StageReport) -> str:
    config: Mapping[str, Any] = report.config
    if report.stage == "prune":
        finetune = config.get("finetune")
        epochs = finetune.get("epochs") if isinstance(finetune, Mapping) else config.get("finetune_epochs")
        return prune_hint(config.get("ratio"), epochs)
    if report.stage == "quantize":
        return ("a few convolutions usually carry most of the int8 error: rank them with --sensitivity and "
                "keep the worst float (--auto-exclude K), or fine-tune with --method qat")
    if report.stage == "distill":
        return ("distillation pulled the student away from its labels: check that the teacher is accurate "
                "on this data set, lower the KD weights (--weight/--feature-weight) or the learning rate "
                "(--lr0), or train more epochs")
    return "compare the stage's settings with the ones recorded in benchmarks/RESULTS.md"


@dataclass(frozen=True)
class AccuracyVerdict:
    """mAP50-95 before and after a stage (fractions; ``None``: not measured) against the ruin bound and an
    optional user limit ``max_drop`` (points)."""

    stage: str
    before: float | None
    after: float | None
    max_drop: float | None = None
    hint: str = ""

    @property
    def drop(self) -> float | None:
        """mAP50-95 points lost (negative: gained); ``None`` when either side was not measured."""
        if self.before is None or self.after is None:
            return None
        return 100.0 * (self.before - self.after)

    @property
    def ruinous(self) -> bool:
        """More than ``RUIN_POINTS`` lost."""
        return self.drop is not None and self.drop > RUIN_POINTS + _EPS

    @property
    def failed(self) -> bool:
        """``max_drop`` was given and the drop exceeds it, or could not be measured."""
        if self.max_drop is None:
            return False
        return self.drop is None or self.drop > self.max_drop + _EPS

    @property
    def warning(self) -> str | None:
        """The sentence a user must read when the stage lost more than ``RUIN_POINTS``, else ``None``."""
        if not self.ruinous:
            return None
        return (f"mAP50-95 fell {self.drop:.2f} points in {self.stage} ({self.before:.4f} -> "
                f"{self.after:.4f}); {self.hint}")

    def failure(self) -> str:
        """The error line of a failed ``max_drop``."""
        if self.drop is None:
            return f"--max-map-drop {self.max_drop:g}: the {self.stage} stage's mAP50-95 was not measured"
        return (f"mAP50-95 fell {self.drop:.2f} points in {self.stage}, more than --max-map-drop "
                f"{self.max_drop:g} ({self.before:.4f} -> {self.after:.4f}; the outputs are written)")

    def raise_if_failed(self) -> None:
        """``CompressionError`` (exit 1) with :meth:`failure` when :attr:`failed`."""
        if self.failed:
            raise CompressionError(self.failure())

    def to_dict(self) -> dict[str, Any]:
        return {"before_map50_95": self.before, "after_map50_95": self.after, "drop_points": self.drop,
                "ruin_points": RUIN_POINTS, "max_drop_points": self.max_drop, "failed": self.failed}


def check_accuracy(report: StageReport, max_drop: float | None = None) -> tuple[StageReport, AccuracyVerdict]:
    """The verdict on ``report``'s before/after mAP50-95, and the report with it: ``details["accuracy"]``
    holds the figures, and a drop past ``RUIN_POINTS`` adds the warning (with the likely cause) to
    ``warnings``. ``max_drop`` (points) only decides :attr:`AccuracyVerdict.failed`; the caller writes its
    outputs first and then calls :meth:`AccuracyVerdict.raise_if_failed`."""
    if max_drop is not None and not max_drop >= 0:
        raise InputError(f"--max-map-drop must be >= 0 points, got {max_drop}")
    before = report.before.map50_95 if report.before else None
    after = report.after.map50_95 if report.after else None
    verdict = AccuracyVerdict(report.stage, before, after, max_drop, _hint(report))
    warnings = report.warnings + ((verdict.warning,) if verdict.warning else ())
    details = {**report.details, "accuracy": verdict.to_dict()}
    return dataclasses.replace(report, warnings=warnings, details=details), verdict


def with_measured_map(report: StageReport, data: Any, before: Any = None, after: Any = None,
                      imgsz: int | None = None, split: str = "val", workers: int = 0) -> StageReport:
    """``report`` with mAP50 / mAP50-95 measured on ``split`` of ``data`` for each side the stage left empty
    (PTQ measures SQNR only; a fine-tune or distillation its own per-epoch validation).

    ``before`` / ``after``: the artifacts (a module, a ``.pt`` or an ``.onnx`` path; ``None``: leave that
    side unmeasured). ``imgsz`` defaults to each snapshot's. A fixed-size ``.onnx`` file is evaluated on
    square letterboxed images, a PyTorch model on rectangular batches (as ``yolocompress eval`` does): the two
    differ by a few tenths of a point on the same weights, far below the 5-point ruin bound.
    """
    from yolocompress.engine.evaluator import evaluate_model

    snaps = {}
    for side, artifact in (("before", before), ("after", after)):
        snap = getattr(report, side)
        if artifact is None or snap is None or snap.map50_95 is not None:
            continue
        result = evaluate_model(artifact, data, split=split, imgsz=imgsz or snap.imgsz, workers=workers)
        snaps[side] = dataclasses.replace(snap, map50=float(result.map50), map50_95=float(result.map50_95))
    return dataclasses.replace(report, **snaps)


__all__ = ["AccuracyVerdict", "PRUNE_RECOVERY", "PRUNE_RECOVERY_EPOCHS", "RUIN_POINTS", "check_accuracy",
           "prune_hint", "with_measured_map"]
