"""The settings of a pruning run: ``PruneConfig`` (validated on construction).

Budget. ``ratio=R`` means "remove the fraction R of the prunable channels": the budget is the FLOPs of the
*uniform* strategy (every searchable group pruned by R, rounded per ``ChannelRules``), and every EagleEye
candidate has at most that many FLOPs. Since a convolution's cost is ``c_in x c_out``, a layer whose input and
output groups are both pruned by R costs ``(1 - R)^2`` of the original; layers next to fixed channels (the
stem reading the image, the Detect convs) cost ``1 - R``; so the total lands between those (about 0.3 of
the original GFLOPs for YOLOv5 at R = 0.5; the report states the exact figure). ``target_gflops=G`` sets the
budget directly (at ``imgsz``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from yolocompress.compress.distill.config import DistillConfig, as_distill_config, distill_json
from yolocompress.errors import InputError

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


__all__ = ["METRICS", "PruneConfig"]
