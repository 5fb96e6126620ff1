"""``yolocompress quantize``: the int8 file, its JSON report, eval and bench on it, and bad input (exit 2)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from yolocompress.cli import main
from yolocompress.profile.cpu import cpu_flags, cpu_line

CKPT = Path(__file__).parents[2] / "fixtures" / "ultralytics-yolov5" / "yolov5n-shapes-e12.pt"
FAST = ["--imgsz", "64", "--calib-images", "4"]


@pytest.fixture(scope="module")
def int8_file(tiny_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-quant")
    out, report = folder / "n-int8.onnx", folder / "report.json"
    code = main(["quantize", str(CKPT), "--method", "ptq", "--data", str(tiny_data), *FAST,
                 "--calibration", "percentile", "-o", str(out), "--json", str(report)])
    assert code == 0
    return out, json.loads(report.read_text())


def test_quantize_writes_model_and_report(int8_file, capsys):
    out, report = int8_file
    d = report["details"]
    assert out.is_file() and report["stage"] == "quantize" and report["config"]["method"] == "ptq"
    assert d["output"] == str(out) and d["calib_images"] == 4
    assert d["kernels"]["stayed_float"] == [] and d["kernels"]["planned_integer"] == 59  # + Detect
    assert d["size_ratio"] < 0.35 and d["sqnr_db"] > 25
    assert report["config"]["calibration"] == "percentile" and report["config"]["per_channel"] is True


def test_eval_and_bench_on_int8(int8_file, tiny_data, tmp_path):
    out, _ = int8_file
    metrics = tmp_path / "eval.json"
    assert main(["eval", str(out), "--data", str(tiny_data), "--batch", "4", "--json", str(metrics)]) == 0
    result = json.loads(metrics.read_text())
    assert result["images"] == 4 and result["imgsz"] == 64
    bench = tmp_path / "bench.json"
    assert main(["bench", str(out), "--backend", "onnxruntime", "--runs", "3", "--warmup", "1",
                 "--threads", "1", "--json", str(bench)]) == 0
    assert json.loads(bench.read_text())["median_ms"] > 0


def test_exclude_and_per_tensor(tiny_onnx, tiny_data, tmp_path, capsys):
    out, report = tmp_path / "x.onnx", tmp_path / "x.json"
    assert main(["quantize", str(tiny_onnx), "--data", str(tiny_data), "--calib-images", "2", "--per-tensor",
                 "--exclude", "model.17", "model.20.cv3", "--silu", "float", "-o", str(out),
                 "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    speed = r["details"]["speed"]   # int8 timed against fp32 on this machine, printed with the CPU
    assert speed["int8_median_ms"] > 0 and speed["fp32_median_ms"] > 0
    assert speed["int8_vs_fp32"] == pytest.approx(speed["int8_median_ms"] / speed["fp32_median_ms"], rel=1e-12)
    printed = capsys.readouterr().out
    assert f"int8 {speed['int8_median_ms']:.2f} ms vs fp32 {speed['fp32_median_ms']:.2f} ms" in printed
    assert speed["cpu"] in printed
    float_convs = r["details"]["plan"]["float_convs"]
    assert "model.17.cv1.conv" in float_convs and float_convs["model.20.cv3.conv"] == "excluded"
    assert r["details"]["kernels"]["stayed_float"] == []


def test_the_chosen_plan_is_printed_with_the_cpu_and_its_flags(tiny_onnx, tiny_data, tmp_path, monkeypatch,
                                                                 capsys):
    """``--silu auto`` times the candidate plans (a stub timer here: int8 SiLU faster) and says on which CPU,
    model and ISA flags, the plan was chosen: the choice holds for that CPU."""
    from yolocompress.compress.quant import ptq as ptq_module

    def stub_times(files, imgsz, backend, threads, runs):
        return {k: (8.0, 7.9) if k == "fp32" else (5.0, 4.9) if k == "0" else (10.0, 9.8) for k in files}

    monkeypatch.setattr(ptq_module, "time_plans", stub_times)
    out, report = tmp_path / "auto.onnx", tmp_path / "auto.json"
    assert main(["quantize", str(tiny_onnx), "--data", str(tiny_data), "--calib-images", "2", "--silu", "auto",
                 "-o", str(out), "--json", str(report)]) == 0
    tuning = json.loads(report.read_text())["details"]["autotune"]
    printed = " ".join(capsys.readouterr().out.split())   # rich wraps long lines
    assert f"plan chosen with onnxruntime, {tuning['threads']} threads on " \
           f"{cpu_line(tuning['cpu'], tuning['cpu_flags'])}: " in printed
    assert tuning["cpu_flags"] == cpu_flags()


def test_qat_command(tiny_data, tmp_path):
    out, report = tmp_path / "qat.onnx", tmp_path / "qat.json"
    assert main(["quantize", str(CKPT), "--method", "qat", "--data", str(tiny_data), *FAST, "--epochs", "1",
                 "--batch", "4", "--distill-method", "both", "--distill", "0.5", "--feature-layers", "17,20",
                 "-o", str(out), "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    qat = r["details"]["qat"]
    assert out.is_file() and qat["epochs"] == 1 and qat["parity_sqnr_db"] > 30
    assert {k: qat["distill"][k] for k in ("method", "weight", "feature_layers", "feature_weight")} == \
        {"method": "both", "weight": 0.5, "feature_layers": [17, 20], "feature_weight": 0.01}  # the default
    assert r["details"]["kernels"]["stayed_float"] == [] and r["config"]["method"] == "qat"


def test_a_checkpoint_is_quantized_exported_and_evaluated_at_its_training_size(tiny_data, tmp_path):
    """Without --imgsz, a checkpoint of ours runs at the size it was trained at (here 64 px), not at 640:
    a 256 px baseline quantized at 640 loses ~12 mAP50-95 points from the change of scale alone."""
    from yolocompress.engine.evaluator import evaluate_model
    from yolocompress.export.onnx import read_onnx_metadata
    from yolocompress.io.checkpoint import load_model, save_model

    ours = tmp_path / "ours64.pt"
    save_model(load_model(CKPT), ours, imgsz=64)
    out, exported = tmp_path / "q.onnx", tmp_path / "e.onnx"
    assert main(["quantize", str(ours), "--data", str(tiny_data), "--calib-images", "4", "-o", str(out)]) == 0
    assert main(["export", str(ours), "-o", str(exported)]) == 0
    assert read_onnx_metadata(out).imgsz == (64, 64) and read_onnx_metadata(exported).imgsz == (64, 64)
    assert evaluate_model(ours, tiny_data, label_cache=False).imgsz == 64
    assert evaluate_model(CKPT, tiny_data, label_cache=False).imgsz == 640  # Ultralytics: 640


def _empty_train(tmp_path: Path) -> Path:
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
    data = tmp_path / "empty.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images/train", "val": "images/val",
                                    "nc": 3, "names": ["a", "b", "c"]}))
    return data


def _exit_code(argv: list[str]) -> int:
    """``main``'s return code, or the code argparse exits with on a usage error."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def test_bad_inputs_exit_2(tiny_onnx, tiny_data, tmp_path, capsys):
    out = tmp_path / "bad.onnx"
    cases = [
        ["quantize", str(tiny_onnx), "--data", str(tiny_data), "--exclude", "model.99", "-o", str(out)],
        ["quantize", str(tiny_onnx), "--data", str(_empty_train(tmp_path)), "-o", str(out)],
        ["quantize", str(tmp_path / "missing.pt"), "--data", str(tiny_data), "-o", str(out)],
        ["quantize", str(tiny_onnx), "--data", str(tiny_data), "-o", str(tmp_path / "bad.pt")],
        ["quantize", str(tiny_onnx), "--data", str(tiny_data), "--imgsz", "128", "-o", str(out)],
        ["quantize", str(tiny_onnx), "--data", str(tiny_data), "--method", "awq", "-o", str(out)],
        ["quantize", str(tiny_onnx), "--data", str(tiny_data), "--calibration", "kl", "-o", str(out)],
        ["quantize", str(tiny_onnx), "--data", str(tiny_data), "--method", "qat", "-o", str(out)],
        ["quantize", str(tiny_onnx), "--data", str(tiny_data), "--auto-exclude", "-1", "-o", str(out)],
        ["quantize", str(CKPT), "--data", str(tiny_data), "--method", "qat", "--distill-method", "logits",
         "-o", str(out)],
        ["quantize", str(CKPT), "--data", str(tiny_data), "--method", "qat", "--feature-weight", "2",
         "-o", str(out)],
        ["quantize", str(CKPT), "--data", str(tiny_data), "--method", "qat", "--distill-method", "feature",
         "--temperature", "-1", "-o", str(out)],
    ]
    for argv in cases:
        assert _exit_code(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("yolocompress: error:"), err
    assert not out.exists() and not (tmp_path / "bad.pt").exists()


def test_a_ruinous_quantization_warns_and_max_map_drop_exits_1_with_outputs_written(tiny_data, tmp_path,
                                                                                     monkeypatch, capsys):
    """The int8 model is measured against its input on the val split; here the evaluator reports 0.80 for the
    input and 0.10 for the int8 file (a real tiny model scores ~0 on both, which shows nothing)."""
    from types import SimpleNamespace

    import yolocompress.engine.evaluator as evaluator

    scores = iter([0.80, 0.10])
    monkeypatch.setattr(evaluator, "evaluate_model",
                        lambda *a, **k: SimpleNamespace(map50=0.9, map50_95=next(scores)))
    out, report = tmp_path / "q.onnx", tmp_path / "q.json"
    code = main(["quantize", str(CKPT), "--data", str(tiny_data), *FAST, "-o", str(out),
                 "--json", str(report), "--max-map-drop", "1"])
    err = capsys.readouterr().err
    assert code == 1 and out.is_file() and report.is_file()
    assert "WARNING: mAP50-95 fell 70.00 points in quantize" in err and "--auto-exclude" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("yolocompress: error: mAP50-95 fell 70.00 points in quantize, more than "
                           "--max-map-drop 1")
    r = json.loads(report.read_text())
    assert r["before"]["map50_95"] == 0.80 and r["after"]["map50_95"] == 0.10
    assert r["details"]["accuracy"]["failed"] is True and any("fell 70.00" in w for w in r["warnings"])


def test_no_eval_skips_the_measurement_and_refuses_max_map_drop(tiny_data, tmp_path, capsys):
    out = tmp_path / "n.onnx"
    assert main(["quantize", str(CKPT), "--data", str(tiny_data), *FAST, "-o", str(out), "--no-eval",
                 "--max-map-drop", "1"]) == 2
    assert "--max-map-drop needs the mAP measured" in capsys.readouterr().err and not out.exists()


def test_kill_during_quantize_leaves_nothing_and_the_next_run_cleans_up(tiny_model, tiny_data, tmp_path):
    """kill -9 as soon as the quantization's work folder exists: no output and no temporary file beside it;
    the work folder of the dead run is removed by the next run, which writes the model and leaves no work
    folder behind (kills at seeded random moments of the whole run: test_kill_quantize.py)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from yolocompress.io.checkpoint import save_model

    model = save_model(tiny_model, tmp_path / "tiny.pt", imgsz=64)
    out = tmp_path / "out" / "int8.onnx"
    out.parent.mkdir()
    work = tmp_path / "work"
    env = {**os.environ, "YOLOCOMPRESS_TMP": str(work), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "yolocompress", "quantize", str(model), "--data", str(tiny_data),
            "-o", str(out), "--calib-images", "4", "--no-eval"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while not (work.is_dir() and any(work.iterdir())) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed, "quantize ended before it could be killed"
    assert not out.exists() and list(out.parent.iterdir()) == []  # nothing half-written beside the output
    assert [p.name for p in work.iterdir()] and all(f"pid{proc.pid}@" in p.name for p in work.iterdir())
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.is_file() and list(work.iterdir()) == []  # the dead run's folder and its own are gone
