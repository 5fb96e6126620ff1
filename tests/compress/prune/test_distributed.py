"""Candidate scoring sharded over 2 CPU processes (torchrun): same candidates and winner as one process."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from yolocompress.compress.prune import PruneConfig, prune_model
from yolocompress.io.checkpoint import save_model

from .conftest import tiny_model

REPO = Path(__file__).resolve().parents[3]
# probes one side only, the backbone excluded: fewer probes to shard, a faster test; fp32 scoring named here
# because the torchrun workers do not see the fixture that pins it in this process
SETTINGS = dict(ratio=0.5, imgsz=64, candidates=5, calib_batches=2, calib_batch=4, eval_images=8,
                eval_batch=4, finetune_epochs=0, min_channels=1, round_to=1, eval_baseline=False,
                probe_sides="less", exclude=tuple(str(i) for i in range(9)), score_precision="fp32")

WORKER = textwrap.dedent("""
    import json, sys
    import torch
    from yolocompress.compress.prune import PruneConfig, prune_model
    from yolocompress.engine.distributed import context_from_env
    from yolocompress.io.checkpoint import load_model

    torch.set_num_threads(1)
    model_path, data_yaml, out, settings = sys.argv[1:5]
    _, report = prune_model(load_model(model_path), data_yaml, PruneConfig.from_flat(**json.loads(settings)))
    rank = context_from_env().rank
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(report.to_dict(), f)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_candidates_shard_over_two_processes(tiny_data, tmp_path):
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    save_model(model, tmp_path / "m.pt", imgsz=64)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script),
           str(tmp_path / "m.pt"), str(tiny_data.yaml_path), str(tmp_path), json.dumps(SETTINGS)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text())["details"] for r in (0, 1))
    assert r0["distributed_ranks"] == 2
    assert r0["candidates"] == r1["candidates"] and r0["chosen"] == r1["chosen"]
    # the saved model reloads exactly
    _, single = prune_model(model, tiny_data, PruneConfig.from_flat(**SETTINGS))
    assert [c["index"] for c in r0["candidates"]] == list(range(5))
    for a, b in zip(r0["candidates"], single.to_dict()["details"]["candidates"]):
        assert a["gflops"] == b["gflops"] and a["rejected"] == b["rejected"]   # the same early rejections
        assert a["score"] is b["score"] is None or abs(a["score"] - b["score"]) < 1e-6
    assert r0["chosen"] == single.details["chosen"] and r0["after_search"] == single.details["after_search"]
