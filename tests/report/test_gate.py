"""The CI gate's verdicts on hand-made reports: boundaries, each limit alone, per-class collapse, dominance,
comparability, JUnit XML and the ``check`` command's exit codes."""
from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET

import pytest

from yolocompress.cli import main
from yolocompress.errors import InputError
from yolocompress.report.gate import GateLimits, check_report, junit_xml


def _row(stage, map50_95, map50=0.9, size=1000, ort=10.0, torch_ms=20.0, gflops=4.0, params=1000, per_class=None):
    return {"stage": stage, "type": stage, "artifact": f"{stage}.pt", "kind": "torch", "params": params,
            "gflops": gflops, "file_bytes": size, "map50": map50, "map50_95": map50_95,
            "per_class": per_class if per_class is not None else {"a": map50_95, "b": map50_95},
            "latency": {"onnxruntime": {"median_ms": ort, "p90_ms": ort}, "torch": {"median_ms": torch_ms,
                                                                                    "p90_ms": torch_ms}}}


def _report(final=None, cpu="CPU A", imgsz=256, val_images=128):
    rows = [_row("baseline", 0.80, map50=0.95),
            final or _row("quantize", 0.78, map50=0.94, size=250, ort=5.0, torch_ms=20.0, gflops=1.0, params=400)]
    return {"provenance": {"imgsz": imgsz, "cpu": {"model": cpu}, "data": {"sha256": "d", "val_images": val_images,
                                                                         "train_images": 512, "nc": 2}},
            "rows": rows, "stages": [], "gate": None}


# the final row against the baseline: drop 2 points (mAP50-95), 1 point (mAP50), 0.025 relative, latency 0.5x,
# size 0.25x, GFLOPs 0.25x, params 0.4x
FIGURES = {"max_map_drop": 2.0, "max_map50_drop": 1.0, "max_map_drop_rel": 0.025, "max_latency_ratio": 0.5,
           "max_size_ratio": 0.25, "max_gflops_ratio": 0.25, "max_params_ratio": 0.4, "max_class_map_drop": 2.0}


@pytest.mark.parametrize("limit", sorted(FIGURES))
def test_each_limit_alone_passes_at_its_boundary_and_fails_just_past_it(limit):
    value = FIGURES[limit]
    at = check_report(_report(), GateLimits(**{limit: value}))
    assert [v.name for v in at.verdicts] == [limit] and at.passed
    assert at.verdicts[0].value == pytest.approx(value, abs=1e-9)
    past = check_report(_report(), GateLimits(**{limit: value * (1 - 1e-6) if value else 0.0}))
    assert not past.passed and not past.verdicts[0].passed


def test_min_map_is_a_floor():
    assert check_report(_report(), GateLimits(min_map50_95=0.78)).passed
    assert not check_report(_report(), GateLimits(min_map50_95=0.7801)).passed


def test_one_collapsed_class_fails_the_class_limit_while_the_overall_drop_passes():
    final = _row("quantize", 0.79, map50=0.95, per_class={"a": 0.80, "b": 0.70})  # b collapses, overall -1
    result = check_report(_report(final), GateLimits(max_map_drop=2.0, max_class_map_drop=5.0))
    overall, per_class = result.verdicts
    assert overall.passed and not per_class.passed
    assert per_class.value == pytest.approx(10.0) and "worst class: b" in per_class.detail


def test_backend_torch_uses_the_torch_latency():
    result = check_report(_report(), GateLimits(max_latency_ratio=0.9, backend="torch"))
    assert result.verdicts[0].value == pytest.approx(1.0) and not result.passed


def test_against_a_stored_report_a_worse_result_that_is_not_smaller_or_faster_is_dominated():
    stored = _report()
    worse = _report(_row("quantize", 0.77, map50=0.94, size=250, ort=5.0, gflops=1.0, params=400))
    result = check_report(worse, GateLimits(max_map_drop=5.0), baseline=stored)
    drop, dom = result.verdicts
    assert drop.passed and drop.value == pytest.approx(1.0)  # 0.78 -> 0.77 against the stored final row
    assert dom.name == "not_dominated" and not dom.passed and not result.passed
    faster = _report(_row("quantize", 0.77, map50=0.94, size=250, ort=4.0, gflops=1.0, params=400))
    assert check_report(faster, GateLimits(max_map_drop=5.0), baseline=stored).passed
    same = check_report(copy.deepcopy(stored), GateLimits(), baseline=stored)
    assert same.passed and [v.name for v in same.verdicts] == ["not_dominated"]


