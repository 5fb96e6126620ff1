"""The settings of a pruning run: ``PruneConfig`` (validated on construction).

Budget. ``ratio=R`` means "remove the fraction R of the prunable channels": the budget is the FLOPs of the
*uniform* strategy (every searchable group pruned by R, rounded per ``ChannelRules``), and every EagleEye
candidate has at most that many FLOPs. Since a convolution's cost is ``c_in x c_out``, a layer whose input and
output groups are both pruned by R costs ``(1 - R)^2`` of the original; layers next to fixed channels (the
stem reading the image, the Detect convs) cost ``1 - R``; so the total lands between those (about 0.3 of
the original GFLOPs for YOLOv5 at R = 0.5; the report states the exact figure). ``target_gflops=G`` sets the
budget directly (at ``imgsz``). ``target_latency=L`` is a latency budget: every candidate's *predicted* ONNX
Runtime latency (batch 1, ``latency_threads`` threads, at ``imgsz``) is at most the fraction L of the
original's, predicted by a per-layer latency table measured once on this machine
(:mod:`yolocompress.profile.latency_table`, cached per CPU model and image size); the chosen sub-net's
latency is then measured beside the original's and both ratios are reported. One budget per run: with
none given the budget is ``ratio=DEFAULT_RATIO``, so ``PruneConfig(target_latency=0.5)`` needs no
``ratio=None``.

The settings nest by job: ``search`` (:class:`SearchConfig`), ``finetune`` (:class:`PruneFinetuneConfig`)
and ``channels`` (:class:`~yolocompress.compress.prune.apply.ChannelRules`); :meth:`PruneConfig.from_flat`
builds one from the flat names the command line uses (``candidates``, ``finetune_epochs``, ``round_to``, ...).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

from yolocompress.compress.distill.config import DistillConfig, as_distill_config, distill_json
from yolocompress.compress.prune.apply import ChannelRules
from yolocompress.errors import InputError

METRICS = ("map50_95", "map50", "fitness")
PREFER = ("accuracy", "latency")
LATENCY_CAPS = ("none", "uniform")
SENSITIVITY_COSTS = ("auto", "flops", "latency", "both")
IMPORTANCE_NAMES = ("l1", "grouped_l1", "iterative_grouped_l1")
PROBE_SIDES = ("both", "less", "more")
PROBE_METRICS = ("map", "box_loss", "distortion")
SCORE_PRECISIONS = ("auto", "fp32", "bf16")


def _at_least(config: Any, names: tuple[str, ...], low: int) -> None:
    for name in names:
        if int(getattr(config, name)) < low:
            raise InputError(f"{name} must be >= {low}, got {getattr(config, name)}")


DEFAULT_RATIO = 0.5  # the budget when none is given: remove half of the prunable channels


@dataclass(frozen=True)
class SearchConfig:
    """How EagleEye searches (validated on construction).

    Attributes:
        candidates: strategies scored: the uniform one (when ``include_uniform``), ``guided``
            sensitivity-guided ones, the rest sampled at random as in the paper.
        guided: how many of the candidates are sensitivity-guided (0: the paper's random sampling only).
            They cost a probe phase first: the uniform strategy with each group in turn moved by
            ``probe_step`` (see ``probe_sides``), one scored sub-net per group and side. On the shipped
            yolov5n baseline at ratio 0.5 random candidates did not beat the uniform strategy after
            fine-tuning and guided ones did (``benchmarks/RESULTS.md``).
        probe_sides: which moves the probes make: ``"both"`` (each group ``probe_step`` less and more
            pruned, ~100 probes on yolov5n), ``"less"`` or ``"more"`` (one side, half the probes).
        probe_images, probe_calib_batches: a probe is scored on the first ``probe_images`` of the
            ``eval_images`` after adaptive BN on the first ``probe_calib_batches`` of the ``calib_batches``
            (each clipped to those); the candidates always use all of them.
            Why the probe defaults are both sides, the box loss (``probe_metric``), 128 images and 2
            batches (``bench_prune.py search-speed``, shipped baseline, ratio 0.5, 256 px, 2 cores,
            2026-12-06): scored by mAP a probe costs what a candidate costs (~1.5 s: BN 0.4 s, inference
            0.7 s and NMS + mAP 0.4 s on 256 images) and the ~100 probes were ~80% of the search, but mAP on
            fewer images or one side ranked the groups differently and led to lower-scoring picks (one side
            0.61x the time, pick score 0.047 vs 0.052; one side, 128 images, 4 batches 0.40x, 0.038; seed
            1: 0.029 vs 0.056). The box loss needs no NMS: with these defaults a probe costs ~0.45 s, the
            whole search took 0.42-0.45x the time of mAP probes on all the data, and its picks scored
            higher on the candidates' own metric on seeds 0 and 1 (0.071 vs 0.052, 0.058 vs 0.056; the
            setting was chosen on them) and lower on seed 2 (0.060 vs 0.065). On 64 images and 4 batches
            it was 0.39-0.41x but seed 1's pick scored 0.050; ``"distortion"`` (64, 4)
            picked 0.031 on seed 0 (it measures closeness to the unpruned model, not accuracy). The search
            before: ``probe_metric="map", probe_images=256, probe_calib_batches=8``.
        probe_metric: how a probe is scored: ``"map"`` (``metric`` on the held-out images, as a candidate),
            ``"box_loss"`` (YOLOv5's box regression loss, ``1 - CIoU`` of the predictions matched to the
            labels, :func:`~yolocompress.compress.prune.scoring.box_loss`) or ``"distortion"`` (how far the
            probe's raw head outputs are from the unpruned model's on the same images,
            :func:`~yolocompress.compress.prune.scoring.head_distortion`); the last two need no NMS and no
            mAP and are smooth, so they can be used on fewer images. Only the probes: candidates are always
            scored by ``metric``.
        reject_below, reject_images, reject_calib_batches: early rejection of hopeless candidates (0: off).
            Each candidate is first scored on the first ``reject_images`` after adaptive BN on the first
            ``reject_calib_batches``; one scoring below ``reject_below`` times the uniform strategy's score
            there is dropped without its full score. A kept candidate's score is exactly what it would be
            without this: when the head has every calibration batch and whole ``eval_batch`` batches (the
            defaults: 8 batches, 64 images), only the other held-out images are added to the head's
            (``SubnetScorer.in_stages``); otherwise its BN statistics are completed on the other batches and
            it is scored on every held-out image again. The default was 4 calibration batches until
            2026-12-06: BN on all 8 costs a rejected candidate more, a kept one no longer scores the head's
            images twice (seeds 0-2, shipped baseline, with ``eval_batch`` 32: the same picks, the same
            rejections on seeds 1 and 2 and one fewer on seed 0; the candidate phase 0.93x on seed 2, the
            one with the fewest rejections, and 0.95-1.04x on seeds 0 and 1). The uniform
            candidate always passes, so the pick never scores below it. Measured as above: 10 of the 11
            random candidates dropped (their full scores at most 0.0043 against the pick's 0.0517), the same
            pick, the candidate phase 26 s instead of 33 s.
        calib_batches, calib_batch: adaptive-BN data, batches x images, from the train split.
        eval_images, eval_batch: held-out images each candidate is scored on (``eval_split``: ``"train"``,
            training images disjoint from the calibration images, as in the paper; or ``"val"``). With 64
            images the ranking of near-uniform candidates changes with the images drawn (rank correlation
            0.22-0.67 between draws on the shipped baseline); 256 make it reproducible (0.78-0.93;
            ``bench_prune.py stability``). ``eval_batch`` 32 (16 until 2026-12-06): bf16 inference on the 256
            images 0.39 s per candidate instead of 0.44 (half-width yolov5n, 256 px, AMX CPU).
        metric: the score, ``map50_95``, ``map50`` or ``fitness``.
        max_ratio: the most any group is pruned.
        spread: how uneven sampled strategies may be: per-group ratios ``~ U[1 - spread, 1]`` before scaling
            to the budget (1: the paper's ``[0, max]`` sampling; smaller: closer to uniform).
        include_uniform: the uniform strategy is the first candidate.
        prefer: ``"accuracy"``: the best score wins; ``"latency"``: among the candidates whose score is
            within ``near_tie`` of the best, the one with the lowest *predicted* latency (the per-layer
            latency table's) wins.
        near_tie: the score difference treated as a tie by ``prefer="latency"`` (default 0.005 mAP50-95:
            about the spread of one candidate's score between draws of 256 held-out images).
        latency_cap: ``"uniform"``: with a FLOPs budget (``ratio`` or ``target_gflops``) every candidate's
            *predicted* latency is also at most the uniform strategy's (the per-layer latency table's,
            measured once on this CPU at ``imgsz`` and cached), so the pick is not slower than pruning
            every layer alike at the same FLOPs; ``"none"``: FLOPs only. Ignored with ``target_latency``.
        importance: which channels of a group a sub-net keeps: ``"iterative_grouped_l1"`` (the default:
            ranked by when step-wise pruning by grouped L1, recomputed on what is left after each step,
            removes them, as Torch-Pruning's iterative pruners keep them), ``"grouped_l1"`` (ranked once: the
            summed L1 norm of the filters producing them, the weights that read them and their BatchNorm
            scales; the default on 2026-12-06) or ``"l1"`` (the producing filters only, the paper's);
            ``prune.importance``. Shipped baseline, ratio 0.5, seeds 0 / 1 / 2, the prune stage's 20-epoch
            fine-tune, 2048 val images: the default search's pick ended at 0.6611 / 0.6621 / 0.6611 mAP50-95
            with the iterative ranking, 0.6450 / 0.6525 / 0.6542 with ``grouped_l1`` and 0.6489 / 0.6296 /
            0.6311 with ``l1`` (benchmarks/RESULTS.md).
        sensitivity_cost: what a probe's score change is divided by to rank the groups for the guided
            candidates: ``"flops"`` (score per FLOP kept), ``"latency"`` (score per unit of *predicted*
            latency kept: a budget-bound search then prunes first what costs latency and buys little score),
            ``"both"`` (half the guided candidates ranked each way, from the same probes) or ``"auto"``:
            both with ``target_latency``, latency with ``latency_cap="uniform"``, else FLOPs. Which ranking
            gives the better latency pick depends on the machine's latency table: per latency lifted the 256
            px proxy of item 2 by 3.8-5.9 points on one instance, per FLOP by 7.7 on another of the same CPU
            model (benchmarks/RESULTS.md); the candidates of both compete on the same adaptive-BN score.
        score_precision, probe_precision: the arithmetic of the scoring passes (BN re-estimation and
            held-out inference) of the candidates and of the probes: ``"fp32"``, ``"bf16"`` (CPU bfloat16
            autocast, :class:`~yolocompress.compress.prune.scoring.SubnetScorer`) or ``"auto"``: bf16 on a
            CPU with bf16 units (``amx_bf16`` or ``avx512_bf16``), fp32 elsewhere and on a GPU. Only the
            scores change: the chosen sub-net's BN statistics are re-estimated in fp32 before it is
            evaluated and fine-tuned. The report's ``score_precision`` says which the candidates used.
            Measured (``bench_prune.py search-speed``, shipped baseline, 256 px, ratio 0.5, 2-core Xeon with
            AMX, seeds 0-2, 2026-12-06): bf16 candidates 54-60 candidates/min against fp32's 43-53 (the
            candidate phase 5-16% faster; NMS and mAP, a third of a candidate's time, do not change), the same
            pick on seeds 0 and 1 and on seed 2 a near-tie swapped (bf16 scores 0.0605 vs 0.0603, both within
            ``near_tie``); bf16 probes made the whole search 0.82-0.87x the time but moved the probes'
            sensitivities enough to build other guided candidates (a different pick on all three seeds),
            hence ``probe_precision="fp32"``. ``score_precision="fp32"`` gives the same pick on CPUs with
            and without bf16 units.
        score_conf_thres: the confidence threshold of the NMS before a candidate's (or an mAP probe's) mAP,
            not of the final evaluation (``PruneConfig.conf_thres``, val.py's 0.001). A half-pruned sub-net
            before its fine-tune floods NMS with low-confidence boxes: at 0.001 NMS and mAP were a third of
            a candidate's time (0.44 s); at 0.01 0.22 s, with the same three best candidates in the same
            order on seeds 0-2 (Spearman of the 20 scores against 0.001's 0.995-1.000, scores within
            0.0013; shipped baseline, 256 px, ratio 0.5, 2026-12-06).
    """

    candidates: int = 20
    guided: int = 8
    probe_step: float = 0.25
    probe_sides: str = "both"
    probe_metric: str = "box_loss"
    probe_images: int = 128
    probe_calib_batches: int = 2
    reject_below: float = 0.5
    reject_images: int = 64
    reject_calib_batches: int = 8
    calib_batches: int = 8
    calib_batch: int = 16
    eval_images: int = 256
    eval_batch: int = 32
    eval_split: str = "train"
    metric: str = "map50_95"
    max_ratio: float = 0.8
    spread: float = 1.0
    include_uniform: bool = True
    prefer: str = "accuracy"
    near_tie: float = 0.005
    latency_cap: str = "none"
    score_precision: str = "auto"
    probe_precision: str = "fp32"
    score_conf_thres: float = 0.01
    sensitivity_cost: str = "auto"
    importance: str = "iterative_grouped_l1"

    def __post_init__(self) -> None:
        _at_least(self, ("candidates", "calib_batches", "calib_batch", "eval_images", "eval_batch",
                         "probe_images", "probe_calib_batches", "reject_images", "reject_calib_batches"), 1)
        _at_least(self, ("guided",), 0)
        if not 0.0 < float(self.probe_step) < 1.0:
            raise InputError(f"probe_step must be strictly between 0 and 1, got {self.probe_step}")
        if not 0.0 < float(self.spread) <= 1.0:
            raise InputError(f"spread must be in (0, 1], got {self.spread}")
        if not 0.0 < float(self.max_ratio) < 1.0:
            raise InputError(f"max_ratio must be strictly between 0 and 1, got {self.max_ratio}")
        if not 0.0 <= float(self.reject_below) <= 1.0:
            raise InputError(f"reject_below must be in [0, 1], got {self.reject_below}")
        for name, choices in (("probe_sides", PROBE_SIDES), ("probe_metric", PROBE_METRICS),
                              ("metric", METRICS), ("prefer", PREFER), ("latency_cap", LATENCY_CAPS),
                              ("importance", IMPORTANCE_NAMES), ("sensitivity_cost", SENSITIVITY_COSTS),
                              ("score_precision", SCORE_PRECISIONS), ("probe_precision", SCORE_PRECISIONS)):
            if getattr(self, name) not in choices:
                raise InputError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if not 0.0 <= float(self.score_conf_thres) < 1.0:
            raise InputError(f"score_conf_thres must be in [0, 1), got {self.score_conf_thres}")
        if not float(self.near_tie) >= 0.0:
            raise InputError(f"near_tie must be >= 0, got {self.near_tie}")


@dataclass(frozen=True)
class PruneFinetuneConfig:
    """The fine-tune of the winner (validated on construction; ``compress.finetune.FinetuneConfig`` is built
    from it, with the run's image size, seed, device and workers).

    Attributes:
        epochs: epochs of fine-tuning (0: none).
        batch: images per batch, gradients accumulated to ``nominal_batch`` images per optimizer step
            (YOLOv5: 64; smaller means more steps for the same compute, which helps a short CPU fine-tune).
        distill: distillation from the unpruned model: a weight ``W`` (output KD at ``W``; 0: labels only) or
            a :class:`~yolocompress.compress.distill.config.DistillConfig` (output, feature or both; feature
            KD adds connectors for the pruned channel counts).
        bf16, channels_last: CPU bf16 autocast / NHWC (``TrainConfig``'s options).
    """

    epochs: int = 10
    batch: int = 16
    nominal_batch: int = 64
    distill: float | DistillConfig = 0.0
    bf16: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        _at_least(self, ("epochs",), 0)
        _at_least(self, ("batch", "nominal_batch"), 1)
        as_distill_config(self.distill)  # a weight >= 0 or a DistillConfig

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "distill": distill_json(self.distill)}


def default_round_to() -> int:
    """The default ``ChannelRules.round_to``, for either budget: the channel block of ONNX Runtime's
    convolutions on this CPU (:func:`~yolocompress.profile.latency_table.channel_block`: 16 with AVX-512,
    else 8). ONNX Runtime's convolutions work in blocks of that many channels (its NCHWc layout): a width
    between two blocks costs the next one, and a Concat of such widths falls back to plain layout with
    reorders around it. With a FLOPs budget the narrowest width is also allowed (:func:`default_narrow`)."""
    from yolocompress.profile.latency_table import channel_block

    return channel_block()


def default_narrow(latency_budget: bool) -> bool:
    """The default ``ChannelRules.narrow``: on with a FLOPs budget, off with a latency budget.

    At equal FLOPs, widths in 16s alone leave a nano model's 16-channel groups unprunable, so the budget is
    taken from the deep layers (-9 to -11 mAP50-95 points after the same fine-tune), while widths in 8s run
    1.03-1.40x as long as Torch-Pruning's uniform widths. Widths of 8 or multiples of 16 give both: shipped
    baseline, ratio 0.5, 256 px, 10-epoch fine-tune, seeds 0 / 1, 2-core AMD EPYC (Zen 5): +6.12 / +7.47
    points over Torch-Pruning's magnitude pruner, as accurate as widths in 8s, and about Torch-Pruning's
    latency (median ratio 1.01 at 256 px, 1.02 at 640 px over five timings; benchmarks/RESULTS.md). Under a
    latency budget, widths in 16s buy about twice the FLOPs at equal latency (10-13 points) and were
    measured without the narrow width."""
    return not latency_budget


@dataclass(frozen=True)
class PruneConfig:
    """Settings of one pruning run (validated on construction; see the module doc for the budget).

    Attributes:
        ratio: fraction of prunable channels removed, 0 < ratio < 1 (budget: the uniform strategy's FLOPs);
            ``DEFAULT_RATIO`` when no budget is given.
        target_gflops: alternative budget, GFLOPs at ``imgsz``.
        target_latency: alternative budget, a fraction in (0, 1) of the original's ONNX Runtime latency
            (batch 1, ``latency_threads`` threads, at ``imgsz``), predicted per candidate; give at most one
            of ``ratio``, ``target_gflops`` and ``target_latency``.
        imgsz: image size (pixels) for FLOPs, the search and evaluation.
        search: :class:`SearchConfig`, how the strategy is searched and scored.
        finetune: :class:`PruneFinetuneConfig`, the fine-tune of the winner.
        channels: :class:`~yolocompress.compress.prune.apply.ChannelRules` (kept counts multiples of
            ``round_to``, >= ``min_channels``; with ``narrow`` also ``min_channels`` itself); ``round_to``
            and ``narrow`` of ``None`` (the defaults) are set by :func:`default_round_to` (the CPU's channel
            block) and :func:`default_narrow` (on with a FLOPs budget).
        exclude: layer selectors never pruned: layer indices (``"0"``) or module paths (``"model.9.cv1"``, the
            module and everything under it); see :mod:`yolocompress.models.selectors`.
        seed: strategy sampling, data subsets and fine-tuning.
        latency: also measure ONNX Runtime latency (batch 1, ``latency_threads``) before and after (slow);
            always done with ``target_latency``.
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

    ratio: float | None = None  # DEFAULT_RATIO when no budget is given (set in __post_init__)
    target_gflops: float | None = None
    target_latency: float | None = None
    imgsz: int = 640
    search: SearchConfig = field(default_factory=SearchConfig)
    finetune: PruneFinetuneConfig = field(default_factory=PruneFinetuneConfig)
    channels: ChannelRules = field(default_factory=ChannelRules)  # round_to None: set in __post_init__
    exclude: tuple[str, ...] = ()
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

    # flat names (the command line's) of nested settings -> (part, field)
    FLAT: ClassVar[dict[str, tuple[str, str]]] = {
        **{f.name: ("search", f.name) for f in fields(SearchConfig)},
        "finetune_epochs": ("finetune", "epochs"), "finetune_batch": ("finetune", "batch"),
        "finetune_nominal_batch": ("finetune", "nominal_batch"),
        **{name: ("finetune", name) for name in ("distill", "bf16", "channels_last")},
        "round_to": ("channels", "round_to"), "min_channels": ("channels", "min_channels"),
        "narrow": ("channels", "narrow")}

    @classmethod
    def from_flat(cls, **settings: Any) -> PruneConfig:
        """A config from flat keywords: ``PruneConfig``'s own fields and the :attr:`FLAT` names
        (``PruneConfig.from_flat(ratio=0.5, candidates=4, finetune_epochs=0, round_to=1)``)."""
        parts: dict[str, dict[str, Any]] = {"search": {}, "finetune": {}, "channels": {}}
        top = {}
        for key, value in settings.items():
            if key in cls.FLAT:
                part, name = cls.FLAT[key]
                parts[part][name] = value
            else:
                top[key] = value
        types = {"search": SearchConfig, "finetune": PruneFinetuneConfig, "channels": ChannelRules}
        nested = {part: types[part](**values) for part, values in parts.items() if values}
        return cls(**top, **nested)

    def __post_init__(self) -> None:
        given = [name for name in ("ratio", "target_gflops", "target_latency")
                 if getattr(self, name) is not None]
        if len(given) > 1:
            raise InputError(f"give one budget: a ratio, a target GFLOPs or a target latency (got "
                             f"{' and '.join(given)})")
        if not given:
            object.__setattr__(self, "ratio", DEFAULT_RATIO)
        if self.channels.round_to is None:
            object.__setattr__(self, "channels", replace(self.channels, round_to=default_round_to()))
        if self.channels.narrow is None:
            object.__setattr__(self, "channels", replace(self.channels, narrow=default_narrow(
                self.target_latency is not None)))
        if self.target_latency is not None and not 0.0 < float(self.target_latency) < 1.0:
            raise InputError(f"target latency must be strictly between 0 and 1 (a fraction of the original's "
                             f"latency), got {self.target_latency}")
        if self.ratio is not None and not 0.0 < float(self.ratio) < 1.0:
            raise InputError(f"ratio must be strictly between 0 and 1, got {self.ratio}")
        if self.target_gflops is not None and not float(self.target_gflops) > 0:
            raise InputError(f"target GFLOPs must be positive, got {self.target_gflops}")
        _at_least(self, ("imgsz", "latency_threads"), 1)
        if self.imgsz % 32:
            raise InputError(f"imgsz must be a multiple of 32, got {self.imgsz}")
        object.__setattr__(self, "exclude", tuple(str(e) for e in self.exclude))

    @property
    def latency_capped(self) -> bool:
        """A FLOPs budget whose candidates are also held to the uniform strategy's predicted latency
        (``search.latency_cap == "uniform"``; a latency budget ignores the cap)."""
        return self.search.latency_cap == "uniform" and self.target_latency is None

    def to_dict(self) -> dict[str, Any]:
        """Plain data, nested like the config (``search``, ``finetune``, ``channels`` are mappings)."""
        d = asdict(self)
        d["exclude"] = list(self.exclude)
        d["finetune"] = self.finetune.to_dict()
        return d


__all__ = ["DEFAULT_RATIO", "METRICS", "PROBE_METRICS", "PruneConfig", "PruneFinetuneConfig", "SearchConfig",
           "default_narrow", "default_round_to"]
