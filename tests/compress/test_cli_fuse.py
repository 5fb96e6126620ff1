"""``yolocompress fuse`` and the fused columns of ``yolocompress info``."""
from __future__ import annotations

import json

import pytest
import torch

from yolocompress.cli import main
from yolocompress.compress.fuse import fuse, is_fused, remaining_batchnorms
from yolocompress.io.checkpoint import history_entry, load_model_with_info, save_model
from yolocompress.models import build_model, load_config

from .helpers import randomize_batchnorms


@pytest.fixture()
def checkpoint(tmp_path):
    cfg = load_config("yolov5n-rep")
    cfg["width_multiple"] = 0.125
    model = randomize_batchnorms(build_model(cfg, nc=3)).eval()
    path = save_model(model, tmp_path / "model.pt", imgsz=320, history=[history_entry("train", epochs=1)],
                      metrics={"mAP50-95": 0.25})
    return path, model


def test_fuse_command_writes_a_fused_checkpoint(checkpoint, tmp_path, capsys):
    path, model = checkpoint
    out = tmp_path / "fused.pt"
    assert main(["fuse", str(path), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "RepConv merged" in text and "BatchNorm folded" in text
    fused, info = load_model_with_info(out)
    assert is_fused(fused) and remaining_batchnorms(fused) == []
    assert info.imgsz == 320 and info.metrics == {"mAP50-95": 0.25}
    assert [h["step"] for h in info.history] == ["train", "fuse"]
    assert info.history[-1]["repconvs_merged"] == 4 + 7  # 4 RepConv layers + 1+2+3+1 RepBottlenecks
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fused(x)[0], fuse(model)(x)[0])
    # fusing again is a no-op that still writes the file
    again = tmp_path / "again.pt"
    assert main(["fuse", str(out), "-o", str(again)]) == 0
    assert "already fused" in capsys.readouterr().out
    refused, _ = load_model_with_info(again)
    a, b = fused.state_dict(), refused.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_fuse_says_when_it_changes_precision_and_size(checkpoint, tmp_path, capsys):
    """issue 19: an fp16 checkpoint became a twice-as-large fp32 one without a word."""
    path, model = checkpoint
    half = save_model(model, tmp_path / "half.pt", imgsz=320, half=True)
    assert load_model_with_info(half)[1].dtype == "float16"
    assert load_model_with_info(path)[1].dtype == "float32"
    out = tmp_path / "fused32.pt"
    assert main(["fuse", str(half), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{half} stores float16 weights, {out} stores float32" in text and "--half" in text
    assert "MB -> " in text
    assert main(["fuse", str(half), "-o", str(tmp_path / "fused16.pt"), "--half"]) == 0
    assert "note:" not in capsys.readouterr().out  # same precision: nothing to say


@pytest.mark.parametrize("argv_tail,message", [
    (["nope.pt", "-o", "out.pt"], "not found"),
    (["MODEL", "-o", "out.onnx"], "must be a .pt"),
])
def test_fuse_bad_input_is_exit_2(checkpoint, tmp_path, capsys, argv_tail, message):
    path, _ = checkpoint
    argv = ["fuse", *[str(path) if a == "MODEL" else str(tmp_path / a) if a.endswith(("pt", "onnx")) else a
                      for a in argv_tail]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_info_reports_fused_params_and_gflops(checkpoint, tmp_path):
    path, _ = checkpoint
    out = tmp_path / "info.json"
    assert main(["info", str(path), "--imgsz", "64", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["fused"] is False
    assert data["params_fused"] < data["params"] and data["gflops_fused"] < data["gflops"]  # RepConv 1x1s gone
    fused_path = tmp_path / "fused.pt"
    assert main(["fuse", str(path), "-o", str(fused_path)]) == 0
    assert main(["info", str(fused_path), "--imgsz", "64", "--json", str(out)]) == 0
    fused = json.loads(out.read_text())
    assert fused["fused"] is True
    assert fused["params"] == fused["params_fused"] == data["params_fused"]
    assert fused["gflops"] == pytest.approx(data["gflops_fused"])
