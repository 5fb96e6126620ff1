"""The CI gate: accuracy against size and speed, from ``report.json`` files, as pass/fail verdicts.

``check_report(report, GateLimits(...), baseline=None) -> GateResult``. Without ``baseline`` the report's
last row (the compressed model) is compared with its own first row (the input model): the cost of
compression. With ``baseline`` (an earlier ``report.json``, e.g. the one stored from the main branch) the new
last row is compared with the stored last row: a regression across commits; then a new result that is
*dominated* (lower mAP50-95 and neither smaller nor faster, beyond ``GateLimits.tolerance``) fails too.

Units: mAP drops are in points (``100 x`` the fraction the report stores), ``max_map_drop_rel`` is a fraction
of the reference mAP50-95, ``min_map50_95`` a fraction (``0.75``), ratios are new / reference. A figure equal
to its limit passes. Reports that cannot be compared (other data, other image size, a metric a limit needs
missing, absolute latencies from different CPUs) raise ``InputError`` (exit 2) naming the cause.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping
from xml.sax.saxutils import quoteattr

from yolocompress.errors import InputError
from yolocompress.export.openvino import OPENVINO_BACKENDS

# every backend a report can time; a recipe times the first two unless its measure: says otherwise
DEFAULT_LATENCY_BACKENDS = ("onnxruntime", "torch")
LATENCY_BACKENDS = (*DEFAULT_LATENCY_BACKENDS, *OPENVINO_BACKENDS)
# Float noise allowed at a limit's boundary (a drop of exactly the limit passes).
EPS = 1e-9


@dataclass(frozen=True)
class GateLimits:
    """The limits of a gate (each optional; ``None``: not checked). See the module docstring for units.

    ``backend`` picks the latency figure of ``max_latency_ratio``; ``tolerance`` is the relative margin
    within which a new result counts as "not smaller" / "not faster" in the dominance check.
    """

    max_map_drop: float | None = None
    max_map50_drop: float | None = None
    max_map_drop_rel: float | None = None
    min_map50_95: float | None = None
    max_class_map_drop: float | None = None
    max_latency_ratio: float | None = None
    max_size_ratio: float | None = None
    max_gflops_ratio: float | None = None
    max_params_ratio: float | None = None
    backend: str = "onnxruntime"
    tolerance: float = 0.02

    def __post_init__(self) -> None:
        if self.backend not in LATENCY_BACKENDS:
            raise InputError(f"backend must be one of {', '.join(LATENCY_BACKENDS)}, got {self.backend!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "backend" and value is not None and not float(value) >= 0:
                raise InputError(f"{f.name} must be >= 0, got {value}")

    @property
    def active(self) -> dict[str, float]:
        """The limits that are set (name -> value), in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("backend", "tolerance") and getattr(self, f.name) is not None}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "GateLimits":
        """From a recipe's ``gate:`` section (the same names)."""
        return cls(**dict(values))


@dataclass(frozen=True)
class Verdict:
    """One limit checked: the measured ``value`` against ``limit`` (``unit``: points, ratio, fraction)."""

    name: str
    passed: bool
    value: float
    limit: float
    unit: str
    comparison: str  # "<=" or ">="
    detail: str = ""

    def line(self) -> str:
        """``PASS max_map_drop 0.41 <= 1.00 points``."""
        status = "PASS" if self.passed else "FAIL"
        extra = f" ({self.detail})" if self.detail else ""
        return f"{status} {self.name} {self.value:.4g} {self.comparison} {self.limit:.4g} {self.unit}{extra}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GateResult:
    """Every verdict, what was compared with what, and whether all passed."""

    verdicts: tuple[Verdict, ...]
    mode: str                  # "baseline-row" or "stored-report"
    reference: str             # e.g. "baseline" or "stored quantize"
    candidate: str
    notes: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "mode": self.mode, "reference": self.reference, "candidate": self.candidate,
                "verdicts": [v.to_dict() for v in self.verdicts], "notes": list(self.notes)}


def _figure(row: Mapping[str, Any], key: str, what: str, needed_by: str) -> float:
    value = row.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InputError(f"{needed_by} needs {what} of row {row.get('stage')!r}, which the report does not have")
    return float(value)


def _latency(row: Mapping[str, Any], backend: str, needed_by: str) -> float:
    entry = (row.get("latency") or {}).get(backend) or {}
    return _figure(entry | {"stage": row.get("stage")}, "median_ms", f"the {backend} latency", needed_by)


