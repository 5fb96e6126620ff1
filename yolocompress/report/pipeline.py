"""The before/after report of a compression pipeline: rows, a rich table, Markdown and a trade-off plot.

Everything here reads the ``report.json`` a recipe run writes (provenance, one row per artifact with the
baseline first, one entry per stage) and renders it; nothing is measured again. Figures a run did not
measure are ``None`` in the rows and ``-`` in the table.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from rich.table import Table

from yolocompress.errors import InputError
from yolocompress.profile.cpu import cpu_line

# (key in report_rows, header); the table, the Markdown table and the cell formatting share this order.
COLUMNS = (("stage", "stage"), ("params", "params"), ("gflops", "GFLOPs"), ("size_mb", "size MB"),
           ("torch_ms", "PyTorch ms"), ("ort_ms", "ORT ms"), ("ov_ms", "OpenVINO ms"),
           ("ov_bf16_ms", "OV bf16 ms"),
           ("map50", "mAP50"), ("map50_95", "mAP50-95"), ("delta_map50_95", "Δ mAP50-95"),
           ("latency_x", "latency ×"), ("size_x", "size ×"))
# columns shown only when some row has the figure (the OpenVINO backends are opt-in)
OPTIONAL_COLUMNS = ("ov_ms", "ov_bf16_ms")

LATENCY_NOTE = "Latency ratios are measured side by side on this machine and differ on others."


def load_report(path: str | Path) -> dict[str, Any]:
    """Read ``<path>/report.json`` (``path`` an output folder) or ``path`` itself (a ``report.json`` file).

    Raises ``InputError`` (one line naming the path) for a missing file, invalid JSON, or a document
    without a ``rows`` list whose first row is the baseline.
    """
    p = Path(path)
    file = p / "report.json" if p.is_dir() else p
    if not file.is_file():
        raise InputError(f"report not found: {file} (expected an output folder with report.json, or a report.json file)")
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{file}: cannot read ({exc})") from None
    rows = report.get("rows") if isinstance(report, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"{file}: not a pipeline report (no 'rows' list of row objects)")
    if "baseline" not in (rows[0].get("type"), rows[0].get("stage")):
        raise InputError(f"{file}: not a pipeline report (the first row is not the baseline)")
    return report


def _num(value: Any) -> float | None:
    """``value`` as a float when it is a number, else ``None`` (a report may hold nulls)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _median(row: Mapping[str, Any], backend: str) -> float | None:
    entry = (row.get("latency") or {}).get(backend)
    return _num(entry.get("median_ms")) if isinstance(entry, Mapping) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _latency_x(row: Mapping[str, Any], base: Mapping[str, Any]) -> float | None:
    """ORT median over the baseline's; PyTorch medians when either lacks ORT and both have PyTorch."""
    for backend in ("onnxruntime", "torch"):
        ratio = _ratio(_median(row, backend), _median(base, backend))
        if ratio is not None:
            return ratio
    return None


