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