def _cpu(report: Mapping[str, Any]) -> str:
    return str(((report.get("provenance") or {}).get("cpu") or {}).get("model", ""))


def check_comparable(report: Mapping[str, Any], stored: Mapping[str, Any], limits: GateLimits) -> None:
    """Refuse (``InputError``) two reports that measured different things, or absolute latencies of
    different CPUs."""
    new_p, old_p = report.get("provenance") or {}, stored.get("provenance") or {}
    new_d, old_d = new_p.get("data") or {}, old_p.get("data") or {}
    for key in ("sha256", "train_images", "val_images", "nc"):
        if key in new_d and key in old_d and new_d[key] != old_d[key]:
            raise InputError(f"the reports come from different data sets (data {key}: {old_d[key]} in the stored "
                             f"report, {new_d[key]} now)")
    if new_p.get("imgsz") != old_p.get("imgsz"):
        raise InputError(f"the reports measured different image sizes ({old_p.get('imgsz')} px stored, "
                         f"{new_p.get('imgsz')} px now)")
    if limits.max_latency_ratio is not None and _cpu(report) != _cpu(stored):
        raise InputError(f"latency of different CPUs cannot be compared as absolute times ({_cpu(stored)!r} stored, "
                         f"{_cpu(report)!r} now): pass --remeasure to time both artifacts side by side here, or "
                         "drop --max-latency-ratio")


def _at_most(name: str, value: float, limit: float, unit: str, detail: str = "") -> Verdict:
    return Verdict(name, value <= limit + EPS, value, limit, unit, "<=", detail)


def check_rows(new: Mapping[str, Any], ref: Mapping[str, Any], limits: GateLimits) -> list[Verdict]:
    """The verdict of every active limit for row ``new`` against row ``ref``."""
    out: list[Verdict] = []
    lim = limits.active
    if "max_map_drop" in lim:
        drop = 100 * (_figure(ref, "map50_95", "mAP50-95", "max_map_drop")
                      - _figure(new, "map50_95", "mAP50-95", "max_map_drop"))
        out.append(_at_most("max_map_drop", drop, lim["max_map_drop"], "points"))
    if "max_map50_drop" in lim:
        drop = 100 * (_figure(ref, "map50", "mAP50", "max_map50_drop") - _figure(new, "map50", "mAP50", "max_map50_drop"))
        out.append(_at_most("max_map50_drop", drop, lim["max_map50_drop"], "points"))
    if "max_map_drop_rel" in lim:
        before = _figure(ref, "map50_95", "mAP50-95", "max_map_drop_rel")
        drop = (before - _figure(new, "map50_95", "mAP50-95", "max_map_drop_rel")) / before if before > 0 else 0.0
        out.append(_at_most("max_map_drop_rel", drop, lim["max_map_drop_rel"], "of the reference"))
    if "min_map50_95" in lim:
        value = _figure(new, "map50_95", "mAP50-95", "min_map50_95")
        out.append(Verdict("min_map50_95", value >= lim["min_map50_95"] - EPS, value, lim["min_map50_95"],
                           "mAP50-95", ">="))
    if "max_class_map_drop" in lim:
        out.append(_class_verdict(new, ref, lim["max_class_map_drop"]))
    if "max_latency_ratio" in lim:
        ratio = _latency(new, limits.backend, "max_latency_ratio") / _latency(ref, limits.backend, "max_latency_ratio")
        out.append(_at_most("max_latency_ratio", ratio, lim["max_latency_ratio"], f"x ({limits.backend})"))
    for name, key, what in (("max_size_ratio", "file_bytes", "the file size"), ("max_gflops_ratio", "gflops", "GFLOPs"),
                            ("max_params_ratio", "params", "the parameter count")):
        if name in lim:
            ratio = _figure(new, key, what, name) / _figure(ref, key, what, name)
            out.append(_at_most(name, ratio, lim[name], "x"))
    return out


def _class_verdict(new: Mapping[str, Any], ref: Mapping[str, Any], limit: float) -> Verdict:
    new_c, ref_c = new.get("per_class") or {}, ref.get("per_class") or {}
    if not ref_c:
        raise InputError(f"max_class_map_drop needs per-class mAP50-95 of row {ref.get('stage')!r}, which the report "
                         "does not have")
    drops = {name: 100 * (float(ref_c[name]) - float(new_c.get(name, 0.0))) for name in ref_c}
    worst = max(drops, key=lambda n: drops[n])
    return _at_most("max_class_map_drop", drops[worst], limit, "points", f"worst class: {worst}")


