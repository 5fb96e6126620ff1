"""Run a resolved recipe: stages in order, one folder each, resumable, then one before/after report.

Output folder::

    recipe.resolved.yaml        every stage's full config, defaults filled in
    00-baseline/model.pt        the input model in our format (fp32), and snapshot.json (its measurements)
    01-prune/model.pt           each stage's artifact (model.pt or model.onnx) and report.json (its StageReport)
    ...
    report.json  report.md  tradeoff.png  tradeoff.svg

Every file is written atomically, and a stage's ``report.json`` last, so a stage counts as done only when
everything it wrote is complete. With ``resume=True`` a stage whose ``report.json`` records the same input
artifact hash and config hash (and whose artifact is intact) is skipped, its files untouched; a changed stage
reruns and so do the ones after it (their inputs change); a killed fine-tune or QAT continues from its
trainer's ``train/weights/last.pt``. Each stage reads its input from the previous stage's file, in a fresh run
as in a resumed one, so both compute the same thing. Latency is measured at the end for all artifacts side by
side (:func:`~yolocompress.profile.latency.interleaved_times`), so its ratios are meaningful on a busy machine.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from yolocompress.compress.accuracy import PRUNE_RECOVERY, RUIN_POINTS
from yolocompress.compress.stage import Latency, ModelSnapshot, StageReport, model_snapshot, onnx_snapshot
from yolocompress.errors import InputError
from yolocompress.progress import ProgressCallback
from yolocompress.io.atomic import atomic_write_json, atomic_write_text
from yolocompress.io.workdir import work_dir
from yolocompress.report.gate import GateLimits, GateResult, check_report
from yolocompress.recipe.plan import LoadedRecipe, RecipePlan, StagePlan
from yolocompress.recipe.stages import StageContext

BASELINE_FOLDER = "00-baseline"


@dataclass(frozen=True)
class RecipeProgress:
    """One progress event: ``status`` is ``start``, ``skip`` or ``done`` of stage ``index`` of ``total``
    (0: the baseline), or ``measure`` (latency of all artifacts) and ``report``."""

    index: int
    total: int
    name: str
    status: str
    seconds: float = 0.0


StageProgressCallback = Callable[[RecipeProgress], None]


@dataclass(frozen=True)
class RecipeResult:
    """What a run produced: its folder, the ``report.json`` content, the report files written and the
    verdicts of the recipe's ``gate:`` (``None`` without one)."""

    out_dir: Path
    report: dict[str, Any]
    files: tuple[Path, ...]
    gate: GateResult | None = None


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_output_folder(out_dir: Path, resume: bool) -> None:
    """Refuse an output that is a file, or a non-empty folder without ``resume`` (one line, exit 2)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file, not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not resume:
        raise InputError(f"--out {out_dir} exists and is not empty: pass --resume to continue that run, or choose "
                         "another folder")
    if resume and out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "recipe.resolved.yaml").is_file():
        raise InputError(f"--out {out_dir} holds no recipe run (no recipe.resolved.yaml) to resume")


def dry_run(loaded: LoadedRecipe) -> dict[str, Any]:
    """The resolved plan without running it: the full recipe, the model's params and GFLOPs at the image
    size and, for a ``prune`` stage on the input architecture, its FLOPs budget."""
    from yolocompress.compress.prune.search import plan_search
    from yolocompress.profile.flops import gflops
    from yolocompress.profile.params import count_params

    plan, model = loaded.plan, loaded.model
    base_gflops = gflops(model, plan.imgsz)
    budgets = []
    # The first prune stage sees the input architecture (the plan refuses prune after fuse, quantize or
    # export); a later one works on an architecture known only at run time.
    first = next((s for s in plan.stages if s.type.name == "prune"), None)
    if first is not None:
        search = plan_search(model.float().cpu().eval(), first.configs["config"])
        budgets.append({"stage": first.name, "budget_gflops": search.budget / 1e9,
                        "budget_fraction": search.budget / search.base_flops,
                        "searchable_groups": len(search.space.searchable)})
    return {"recipe": plan.resolved(), "model": {"path": str(plan.model_path), "params": count_params(model).total,
                                                 "gflops": base_gflops, "imgsz": plan.imgsz},
            "prune_budget": budgets}


def _load_torch(path: Path) -> Any:
    from yolocompress.io.checkpoint import load_model

    return load_model(path)


def _snapshot(artifact: Path, plan: RecipePlan, data: Any, source: ModelSnapshot | None) -> ModelSnapshot:
    batch = plan.document.measure.eval_batch
    if artifact.suffix == ".onnx":
        return onnx_snapshot(artifact, plan.imgsz, source=source, data=data, eval_batch=batch)
    return model_snapshot(_load_torch(artifact), plan.imgsz, data=data, file=artifact, eval_batch=batch)


class _Run:
    """The state of one run (kept small: the plan, the folder, what was measured so far)."""

    def __init__(self, plan: RecipePlan, data: Any, out_dir: Path, resume: bool,
                 on_progress: StageProgressCallback | None, on_inner_progress: ProgressCallback | None) -> None:
        self.plan, self.data, self.out_dir, self.resume = plan, data, out_dir, resume
        self.on_progress, self.on_inner_progress = on_progress, on_inner_progress
        self.total = len(plan.stages)

    def emit(self, index: int, name: str, status: str, seconds: float = 0.0) -> None:
        if self.on_progress is not None:
            self.on_progress(RecipeProgress(index, self.total, name, status, seconds))

    # -------------------------------------------------------------------------------------- baseline
    def baseline(self, model: Any, info: Any) -> tuple[Path, ModelSnapshot]:
        from yolocompress.io.checkpoint import save_model

        folder = self.out_dir / BASELINE_FOLDER
        artifact, record = folder / "model.pt", folder / "snapshot.json"
        key = {"input_sha256": file_sha256(self.plan.model_path), "imgsz": self.plan.imgsz,
               "data": str(self.plan.data_path)}
        if self.resume and record.is_file() and artifact.is_file():
            saved = json.loads(record.read_text(encoding="utf-8"))
            if saved.get("resume") == key and saved.get("artifact_sha256") == file_sha256(artifact):
                self.emit(0, "baseline", "skip")
                return artifact, ModelSnapshot.from_dict(saved["snapshot"])
        self.emit(0, "baseline", "start")
        t0 = time.perf_counter()
        save_model(model, artifact, imgsz=self.plan.imgsz, history=info.history, metrics=info.metrics)
        snap = _snapshot(artifact, self.plan, self.data, None)
        atomic_write_json({"snapshot": snap.to_dict(), "resume": key, "artifact_sha256": file_sha256(artifact)},
                          record)
        self.emit(0, "baseline", "done", time.perf_counter() - t0)
        return artifact, snap

    # ---------------------------------------------------------------------------------------- stages
    def stage(self, stage: StagePlan, source: Path, before: ModelSnapshot, torch_source: ModelSnapshot,
              teacher: Any) -> tuple[Path, StageReport]:
        folder = self.out_dir / stage.folder
        record = folder / "report.json"
        key = {"input_sha256": file_sha256(source), "config_sha256": stage.config_sha256(self.plan.imgsz)}
        done = self._completed(record, key)
        if done is not None:
            self.emit(stage.index + 1, stage.name, "skip")
            return done
        started = folder / "stage.json"
        same_start = self.resume and started.is_file() and json.loads(started.read_text()).get("resume") == key
        if folder.exists() and not same_start:
            shutil.rmtree(folder)  # a different earlier attempt: its trainer state must not be resumed
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json({"resume": key}, started)
        self.emit(stage.index + 1, stage.name, "start")
        t0 = time.perf_counter()
        artifact_in = source if source.suffix == ".onnx" else _load_torch(source)
        context = StageContext(data=self.data, imgsz=self.plan.imgsz, seed=self.plan.document.seed,
                               work_dir=folder, teacher=teacher, resume=same_start,
                               on_progress=self.on_inner_progress)
        output, report = stage.type.run(context, artifact_in, stage.configs)
        artifact = self._save(stage, output, source, folder)
        after = _snapshot(artifact, self.plan, self.data, torch_source) if artifact != source else before
        report = report.replace(name=stage.name, before=before, after=after, seconds=time.perf_counter() - t0)
        atomic_write_json({**report.to_dict(), "artifact": str(artifact.relative_to(self.out_dir))
                           if artifact.is_relative_to(self.out_dir) else str(artifact),
                           "resume": key, "artifact_sha256": file_sha256(artifact)}, record)
        self.emit(stage.index + 1, stage.name, "done", report.seconds)
        return artifact, report

    def _completed(self, record: Path, key: dict[str, str]) -> tuple[Path, StageReport] | None:
        if not (self.resume and record.is_file()):
            return None
        saved = json.loads(record.read_text(encoding="utf-8"))
        artifact = self.out_dir / saved.get("artifact", "")
        if saved.get("resume") != key or not artifact.is_file() or file_sha256(artifact) != saved.get("artifact_sha256"):
            return None
        return artifact, StageReport.from_dict(saved)

    def _save(self, stage: StagePlan, output: Any, source: Path, folder: Path) -> Path:
        """The stage's artifact file: a returned model saved as ``model.pt`` (history extended), an ONNX path as
        it is, or the input file for a stage that gives the same artifact."""
        from yolocompress.io.checkpoint import history_entry, load_model_with_info, save_model

        if stage.type.gives == "same":
            return source
        if isinstance(output, Path):
            return output
        _, info = load_model_with_info(source)
        entry = history_entry(stage.type.name, recipe=self.plan.name, stage=stage.name, config=stage.resolved())
        return save_model(output, folder / "model.pt", imgsz=self.plan.imgsz, history=[*info.history, entry],
                          metrics=info.metrics)


def measure_latencies(artifacts: list[Path], imgsz: int, backends: tuple[str, ...], threads: int, runs: int,
                      warmup: int, rounds: int) -> dict[Path, dict[str, Latency]]:
    """Batch-1 latency of every artifact on every backend it runs on: per backend, all artifacts timed side by
    side in interleaved rounds (:func:`~yolocompress.profile.latency.interleaved_times`). A ``.pt`` model runs
    on ``torch`` and, exported to fp32 ONNX, on ``onnxruntime`` and OpenVINO; an ``.onnx`` file on ``onnxruntime``
    and OpenVINO only."""
    import numpy as np
    import torch

    from yolocompress.export.onnx import export_onnx
    from yolocompress.export.openvino import ONNX_BACKENDS
    from yolocompress.profile.latency import interleaved_times, latency_from_times, onnx_call, torch_threads

    calls: dict[tuple[Path, str], Callable[[], object]] = {}
    x = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    feed_x = x.numpy()
    with work_dir("yc-latency-") as tmp:
        for k, artifact in enumerate(dict.fromkeys(artifacts)):
            onnx_path = artifact
            if artifact.suffix != ".onnx":
                model = _load_torch(artifact)
                if "torch" in backends:
                    calls[(artifact, "torch")] = (lambda m: lambda: m(x))(model)
                if any(b != "torch" for b in backends):
                    onnx_path = export_onnx(model, Path(tmp) / f"{k}.onnx", imgsz=imgsz)
            for backend in (b for b in backends if b in ONNX_BACKENDS):
                calls[(artifact, backend)] = onnx_call(onnx_path, backend, threads, feed_x)
        # one backend after the other: their thread pools (OpenMP, ONNX Runtime) would compete when alternated
        times = {}
        with torch_threads(threads), torch.inference_mode():
            for backend in backends:
                group = {key: call for key, call in calls.items() if key[1] == backend}
                times.update(interleaved_times(group, warmup=warmup, runs=runs, rounds=rounds))
    out: dict[Path, dict[str, Latency]] = {a: {} for a in artifacts}
    for (artifact, backend), t in times.items():
        result = latency_from_times(np.asarray(t), threads, backend, imgsz)
        out[artifact][backend] = Latency.from_result(result)
    return out


def data_fingerprint(data: Any) -> str:
    """SHA-256 over the data set's class names and, per split, every image's path (relative to the data
    root), size in bytes and label file: two reports with the same fingerprint measured the same data."""
    from yolocompress.data.labels import label_path_for
    from yolocompress.data.scan import list_images

    digest = hashlib.sha256(json.dumps(list(data.names)).encode())
    for split in ("train", "val"):
        for image in list_images(getattr(data, split)):
            rel = image.relative_to(data.root) if image.is_relative_to(data.root) else image.name
            digest.update(f"{split}:{rel}:{image.stat().st_size}\n".encode())
            label = label_path_for(image)
            digest.update(label.read_bytes() if label.is_file() else b"-")
    return digest.hexdigest()


def provenance(plan: RecipePlan, data: Any, resolved_text: str) -> dict[str, Any]:
    """Where a report's numbers come from: recipe, seed, versions, CPU, input model, data."""
    import onnxruntime
    import torch

    from yolocompress import __version__
    from yolocompress.data.scan import list_images
    from yolocompress.profile.cpu import cpu_flags, cpu_name

    d = plan.document
    return {
        "recipe": {"name": d.name, "path": str(d.source) if d.source else None, "sha256": d.sha256,
                   "overrides": list(d.overrides), "text": d.text, "resolved": resolved_text,
                   "resolved_sha256": hashlib.sha256(resolved_text.encode()).hexdigest()},
        "seed": d.seed, "imgsz": plan.imgsz, "threads": d.measure.threads,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"yolocompress": __version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "python": platform.python_version()},
        "cpu": {"model": cpu_name(), "flags": cpu_flags()},
        "model": {"path": str(plan.model_path), "sha256": file_sha256(plan.model_path)},
        "data": {"path": str(plan.data_path), "sha256": data_fingerprint(data),
                 "train_images": len(list_images(data.train)), "val_images": len(list_images(data.val)),
                 "nc": data.nc, "names": list(data.names)},
    }


