"""kill -9 of ``yolocompress quantize`` at seeded random moments (the fixed moments are in test_cli_quantize)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def quantize_argv(tiny_model, tiny_data, tmp_path_factory):
    """``argv(out)``: the quantize command line of the tiny model, and the measured wall time of one run."""
    from yolocompress.io.checkpoint import save_model

    root = tmp_path_factory.mktemp("kill-quantize")
    model = save_model(tiny_model, root / "tiny.pt", imgsz=64)

    def argv(out: Path) -> list[str]:
        return [sys.executable, "-m", "yolocompress", "quantize", str(model), "--data", str(tiny_data),
                "-o", str(out), "--calib-images", "4", "--no-eval"]

    env = {**os.environ, "YOLOCOMPRESS_TMP": str(root / "work")}
    start = time.monotonic()
    whole = subprocess.run(argv(root / "whole.onnx"), capture_output=True, text=True, env=env, timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]
    return argv, time.monotonic() - start


@pytest.mark.slow
@pytest.mark.parametrize("draw", [0])   # one seeded draw here; the fixed early kill is in test_cli_quantize
def test_kill_at_a_random_point_leaves_nothing_and_the_next_run_cleans_up(quantize_argv, tmp_path, draw,
                                                                         kill_at_random_point):
    """No output or temporary file beside it unless complete (a kill after the rename); what the dead run left
    in the temp folder is its own work folder only, removed by the next run, which writes the model."""
    import onnx

    argv, duration = quantize_argv
    out = tmp_path / "out" / "int8.onnx"
    out.parent.mkdir()
    work = tmp_path / "work"
    env = {**os.environ, "YOLOCOMPRESS_TMP": str(work), "PYTHONUNBUFFERED": "1"}
    what, killed = kill_at_random_point(argv(out), env, duration, draw)
    assert [p.name for p in out.parent.iterdir()] in ([], [out.name]), what  # no temporary file beside it
    if out.exists():
        onnx.checker.check_model(str(out))  # complete: the kill came after the atomic rename
    left = list(work.iterdir()) if work.is_dir() else []
    assert all(p.is_dir() and p.name.startswith("yolocompress-") for p in left), f"{what}: {left}"
    done = subprocess.run(argv(out), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"{what}\n{done.stderr[-2000:]}"
    onnx.checker.check_model(str(out))
    assert [p.name for p in out.parent.iterdir()] == [out.name], what
    assert list(work.iterdir()) == [], f"{what}: the dead run's work folder or the new one is left"
