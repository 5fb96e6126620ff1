"""Temporary work: owner-tagged names, removal on success and on failure, and the next start's removal of what a
killed run (a dead PID) left: work folders under the temp root and ``.*.tmp`` files of atomic writes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from yolocompress.io.atomic import atomic_write_text
from yolocompress.io.workdir import is_stale, owner_tag, temp_root, work_dir


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOCOMPRESS_TMP", str(tmp_path / "tmp"))
    return tmp_path / "tmp"


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The PID of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _host() -> str:
    return owner_tag().split("@", 1)[1].rstrip(".")


def test_work_dir_is_under_the_temp_root_tagged_and_removed_on_success_and_failure(root):
    assert temp_root() == root
    with work_dir("yc-prune-ft-") as d:
        assert d.parent == root and d.name.startswith(f"yc-prune-ft-{owner_tag()}")
        (d / "weights").mkdir()
        (d / "weights" / "last.pt").write_bytes(b"x")
    assert not d.exists()
    with pytest.raises(RuntimeError):
        with work_dir("yolocompress-ptq-") as d:
            raise RuntimeError("a failing stage")
    assert not d.exists() and list(root.iterdir()) == []


def test_a_killed_runs_leftovers_are_removed_on_the_next_start(root, tmp_path, dead_pid):
    host = _host()
    alive = os.getppid()
    root.mkdir()
    stale = root / f"yc-prune-ft-pid{dead_pid}@{host}.k2j4"
    (stale / "weights").mkdir(parents=True)
    (stale / "weights" / "last.pt").write_bytes(b"7 MB of fine-tune")
    (root / f"yolocompress-ptq-pid{dead_pid}@{host}.x1").mkdir()
    kept = [root / f"yolocompress-ptq-pid{alive}@{host}.a1",  # a live run
            root / f"yc-prune-ft-pid{dead_pid}@another-host.b2",  # another machine's (a shared cache)
            root / "notes"]  # not ours
    for path in kept:
        path.mkdir()
    assert is_stale(stale.name) and not is_stale(kept[0].name) and not is_stale(kept[1].name)
    with work_dir("yolocompress-ptq-") as d:
        assert sorted(root.iterdir()) == sorted([*kept, d])
    assert sorted(root.iterdir()) == sorted(kept)

    weights = tmp_path / "run" / "weights"
    weights.mkdir(parents=True)
    left = weights / f".last.pt.pid{dead_pid}@{host}.q8f1.tmp"
    live = weights / f".best.pt.pid{alive}@{host}.r2d2.tmp"
    left.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    atomic_write_text("done", weights / "last.pt")
    assert sorted(p.name for p in weights.iterdir()) == sorted(["last.pt", live.name])
    assert (weights / "last.pt").read_text() == "done"


def test_prune_with_fine_tune_and_ptq_leave_nothing_in_the_temp_folder(root, make_synthetic_data, tmp_path):
    from yolocompress.compress.prune import PruneConfig, prune_model
    from yolocompress.compress.quant.ptq import QuantConfig, quantize_ptq
    from yolocompress.models import DetectionModel, load_config

    data = make_synthetic_data("workdir-synthetic", n_train=8, n_val=4)
    cfg = load_config("yolov5n")
    cfg.update(width_multiple=0.0625, nc=data.nc)
    torch.manual_seed(0)
    model = DetectionModel(cfg)
    pruned, _ = prune_model(model, data, PruneConfig.from_flat(
        ratio=0.3, imgsz=64, candidates=2, guided=0, calib_batches=1, calib_batch=4, eval_images=4, eval_batch=4,
        finetune_epochs=1, finetune_batch=4, min_channels=1, round_to=1, eval_baseline=False))
    assert root.is_dir() and list(root.iterdir()) == []  # the fine-tune ran under the temp root, then went
    output, _ = quantize_ptq(pruned, data, QuantConfig(imgsz=64, calib_images=4, check_images=2), output=tmp_path / "int8.onnx")
    assert output.is_file() and list(root.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