def accuracy_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """A warning when the last row's mAP50-95 is more than ``RUIN_POINTS`` below the baseline's, naming the
    stages that lost the most (and what usually wins it back)."""
    base, final = rows[0].get("map50_95"), rows[-1].get("map50_95")
    if base is None or final is None or 100 * (base - final) <= RUIN_POINTS + 1e-9:  # float noise at the bound
        return []
    steps = [(r["stage"], r["type"], 100 * (r["map50_95"] - p["map50_95"])) for p, r in zip(rows, rows[1:])
             if r.get("map50_95") is not None and p.get("map50_95") is not None]
    losses = sorted((s for s in steps if s[2] < 0), key=lambda s: s[2])[:3]
    worst = ", ".join(f"{name} {delta:+.2f}" for name, _, delta in losses) or "none lost alone"
    hint = ""
    if any(kind == "prune" for _, kind, _ in steps):
        hint = f"; {PRUNE_RECOVERY} (see benchmarks/RESULTS.md)"
    return [f"the compressed model is {100 * (base - final):.2f} mAP50-95 points below the baseline (stages that "
            f"lost: {worst}){hint}"]


def _row(stage: str, kind: str, artifact: Path, out_dir: Path, snap: ModelSnapshot) -> dict[str, Any]:
    return {"stage": stage, "type": kind, "artifact": str(artifact.relative_to(out_dir)),
            "kind": snap.kind, "params": snap.params, "gflops": snap.gflops, "file_bytes": snap.file_bytes,
            "map50": snap.map50, "map50_95": snap.map50_95, "per_class": dict(snap.per_class),
            "latency": {k: v.to_dict() for k, v in snap.latency.items()}}


