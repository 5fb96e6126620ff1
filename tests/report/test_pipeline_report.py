"""The pipeline report: rows computed from report.json, the rich table, Markdown, the plot, ``yolocompress report``."""
from __future__ import annotations

import copy
import json

import pytest
from rich.console import Console

from yolocompress.cli import main
from yolocompress.errors import InputError
from yolocompress.profile.cpu import cpu_line
from yolocompress.report.pipeline import (load_report, pipeline_markdown, pipeline_table, plot_tradeoff,
                                          report_rows)

CPU = "AMD EPYC 9R14"


def _latency(median: float, p90: float) -> dict:
    return {"median_ms": median, "p90_ms": p90, "threads": 2, "cpu": CPU}


def _row(stage: str, kind: str = "torch", **figures) -> dict:
    return {"stage": stage, "type": stage, "artifact": f"{stage}/model.{'onnx' if kind == 'onnx' else 'pt'}",
            "kind": kind, **figures}


REPORT = {
    "provenance": {
        "recipe": {"name": "prune-int8", "path": "recipes/prune-int8.yaml", "sha256": "0123456789abcdef" * 4,
                   "text": "stages: []"},
        "seed": 0, "imgsz": 256, "created": "2026-12-03T14:00:00+00:00",
        "versions": {"yolocompress": "0.1.0", "torch": "2.14.1", "onnxruntime": "1.32.0", "python": "3.11.7"},
        "cpu": {"model": CPU, "flags": ["avx2", "avx512f", "avx512_vnni"]}, "threads": 2,
        "model": {"path": "model.pt", "sha256": "f" * 64},
        "data": {"path": "data.yaml", "train_images": 512, "val_images": 128, "nc": 2, "names": ["a", "b"]}},
    "rows": [
        _row("baseline", params=1767976, gflops=4.1, file_bytes=4_000_000, map50=0.95, map50_95=0.82,
             per_class={"a": 0.80, "b": 0.84},
             latency={"onnxruntime": _latency(5.0, 5.6), "torch": _latency(10.0, 11.0)}),
        _row("prune", params=1000000, gflops=2.0, file_bytes=2_000_000, map50=0.94, map50_95=0.8159,
             latency={"onnxruntime": _latency(3.0, 3.3), "torch": _latency(6.0, 6.5)}),
        _row("finetune", params=1000000, gflops=2.0, file_bytes=None, map50=None, map50_95=None,
             latency={"torch": _latency(8.0, 8.5)}),
        _row("quantize", kind="onnx", params=1000000, gflops=2.0, file_bytes=1_000_000, map50=0.93, map50_95=0.80,
             per_class={"a": 0.79, "b": 0.81}, latency={"onnxruntime": _latency(2.6, 2.9)}),
    ],
    "stages": [
        {"stage": "prune", "name": "prune", "config": {}, "before": None, "after": None, "seconds": 12.3,
         "details": {}, "warnings": ["pruned 3 groups below the sensitivity floor"]},
        {"stage": "finetune", "name": "finetune", "config": {}, "before": None, "after": None, "seconds": 40.0,
         "details": {}, "warnings": []},
        {"stage": "quantize", "name": "quantize", "config": {}, "before": None, "after": None, "seconds": 5.5,
         "details": {}, "warnings": []},
    ],
    "gate": None,
}
STAGES = ("baseline", "prune", "finetune", "quantize")


@pytest.fixture
def run_dir(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text(json.dumps(REPORT))
    return out


def test_rows_computed():
    rows = report_rows(REPORT)
    assert [r["stage"] for r in rows] == list(STAGES)
    base, prune, finetune, quant = rows
    assert base["delta_map50_95"] == 0.0 and base["latency_x"] == 1.0 and base["size_x"] == 1.0
    assert base["seconds"] is None and base["size_mb"] == 4.0 and base["params"] == 1767976
    assert prune["delta_map50_95"] == pytest.approx(-0.41, abs=1e-9)
    assert prune["latency_x"] == pytest.approx(0.6, abs=1e-12)  # ORT 3.0 / 5.0
    assert prune["size_x"] == pytest.approx(0.5, abs=1e-12)
    assert prune["seconds"] == 12.3 and prune["torch_ms"] == 6.0 and prune["ort_ms"] == 3.0
    # no ORT figure: the PyTorch medians give the ratio; no metrics, no size: None
    assert finetune["latency_x"] == pytest.approx(0.8, abs=1e-12)
    assert finetune["ort_ms"] is None and finetune["map50"] is None and finetune["delta_map50_95"] is None
    assert finetune["size_mb"] is None and finetune["size_x"] is None and finetune["seconds"] == 40.0
    # ONNX row without PyTorch latency
    assert quant["torch_ms"] is None and quant["latency_x"] == pytest.approx(0.52, abs=1e-12)
    assert quant["size_x"] == pytest.approx(0.25, abs=1e-12)
    assert quant["delta_map50_95"] == pytest.approx(-2.0, abs=1e-9)


def test_latency_x_none_without_a_shared_backend():
    report = copy.deepcopy(REPORT)
    report["rows"][0]["latency"] = {"onnxruntime": _latency(5.0, 5.6)}
    report["rows"][2]["latency"] = {"torch": _latency(8.0, 8.5)}
    assert report_rows(report)[2]["latency_x"] is None


def test_table_renders():
    table = pipeline_table(REPORT)
    assert table.rows[0].style == "bold" and not any(row.style for row in table.rows[1:])
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    for stage in STAGES:
        assert stage in text
    for header in ("GFLOPs", "PyTorch ms", "ORT ms", "mAP50-95", "Δ mAP50-95", "latency ×", "size ×"):
        assert header in text
    assert "-0.41" in text and "-2.00" in text and "+0.00" in text
    assert "0.52x" in text and "0.25x" in text and "1,767,976" in text
    # the caption's CPU line is the commands' (cli prints the same ``cpu_line`` beside its latencies)
    machine = f"{cpu_line(CPU, ['avx2', 'avx512f', 'avx512_vnni'])}; 2 threads,"
    assert " ".join(machine.split()) in " ".join(text.split()) and "differ on others" in text
    finetune = next(line for line in text.splitlines() if "finetune" in line)
    assert finetune.count(" - ") >= 4  # missing figures shown as "-"


def test_markdown():
    md = pipeline_markdown(REPORT)
    assert md.startswith("# ") and "prune-int8" in md.splitlines()[0]
    assert "0123456789ab" in md and "2.14.1" in md and "512 train / 128 val" in md
    assert f"CPU: {CPU}; ISA: avx2 avx512f avx512_vnni; 2 threads," in md
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| stage |"))
    assert set(lines[start + 1]) <= set("|:-")
    body = lines[start + 2:start + 2 + len(STAGES)]
    assert [line.split("|")[1].strip().strip("*") for line in body] == list(STAGES)
    assert all(line.count("|") == 12 for line in lines[start:start + 2 + len(STAGES)])
    assert "-0.41" in body[1] and lines[start + 2 + len(STAGES)].strip() == ""
    assert "- prune: pruned 3 groups below the sensitivity floor" in md
    assert "| a | 0.800 | 0.790 | -1.00 |" in md


def test_markdown_without_warnings_or_per_class():
    report = copy.deepcopy(REPORT)
    report["stages"][0]["warnings"] = []
    del report["rows"][-1]["per_class"]
    md = pipeline_markdown(report)
    assert "Warnings" not in md and "Per-class" not in md


def test_plot_writes_png_and_svg(tmp_path):
    png, svg = tmp_path / "plot.png", tmp_path / "plot.svg"
    assert plot_tradeoff(REPORT, png, svg) == [png, svg]
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 1000
    assert b"<svg" in svg.read_bytes()[:2000]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "plot.svg"]  # no temp files left


