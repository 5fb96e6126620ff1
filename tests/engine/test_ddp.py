"""Distributed data-parallel training: 2 CPU processes (Gloo) under torchrun end with identical weights."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from yolocompress.engine.distributed import DistContext, broadcast_object, context_from_env, gather_objects
from yolocompress.errors import InputError

REPO = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import sys
    import torch
    from yolocompress.data import load_data_config
    from yolocompress.engine.callbacks import Callback
    from yolocompress.engine.rng import seed_everything
    from yolocompress.engine.trainer import TrainConfig, Trainer
    from yolocompress.models import build_model, load_config

    data_yaml, out = sys.argv[1], sys.argv[2]

    class SaveWeights(Callback):
        def on_train_end(self, trainer):
            state = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
            torch.save({"params": state, "world_size": trainer.ctx.world_size,
                        "batches": len(trainer.train_loader)}, f"{out}/rank{trainer.ctx.rank}.pt")

    data_cfg = load_data_config(data_yaml)
    cfg = load_config("yolov5n")
    cfg["width_multiple"] = 0.0625
    seed_everything(0)
    model = build_model(cfg, nc=data_cfg.nc)
    config = TrainConfig(epochs=1, imgsz=64, batch=4, workers=0, seed=0, out_dir=out, close_mosaic=0)
    Trainer(model, data_cfg, config, callbacks=[SaveWeights()]).train()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_helpers(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    ctx = context_from_env()
    assert ctx == DistContext(0, 0, 1) and ctx.is_main and not ctx.distributed
    assert broadcast_object({"a": 1}) == {"a": 1} and gather_objects(3) == [3]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(InputError):
        context_from_env()


def test_ddp_two_cpu_processes(tmp_path):
    from yolocompress.data.synthetic import synthesize_dataset

    data_yaml = synthesize_dataset(tmp_path / "data", n_train=8, n_val=8, imgsz=64, seed=0)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script), str(data_yaml), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["batches"] == 2  # each process sees half of the 8 images, 2 per batch
    assert r0["params"].keys() == r1["params"].keys()
    for name in r0["params"]:
        assert torch.equal(r0["params"][name], r1["params"][name]), name
    # rank 0 alone wrote the run's files
    assert (out / "weights" / "last.pt").is_file() and (out / "results.csv").is_file()
    ckpt = torch.load(out / "weights" / "last.pt", weights_only=True)
    assert len(ckpt["rng"]) == 2  # every process's RNG state, for an exact resume


# rank 1's detection loss turns NaN at its 3rd batch (epoch 2, batch 1 of 2); rank 0's stays finite
POISONED = textwrap.dedent("""
    import os
    import sys

    fd = os.open(os.path.join(sys.argv[1], f"stderr{os.environ['RANK']}.txt"), os.O_WRONLY | os.O_CREAT)
    os.dup2(fd, 2)

    from yolocompress.cli import main
    from yolocompress.engine import loss

    calls = [0]
    clean = loss.DetectionLoss.__call__

    def poisoned(self, preds, targets):
        value, items = clean(self, preds, targets)
        calls[0] += 1
        if os.environ["RANK"] == "1" and calls[0] == 3:
            value = value * float("nan")
        return value, items

    loss.DetectionLoss.__call__ = poisoned
    sys.exit(main(sys.argv[2:]))
""")


def test_ddp_divergence_on_one_rank_stops_every_rank_with_one_line(tmp_path):
    """A NaN loss in one process of two: both raise TrainingDivergedError at the same step (neither waits in
    the gradient all-reduce for the other), each with one error line, and last.pt of epoch 1 is kept."""
    from yolocompress.data.synthetic import synthesize_dataset

    data_yaml = synthesize_dataset(tmp_path / "data", n_train=8, n_val=4, imgsz=64, seed=0)
    script = tmp_path / "worker.py"
    script.write_text(POISONED)
    logs, out = tmp_path / "logs", tmp_path / "run"
    logs.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script), str(logs),
           "train", "yolov5n", "--data", str(data_yaml), "--epochs", "2", "--imgsz", "64", "--batch", "4",
           "--workers", "0", "--noval", "--nominal-batch", "4", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode != 0
    for rank in (0, 1):
        err = (logs / f"stderr{rank}.txt").read_text()
        errors = [line for line in err.splitlines() if line.startswith("yolocompress: error:")]
        assert len(errors) == 1 and "Traceback" not in err, (rank, err[-3000:])
        assert "training diverged: non-finite loss in epoch 2/2, batch 1/2, step 3" in errors[0], errors[0]
        assert "last good checkpoint" in errors[0] and "end of epoch 1" in errors[0], errors[0]
    ckpt = torch.load(out / "weights" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 0  # the last good epoch (0-based), written before the divergence
    assert not [p for p in (out / "weights").iterdir() if p.suffix == ".tmp"]