def run_recipe(loaded: LoadedRecipe, out_dir: str | Path, resume: bool = False,
               on_progress: StageProgressCallback | None = None,
               on_inner_progress: ProgressCallback | None = None) -> RecipeResult:
    """Run a checked recipe (:func:`~yolocompress.recipe.load_recipe`) into ``out_dir``; see the module
    docstring.

    Args:
        resume: skip stages already done with the same input and config; continue a killed trainer run.
        on_progress: called with a :class:`RecipeProgress` at every stage start, skip and end.
        on_inner_progress: the stages' own progress events (the trainer's batches, the pruning search's
            candidates, evaluation batches).
    """
    plan, model, info, data = loaded.plan, loaded.model, loaded.info, loaded.data
    out_dir = Path(out_dir)
    check_output_folder(out_dir, resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved_text = yaml.safe_dump(plan.resolved(), sort_keys=False)
    atomic_write_text(resolved_text, out_dir / "recipe.resolved.yaml")
    run = _Run(plan, data, out_dir, resume, on_progress, on_inner_progress)

    source, snap = run.baseline(model, info)
    artifacts, snaps, reports = [source], [snap], []
    torch_source = snap
    for stage in plan.stages:
        source, report = run.stage(stage, source, snap, torch_source, teacher=model)
        snap = report.after
        if source.suffix != ".onnx":
            torch_source = snap
        artifacts.append(source)
        snaps.append(snap)
        reports.append(report)

    measure = plan.document.measure
    if measure.latency:
        run.emit(run.total, "latency", "measure")
        t0 = time.perf_counter()
        latencies = measure_latencies(artifacts, plan.imgsz, measure.latency, measure.threads, measure.runs,
                                      measure.warmup, measure.rounds)
        snaps = [s.replace(latency=latencies[a]) for s, a in zip(snaps, artifacts)]
        reports = [r.replace(before=snaps[i], after=snaps[i + 1]) for i, r in enumerate(reports)]
        run.emit(run.total, "latency", "done", time.perf_counter() - t0)

    rows = [_row("baseline", "baseline", artifacts[0], out_dir, snaps[0])]
    rows += [_row(s.name, s.type.name, a, out_dir, sn) for s, a, sn in zip(plan.stages, artifacts[1:], snaps[1:])]
    report = {"provenance": provenance(plan, data, resolved_text), "rows": rows,
              "stages": [r.to_dict() for r in reports], "gate": None, "warnings": accuracy_warnings(rows)}
    gate = None
    if plan.document.gate:
        try:
            gate = check_report(report, GateLimits.from_mapping(plan.document.gate))
            report["gate"] = {"limits": dict(plan.document.gate), **gate.to_dict()}
        except InputError as exc:  # a figure the gate needs is missing: write the report, then say so
            report["gate"] = {"limits": dict(plan.document.gate), "error": str(exc)}
            _write_report(report, out_dir)
            raise
    files = _write_report(report, out_dir)
    return RecipeResult(out_dir, report, tuple(files), gate)


def _write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    from yolocompress.report.pipeline import pipeline_markdown, plot_tradeoff

    files = [atomic_write_json(report, out_dir / "report.json"),
             atomic_write_text(pipeline_markdown(report), out_dir / "report.md")]
    return files + plot_tradeoff(report, out_dir / "tradeoff.png", out_dir / "tradeoff.svg")


__all__ = ["RecipeProgress", "RecipeResult", "accuracy_warnings", "check_output_folder", "data_fingerprint", "dry_run", "file_sha256", "measure_latencies",
           "provenance", "run_recipe"]