def dominated(new: Mapping[str, Any], old: Mapping[str, Any], limits: GateLimits) -> Verdict:
    """Fails when ``new`` has a lower mAP50-95 than ``old`` and is neither smaller nor faster than it by more
    than ``limits.tolerance`` (a worse model for nothing)."""
    drop = 100 * (_figure(old, "map50_95", "mAP50-95", "the dominance check")
                  - _figure(new, "map50_95", "mAP50-95", "the dominance check"))
    gains = []
    size_new, size_old = new.get("file_bytes"), old.get("file_bytes")
    if size_new and size_old and size_new < (1 - limits.tolerance) * size_old:
        gains.append(f"size {size_new / size_old:.2f}x")
    lat_new = ((new.get("latency") or {}).get(limits.backend) or {}).get("median_ms")
    lat_old = ((old.get("latency") or {}).get(limits.backend) or {}).get("median_ms")
    if lat_new and lat_old and lat_new < (1 - limits.tolerance) * lat_old:
        gains.append(f"latency {lat_new / lat_old:.2f}x")
    passed = drop <= EPS or bool(gains)
    detail = ""
    if drop > EPS:
        why = "but " + ", ".join(gains) if gains else "and neither smaller nor faster"
        detail = f"mAP50-95 {drop:+.2f} points lower, {why}"
    return Verdict("not_dominated", passed, drop, 0.0, "points lower", "<=", detail)


def check_report(report: Mapping[str, Any], limits: GateLimits, baseline: Mapping[str, Any] | None = None
                 ) -> GateResult:
    """Apply ``limits`` to ``report`` (see the module docstring); ``InputError`` when nothing can be compared."""
    rows = report.get("rows") or []
    if len(rows) < 2 and baseline is None:
        raise InputError("the report has only its baseline row: there is no compressed model to check")
    if not limits.active and baseline is None:
        raise InputError("no limit given (e.g. --max-map-drop 1.0 or a recipe gate: section)")
    new = rows[-1]
    if baseline is None:
        return GateResult(tuple(check_rows(new, rows[0], limits)), "baseline-row", str(rows[0].get("stage")),
                          str(new.get("stage")))
    check_comparable(report, baseline, limits)
    old = (baseline.get("rows") or [])[-1]
    verdicts = [*check_rows(new, old, limits), dominated(new, old, limits)]
    return GateResult(tuple(verdicts), "stored-report", f"stored {old.get('stage')}", str(new.get("stage")))


def junit_xml(result: GateResult, suite: str = "yolocompress-check") -> str:
    """JUnit XML: one ``testcase`` per verdict, a ``failure`` with the figures for each failed one."""
    failures = sum(not v.passed for v in result.verdicts)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuites><testsuite name={quoteattr(suite)} tests="{len(result.verdicts)}" '
             f'failures="{failures}" errors="0">']
    for v in result.verdicts:
        head = f'  <testcase classname={quoteattr(suite)} name={quoteattr(v.name)}'
        if v.passed:
            lines.append(head + f'><system-out>{_xml_text(v.line())}</system-out></testcase>')
        else:
            lines.append(head + f'><failure message={quoteattr(v.line())} type="regression">'
                         f'{_xml_text(v.line())}</failure></testcase>')
    lines.append("</testsuite></testsuites>")
    return "\n".join(lines) + "\n"


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def gate_markdown(result: GateResult) -> str:
    """The verdicts as a Markdown section (for ``$GITHUB_STEP_SUMMARY`` or a PR comment)."""
    head = "passed" if result.passed else "FAILED"
    lines = [f"## Gate {head}: {result.candidate} against {result.reference}", "",
             "| limit | value | | limit | verdict |", "|:---|---:|:---:|---:|:---|"]
    for v in result.verdicts:
        mark = "pass" if v.passed else "**FAIL**"
        lines.append(f"| {v.name} | {v.value:.4g} | {v.comparison} | {v.limit:.4g} {v.unit} | {mark}"
                     f"{' (' + v.detail + ')' if v.detail else ''} |")
    return "\n".join(lines) + "\n"


__all__ = ["GateLimits", "GateResult", "Verdict", "check_comparable", "check_report", "check_rows", "dominated",
           "gate_markdown", "junit_xml"]
