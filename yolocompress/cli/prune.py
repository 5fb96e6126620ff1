"""``yolocompress prune MODEL --ratio R --data DATA -o OUT.pt``: EagleEye structured channel pruning."""
from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from yolocompress.cli.common import add_max_map_drop, config_help, image_size, positive_int
from yolocompress.cli.distill import DISTILL_CONFIG, add_method_flags, distill_option
from yolocompress.errors import InputError
from yolocompress.io.paths import file_size, preflight
from yolocompress.profile.cpu import cpu_line

if TYPE_CHECKING:
    from yolocompress.compress.stage import ModelSnapshot


# PruneConfig settings set by flags of the same name (``--calib-batches`` -> ``calib_batches``, the flat names
# of ``PruneConfig.from_flat``); their defaults are PruneConfig's, shown in --help ({prune.search.candidates}:
# read only when help is shown, PruneConfig imports torch).
# ``--batch`` sets the three batch sizes, ``--exclude`` takes a list.
CONFIG_FLAGS = ("ratio", "target_gflops", "target_latency", "candidates", "guided", "calib_batches",
                "eval_images", "finetune_epochs", "round_to", "min_channels", "narrow", "seed", "device",
                "workers", "distill", "bf16", "channels_last", "latency", "resume", "prefer", "latency_cap",
                "score_precision")
BUDGET_FLAGS = ("ratio", "target_gflops", "target_latency")
PRUNE_MODULE = "yolocompress.compress.prune.config"
PRUNE_CONFIG = f"{PRUNE_MODULE}:PruneConfig"


