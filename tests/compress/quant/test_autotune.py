"""Plan autotuning: the decision rule, the candidates of a config, and PTQ keeping the plan the timings favour."""
from __future__ import annotations

import pytest

from yolocompress.compress.quant import ptq as ptq_module
from yolocompress.compress.quant.autotune import (MIN_GAIN, PlanCandidate, choose_plan, slower_than_fp32_warning,
                                                  speed_details, time_plans)
from yolocompress.compress.quant.ptq import QuantConfig, quantize_ptq
from yolocompress.errors import InputError
from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name


def _cand(silu: str, ms: float, sqnr: float = 40.0, score: float = 45.0, stem: str = "float") -> PlanCandidate:
    return PlanCandidate(silu, stem, sqnr, score, ms, ms * 0.95)


def test_choose_plan_keeps_the_reference_unless_clearly_faster():
    ref = _cand("int8", 10.0)
    assert choose_plan([ref, _cand("float", 12.0)], 1.0)[0] == 0
    # within MIN_GAIN of the reference: noise, the default stays
    assert choose_plan([ref, _cand("float", 10.0 * (1 - MIN_GAIN / 2))], 1.0)[0] == 0
    index, reason = choose_plan([ref, _cand("float", 8.0)], 1.0)
    assert index == 1 and "silu=float" in reason and "0.80x" in reason


def test_choose_plan_rejects_a_faster_plan_that_loses_accuracy():
    ref = _cand("int8", 10.0, sqnr=40.0, score=45.0)
    lossy = _cand("float", 7.0, sqnr=38.5, score=45.0)   # 1.5 dB below on all columns
    scores_lost = _cand("float", 7.0, sqnr=40.0, score=43.9, stem="int8")  # 1.1 dB below on the scores
    index, reason = choose_plan([ref, lossy, scores_lost], 1.0)
    assert index == 0 and "lost more than 1 dB" in reason
    assert choose_plan([ref, lossy], 2.0)[0] == 1  # a looser bound admits it
    # a noiseless candidate (SQNR None) qualifies
    assert choose_plan([ref, PlanCandidate("float", "float", None, None, 5.0, 5.0)], 1.0)[0] == 1


def test_candidates_of_a_config():
    assert len(QuantConfig().plan_candidates()) == 1 and not QuantConfig().autotune
    silu = QuantConfig(silu="auto").plan_candidates()
    assert [(c.silu, c.stem) for c in silu] == [("int8", "float"), ("float", "float")]
    both = QuantConfig(silu="auto", stem="auto", exclude=("model.2",)).plan_candidates()
    assert [(c.silu, c.stem) for c in both] == [("int8", "float"), ("int8", "int8"), ("float", "float"),
                                               ("float", "int8")]
    assert all(c.exclude == ("model.2",) for c in both)
    # one calibration serves every candidate: the prepared plan quantizes the union of their tensors
    full = QuantConfig(silu="auto", stem="auto").plan_config()
    assert (full.silu, full.stem) == ("int8", "int8")
    prefixes = QuantConfig(float_prefix="auto").plan_candidates()
    assert [(c.float_prefix, c.selectors) for c in prefixes] == [(0, ()), (1, ("model.0",)),
                                                                  (2, ("model.0", "model.1"))]
    assert QuantConfig(float_prefix="auto").plan_config().float_prefix == 0  # calibrates every tensor
    with pytest.raises(InputError, match="float_prefix"):
        QuantConfig(float_prefix=-1)
    with pytest.raises(InputError, match="tune_backend"):
        QuantConfig(silu="auto", tune_backend="tensorrt")
    with pytest.raises(InputError, match="silu"):
        QuantConfig(silu="fast")


