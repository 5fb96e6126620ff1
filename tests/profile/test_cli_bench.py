import json
from pathlib import Path

import pytest

from yolocompress.cli import main
from yolocompress.export.onnx import export_onnx
from yolocompress.models import build_model

CKPT = Path(__file__).parents[1] / "fixtures" / "ultralytics-yolov5" / "yolov5n-shapes-e12.pt"
FAST = ["--runs", "3", "--warmup", "1", "--threads", "1"]
KEYS = {"model", "median_ms", "p90_ms", "backend", "threads", "cpu"}


@pytest.mark.parametrize("backend", ["torch", "torch-dnn", "onnxruntime"])
def test_bench_checkpoint_writes_json(tmp_path, backend, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", str(CKPT), "--imgsz", "64", "--backend", backend, *FAST, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert KEYS <= set(result)
    assert result["backend"] == backend and result["threads"] == 1 and result["median_ms"] > 0
    assert result["imgsz"] == [64, 64]
    assert "median ms" in capsys.readouterr().out


def test_bench_onnx_file(tmp_path):
    path = export_onnx(build_model("yolov5n"), tmp_path / "n.onnx", imgsz=64)
    out = tmp_path / "bench.json"
    assert main(["bench", str(path), "--backend", "onnxruntime", *FAST, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["imgsz"] == [64, 64]
    assert main(["bench", str(path), "--backend", "onnxruntime", "--imgsz", "128", *FAST]) == 2  # fixed 64
    assert main(["bench", str(path), "--backend", "torch", *FAST]) == 2


def test_bad_inputs_exit_2(tmp_path):
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("hello")
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("hello")
    out = tmp_path / "bench.json"
    assert main(["bench", str(tmp_path / "missing.pt"), "--json", str(out)]) == 2
    assert main(["bench", str(not_a_model), *FAST, "--json", str(out)]) == 2
    assert main(["bench", str(not_onnx), "--backend", "onnxruntime", *FAST, "--json", str(out)]) == 2
    assert not out.exists()


@pytest.mark.parametrize("option", [["--threads", "0"], ["--runs", "0"], ["--warmup", "-1"],
                                    ["--imgsz", "100"]])
def test_bad_options_exit_2(option):
    with pytest.raises(SystemExit) as exc:  # argparse rejects them before anything runs
        main(["bench", str(CKPT), *option])
    assert exc.value.code == 2