def report_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict per row with the table's figures (``None`` where missing).

    Keys: ``stage``, ``params``, ``gflops``, ``size_mb`` (MB = 1e6 bytes), ``torch_ms`` / ``ort_ms`` /
    ``ov_ms`` / ``ov_bf16_ms`` (latency medians: PyTorch, ONNX Runtime, OpenVINO at fp32 and bf16 precision), ``map50``, ``map50_95`` (fractions), ``delta_map50_95`` (points: 100 x (row -
    baseline)), ``latency_x``, ``size_x`` (row / baseline), ``seconds`` (the stage's wall time; ``None``
    for the baseline).
    """
    rows = report["rows"]
    base = rows[0]
    seconds = {s.get("name") or s.get("stage"): _num(s.get("seconds"))
               for s in report.get("stages") or () if isinstance(s, Mapping)}
    base_map = _num(base.get("map50_95"))
    out = []
    for i, row in enumerate(rows):
        file_bytes, map50_95 = _num(row.get("file_bytes")), _num(row.get("map50_95"))
        params = _num(row.get("params"))
        out.append({
            "stage": str(row.get("stage") or row.get("type") or f"row {i}"),
            "params": int(params) if params is not None else None,
            "gflops": _num(row.get("gflops")),
            "size_mb": file_bytes / 1e6 if file_bytes is not None else None,
            "torch_ms": _median(row, "torch"),
            "ort_ms": _median(row, "onnxruntime"),
            "ov_ms": _median(row, "openvino"),
            "ov_bf16_ms": _median(row, "openvino-bf16"),
            "map50": _num(row.get("map50")),
            "map50_95": map50_95,
            "delta_map50_95": 100 * (map50_95 - base_map) if None not in (map50_95, base_map) else None,
            "latency_x": _latency_x(row, base),
            "size_x": _ratio(file_bytes, _num(base.get("file_bytes"))),
            "seconds": None if i == 0 else seconds.get(row.get("stage")),
        })
    return out


_FORMATS = {"params": "{:,}", "gflops": "{:.2f}", "size_mb": "{:.2f}", "torch_ms": "{:.2f}", "ort_ms": "{:.2f}",
            "ov_ms": "{:.2f}", "ov_bf16_ms": "{:.2f}",
            "map50": "{:.3f}", "map50_95": "{:.3f}", "delta_map50_95": "{:+.2f}", "latency_x": "{:.2f}x",
            "size_x": "{:.2f}x"}


def shown_columns(rows: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """``COLUMNS`` less the optional ones that no row has a figure for."""
    return tuple((key, header) for key, header in COLUMNS
                 if key not in OPTIONAL_COLUMNS or any(r.get(key) is not None for r in rows))


def _cells(row: Mapping[str, Any], columns: tuple[tuple[str, str], ...] = COLUMNS) -> list[str]:
    """A ``report_rows`` row as the table's text cells (``-`` where missing)."""
    return [row["stage"]] + ["-" if row[key] is None else _FORMATS[key].format(row[key]) for key, _ in columns[1:]]


def _machine(report: Mapping[str, Any]) -> tuple[str, list[str], Any, Any]:
    """(CPU model or "", ISA flags, threads, image size) from the provenance."""
    prov = report.get("provenance") or {}
    cpu = prov.get("cpu") or {}
    flags = [str(f) for f in cpu.get("flags") or ()]
    return str(cpu.get("model") or ""), flags, prov.get("threads"), prov.get("imgsz")


def _machine_line(report: Mapping[str, Any]) -> str:
    """``CPU: <model>; ISA: <flags>; N threads, P px``: the commands' CPU line, then the timing settings."""
    model, flags, threads, imgsz = _machine(report)
    return (f"{cpu_line(model, flags)}; {threads if threads is not None else '?'} threads, "
            f"{imgsz if imgsz is not None else '?'} px")


def _recipe_name(report: Mapping[str, Any]) -> str:
    return str(((report.get("provenance") or {}).get("recipe") or {}).get("name") or "pipeline")


def pipeline_table(report: Mapping[str, Any]) -> Table:
    """The report as a rich table: baseline row first and bold, the machine and latency note as caption."""
    table = Table(title=f"{_recipe_name(report)}: before / after",
                  caption=f"{_machine_line(report)}. {LATENCY_NOTE}")
    rows = report_rows(report)
    columns = shown_columns(rows)
    for key, header in columns:
        table.add_column(header, justify="left" if key == "stage" else "right", no_wrap=key == "stage",
                         overflow="fold")  # a narrow terminal folds figures instead of eliding digits
    for i, row in enumerate(rows):
        table.add_row(*_cells(row, columns), style="bold" if i == 0 else None)
    return table