@pytest.mark.parametrize("faster", ["int8", "float"])
def test_ptq_keeps_the_plan_the_timings_favour(tiny_onnx, tiny_data, tmp_path, monkeypatch, faster):
    """The timer is stubbed (deterministic): the chosen candidate is the faster one, and the written file
    is that candidate's plan, checked by its op types and integer kernels."""
    def stub_times(files, imgsz, backend, threads, runs):
        assert backend == "onnxruntime" and set(files) == {"0", "1", "fp32"}   # the fp32 file timed beside
        fast = {"0" if faster == "int8" else "1"}
        return {k: (8.0, 7.9) if k == "fp32" else (5.0, 4.9) if k in fast else (10.0, 9.8) for k in files}

    monkeypatch.setattr(ptq_module, "time_plans", stub_times)
    cfg = QuantConfig(calib_images=4, silu="auto", tune_tolerance_db=100.0)
    path, report = quantize_ptq(tiny_onnx, tiny_data, cfg, output=tmp_path / f"auto-{faster}.onnx")
    tuning = report.details["autotune"]
    assert tuning["chosen"] == {"silu": faster, "stem": "float", "float_prefix": 0}
    assert [c["chosen"] for c in tuning["candidates"]] == [faster == "int8", faster == "float"]
    assert tuning["cpu"] and isinstance(tuning["cpu_flags"], list)
    op_types = report.details["plan"]["op_types"]
    assert ("Sigmoid" in op_types) == (faster == "int8")
    assert report.details["kernels"]["planned_integer"] == report.details["kernels"]["planned"]
    assert report.config["silu"] == "auto" and path.is_file()
    speed = report.details["speed"]   # the chosen plan's timing against the fp32 file's, not timed again
    assert speed["fp32_median_ms"] == 8.0 and speed["int8_median_ms"] == 5.0 and speed["int8_vs_fp32"] == 0.625
    assert speed["int8_vs_fp32_min"] == pytest.approx(4.9 / 7.9, rel=1e-12)
    assert not any("no faster" in w for w in report.warnings)


def test_ptq_warns_when_int8_is_no_faster_than_fp32(tiny_onnx, tiny_data, tmp_path, monkeypatch):
    """Every run times the written int8 file beside the fp32 one (the default plan too, not only autotune,
    whose own timing is reused: the test above) and warns when int8 is no faster on this CPU."""
    timed = []

    def stub_times(files, imgsz, backend, threads, runs):   # fp32 the fastest
        timed.append(sorted(files))
        return {k: (4.0, 3.9) if k == "fp32" else (5.0, 4.9) for k in files}

    monkeypatch.setattr(ptq_module, "time_plans", stub_times)
    path, report = quantize_ptq(tiny_onnx, tiny_data, QuantConfig(calib_images=4), output=tmp_path / "slow.onnx")
    assert timed == [["fp32", "int8"]] and "autotune" not in report.details   # one timing per run
    speed = report.details["speed"]
    assert speed["int8_vs_fp32"] == 1.25 and speed["backend"] == "onnxruntime" and speed["cpu"]
    assert isinstance(speed["cpu_flags"], list)
    assert [w for w in report.warnings if "runs at 1.25x the fp32 model's latency" in w and "no faster" in w]
    assert path.is_file()   # written all the same: the user decides


def test_the_warning_needs_int8_clearly_faster():
    def speed(int8_ms: float) -> dict:
        return speed_details((int8_ms, int8_ms), (10.0, 9.0), "onnxruntime", 2)

    assert speed(7.5)["int8_vs_fp32"] == 0.75 and slower_than_fp32_warning(speed(7.5)) is None
    assert slower_than_fp32_warning(speed(10.0 * (1 - 2 * MIN_GAIN))) is None
    # within MIN_GAIN of fp32 is no speed-up: timing noise must not hide it
    assert "0.99x" in slower_than_fp32_warning(speed(9.9)) and "onnxruntime, 2 threads" in \
        slower_than_fp32_warning(speed(9.9))
    # the CPU is written as beside every latency figure: model and ISA flags (the ratio holds for that CPU)
    assert cpu_line(cpu_name(), cpu_flags()) in slower_than_fp32_warning(speed(9.9))
    flagged = {**speed(9.9), "cpu": "Some CPU", "cpu_flags": ["avx2", "amx_int8"]}
    assert "(CPU: Some CPU; ISA: avx2 amx_int8; onnxruntime, 2 threads)" in slower_than_fp32_warning(flagged)


def test_real_timing_and_qat_refuses_auto(tiny_model, tiny_onnx, tiny_data):
    times = time_plans({"a": tiny_onnx, "b": tiny_onnx}, 64, "onnxruntime", threads=1, runs=4)
    assert set(times) == {"a", "b"} and all(0 < low <= med for med, low in times.values())
    from yolocompress.compress.quant.qat import QatConfig, quantize_qat

    with pytest.raises(InputError, match="auto"):
        quantize_qat(tiny_model, tiny_data, QuantConfig(silu="auto", imgsz=64), QatConfig(epochs=1))


def test_float_prefix_keeps_the_first_layers_float(tiny_onnx, tiny_data, tmp_path):
    """``float_prefix=2``: the convs of model.0 and model.1 stay float (their SiLUs too), the rest int8."""
    _, report = quantize_ptq(tiny_onnx, tiny_data, QuantConfig(calib_images=4, float_prefix=2),
                             output=tmp_path / "prefix.onnx")
    float_convs = report.details["plan"]["float_convs"]
    assert set(float_convs) == {"model.0.conv", "model.1.conv"}
    assert report.details["kernels"]["planned_integer"] == report.details["kernels"]["planned"]
