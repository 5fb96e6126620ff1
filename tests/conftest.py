"""Shared test fixtures: paths to the copied Ultralytics fixtures and small helpers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
ULTRA = FIXTURES / "ultralytics-yolov5"

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: N workers share the cores, one thread each
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"  # the commands they start, and ORT
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def ultra_dir() -> Path:
    """Folder of the real Ultralytics checkpoints with reference outputs (copied from shared/fixtures)."""
    return ULTRA


@pytest.fixture(scope="session")
def reference() -> dict:
    """``reference.json`` of the Ultralytics fixtures."""
    return json.loads((ULTRA / "reference.json").read_text())


@pytest.fixture(autouse=True)
def pinned_channel_block(monkeypatch):
    """Pruning's default widths follow ONNX Runtime's channel block on the CPU (16 with AVX-512, else 8):
    pinned to 16 in every test, so a test prunes alike on every machine (tests of the block patch it)."""
    from yolocompress.profile import latency_table

    monkeypatch.setattr(latency_table, "channel_block", lambda flags=None: 16)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and far more steadily on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def make_synthetic_data(tmp_path_factory):
    """``make(name, n_train, n_val)``: a small synthetic data set (64 px, 6 classes, seed 0) as a ``DataConfig``."""
    from yolocompress.data import load_data_config
    from yolocompress.data.synthetic import synthesize_dataset

    def make(name: str, n_train: int, n_val: int):
        root = tmp_path_factory.mktemp(name)
        return load_data_config(synthesize_dataset(root, n_train=n_train, n_val=n_val, imgsz=64, seed=0))

    return make


@pytest.fixture
def kill_when_written():
    """``kill(argv, path, env)``: start the command ``argv`` and SIGKILL it as soon as the file ``path``
    exists (or when it has ended by itself, or after 300 s)."""
    def kill(argv: list[str], path: Path, env: dict[str, str]) -> None:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 300
        while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    return kill


KILL_SEED = int(os.environ.get("YC_KILL_SEED", "19"))  # issue 19; set YC_KILL_SEED to try other points


@pytest.fixture
def kill_at_random_point():
    """``kill(argv, env, duration, draw) -> (what, killed)``: start ``argv`` and SIGKILL it after a delay drawn
    uniformly over ``duration`` (seconds: the command's measured run time) by a RNG seeded with
    ``YC_KILL_SEED`` (default 19) and ``draw``. ``what`` names the seed and delay for assertion messages;
    ``killed`` is False when the command had already ended by itself."""
    import random

    def kill(argv: list[str], env: dict[str, str], duration: float, draw: int) -> tuple[str, bool]:
        delay = random.Random(f"{KILL_SEED}-{draw}").uniform(0.0, duration)
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            pass
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return (f"YC_KILL_SEED={KILL_SEED} draw {draw}: kill -9 after {delay:.2f} s of a {duration:.2f} s run"
                f"{'' if killed else ' (it had ended)'}"), killed

    return kill