def prune_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The PruneConfig keywords the command line gave (flags left out keep PruneConfig's defaults)."""
    settings = {name: getattr(args, name) for name in CONFIG_FLAGS if getattr(args, name) is not None}
    if args.batch is not None:
        settings.update(calib_batch=args.batch, eval_batch=args.batch, finetune_batch=args.batch)
    if args.exclude:
        settings["exclude"] = tuple(e.strip() for e in args.exclude.split(",") if e.strip())
    distill = distill_option(args.distill, args)  # --distill W, or the --distill-method settings
    if distill is not None:
        settings["distill"] = distill
    return settings


def run(model: str, output: str, data: str, settings: Mapping[str, Any] | None = None, imgsz: int | None = None,
        json_path: str | None = None, cfg: str | None = None, on_progress: Any = None,
        max_map_drop: float | None = None) -> dict[str, Any]:
    """Prune the checkpoint ``model`` and save the result (our format, atomically) to ``output``.

    ``settings``: ``PruneConfig.from_flat`` keywords (:func:`prune_settings` builds them from the flags);
    ``imgsz`` defaults to the checkpoint's own image size (640 for Ultralytics files). Returns the
    ``StageReport`` as a dict (``report.to_dict()``, also written to ``json_path`` when given; its ``config``
    nested like ``PruneConfig``), with the accuracy verdict of
    :func:`~yolocompress.compress.accuracy.check_accuracy` (``max_map_drop`` points) in
    ``details["accuracy"]`` and its warning. Only rank 0 writes files in a ``torchrun`` run.

    Work in progress lives beside ``output``: the search log ``OUTPUT.search.jsonl`` and the fine-tune's
    run folder :func:`finetune_folder`, both removed once ``output`` is written. ``settings["resume"]``
    continues them (a killed run ends as an uninterrupted one would); without it a dead run's are replaced.
    """
    settings = dict(settings or {})
    given = [f"--{name.replace('_', '-')}" for name in BUDGET_FLAGS if settings.get(name) is not None]
    if len(given) > 1:
        raise InputError(f"give --ratio, --target-gflops or --target-latency, not both (got "
                         f"{' and '.join(given)})")
    if Path(output).suffix.lower() != ".pt":
        raise InputError(f"output must be a .pt file, got {output}")
    preflight(inputs=[("model file", model), ("data.yaml", data)],
              outputs=[("output", output), ("--json", json_path)], expected_bytes=file_size(model))
    from yolocompress.cli.common import load_cli_model, write_json
    from yolocompress.compress.accuracy import check_accuracy
    from yolocompress.compress.fuse import require_unfused
    from yolocompress.compress.prune import PruneConfig, prune_model
    from yolocompress.data import load_data_config
    from yolocompress.engine.distributed import context_from_env
    from yolocompress.io.checkpoint import history_entry, save_model

    work = finetune_folder(output)
    config = PruneConfig.from_flat(**settings, imgsz=imgsz or PruneConfig.imgsz,  # validated before loading
                                   search_log=f"{output}.search.jsonl",  # what --resume continues
                                   finetune_dir=str(work))
    data_cfg = load_data_config(data)
    net, info = load_cli_model(model, cfg)
    require_unfused(net, "pruning")
    if imgsz is None:
        config = dataclasses.replace(config, imgsz=info.imgsz)
    if not config.resume and context_from_env().is_main:
        shutil.rmtree(work, ignore_errors=True)  # a dead run's fine-tune: replaced, not continued
    pruned, report = prune_model(net, data_cfg, config, on_progress=on_progress)
    report, _ = check_accuracy(report, max_map_drop)
    result = report.to_dict()
    if context_from_env().is_main:
        details = result["details"]
        summary = {k: details[k] for k in ("budget_gflops", "chosen", "after_search", "after_finetune")}
        summary.update(baseline=_snapshot_summary(report.before), pruned=_snapshot_summary(report.after),
                       config=result["config"])
        entry = history_entry("prune", method="eagleeye", file=Path(model).name, **summary)
        metrics = dict(info.metrics)
        final = details["after_finetune"] or details["after_search"]
        metrics.update({"metrics/mAP_0.5": final["map50"], "metrics/mAP_0.5:0.95": final["map50_95"]})
        save_model(pruned, output, imgsz=config.imgsz, history=[*info.history, entry], metrics=metrics)
        write_json(result, json_path)
        shutil.rmtree(work, ignore_errors=True)  # done: nothing to resume
    return result


def finetune_folder(output: str | Path) -> Path:
    """The fine-tune's run folder of a prune writing ``output``: ``OUTPUT.finetune`` beside it, kept until
    the output is written so that ``--resume`` continues a killed fine-tune from its ``weights/last.pt``."""
    return Path(f"{output}.finetune")


def _snapshot_summary(snap: ModelSnapshot | None) -> dict[str, Any]:
    """A checkpoint-history view of a snapshot: ``params``, ``gflops`` and, when measured, ``map50``,
    ``map50_95`` and ``ort_latency_ms`` (ONNX Runtime median)."""
    if snap is None:
        return {}
    out: dict[str, Any] = {"params": snap.params, "gflops": snap.gflops}
    out.update({k: getattr(snap, k) for k in ("map50", "map50_95") if getattr(snap, k) is not None})
    if "onnxruntime" in snap.latency:
        out["ort_latency_ms"] = snap.latency["onnxruntime"].median_ms
    return out


def _main(args: argparse.Namespace) -> int:
    from yolocompress.cli.common import ProgressPrinter

    r = run(args.model, args.output, args.data, prune_settings(args), imgsz=args.imgsz, json_path=args.json,
            cfg=args.cfg, on_progress=None if args.quiet else ProgressPrinter(),
            max_map_drop=args.max_map_drop)
    from yolocompress.cli.common import print_stage_warnings
    from yolocompress.compress.accuracy import check_accuracy
    from yolocompress.compress.stage import StageReport
    from yolocompress.engine.distributed import context_from_env

    if not context_from_env().is_main:
        return 0
    report = StageReport.from_dict(r)
    b, p, d = report.before, report.after, report.details
    nan = float("nan")
    print(f"pruned {args.model} -> {args.output}: params {b.params:,} -> {p.params:,}, "
          f"GFLOPs@{d['imgsz']} {b.gflops:.3f} -> {p.gflops:.3f} ({p.gflops / b.gflops:.2f}x; "
          f"budget {d['budget_gflops']:.3f})")
    ort, lines = b.latency.get("onnxruntime"), []
    if ort:
        after = p.latency["onnxruntime"].median_ms
        lines.append(f"ONNX Runtime latency {ort.median_ms:.1f} ms -> {after:.1f} ms")
    lines += budget_lines(d["budget"], d["preference"], d["candidates"])
    cpu, flags = (ort.cpu, ort.cpu_flags) if ort else (d["budget"].get("cpu"), d["budget"].get("cpu_flags"))
    if lines and cpu:  # one CPU line under every latency figure above
        lines.append(f"  {cpu_line(cpu, flags)}")
    for line in lines:
        print(line)
    # candidates rejected early (on the probes' data) have no score
    scores = sorted((c["score"] for c in d["candidates"] if c["score"] is not None), reverse=True) or [nan]
    chosen = d["candidates"][d["chosen"]]
    probes = f" after {d['probes']} probes" if d["probes"] else ""
    rejected = sum(bool(c.get("rejected")) for c in d["candidates"])
    per_minute = nan if d["candidates_per_minute"] is None else d["candidates_per_minute"]
    print(f"EagleEye: {len(d['candidates'])} candidates{probes} ({per_minute:.1f}/min"
          + (f", {rejected} rejected early" if rejected else "") + f", scored in {d['score_precision']}), "
          f"chosen #{d['chosen']}, {chosen['kind']} (score {scores[0]:.4f}; "
          f"median {scores[len(scores) // 2]:.4f})")
    line = (f"mAP50-95: baseline {nan if b.map50_95 is None else b.map50_95:.4f}, "
            f"after search {d['after_search']['map50_95']:.4f}")
    if d["after_finetune"]:
        line += f", after fine-tune {d['after_finetune']['map50_95']:.4f}"
    print(line)
    verdict = check_accuracy(report, args.max_map_drop)[1]
    print_stage_warnings(report, verdict)
    verdict.raise_if_failed()
    return 0


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def budget_lines(budget: Mapping[str, Any], preference: Mapping[str, Any],
                 candidates: list[Mapping[str, Any]]) -> list[str]:
    """What the CLI prints of the report's ``budget`` and ``preference``: the latency ratios (predicted by
    the latency table, measured side by side with the original) of the chosen sub-net and the uniform one,
    and the near-tie that ``--prefer latency`` broke."""
    lines = []
    if budget["predicted_ratio"] is not None or budget["measured_ratio"] is not None:
        uniform = budget["uniform"]
        target = f"latency <= {budget['target']:g}" if budget["kind"] == "latency" else budget["kind"]
        if budget.get("latency_margin"):
            target += (f", candidates held to {budget['search_limit']:.3f} predicted: margin "
                       f"{100 * budget['latency_margin']:.1f}%")
        if budget.get("latency_cap") == "uniform":
            target += ", latency capped at uniform's"
        if (budget.get("round_to") or 1) > 1:
            narrowest = budget.get("min_channels") if budget.get("narrow") else None
            target += (f", widths {narrowest} or multiples of {budget['round_to']}"
                       if narrowest and narrowest < budget["round_to"]
                       else f", widths in multiples of {budget['round_to']}")
        error = ("" if budget["prediction_error"] is None
                 else f", prediction error {100 * budget['prediction_error']:+.1f}%")
        lines.append(f"latency ratio (budget {target}): chosen predicted "
                     f"{_fraction(budget['predicted_ratio'])}, measured {_fraction(budget['measured_ratio'])}"
                     f"{error}; uniform predicted {_fraction(uniform['predicted_ratio'])}, measured "
                     f"{_fraction(uniform['measured_ratio'])}")
    if preference["prefer"] == "latency" and preference["chosen"] != preference["best_score_index"]:
        best, chosen = (candidates[preference[k]] for k in ("best_score_index", "chosen"))
        lines.append(f"--prefer latency: chose #{chosen['index']} (score {chosen['score']:.4f}, predicted "
                     f"latency {_fraction(chosen['latency_ratio'])}) over the best score #{best['index']} "
                     f"({best['score']:.4f}, {_fraction(best['latency_ratio'])}; near-tie "
                     f"{preference['near_tie']:g})")
    return lines


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prune", formatter_class=config_help(prune=PRUNE_CONFIG, prune_module=PRUNE_MODULE,
                                                      distill=DISTILL_CONFIG),
        help="EagleEye structured channel pruning (real, smaller convolutions)",
        description="Remove whole convolution channels. EagleEye samples per-layer-group pruning ratios that "
                    "meet the FLOPs budget, builds each sub-net by L1 norm, re-estimates its BatchNorm "
                    "statistics on a few training batches (adaptive BN), scores it on held-out images, keeps "
                    "the best and fine-tunes it. --ratio R: the budget is the FLOPs of pruning every group "
                    "by R.")
    p.add_argument("model", help="unfused checkpoint (.pt: ours, Ultralytics, or a state_dict with --cfg)")
    p.add_argument("-o", "--output", required=True, help="pruned checkpoint to write (.pt, our format)")
    p.add_argument("--data", required=True,
                   help="data.yaml (train: BN calibration, fine-tuning; val: scoring)")
    p.add_argument("--ratio", type=float, default=None,
                   help="fraction of prunable channels removed, 0 < R < 1 (default {prune_module.DEFAULT_RATIO})")
    p.add_argument("--target-gflops", type=float, default=None,
                   help="FLOPs budget at --imgsz instead of --ratio")
    p.add_argument("--target-latency", type=float, default=None, metavar="R",
                   help="latency budget instead of --ratio: every candidate's predicted ONNX Runtime latency "
                        "(batch 1, {prune.latency_threads} threads, at --imgsz) at most the fraction R of "
                        "the original's; predicted by a per-layer table measured once on this CPU (cached), "
                        "then the chosen sub-net is measured beside the original")
    p.add_argument("--imgsz", type=image_size, default=None,
                   help="image size for FLOPs, search and fine-tuning (default: the checkpoint's)")
    p.add_argument("--candidates", type=positive_int, default=None,
                   help="strategies scored (the first is uniform; default {prune.search.candidates})")
    p.add_argument("--guided", type=int, default=None, metavar="N",
                   help="how many candidates are sensitivity-guided instead of random (default "
                        "{prune.search.guided}; 0: the paper's random sampling only, no probe phase)")
    p.add_argument("--prefer", choices=("accuracy", "latency"), default=None,
                   help="accuracy: the best score wins; latency: the lowest predicted latency among the "
                        "candidates within {prune.search.near_tie} of the best score (default "
                        "{prune.search.prefer})")
    p.add_argument("--latency-cap", choices=("none", "uniform"), default=None,
                   help="uniform: with a FLOPs budget, every candidate's predicted ONNX Runtime latency is "
                        "also at most that of pruning every group alike (per-layer table measured once on "
                        "this CPU, cached), so the pick is not slower than uniform pruning (default "
                        "{prune.search.latency_cap})")
    p.add_argument("--score-precision", choices=("auto", "fp32", "bf16"), default=None,
                   help="arithmetic of the search's scoring passes (BN re-estimation, held-out inference): "
                        "auto is bf16 on a CPU with bf16 units (AMX, AVX512-BF16; 1.05-1.16x the "
                        "candidates per minute measured), fp32 elsewhere; fp32 gives the same pick on every "
                        "CPU; the chosen sub-net's statistics are fp32 either way (default "
                        "{prune.search.score_precision})")
    p.add_argument("--calib-batches", type=positive_int, default=None,
                   help="training batches for adaptive BN (default {prune.search.calib_batches})")
    p.add_argument("--eval-images", type=positive_int, default=None,
                   help="held-out images each candidate is scored on (fewer: faster, noisier ranking; default "
                        "{prune.search.eval_images})")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="epochs of fine-tuning of the winner (0: none; default {prune.finetune.epochs}, a "
                        "quick look: ratio 0.5 on a nano model needs about 150 to come within a point, and a "
                        "larger fall than 5 points is warned about)")
    p.add_argument("--round-to", type=positive_int, default=None,
                   help="keep channel counts a multiple of this (default: the CPU's channel block, 16 with "
                        "AVX-512, else 8; here {prune.channels.round_to})")
    p.add_argument("--min-channels", type=positive_int, default=None,
                   help="never keep fewer channels in a group (default {prune.channels.min_channels})")
    p.add_argument("--narrow", action=argparse.BooleanOptionalAction, default=None,
                   help="also let a group keep --min-channels channels, below --round-to (widths 8, 16, 32, "
                        "48, ... with 8 and 16; default: on with a FLOPs budget, off with --target-latency)")
    p.add_argument("--exclude", default=None,
                   help="comma-separated layer indices or module names never pruned")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="batch size (calibration, scoring, fine-tuning; default {prune.search.calib_batch})")
    p.add_argument("--seed", type=int, default=None,
                   help="strategy sampling, data subsets, fine-tuning (default {prune.seed})")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default {prune.device})")
    p.add_argument("--workers", type=int, default=None,
                   help="data-loading workers for fine-tuning (default {prune.workers})")
    p.add_argument("--distill", type=float, default=None, metavar="W",
                   help="fine-tune with output distillation from the unpruned model at weight W "
                        "(0: labels only; default {prune.finetune.distill})")
    add_method_flags(p, "fine-tune")
    p.add_argument("--bf16", action="store_true", default=None, help="fine-tune with CPU bf16 autocast (AMX CPUs)")
    p.add_argument("--channels-last", action="store_true", default=None, help="fine-tune in NHWC memory format")
    p.add_argument("--latency", action="store_true", default=None,
                   help="also measure ONNX Runtime latency before and after")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue a killed run (same model, data and settings): its search recorded in "
                        "OUTPUT.search.jsonl (sub-nets scored there are not scored again) and its fine-tune "
                        "from OUTPUT.finetune/weights/last.pt; without it, a dead run's are replaced")
    p.add_argument("--cfg", default=None, help="model config for a bare state_dict")
    p.add_argument("--json", default=None, help="write the full report as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_max_map_drop(p)
    p.set_defaults(func=_main)
