"""A distillation run with connectors killed after its first epoch resumes to the uninterrupted run's result,
bit for bit on the CPU: the student, the connectors (their weights and BatchNorm statistics) and every logged
term. It found that the connectors were initialised from the process's random generator, which torch seeds at
random per process, so two runs of the same command differed (they now have their own seeded generator)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from yolocompress.io.checkpoint import save_model

from .test_feature import _model

EPOCHS = 2


@pytest.mark.slow
def test_kill_after_epoch_1_then_resume_matches_an_uninterrupted_run(make_synthetic_data, tmp_path,
                                                                      kill_when_written):
    data = make_synthetic_data("distill-resume", n_train=8, n_val=4)
    student = save_model(_model(width=0.5), tmp_path / "student.pt", imgsz=64)
    teacher = save_model(_model(width=1.0, seed=1), tmp_path / "teacher.pt", imgsz=64)
    # one thread in every run: the same reductions in the same order, so CPU results are bit-identical
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def argv(name: str) -> list[str]:
        return [sys.executable, "-m", "yolocompress", "distill", str(student), "--teacher", str(teacher),
                "--data", str(data.yaml_path), "--method", "both", "--epochs", str(EPOCHS), "--batch", "4",
                "--out-dir", str(tmp_path / name), "-o", str(tmp_path / f"{name}.pt"),
                "--json", str(tmp_path / f"{name}.json")]

    whole = subprocess.run(argv("whole"), capture_output=True, text=True, env=env, timeout=600)
    assert whole.returncode == 0, whole.stderr

    last = tmp_path / "killed" / "weights" / "last.pt"
    kill_when_written(argv("killed"), last, env)
    assert last.exists(), "the run never wrote its first checkpoint"
    interrupted = torch.load(last, weights_only=True)
    assert interrupted["epoch"] == 0 and interrupted["extra_modules"], "killed after epoch 1, with connectors"
    assert not (tmp_path / "killed.pt").exists(), "the run finished before it could be killed"

    resumed = subprocess.run([*argv("killed"), "--resume"], capture_output=True, text=True, env=env,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((tmp_path / "killed.json").read_text())
    assert report["details"]["resumed_from_epoch"] == 1 and report["details"]["connectors"]

    got, want = (torch.load(tmp_path / f"{name}.pt", weights_only=True)["state_dict"]
                 for name in ("killed", "whole"))
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in got)
    got, want = (torch.load(tmp_path / name / "weights" / "last.pt", weights_only=True)
                 for name in ("killed", "whole"))
    assert got["epoch"] == want["epoch"] == EPOCHS - 1
    connectors, reference = got["extra_modules"], want["extra_modules"]
    assert any(".0.weight" in k for k in connectors)  # the 1x1 convs (and their BatchNorms)
    assert list(connectors) == list(reference)
    assert all(torch.equal(connectors[k], reference[k]) for k in connectors)
    # every logged loss term (detection and both KD terms) and metric is the same; only the wall time differs
    rows = {}
    for name in ("killed", "whole"):
        with open(tmp_path / name / "results.csv") as fh:
            rows[name] = [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(fh)]
    assert len(rows["whole"]) == EPOCHS and rows["killed"] == rows["whole"]
    assert float(rows["whole"][1]["train/kd_feature"]) > 0
