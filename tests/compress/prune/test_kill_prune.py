"""A prune killed in its search or its fine-tune, then ``--resume``: it ends with the weights and metrics of
an uninterrupted run (bit for bit on the CPU), leaving no partial output and no work folder behind."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from yolocompress.cli import prune as prune_cli
from yolocompress.engine.train_checkpoint import load_checkpoint
from yolocompress.io.checkpoint import load_model, save_model

from .conftest import tiny_model

# the backbone excluded: fewer searchable groups, fewer probes, a faster test
SETTINGS = dict(ratio=0.5, candidates=3, guided=1, calib_batches=1, calib_batch=4, eval_images=4,
                eval_batch=4, finetune_epochs=3, finetune_batch=4, min_channels=1, round_to=1,
                exclude=tuple(str(i) for i in range(9)), probe_sides="less")
SAME = ("candidates", "chosen", "probes", "sensitivity", "groups", "after_search", "after_finetune")


class Killed(BaseException):
    """Stands for the kill: not an Exception, so nothing on the way up handles it."""


def assert_same_run(a: Path, b: Path, ra: dict, rb: dict, why: str = "") -> None:
    """The two prunes wrote the same weights and report the same search and metrics."""
    for key in SAME:
        assert ra["details"][key] == rb["details"][key], f"{key} {why}"
    assert ra["after"] == rb["after"], why
    sa, sb = load_model(a).state_dict(), load_model(b).state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), f"weights differ {why}"
    losses = [[{k: v for k, v in row.items() if k != "time_s"} for row in r["details"]["finetune"]["history"]]
              for r in (ra, rb)]
    assert losses[0] == losses[1], why


def assert_nothing_left(out: Path, work: Path) -> None:
    """No search log, fine-tune folder or temporary file beside ``out``; no work folder under ``work``."""
    beside = sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name) and p != out)
    assert beside == [], beside
    assert not work.exists() or list(work.iterdir()) == []


def where_killed(out: Path) -> str:
    """What a killed prune writing ``out`` had done: sub-nets scored, fine-tune epochs saved."""
    log, last = Path(f"{out}.search.jsonl"), prune_cli.finetune_folder(out) / "weights" / "last.pt"
    scored = len(log.read_text().splitlines()) - 1 if log.exists() else 0
    epochs = load_checkpoint(last)["epoch"] + 1 if last.exists() else 0
    return f"{scored} sub-nets scored, {epochs} fine-tune epochs saved"


@pytest.fixture
def checkpoint(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOCOMPRESS_TMP", str(tmp_path / "work"))
    path = tmp_path / "tiny.pt"
    save_model(tiny_model("yolov5n", nc=tiny_data.nc, width=0.125), path, imgsz=64)
    return path


def test_a_fine_tune_interrupted_after_epoch_1_resumes_from_its_last_pt(checkpoint, tiny_data, tmp_path):
    data = str(tiny_data.yaml_path)
    whole = prune_cli.run(str(checkpoint), str(tmp_path / "whole.pt"), data, SETTINGS)

    out = tmp_path / "killed.pt"

    def kill_in_epoch_2(event):
        if event.task == "epoch 2/3":  # epoch 1's last.pt is written
            raise Killed

    with pytest.raises(Killed):
        prune_cli.run(str(checkpoint), str(out), data, SETTINGS, on_progress=kill_in_epoch_2)
    assert not out.exists()
    last = prune_cli.finetune_folder(out) / "weights" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 0

    resumed = prune_cli.run(str(checkpoint), str(out), data, {**SETTINGS, "resume": True})
    assert resumed["details"]["finetune"]["resumed_from_epoch"] == 1  # not fine-tuned again from the start
    assert whole["details"]["finetune"]["resumed_from_epoch"] is None
    assert_same_run(out, tmp_path / "whole.pt", resumed, whole)
    assert_nothing_left(out, tmp_path / "work")
    assert_nothing_left(tmp_path / "whole.pt", tmp_path / "work")


def test_without_resume_a_dead_runs_fine_tune_folder_is_replaced(checkpoint, tiny_data, tmp_path):
    out = tmp_path / "out.pt"
    stale = prune_cli.finetune_folder(out) / "weights"
    stale.mkdir(parents=True)
    (stale / "last.pt").write_bytes(b"not a checkpoint")  # resuming from it would fail
    settings = {**SETTINGS, "finetune_epochs": 1, "candidates": 1, "guided": 0}
    report = prune_cli.run(str(checkpoint), str(out), str(tiny_data.yaml_path), settings)
    assert report["details"]["finetune"]["resumed_from_epoch"] is None and out.is_file()
    assert_nothing_left(out, tmp_path / "work")


@pytest.mark.slow
def test_kill_9_at_a_random_point_of_search_or_fine_tune_then_resume(checkpoint, tiny_data, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    def argv(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "yolocompress", "prune", str(checkpoint), "--data",
                str(tiny_data.yaml_path), "-o", str(out), "--json", f"{out}.json", "--ratio", "0.5",
                "--candidates", "3", "--guided", "1", "--calib-batches", "1", "--eval-images", "4",
                "--batch", "4", "--finetune-epochs", "3", "--min-channels", "1", "--round-to", "1",
                "--exclude", ",".join(map(str, range(9))), "--quiet", *extra]

    def start(out: Path) -> tuple[subprocess.Popen, float]:
        """Start a prune; returns it once its search has begun (its log exists), and that time."""
        proc = subprocess.Popen(argv(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        log = Path(f"{out}.search.jsonl")
        while not log.exists() and proc.poll() is None:
            time.sleep(0.01)
        return proc, time.monotonic()

    whole = tmp_path / "whole.pt"
    proc, began = start(whole)
    assert proc.wait(timeout=300) == 0
    span = time.monotonic() - began  # search, evaluations, fine-tune and saving

    seed = int(os.environ.get("YC_KILL_SEED", "19"))  # as the other kill tests: set it to try other points
    delay = random.Random(seed).uniform(0.0, 0.9 * span)
    why = f"(YC_KILL_SEED={seed}: killed {delay:.2f} s into a search and fine-tune of {span:.2f} s)"
    out = tmp_path / "killed.pt"
    proc, _ = start(out)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.returncode == -signal.SIGKILL and out.exists():
        # killed after its atomic save (in the report's write, the clean-up or the interpreter's exit):
        # the model is whole, and the report, written after it, is whole or absent
        load_model(out)
        if Path(f"{out}.json").exists():
            json.loads(Path(f"{out}.json").read_text())
        why += "; killed after the model was saved"
    elif proc.returncode == -signal.SIGKILL:
        assert not Path(f"{out}.json").exists(), why  # the report is written after the model
        why += f"; {where_killed(out)}"
    resumed = subprocess.run(argv(out, "--resume"), capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, f"{why}\n{resumed.stderr[-2000:]}"
    reports = [json.loads(Path(f"{p}.json").read_text()) for p in (out, whole)]
    assert_same_run(out, whole, *reports, why=why)
    for p in (out, whole):
        Path(f"{p}.json").unlink()
        assert_nothing_left(p, tmp_path / "work")
