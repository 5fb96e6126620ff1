"""kill -9 during ``yolocompress train``, then ``--resume``: the run ends where an uninterrupted one does."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from yolocompress.engine.train_checkpoint import load_checkpoint


@pytest.mark.slow
def test_kill_after_epoch_1_then_resume_equals_an_uninterrupted_run(make_synthetic_data, tmp_path,
                                                                     kill_when_written):
    data = make_synthetic_data("kill-train", 8, 4)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "YOLOCOMPRESS_TMP": str(tmp_path / "work")}

    def argv(out: str) -> list[str]:
        return [sys.executable, "-m", "yolocompress", "train", "yolov5n", "--data", str(data.yaml_path),
                "--epochs", "3", "--imgsz", "64", "--batch", "4", "--workers", "0", "--seed", "0", "--noval",
                "--out", str(tmp_path / out)]

    kill_when_written(argv("killed"), tmp_path / "killed" / "weights" / "last.pt", env)
    first = load_checkpoint(tmp_path / "killed" / "weights" / "last.pt")
    assert first["epoch"] < 2  # killed before the run ended
    assert not [p for p in (tmp_path / "killed" / "weights").iterdir() if p.suffix == ".tmp"]
    resumed = subprocess.run([sys.executable, "-m", "yolocompress", "train", "--resume",
                              str(tmp_path / "killed" / "weights" / "last.pt")],
                             capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    whole = subprocess.run(argv("whole"), capture_output=True, text=True, env=env, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    a = load_checkpoint(tmp_path / "killed" / "weights" / "last.pt")
    b = load_checkpoint(tmp_path / "whole" / "weights" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for name, tensor in b["model"].items():  # bit-identical on the CPU
        assert torch.equal(a["model"][name], tensor), name
    assert not (tmp_path / "work").exists() or list((tmp_path / "work").iterdir()) == []