def test_cli_folder_and_file(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    for target in (run_dir, run_dir / "report.json"):
        assert main(["report", str(target)]) == 0
        out = capsys.readouterr().out
        assert all(stage in out for stage in STAGES) and "-0.41" in out
    md, plot = tmp_path / "out" / "report.md", tmp_path / "out" / "tradeoff.png"
    assert main(["report", str(run_dir), "--md", str(md), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert str(md) in out and str(plot) in out
    assert md.read_text().startswith("# ") and plot.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in md.parent.iterdir()) == ["report.md", "tradeoff.png"]
    svg = tmp_path / "svg" / "tradeoff.svg"
    assert main(["report", str(run_dir), "--plot", str(svg)]) == 0
    assert [p.name for p in svg.parent.iterdir()] == ["tradeoff.svg"]


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"provenance": {}}),
                                     json.dumps({"rows": []}), json.dumps({"rows": [{"stage": "prune"}]}),
                                     json.dumps([1, 2])])
def test_bad_input_exit_2(tmp_path, capsys, content):
    target = tmp_path / "run"
    if content is not None:
        target.mkdir()
        (target / "report.json").write_text(content)
    before = sorted(tmp_path.rglob("*"))
    md, plot = tmp_path / "r.md", tmp_path / "r.png"
    assert main(["report", str(target), "--md", str(md), "--plot", str(plot)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and str(target) in captured.err and "Traceback" not in captured.err
    assert captured.out == ""
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_bad_plot_suffix_exit_2(run_dir, tmp_path, capsys):
    assert main(["report", str(run_dir), "--plot", str(tmp_path / "plot.pdf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".png or .svg" in err
    assert not (tmp_path / "plot.pdf").exists()


def test_load_report_messages(tmp_path, run_dir):
    assert load_report(run_dir)["rows"][0]["stage"] == "baseline"
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_report(tmp_path / "bad.json")
    with pytest.raises(InputError, match="not found"):
        load_report(tmp_path / "missing")


def test_openvino_columns_only_when_measured():
    plain = Console(record=True, width=220)
    plain.print(pipeline_table(REPORT))
    assert "OpenVINO ms" not in plain.export_text() and "OpenVINO" not in pipeline_markdown(REPORT)

    report = copy.deepcopy(REPORT)
    report["rows"][0]["latency"]["openvino"] = _latency(4.0, 4.2)
    report["rows"][3]["latency"]["openvino"] = _latency(3.2, 3.4)
    report["rows"][3]["latency"]["openvino-bf16"] = _latency(2.2, 2.4)
    rows = report_rows(report)
    assert [r["ov_ms"] for r in rows] == [4.0, None, None, 3.2]
    assert [r["ov_bf16_ms"] for r in rows] == [None, None, None, 2.2]
    assert rows[3]["latency_x"] == pytest.approx(2.6 / 5.0)  # the ratio stays ONNX Runtime's
    console = Console(record=True, width=240)
    console.print(pipeline_table(report))
    text = console.export_text()
    assert "OpenVINO ms" in text and "OV bf16 ms" in text
    quant = next(line for line in text.splitlines() if "quantize" in line)
    assert "2.60" in quant and "3.20" in quant and "2.20" in quant
    md = pipeline_markdown(report)
    header = next(line for line in md.splitlines() if line.startswith("| stage |"))
    assert header.count("|") == 14 and "| OpenVINO ms | OV bf16 ms |" in header
