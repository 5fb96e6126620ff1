"""OpenVINO as a second runtime of the exported files: outputs, mAP, latency, report rows, missing install.

OpenVINO is an optional extra at run time and part of the ``test`` extra, so CI runs these; without it
installed they are skipped, except the check that a missing install is one clear error.

Every check that loads OpenVINO runs in a fresh (spawned) process: with OpenVINO's threads alive in the pytest
process, a later test that launches ``torch.distributed.run`` (tests/engine/test_ddp.py) died with a
segmentation fault of the pytest process itself; each check passes alone and in any order in its own process.
"""
from __future__ import annotations

import importlib.util
import json
import multiprocessing
import sys

import numpy as np
import pytest

from yolocompress.compress.quant.ptq import QuantConfig, quantize_ptq
from yolocompress.engine.evaluator import evaluate_model
from yolocompress.errors import InputError
from yolocompress.export.openvino import compile_openvino
from yolocompress.export.ort import create_session

from .conftest import IMGSZ

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="the openvino extra is not installed")


@pytest.fixture(scope="module")
def int8_onnx(tiny_onnx, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ov-int8") / "tiny-int8.onnx"
    return quantize_ptq(tiny_onnx, tiny_data, QuantConfig(calib_images=4), output=out)[0]


def _in_fresh_process(check, *args) -> None:
    """Run ``check(*args)`` in a spawned process; its exception (an assertion) is re-raised here."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(check, args)


def _ort_output(path, x):
    session = create_session(path, threads=1)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _check_fp32_file_matches_onnxruntime_at_fp32_precision(tiny_onnx):
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    model = compile_openvino(tiny_onnx, threads=1, backend="openvino")
    assert model.precision == "f32"  # pinned, also on CPUs whose default is bf16
    assert model.input_shape == (1, 3, IMGSZ, IMGSZ)
    out, ref = model.run(x), _ort_output(tiny_onnx, x)
    assert out.shape == ref.shape
    # decoded boxes are pixels (up to 64): float rounding of two runtimes' kernels, 1e-4 relative
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@needs_openvino
def test_fp32_file_matches_onnxruntime_at_fp32_precision(tiny_onnx):
    _in_fresh_process(_check_fp32_file_matches_onnxruntime_at_fp32_precision, tiny_onnx)


def _check_int8_file_runs_and_stays_close_to_onnxruntime(int8_onnx):
    x = np.random.default_rng(1).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    out, ref = compile_openvino(int8_onnx, threads=1).run(x), _ort_output(int8_onnx, x)
    assert out.shape == ref.shape and np.isfinite(out).all()
    # two int8 runtimes round differently inside; their outputs must still agree far above noise
    signal = np.sum(ref.astype(np.float64) ** 2)
    noise = np.sum((out.astype(np.float64) - ref) ** 2)
    assert 10 * np.log10(signal / noise) > 25.0


@needs_openvino
def test_int8_file_runs_and_stays_close_to_onnxruntime(int8_onnx):
    _in_fresh_process(_check_int8_file_runs_and_stays_close_to_onnxruntime, int8_onnx)


def _check_map_on_openvino_equals_onnxruntime_for_fp32(tiny_onnx, tiny_data):
    ort_result = evaluate_model(tiny_onnx, tiny_data, batch=4, threads=1)
    ov_result = evaluate_model(tiny_onnx, tiny_data, batch=4, threads=1, backend="openvino")
    assert ov_result.map50_95 == pytest.approx(ort_result.map50_95, abs=1e-3)
    assert ov_result.map50 == pytest.approx(ort_result.map50, abs=1e-3)


@needs_openvino
def test_map_on_openvino_equals_onnxruntime_for_fp32(tiny_onnx, tiny_data):
    _in_fresh_process(_check_map_on_openvino_equals_onnxruntime_for_fp32, tiny_onnx, tiny_data)


def _check_unknown_backend_and_bad_file_are_one_line_errors(tiny_onnx, tmp_path):
    with pytest.raises(InputError, match="unknown OpenVINO backend"):
        compile_openvino(tiny_onnx, backend="openvino-int4")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(InputError) as info:
        compile_openvino(bad)
    assert "\n" not in str(info.value) and "bad.onnx" in str(info.value)
    with pytest.raises(InputError, match="not found"):
        compile_openvino(tmp_path / "missing.onnx")


@needs_openvino
def test_unknown_backend_and_bad_file_are_one_line_errors(tiny_onnx, tmp_path):
    _in_fresh_process(_check_unknown_backend_and_bad_file_are_one_line_errors, tiny_onnx, tmp_path)


def _check_latency_and_recipe_measurement(tiny_model, tiny_onnx, tmp_path):
    from yolocompress.io.checkpoint import save_model
    from yolocompress.profile.latency import measure_openvino_latency
    from yolocompress.recipe.runner import measure_latencies

    result = measure_openvino_latency(tiny_onnx, threads=1, warmup=1, runs=3)
    assert result.backend == "openvino" and result.runs == 3 and result.median_ms > 0
    assert result.imgsz == (IMGSZ, IMGSZ)
    pt = save_model(tiny_model, tmp_path / "tiny.pt")
    timed = measure_latencies([pt, tiny_onnx], IMGSZ, ("onnxruntime", "openvino"), threads=1, runs=2,
                              warmup=1, rounds=1)
    assert set(timed[pt]) == {"onnxruntime", "openvino"} and set(timed[tiny_onnx]) == {"onnxruntime", "openvino"}
    assert all(lat.median_ms > 0 for row in timed.values() for lat in row.values())


@needs_openvino
def test_latency_and_recipe_measurement(tiny_model, tiny_onnx, tmp_path):
    _in_fresh_process(_check_latency_and_recipe_measurement, tiny_model, tiny_onnx, tmp_path)


def _check_eval_cli_backend_openvino(tiny_onnx, tiny_data, tmp_path):
    from yolocompress.cli import main

    out = tmp_path / "eval.json"
    code = main(["eval", str(tiny_onnx), "--data", str(tiny_data), "--backend", "openvino", "--threads", "1",
                 "--batch", "4", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["backend"] == "openvino" and 0.0 <= report["map50_95"] <= 1.0


@needs_openvino
def test_eval_cli_backend_openvino(tiny_onnx, tiny_data, tmp_path):
    _in_fresh_process(_check_eval_cli_backend_openvino, tiny_onnx, tiny_data, tmp_path)


def test_missing_openvino_is_one_line_exit_2(tiny_onnx, tiny_data, monkeypatch, capsys):
    from yolocompress.cli import main

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(InputError, match=r"pip install 'yolocompress\[openvino\]'"):
        compile_openvino(tiny_onnx)
    code = main(["eval", str(tiny_onnx), "--data", str(tiny_data), "--backend", "openvino"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err and "openvino" in err