def _md_table(header: list[str], lines: list[list[str]], left: int = 1) -> list[str]:
    """A GitHub Markdown table (the first ``left`` columns left-aligned, the rest right-aligned)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return [line(header), "|" + "|".join(":---" if i < left else "---:" for i in range(len(header))) + "|",
            *(line(cells) for cells in lines)]


def pipeline_markdown(report: Mapping[str, Any]) -> str:
    """The report as a Markdown document: title, provenance, the table, warnings, per-class mAP50-95."""
    prov = report.get("provenance") or {}
    recipe, data = prov.get("recipe") or {}, prov.get("data") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items())
    sha = str(recipe.get("sha256") or "")[:12] or "?"
    counts = (f"{data.get('train_images', '?')} train / {data.get('val_images', '?')} val images, "
              f"{data.get('nc', '?')} classes")
    lines = [f"# Compression report: {_recipe_name(report)}", "",
             f"Recipe sha256 `{sha}`, seed {prov.get('seed', '?')}; {versions or 'versions unknown'}; "
             f"{_machine_line(report)}; data: {counts}.", ""]
    rows = report_rows(report)
    columns = shown_columns(rows)
    cells = [_cells(r, columns) for r in rows]
    cells[0][0] = f"**{cells[0][0]}**"
    lines += _md_table([h for _, h in columns], cells) + ["", f"_{LATENCY_NOTE}_"]

    warnings = [(s.get("name") or s.get("stage"), w) for s in report.get("stages") or () if isinstance(s, Mapping)
                for w in s.get("warnings") or ()]
    if warnings:
        lines += ["", "## Warnings", "", *(f"- {name}: {w}" for name, w in warnings)]

    first, last = report["rows"][0].get("per_class") or {}, report["rows"][-1].get("per_class") or {}
    if len(report["rows"]) > 1 and first and last:
        per_class = []
        for name in [*first, *(n for n in last if n not in first)]:
            a, b = _num(first.get(name)), _num(last.get(name))
            per_class.append([str(name), "-" if a is None else f"{a:.3f}", "-" if b is None else f"{b:.3f}",
                              "-" if None in (a, b) else f"{100 * (b - a):+.2f}"])
        lines += ["", f"## Per-class mAP50-95: {rows[0]['stage']} vs {rows[-1]['stage']}", "",
                  *_md_table(["class", rows[0]["stage"], rows[-1]["stage"], "Δ points"], per_class)]
    return "\n".join(lines) + "\n"


def plot_tradeoff(report: Mapping[str, Any], png_path: str | Path | None,
                  svg_path: str | Path | None = None) -> list[Path]:
    """Plot mAP50-95 against ORT latency (ms) and against file size (MB), side by side; one point per row,
    stages joined in order, the baseline a star. Writes a PNG (120 dpi) at ``png_path`` and/or an SVG at
    ``svg_path`` atomically; returns the written paths."""
    if png_path is None and svg_path is None:
        raise ValueError("plot_tradeoff needs png_path or svg_path")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from yolocompress.io.atomic import atomic_path

    rows = report_rows(report)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    try:
        for ax, (x_key, x_label) in zip(axes, (("ort_ms", "ONNX Runtime latency (ms)"), ("size_mb", "file size (MB)"))):
            points = [(r[x_key], r["map50_95"], r["stage"], i == 0) for i, r in enumerate(rows)
                      if r[x_key] is not None and r["map50_95"] is not None]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], "-", color="0.6", zorder=1)
            for x, y, stage, is_base in points:
                ax.scatter([x], [y], marker="*" if is_base else "o", s=180 if is_base else 50,
                           color="tab:red" if is_base else "tab:blue", zorder=2)
                ax.annotate(stage, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
            if not points:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel(x_label)
            ax.set_ylabel("mAP50-95")
            ax.grid(True, alpha=0.3)
            ax.margins(0.15)  # room for the labels of the outermost points
        fig.suptitle(f"{_recipe_name(report)} on {_machine(report)[0] or 'an unknown CPU'}")
        written = []
        for path, fmt, kwargs in ((png_path, "png", {"dpi": 120}), (svg_path, "svg", {})):
            if path is not None:
                with atomic_path(path) as tmp:
                    fig.savefig(tmp, format=fmt, **kwargs)
                written.append(Path(path))
        return written
    finally:
        plt.close(fig)


__all__ = ["COLUMNS", "OPTIONAL_COLUMNS", "load_report", "shown_columns", "pipeline_markdown", "pipeline_table", "plot_tradeoff", "report_rows"]
