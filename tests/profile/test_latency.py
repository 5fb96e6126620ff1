import json

import pytest
import torch

from yolocompress.errors import InputError
from yolocompress.export.onnx import export_onnx
from yolocompress.models import build_model
from yolocompress.profile import LatencyResult, measure_ort_latency, measure_torch_latency
from yolocompress.profile.cpu import cpu_flags, cpu_name

KEYS = {"median_ms", "p90_ms", "mean_ms", "runs", "threads", "backend", "cpu", "imgsz", "batch", "cpu_flags"}


def _check(result: LatencyResult, backend: str, runs: int, threads: int) -> None:
    assert result.backend == backend
    assert result.runs == runs and result.threads == threads
    assert 0 < result.median_ms <= result.p90_ms < 60_000
    assert result.mean_ms > 0
    assert result.cpu == cpu_name() != ""
    assert result.cpu_flags == tuple(cpu_flags())  # every latency figure carries its CPU's ISA flags
    d = result.to_dict()
    assert set(d) == KEYS and d["cpu_flags"] == list(result.cpu_flags)
    json.dumps(d)


def test_torch_latency_restores_threads_and_mode():
    model = build_model("yolov5n").train()
    threads = torch.get_num_threads()
    result = measure_torch_latency(model, 64, threads=1, warmup=1, runs=3)
    _check(result, "torch", runs=3, threads=1)
    assert result.imgsz == (64, 64) and result.batch == 1
    assert torch.get_num_threads() == threads
    assert model.training


def test_ort_latency(tmp_path):
    path = export_onnx(build_model("yolov5n"), tmp_path / "n.onnx", imgsz=64, dynamic=True)
    result = measure_ort_latency(path, threads=1, warmup=1, runs=3, batch=2)
    _check(result, "onnxruntime", runs=3, threads=1)
    assert result.imgsz == (64, 64) and result.batch == 2


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"runs": 0}, {"warmup": -1}])
def test_bad_counts(kwargs):
    args = {"threads": 1, "warmup": 0, "runs": 1, **kwargs}
    with pytest.raises(InputError):
        measure_torch_latency(build_model("yolov5n"), 64, **args)


def test_missing_onnx_file(tmp_path):
    with pytest.raises(InputError):
        measure_ort_latency(tmp_path / "missing.onnx", threads=1, warmup=0, runs=1)


def test_a_reports_latency_keeps_the_isa_flags_and_reads_reports_without_them(tmp_path):
    from yolocompress.compress.stage import Latency

    path = export_onnx(build_model("yolov5n"), tmp_path / "n.onnx", imgsz=64)
    entry = Latency.from_result(measure_ort_latency(path, threads=1, warmup=0, runs=1))
    assert entry.cpu_flags == tuple(cpu_flags())
    d = json.loads(json.dumps(entry.to_dict()))
    assert d["cpu_flags"] == list(entry.cpu_flags) and Latency.from_dict(d) == entry
    older = {k: v for k, v in d.items() if k != "cpu_flags"}  # a report written before the flags were kept
    assert Latency.from_dict(older).cpu_flags == ()