@pytest.mark.parametrize("change,limits,message", [
    ({"val_images": 64}, {}, "different data sets"),
    ({"imgsz": 640}, {}, "different image sizes"),
    ({"cpu": "CPU B"}, {"max_latency_ratio": 1.0}, "different CPUs"),
])
def test_incomparable_reports_are_refused(change, limits, message):
    with pytest.raises(InputError, match=message):
        check_report(_report(**change), GateLimits(**limits), baseline=_report())


def test_a_missing_metric_is_refused_naming_it():
    final = _row("quantize", 0.78)
    final["latency"] = {}
    with pytest.raises(InputError, match="onnxruntime latency"):
        check_report(_report(final), GateLimits(max_latency_ratio=1.0))
    final = _row("quantize", None)
    with pytest.raises(InputError, match="needs mAP50-95"):
        check_report(_report(final), GateLimits(max_map_drop=1.0))


def test_different_cpus_are_fine_without_a_latency_limit():
    assert check_report(_report(cpu="CPU B"), GateLimits(max_map_drop=5.0), baseline=_report()).passed


def test_junit_counts_match_the_verdicts():
    result = check_report(_report(), GateLimits(max_map_drop=1.0, max_size_ratio=0.5, max_latency_ratio=0.4))
    root = ET.fromstring(junit_xml(result))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 3 and int(suite.get("tests")) == 3
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["max_map_drop", "max_latency_ratio"] and int(suite.get("failures")) == 2
    assert "FAIL max_map_drop 2 <= 1 points" in cases[0].find("failure").get("message")


def _write(tmp_path, name, report):
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return path


def test_check_command_exit_codes_and_outputs(tmp_path, capsys):
    report = _write(tmp_path, "report.json", _report())
    junit, md, out = tmp_path / "gate.xml", tmp_path / "gate.md", tmp_path / "gate.json"
    assert main(["check", str(report), "--max-map-drop", "2", "--max-size-ratio", "0.3", "--junit", str(junit),
                 "--md", str(md), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PASS max_map_drop 2 <= 2 points" in printed and "gate passed" in printed
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"
    assert "| quantize |" in md.read_text() and "## Gate passed" in md.read_text()
    assert json.loads(out.read_text())["passed"] is True
    assert main(["check", str(report), "--max-map-drop", "1.99"]) == 1
    assert "FAIL max_map_drop" in capsys.readouterr().out


def test_check_reads_the_recipe_gate_and_flags_override_it(tmp_path, capsys):
    data = _report()
    data["gate"] = {"limits": {"max_map_drop": 1.0}}
    report = _write(tmp_path, "report.json", data)
    assert main(["check", str(report)]) == 1
    assert main(["check", str(report), "--max-map-drop", "3"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("argv,message", [
    (["check", "MISSING"], "not found"),
    (["check", "REPORT", "--baseline", "OTHER_DATA", "--max-map-drop", "1"], "different data sets"),
    (["check", "REPORT", "--baseline", "OTHER_SIZE", "--max-map-drop", "1"], "different image sizes"),
    (["check", "NO_LATENCY", "--max-latency-ratio", "1"], "needs the onnxruntime latency"),
    (["check", "REPORT"], "no limit given"),
    (["check", "REPORT", "--baseline", "OTHER", "--max-latency-ratio", "1"], "different CPUs"),
    (["check", "REPORT", "--remeasure", "--max-map-drop", "1"], "--remeasure compares two reports"),
    (["check", "REPORT", "--max-map-drop", "-1"], "max_map_drop must be >= 0"),
])
def test_check_bad_input_is_exit_2(tmp_path, capsys, argv, message):
    no_latency = _report()
    no_latency["rows"][-1]["latency"] = {}
    paths = {"REPORT": _write(tmp_path, "report.json", _report()),
             "OTHER": _write(tmp_path, "other.json", _report(cpu="CPU B")), "MISSING": tmp_path / "nope",
             "OTHER_DATA": _write(tmp_path, "data.json", _report(val_images=64)),
             "OTHER_SIZE": _write(tmp_path, "size.json", _report(imgsz=640)),
             "NO_LATENCY": _write(tmp_path, "nolat.json", no_latency)}
    assert main([str(paths.get(a, a)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
