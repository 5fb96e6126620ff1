import importlib.util
import json
import subprocess
import sys
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
    assert result["imgsz"] == [64, 64] and isinstance(result["cpu_flags"], list)
    printed = capsys.readouterr().out
    assert "median ms" in printed and f"CPU: {result['cpu']}; ISA: " in printed


def test_a_checkpoint_is_timed_at_its_recorded_size(tmp_path):
    from yolocompress.io.checkpoint import save_model

    ckpt = save_model(build_model("yolov5n", nc=3), tmp_path / "n96.pt", imgsz=96)
    out = tmp_path / "bench.json"
    assert main(["bench", str(ckpt), *FAST, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["imgsz"] == [96, 96]


def test_stability_verdict_and_busy_machine():
    from yolocompress.compress.benchmark import BACKENDS, BenchResult
    from yolocompress.cli.bench import BACKENDS as CLI_BACKENDS
    from yolocompress.profile.latency import LatencyResult

    assert CLI_BACKENDS == BACKENDS

    def bench(median, p90, mean, load, threads=2, cpus=2):
        lat = LatencyResult(median, p90, mean, 50, threads, "onnxruntime", "cpu", (64, 64))
        return BenchResult(lat, load, cpus)

    quiet = bench(10.0, 10.5, 10.2, 0.1)
    assert quiet.stability == "stable" and not quiet.busy and quiet.warnings == ()
    busy = bench(10.0, 14.0, 13.0, 1.7)  # issue 19: median and mean 30% apart without a word
    assert busy.stability == "unstable" and busy.busy
    assert [w.split(" ")[0] for w in busy.warnings] == ["unstable", "the", "the"]
    assert "30% above the median" in busy.warnings[1] and "load average 1.70 on 2 CPUs" in busy.warnings[2]
    assert bench(10.0, 12.0, 10.5, 0.2).stability == "noisy"
    assert not bench(10.0, 10.5, 10.2, 1.2, threads=1, cpus=4).busy  # 3 cores were left free


def test_bench_onnx_file(tmp_path, capsys):
    path = export_onnx(build_model("yolov5n"), tmp_path / "n.onnx", imgsz=64)
    out = tmp_path / "bench.json"
    assert main(["bench", str(path), *FAST, "--json", str(out)]) == 0  # an .onnx file picks ONNX Runtime
    result = json.loads(out.read_text())
    assert result["imgsz"] == [64, 64] and result["backend"] == "onnxruntime"
    # the verdict: p90/median, its name, the load average and the CPUs it was judged on
    assert result["spread"] == pytest.approx(result["p90_ms"] / result["median_ms"])
    assert result["stability"] in ("stable", "noisy", "unstable") and result["cpus"] >= 1
    captured = capsys.readouterr()
    assert "timing" in captured.err and "3/3 runs" in captured.err  # progress (plain lines: not a terminal)
    assert "threads; load average before timing" in captured.out and result["cpu"] in captured.out
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


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino extra is not installed")
def test_bench_on_openvino(tmp_path):
    """Run as a user would, in its own process (OpenVINO's threads must not live on in the pytest process: see
    tests/compress/quant/test_openvino.py)."""
    path = export_onnx(build_model("yolov5n"), tmp_path / "n.onnx", imgsz=64)
    out = tmp_path / "bench.json"

    def bench(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "yolocompress", "bench", str(path), "--backend", "openvino",
                               *FAST, *extra], capture_output=True, text=True, timeout=300)

    assert bench("--json", str(out)).returncode == 0
    result = json.loads(out.read_text())
    assert result["backend"] == "openvino" and result["imgsz"] == [64, 64] and result["median_ms"] > 0
    refused = bench("--batch", "2")  # the file's batch is fixed at 1
    assert refused.returncode == 2 and "batch" in refused.stderr and "Traceback" not in refused.stderr
