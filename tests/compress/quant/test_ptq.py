"""Post-training quantization with ONNX Runtime: accuracy, integer kernels, size, evaluation, bad input."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from yolocompress.compress.quant.calibrate import mse_range
from yolocompress.compress.quant.ptq import QuantConfig, quantize_ptq
from yolocompress.compress.quant.verify import output_sqnr
from yolocompress.compress.stage import StageReport
from yolocompress.errors import InputError
from yolocompress.export.onnx import read_onnx_metadata

# Measured on the fixture (yolov5n, 3 classes, 64 px, randomized BN and Detect, 8 calibration images):
# 53-56 dB over all output columns and 60 dB on the scores for every calibration method; the bounds
# leave room for other CPUs and ORT builds while still catching a broken plan (a quantized Detect head
# or a wrong scale gives < 20 dB).
MIN_SQNR_DB = 35.0
MIN_SCORE_SQNR_DB = 40.0


@pytest.fixture(scope="module")
def ptq(tiny_onnx, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ptq") / "tiny-int8.onnx"
    return quantize_ptq(tiny_onnx, tiny_data, QuantConfig(calib_images=8), output=out)


def test_ptq_runs_close_to_fp32(ptq, tiny_onnx, tiny_data):
    path, report = ptq
    d = report.details
    assert path.is_file() and d["output"] == str(path)
    assert d["calib_images"] == 8 and d["imgsz"] == [64, 64]
    assert d["sqnr_db"] > MIN_SQNR_DB and d["score_sqnr_db"] > MIN_SCORE_SQNR_DB
    # independent check on other inputs than the calibration images
    rng = np.random.default_rng(0)
    images = rng.random((2, 3, 64, 64), dtype=np.float32)
    sqnr, score_sqnr = output_sqnr(tiny_onnx, path, images)
    assert sqnr > MIN_SQNR_DB - 10 and score_sqnr > MIN_SCORE_SQNR_DB - 10


def test_every_planned_conv_is_an_integer_kernel(ptq):
    _, report = ptq
    k = report.details["kernels"]
    assert k["planned"] == report.details["plan"]["int8_convs"] == 59
    assert k["planned_integer"] == k["planned"] and k["planned_mac_share"] == pytest.approx(1.0)
    # no warning but, on a CPU where this tiny int8 file runs no faster, the measured-speed one
    assert k["stayed_float"] == [] and not [w for w in report.warnings if "no faster" not in w]
    assert k["integer_convs"] == k["planned"]  # the stem really stays float
    assert k["op_counts"].get("QLinearConv") == 56
    assert k["op_counts"].get("MatMulIntegerToFloat") == 3  # the Detect convs: integer kernels, float outputs
    assert "Conv" not in k["op_counts"] or k["op_counts"]["Conv"] == 1  # only the float stem


def test_size_and_metadata(ptq, tiny_onnx):
    path, report = ptq
    assert report.details["size_ratio"] < 0.35
    assert report.details["int8_bytes"] == path.stat().st_size
    meta, ref = read_onnx_metadata(path), read_onnx_metadata(tiny_onnx)
    assert meta.names == ref.names and meta.stride == ref.stride and meta.imgsz == (64, 64)
    # weights stored as int8, activations as uint8 (what ORT's x86 integer kernels take), biases int32
    proto = onnx.load(str(path))
    zero_points = {i.data_type for i in proto.graph.initializer if i.name.endswith("_zero_point")}
    assert zero_points == {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32}


def test_stage_report_round_trips_through_json(ptq):
    path, report = ptq
    assert isinstance(report, StageReport) and report.stage == "quantize"
    d = report.to_dict()
    assert StageReport.from_dict(json.loads(json.dumps(d))).to_dict() == d
    assert report.after.file_bytes == path.stat().st_size and report.after.kind == "onnx"
    assert report.before.file_bytes == report.details["fp32_bytes"] and report.after.imgsz == 64
    assert report.config["method"] == "ptq" and report.config["calib_images"] == 8
    assert report.details["qat"] is None and "qat" not in report.config


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_calibration_methods(method, tiny_onnx, tiny_data, tmp_path):
    path, report = quantize_ptq(tiny_onnx, tiny_data, QuantConfig(calib_images=4, calibration=method),
                                output=tmp_path / "q.onnx")
    assert report.details["sqnr_db"] > MIN_SQNR_DB and report.details["kernels"]["stayed_float"] == []


def test_from_module_float_silu_per_tensor(tiny_model, tiny_data, tmp_path):
    cfg = QuantConfig(calib_images=4, imgsz=64, silu="float", per_channel=False, stem="int8")
    path, report = quantize_ptq(tiny_model, tiny_data, cfg, output=tmp_path / "m.onnx")
    k = report.details["kernels"]
    assert k["planned"] == 60 and k["stayed_float"] == []
    assert "QLinearSigmoid" not in k["op_counts"]
    assert k["op_counts"].get("MatMulIntegerToFloat") == 3
    assert report.details["sqnr_db"] > MIN_SQNR_DB - 10


def test_eval_runs_on_the_int8_model(ptq, tiny_data):
    from yolocompress.engine.evaluator import evaluate_model

    result = evaluate_model(ptq[0], tiny_data, batch=4)
    assert result.images == 4 and result.imgsz == 64
    assert 0.0 <= result.map50_95 <= result.map50 <= 1.0


def test_mse_range_clips_outliers():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 100_000), np.full(10, 40.0)])
    hist, edges = np.histogram(x, bins=2048, range=(-40, 40))
    # 8 bits: ten outliers cost more clipped than the rounding noise they add, so they are kept ...
    lo, hi = mse_range(hist, edges, x.min(), x.max())
    assert hi > 35
    # ... with 16 levels the rounding noise of the full range dominates and the range is clipped
    lo, hi = mse_range(hist, edges, x.min(), x.max(), levels=16)
    assert -6 < lo < -1 and 1 < hi < 10
    uniform = rng.uniform(0, 6, 100_000)
    hist, edges = np.histogram(uniform, bins=2048, range=(-6, 6))
    lo, hi = mse_range(hist, edges, 0.0, 6.0)
    assert lo == 0.0 and hi > 5.5


def test_no_calibration_images(tiny_onnx, tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "images" / "val").mkdir(parents=True)
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images/train", "val": "images/val",
                                    "nc": 3, "names": ["a", "b", "c"]}))
    with pytest.raises(InputError, match="calibration images"):
        quantize_ptq(tiny_onnx, data, QuantConfig(calib_images=4), output=tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_model_without_convolutions(tiny_data, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["images"], ["output0"], name="sig")], "noconv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 64, 64])])
    path = tmp_path / "noconv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(InputError, match="no convolution"):
        quantize_ptq(path, tiny_data, QuantConfig(calib_images=2), output=tmp_path / "y.onnx")


def test_bad_config():
    with pytest.raises(InputError, match="calibration"):
        QuantConfig(calibration="kl")
    with pytest.raises(InputError, match="calib_images"):
        QuantConfig(calib_images=0)


def test_leaky_relu_runs_as_integer_lookup(tiny_data, tmp_path):
    """LeakyReLU models (yolov5s-LeakyReLU, YOLOv7-tiny): every activation is int8 (QLinearLeakyRelu), also
    the ones that feed only a Detect conv (ORT fuses the others from their neighbours' Q/DQ anyway)."""
    import torch

    from yolocompress.export.onnx import export_onnx
    from yolocompress.models import build_model

    torch.manual_seed(0)
    model = build_model("yolov5s-LeakyReLU", nc=3).eval()
    config = QuantConfig(calib_images=4, imgsz=64)
    path, report = quantize_ptq(model, tiny_data, config, output=tmp_path / "leaky-int8.onnx")
    ops = report.details["kernels"]["op_counts"]
    fp32 = export_onnx(model, tmp_path / "leaky.onnx", imgsz=64)
    leaky = sum(n.op_type == "LeakyRelu" for n in onnx.load(str(fp32)).graph.node)
    assert ops.get("QLinearLeakyRelu") == leaky == 57 and "LeakyRelu" not in ops
    assert report.details["kernels"]["stayed_float"] == [] and report.details["sqnr_db"] > MIN_SQNR_DB - 10


def test_repeated_constants_are_stored_in_broadcast_form(tmp_path):
    """quant_pre_process folds the exported ``Shape -> Expand`` of the anchor sizes into full tensors; the
    pre-processed graph stores them compact again behind an Expand that ONNX Runtime folds at load."""
    from yolocompress.compress.quant.qdq import compact_broadcast_constants
    from yolocompress.export.ort import create_session

    anchors = np.arange(6, dtype=np.float32).reshape(1, 3, 1, 1, 2) + 1
    full = np.broadcast_to(anchors, (1, 3, 16, 16, 2)).copy()
    varied = np.random.default_rng(0).random((1, 3, 16, 16, 2), dtype=np.float32)  # nothing repeats
    shape = [1, 3, 16, 16, 2]
    zero_weight = np.zeros((3, 3, 1, 1, 1), np.float32).repeat(128, axis=2)  # repeats, but a weight
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "anchors"], ["y"]), helper.make_node("Add", ["y", "varied"], ["out"]),
         helper.make_node("Identity", ["zero_weight"], ["weight_out"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape),
         helper.make_tensor_value_info("weight_out", TensorProto.FLOAT, list(zero_weight.shape))],
        [onnx.numpy_helper.from_array(full, "anchors"), onnx.numpy_helper.from_array(varied, "varied"),
         onnx.numpy_helper.from_array(zero_weight, "zero_weight")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    before = create_session(path).run(None, {"x": x})[0]

    proto = onnx.load(str(path))
    assert compact_broadcast_constants(proto)
    onnx.save(proto, str(path))
    sizes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    assert sizes["anchors/compact"] == (1, 3, 1, 1, 2) and sizes["varied"] == tuple(shape)
    assert sizes["zero_weight"] == (3, 3, 128, 1, 1)  # read by a non-arithmetic op: left alone
    assert [n.op_type for n in proto.graph.node] == ["Expand", "Mul", "Add", "Identity"]
    np.testing.assert_array_equal(create_session(path).run(None, {"x": x})[0], before)
