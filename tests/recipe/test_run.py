"""``yolocompress run`` end to end on a tiny model: the report's numbers equal what ``info`` and ``eval`` say
of the saved artifacts, ``--resume`` skips finished stages, and a run killed with SIGKILL in the middle of
its fine-tune resumes to the metrics of an uninterrupted run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from yolocompress.cli import main
from yolocompress.compress.stage import StageReport

STAGE_FILES = ("00-baseline/model.pt", "00-baseline/snapshot.json", "01-prune/model.pt", "01-prune/report.json")


def _json_of(argv: list[str], path: Path) -> dict:
    assert main([*argv, "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_run_writes_every_file_and_a_stable_report(finished_run):
    out = finished_run
    for name in ("recipe.resolved.yaml", "report.json", "report.md", "tradeoff.png", "tradeoff.svg",
                 "02-finetune/model.pt", "03-fuse/model.pt", "04-quantize/model.onnx", *STAGE_FILES):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert list(report)[:3] == ["provenance", "rows", "stages"]
    assert [r["stage"] for r in report["rows"]] == ["baseline", "prune", "finetune", "fuse", "quantize"]
    prov = report["provenance"]
    assert len(prov["recipe"]["sha256"]) == 64 and prov["recipe"]["text"].startswith("version: 1")
    assert prov["seed"] == 0 and prov["imgsz"] == 64 and prov["cpu"]["model"]
    assert set(prov["versions"]) >= {"yolocompress", "torch", "onnxruntime"}
    assert prov["data"]["train_images"] == 16 and prov["data"]["val_images"] == 8
    assert len(prov["model"]["sha256"]) == 64
    for row in report["rows"]:
        assert set(row["latency"]) == ({"onnxruntime"} if row["kind"] == "onnx" else {"onnxruntime", "torch"})
        for lat in row["latency"].values():
            assert lat["median_ms"] > 0 and lat["p90_ms"] >= lat["median_ms"] and lat["threads"] == 2
        assert set(row["per_class"]) <= {"circle", "rectangle", "triangle", "star", "cross", "ring"}
    for stage in report["stages"]:
        assert StageReport.from_dict(stage).to_dict() == stage
    rows = report["rows"]
    assert rows[1]["params"] < rows[0]["params"] and rows[1]["gflops"] < 0.6 * rows[0]["gflops"]
    assert rows[4]["file_bytes"] < rows[3]["file_bytes"]  # int8 is smaller than the fused fp32 model
    assert report["stages"][0]["details"]["chosen"] in (0, 1)


def test_report_figures_equal_info_and_eval_on_the_saved_artifacts(finished_run, recipe_data, tmp_path):
    report = json.loads((finished_run / "report.json").read_text())
    for k, row in enumerate(report["rows"]):
        artifact = finished_run / row["artifact"]
        assert row["file_bytes"] == artifact.stat().st_size
        evaluated = _json_of(["eval", str(artifact), "--data", str(recipe_data.yaml_path), "--batch", "8"],
                             tmp_path / f"eval{k}.json")
        assert row["map50"] == pytest.approx(evaluated["map50"], abs=1e-4)
        assert row["map50_95"] == pytest.approx(evaluated["map50_95"], abs=1e-4)
        if artifact.suffix == ".pt":
            info = _json_of(["info", str(artifact)], tmp_path / f"info{k}.json")
            assert row["params"] == info["params"]
            assert row["gflops"] == pytest.approx(info["gflops"], rel=1e-9)
        else:  # int8 keeps the architecture of the model it was made from
            assert row["params"] == report["rows"][k - 1]["params"]


def test_report_command_rerenders_without_measuring(finished_run, tmp_path, capsys):
    md = tmp_path / "again.md"
    assert main(["report", str(finished_run), "--md", str(md)]) == 0
    assert "quantize" in capsys.readouterr().out
    assert md.read_text() == (finished_run / "report.md").read_text()


def test_resume_of_a_finished_run_skips_every_stage(finished_run, recipe_file, tiny_checkpoint, recipe_data,
                                                    capsys):
    before = {p: p.stat().st_mtime_ns for p in finished_run.glob("0*/*") if p.is_file()}
    code = main(["run", str(recipe_file), "--model", str(tiny_checkpoint), "--data", str(recipe_data.yaml_path),
                 "--out", str(finished_run), "--resume", "--set", "measure.latency=[]"])
    assert code == 0
    err = capsys.readouterr().err
    assert err.count("skipped (--resume)") == 5
    assert {p: p.stat().st_mtime_ns for p in finished_run.glob("0*/*") if p.is_file()} == before


def test_existing_output_without_resume_is_refused(finished_run, recipe_file, tiny_checkpoint, recipe_data, capsys):
    code = main(["run", str(recipe_file), "--model", str(tiny_checkpoint), "--data", str(recipe_data.yaml_path),
                 "--out", str(finished_run)])
    assert code == 2 and "pass --resume" in capsys.readouterr().err


def test_changed_stage_reruns_with_the_stages_after_it(finished_run, recipe_file, tiny_checkpoint, recipe_data,
                                                       tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    prune_mtime = (copy / "01-prune/model.pt").stat().st_mtime_ns
    code = main(["run", str(recipe_file), "--model", str(tiny_checkpoint), "--data", str(recipe_data.yaml_path),
                 "--out", str(copy), "--resume", "--set", "stages.2.fuse.tolerance=0.001",
                 "--set", "measure.latency=[]"])
    assert code == 0
    err = capsys.readouterr().err
    assert "[1/4] prune: done in an earlier run" in err and "[2/4] finetune: done in an earlier run" in err
    assert "[3/4] fuse: done in" in err and "[4/4] quantize: done in" in err
    assert (copy / "01-prune/model.pt").stat().st_mtime_ns == prune_mtime


@pytest.mark.slow
def test_kill_during_finetune_then_resume_matches_an_uninterrupted_run(finished_run, recipe_file, tiny_checkpoint,
                                                                        recipe_data, tmp_path,
                                                                        kill_when_written):
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "yolocompress", "run", str(recipe_file), "--model", str(tiny_checkpoint),
            "--data", str(recipe_data.yaml_path), "--out", str(out), "--set", "measure.latency=[]"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    last = out / "02-finetune/train/weights/last.pt"
    kill_when_written(argv, last, env)
    assert last.exists(), "the fine-tune never wrote its first checkpoint"
    assert not (out / "02-finetune/report.json").exists(), "the run finished before it could be killed"
    for partial in out.rglob("*"):  # nothing half-written under a final name
        assert not partial.name.endswith(".tmp") or partial.name.startswith(".")
    mtimes = {name: (out / name).stat().st_mtime_ns for name in STAGE_FILES}

    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "[1/4] prune: done in an earlier run" in resumed.stderr
    assert {name: (out / name).stat().st_mtime_ns for name in STAGE_FILES} == mtimes
    finetune = json.loads((out / "02-finetune/report.json").read_text())
    assert finetune["details"]["resumed_from_epoch"] == 1
    import torch

    from yolocompress.io.checkpoint import load_model

    tuned, reference = (load_model(d / "02-finetune/model.pt").state_dict() for d in (out, finished_run))
    assert list(tuned) == list(reference) and all(torch.equal(tuned[k], reference[k]) for k in tuned)
    got = json.loads((out / "report.json").read_text())["rows"]
    want = json.loads((finished_run / "report.json").read_text())["rows"]
    for a, b in zip(got, want):
        assert (a["stage"], a["params"]) == (b["stage"], b["params"])
        assert a["map50"] == pytest.approx(b["map50"], abs=1e-9)
        assert a["map50_95"] == pytest.approx(b["map50_95"], abs=1e-9)
        assert a["per_class"] == pytest.approx(b["per_class"], abs=1e-9)


def test_check_passes_with_loose_limits_and_fails_with_a_tight_one(finished_run, tmp_path, capsys):
    junit = tmp_path / "gate.xml"
    assert main(["check", str(finished_run), "--max-map-drop", "100", "--max-params-ratio", "1.0",
                 "--max-size-ratio", "1.0", "--junit", str(junit)]) == 0
    assert "gate passed" in capsys.readouterr().out
    assert main(["check", str(finished_run / "report.json"), "--max-params-ratio", "0.01"]) == 1
    assert "FAIL max_params_ratio" in capsys.readouterr().out
    # the same report against itself as the stored one: nothing regressed
    assert main(["check", str(finished_run), "--baseline", str(finished_run), "--max-map-drop", "0"]) == 0


def test_run_with_a_failing_gate_exits_1_and_still_writes_the_report(finished_run, recipe_file, tiny_checkpoint,
                                                                     recipe_data, tmp_path, capsys):
    import shutil

    copy = tmp_path / "gated"
    shutil.copytree(finished_run, copy)
    (copy / "report.json").unlink()
    code = main(["run", str(recipe_file), "--model", str(tiny_checkpoint), "--data", str(recipe_data.yaml_path),
                 "--out", str(copy), "--resume", "--set", "measure.latency=[]", "--set", "gate.max_params_ratio=0.001"])
    assert code == 1
    assert "FAIL max_params_ratio" in capsys.readouterr().out
    gate = json.loads((copy / "report.json").read_text())["gate"]
    assert gate["passed"] is False and gate["limits"] == {"max_params_ratio": 0.001}


def test_check_remeasure_compares_reports_from_different_cpus(finished_run, tmp_path, capsys):
    import shutil

    stored = tmp_path / "stored"
    shutil.copytree(finished_run, stored)
    report = json.loads((stored / "report.json").read_text())
    report["provenance"]["cpu"]["model"] = "Some Other CPU"
    (stored / "report.json").write_text(json.dumps(report))
    argv = ["check", str(finished_run), "--baseline", str(stored), "--max-latency-ratio", "3"]
    assert main(argv) == 2
    assert "different CPUs" in capsys.readouterr().err
    out = tmp_path / "gate.json"
    assert main([*argv, "--remeasure", "--json", str(out)]) == 0  # the same artifact timed twice, side by side
    verdicts = {v["name"]: v for v in json.loads(out.read_text())["verdicts"]}
    assert 0.33 < verdicts["max_latency_ratio"]["value"] < 3 and verdicts["not_dominated"]["passed"]
    from yolocompress.profile.cpu import cpu_flags, cpu_name

    isa = " ".join(cpu_flags()) or "none listed"
    assert f"latency: CPU: {cpu_name()}; ISA: {isa}" in capsys.readouterr().out


def test_a_large_accuracy_loss_is_a_warning_naming_the_stages():
    from yolocompress.recipe.runner import RUIN_POINTS, accuracy_warnings

    rows = [{"stage": "baseline", "type": "baseline", "map50_95": 0.80},
            {"stage": "prune", "type": "prune", "map50_95": 0.36},
            {"stage": "finetune", "type": "finetune", "map50_95": 0.688},
            {"stage": "quantize", "type": "quantize", "map50_95": 0.6875}]
    (warning,) = accuracy_warnings(rows)
    assert "11.25 mAP50-95 points below" in warning and "prune -44.00" in warning and "fine-tune" in warning
    assert "quantize -0.05" in warning
    kept = [rows[0], {"stage": "quantize", "type": "quantize", "map50_95": 0.80 - RUIN_POINTS / 100}]
    assert accuracy_warnings(kept) == []  # exactly at the bound: no warning


def test_remeasure_records_the_cpu_its_own_timings_ran_on(tmp_path, monkeypatch):
    """`check --remeasure` replaces both reports' last-row latencies; their provenance CPU is then the one the
    new timings carry (not the CPU the stored report was timed on), and the inputs stay as they were."""
    import copy

    from yolocompress.compress.stage import Latency
    from yolocompress.recipe import check as check_module

    for name in ("new", "stored"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_bytes(b"onnx")
    old_latency = {"backend": "onnxruntime", "median_ms": 9.0, "p90_ms": 9.5, "threads": 2, "cpu": "Old CPU"}
    report = {"rows": [{"artifact": "model.onnx", "latency": {"onnxruntime": old_latency}}],
              "provenance": {"imgsz": 64, "threads": 2, "cpu": {"model": "Old CPU", "flags": ["avx2"]}}}
    timed = Latency("onnxruntime", 4.0, 4.5, 2, "Timing CPU", 50, ("avx512f", "amx_int8"))
    monkeypatch.setattr(check_module, "measure_latencies",
                        lambda artifacts, *args: {a: {"onnxruntime": timed} for a in artifacts})
    new, stored = check_module.remeasure(report, tmp_path / "new", copy.deepcopy(report), tmp_path / "stored")
    for rep in (new, stored):
        assert rep["provenance"]["cpu"] == {"model": "Timing CPU", "flags": ["avx512f", "amx_int8"]}
        assert rep["rows"][-1]["latency"]["onnxruntime"]["median_ms"] == 4.0
    assert report["provenance"]["cpu"]["model"] == "Old CPU"
