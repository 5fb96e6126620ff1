"""``yolocompress check``'s library side: load the reports, optionally re-time both artifacts here, gate them.

The verdict logic itself is :mod:`yolocompress.report.gate` (pure data); this module adds what needs the
files of a run: reading ``report.json`` folders and ``--remeasure`` (the new and the stored final artifact
timed side by side on this machine, so that reports from different CPUs can still be compared on latency).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from yolocompress.errors import InputError
from yolocompress.recipe.runner import measure_latencies
from yolocompress.report.gate import GateLimits, GateResult, check_report
from yolocompress.report.pipeline import load_report


@dataclass(frozen=True)
class CheckResult:
    """The gate's verdicts and the reports they were computed from (after any re-timing)."""

    gate: GateResult
    report: dict[str, Any]
    baseline: dict[str, Any] | None
    limits: GateLimits


def _folder(path: str | Path) -> Path:
    p = Path(path)
    return p if p.is_dir() else p.parent


def remeasure(report: dict[str, Any], report_dir: Path, stored: dict[str, Any], stored_dir: Path,
              runs: int = 50) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copies of both reports whose last rows carry latencies timed now, side by side, on this machine (the
    provenance's CPU is the one those timings record)."""
    new_row, old_row = report["rows"][-1], stored["rows"][-1]
    new_art, old_art = report_dir / new_row["artifact"], stored_dir / old_row["artifact"]
    for art in (new_art, old_art):
        if not art.is_file():
            raise InputError(f"--remeasure needs the artifact {art}, which is not there")
    prov = report.get("provenance") or {}
    imgsz, threads = int(prov.get("imgsz") or 640), int(prov.get("threads") or 2)
    backends = tuple(sorted(set(new_row.get("latency") or {}) | set(old_row.get("latency") or {}))) or ("onnxruntime",)
    timed = measure_latencies([new_art, old_art], imgsz, backends, threads, runs, 10, 5)
    out = []
    for rep, art in ((report, new_art), (stored, old_art)):
        rep = copy.deepcopy(rep)
        rep["rows"][-1]["latency"] = {k: v.to_dict() for k, v in timed[art].items()}
        latency = next(iter(timed[art].values()), None)  # None: no backend runs this artifact
        if latency is not None:
            rep.setdefault("provenance", {})["cpu"] = {"model": latency.cpu, "flags": list(latency.cpu_flags)}
        out.append(rep)
    return out[0], out[1]


def check_run(report_path: str | Path, limits: Mapping[str, Any], baseline_path: str | Path | None = None,
              remeasure_latency: bool = False) -> CheckResult:
    """Gate a run's ``report.json`` (a folder or the file) with ``limits`` (``GateLimits`` field names; the
    report's own recipe ``gate:`` limits fill in what is not given), against its own baseline row or, with
    ``baseline_path``, against a stored report."""
    report = load_report(report_path)
    recipe_limits = dict(((report.get("gate") or {}).get("limits")) or {})
    limits = GateLimits.from_mapping({**recipe_limits, **{k: v for k, v in limits.items() if v is not None}})
    stored = load_report(baseline_path) if baseline_path is not None else None
    if remeasure_latency:
        if stored is None:
            raise InputError("--remeasure compares two reports' artifacts: give --baseline")
        report, stored = remeasure(report, _folder(report_path), stored, _folder(baseline_path))
    return CheckResult(check_report(report, limits, stored), report, stored, limits)


__all__ = ["CheckResult", "check_run", "remeasure"]
