"""kill -9 during ``yolocompress train``, then ``--resume``: the run ends where an uninterrupted one does."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

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


EPOCHS = 3


def _train_argv(data_yaml: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "yolocompress", "train", "yolov5n", "--data", str(data_yaml), "--epochs",
            str(EPOCHS), "--imgsz", "64", "--batch", "4", "--workers", "0", "--seed", "0", "--noval",
            "--out", str(out)]


@pytest.fixture(scope="module")
def uninterrupted(make_synthetic_data, tmp_path_factory) -> tuple[Path, dict, float]:
    """(data.yaml, last.pt of an uninterrupted run, its wall time in seconds)."""
    data = make_synthetic_data("kill-train-random", 8, 4)
    root = tmp_path_factory.mktemp("kill-train-whole")
    env = {**os.environ, "YOLOCOMPRESS_TMP": str(root / "work")}
    start = time.monotonic()
    whole = subprocess.run(_train_argv(data.yaml_path, root / "whole"), capture_output=True, text=True, env=env,
                           timeout=600)
    duration = time.monotonic() - start
    assert whole.returncode == 0, whole.stderr[-2000:]
    return data.yaml_path, load_checkpoint(root / "whole" / "weights" / "last.pt"), duration


@pytest.mark.slow
@pytest.mark.parametrize("draw", [0, 1])
def test_kill_at_a_random_point_then_resume_equals_an_uninterrupted_run(uninterrupted, tmp_path, draw,
                                                                         kill_at_random_point):
    """kill -9 at a seeded random moment of the run (anywhere from the imports to the last save): no partial
    file under a final name (a cut save leaves only its owner-tagged temporary file), and the next start (``--resume`` from last.pt, or a fresh start with ``--exist-ok`` when no epoch
    had ended) leaves no temporary file and ends bit-identical to the uninterrupted run."""
    data_yaml, whole, duration = uninterrupted
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "YOLOCOMPRESS_TMP": str(tmp_path / "work")}
    out = tmp_path / "killed"
    what, _ = kill_at_random_point(_train_argv(data_yaml, out), env, duration, draw)
    weights = out / "weights"
    # final names hold complete files only; a save cut short leaves its owner-tagged temporary file
    left = sorted(p.name for p in weights.iterdir()) if weights.is_dir() else []
    assert all(name in ("last.pt", "best.pt") or re.fullmatch(r"\.(last|best)\.pt\.pid\d+@.*\.tmp", name)
               for name in left), f"{what}: {left}"
    last = weights / "last.pt"
    if last.is_file():
        assert load_checkpoint(last)["epoch"] <= EPOCHS - 1, what  # a complete checkpoint, never a torn one
        if load_checkpoint(last)["epoch"] < EPOCHS - 1:
            argv = [sys.executable, "-m", "yolocompress", "train", "--resume", str(last)]
        else:  # killed after the last save: the run is complete
            argv = None
    else:  # killed before the first epoch ended: start again in the same folder
        argv = [*_train_argv(data_yaml, out), "--exist-ok"]
    if argv:
        again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        assert again.returncode == 0, f"{what}\n{again.stderr[-2000:]}"
    assert not [p for p in weights.iterdir() if p.suffix == ".tmp"], what  # the next start removed them
    resumed = load_checkpoint(last)
    assert resumed["epoch"] == whole["epoch"] == EPOCHS - 1, what
    for name, tensor in whole["model"].items():  # bit-identical on the CPU
        assert torch.equal(resumed["model"][name], tensor), f"{what}: {name}"
    assert not (tmp_path / "work").exists() or list((tmp_path / "work").iterdir()) == [], what
