"""QAT: fake quantization placed by the plan, parity with ONNX Runtime's int8 model, a short fine-tune."""
from __future__ import annotations

import copy

import onnx
import pytest
import torch

from yolocompress.compress.fuse import fuse
from yolocompress.compress.quant.calibrate import shared_ranges
from yolocompress.compress.quant.ptq import QuantConfig, calibrated_graph
from yolocompress.compress.quant.qat import (
    ActivationFakeQuant, OutputQuant, QatConfig, QuantConv2d, QuantSiLU, fake_quant_weight, insert_fake_quant,
    learned_overrides, ort_scale_zero_point, parity_sqnr, quantize_qat, quantizers, strip_fake_quant,
)
from yolocompress.compress.quant.qdq import quantize_qdq
from yolocompress.compress.quant.verify import output_sqnr
from yolocompress.errors import InputError

# ORT int8 vs torch fake-quant on the fixture (yolov5n, 3 classes, 64 px, 8 calibration images): 57.6 dB
# with the PTQ ranges (int8 vs fp32: 54 dB); after 1 epoch of QAT on the trained fixture checkpoint: 46 dB.
MIN_PARITY_DB = 50.0
MIN_PARITY_AFTER_TRAINING_DB = 38.0


@pytest.fixture(scope="module")
def placed(tiny_model, tiny_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("qat")
    folded = fuse(tiny_model)
    config = QuantConfig(calib_images=8, imgsz=64)
    prepared = calibrated_graph(folded, tiny_data, config, folder)
    ranges = shared_ranges(prepared.ranges, prepared.plan)
    model = insert_fake_quant(copy.deepcopy(folded), prepared.plan, onnx.load(str(prepared.pre)), ranges).eval()
    return folded, prepared, ranges, model, folder


def test_placement_follows_the_plan(placed):
    folded, prepared, _, model, _ = placed
    plan = prepared.plan
    convs = {name: m for name, m in model.named_modules() if isinstance(m, QuantConv2d)}
    weight_quantized = {name.replace(".module.", ".") for name, m in convs.items() if m.weight_fq}  # OutputQuant
    head = {c.scope for c in plan.int8_head}  # trained in float, GPTQ-rounded at export
    assert len(head) == 3 and weight_quantized == {c.scope for c in plan.int8_convs} - head
    assert not any(name.startswith("model.24") for name in weight_quantized)
    assert sum(isinstance(m, QuantSiLU) and m.sigmoid_fq is not None for m in model.modules()) == 57
    covered = {t for fq in quantizers(model) for t in fq.tensors}
    assert covered == set(plan.tensors)
    for group in plan.shared:  # one quantizer per shared group
        assert len({id(fq) for fq in quantizers(model) if set(group) & set(fq.tensors)}) == 1
    x = torch.from_numpy(prepared.images[:2])
    with torch.no_grad():
        assert torch.equal(strip_fake_quant(model)(x)[0], folded(x)[0])


def test_ort_int8_matches_torch_fake_quant(placed):
    _, prepared, ranges, model, folder = placed
    path = quantize_qdq(prepared.pre, folder / "qat.onnx", prepared.plan, ranges,
                        extra_options={"TensorQuantOverrides": learned_overrides(model)})
    images = prepared.images[:4]
    parity = parity_sqnr(model, path, images)
    to_fp32, _ = output_sqnr(prepared.fp32, path, images)
    assert parity > MIN_PARITY_DB and parity > to_fp32


def test_numerics_mirror_ort():
    assert ort_scale_zero_point(-0.5, 1.5) == (pytest.approx(2.0 / 255), 64)
    assert ort_scale_zero_point(0.2, 1.0)[1] == 0  # the range always contains 0
    w = torch.randn(4, 3, 3, 3)
    q = fake_quant_weight(w)
    scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    steps = q / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= 127 + 1e-4
    fq = ActivationFakeQuant(-1.0, 3.0).eval()
    x = torch.linspace(-2, 4, 101, requires_grad=True)
    y = fq(x)
    step = 4.0 / 255
    assert -1.0 - step <= float(y.detach().min()) and float(y.detach().max()) <= 3.0 + step  # ORT's rounded zero point
    y.sum().backward()
    inside = (x > -0.99) & (x < 2.99)
    assert torch.all(x.grad[inside] == 1) and torch.all(x.grad[(x < -1.1) | (x > 3.1)] == 0)  # STE, clipped


def test_qat_end_to_end(tiny_data, tmp_path):
    from pathlib import Path

    from yolocompress.io.checkpoint import load_model

    ckpt = Path(__file__).parents[2] / "fixtures" / "ultralytics-yolov5" / "yolov5n-shapes-e12.pt"
    path, report = quantize_qat(load_model(ckpt), tiny_data, QuantConfig(calib_images=4, imgsz=64),
                                QatConfig(epochs=1, batch=4), output=tmp_path / "qat.onnx")
    d = report.details
    assert path.is_file() and d["kernels"]["stayed_float"] == []
    assert d["kernels"]["planned_integer"] == d["kernels"]["planned"] == 59
    assert d["qat"]["parity_sqnr_db"] > MIN_PARITY_AFTER_TRAINING_DB
    assert d["qat"]["distill"] == 1.0 and d["qat"]["labels"] is False  # the defaults
    assert d["size_ratio"] < 0.35
    assert report.config["method"] == "qat" and report.config["qat"]["epochs"] == 1
    assert report.after.file_bytes == path.stat().st_size


def test_bad_qat_config():
    with pytest.raises(InputError):
        QatConfig(epochs=0)
    with pytest.raises(InputError):
        QatConfig(lr=0)
    with pytest.raises(InputError):
        QatConfig(distill=-1)
    with pytest.raises(InputError):  # no loss at all
        QatConfig(distill=0, labels=False)
    with pytest.raises(InputError, match="range_momentum"):
        QatConfig(range_momentum=1.5)
    with pytest.raises(InputError, match="weight >= 0"):
        QatConfig(distill=-1, labels=True)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_activation_range_momentum(momentum):
    """Momentum 0 keeps the calibrated range in training; a positive one moves it toward the batch's."""
    fq = ActivationFakeQuant(-1.0, 2.0, momentum=momentum).train()
    fq(torch.linspace(-5.0, 9.0, 100))
    expected = (-1.0 + momentum * (-5.0 + 1.0), 2.0 + momentum * (9.0 - 2.0))
    assert (float(fq.lo), float(fq.hi)) == pytest.approx(expected)


def test_qat_with_feature_distillation_logs_its_term(tiny_model, tiny_data, tmp_path):
    """The same distillation choice as ``distill``: CWD between the fake-quant student and the float model,
    which have the same channels (no connectors)."""
    import csv

    from yolocompress.compress.distill import DistillConfig
    from yolocompress.engine.trainer import load_checkpoint

    kd = DistillConfig(method="feature", feature_weight=2.0, check_teacher=False)
    path, report = quantize_qat(tiny_model, tiny_data, QuantConfig(calib_images=4, imgsz=64),
                                QatConfig(epochs=1, batch=4, distill=kd, out_dir=str(tmp_path / "train")),
                                output=tmp_path / "qat.onnx")
    with open(tmp_path / "train" / "results.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["train/kd_feature"]) > 0 and "train/kd_output" not in row
    assert not load_checkpoint(tmp_path / "train" / "weights" / "last.pt")["extra_modules"]  # no connectors
    assert report.details["qat"]["distill"] == kd.to_dict() and path.is_file()
    assert report.config["qat"]["distill"]["method"] == "feature"


def test_leaky_relu_model(tiny_data, tmp_path):
    """A LeakyReLU model: convs read LeakyReLU outputs (float ops between Q/DQ pairs in the plan), the Detect
    convs too; their fake quantization sits at the activation modules and matches ORT's Q/DQ there."""
    from yolocompress.models import build_model

    torch.manual_seed(0)
    model = fuse(build_model("yolov5s-LeakyReLU", nc=3).eval())
    prepared = calibrated_graph(model, tiny_data, QuantConfig(calib_images=4, imgsz=64), tmp_path)
    ranges = shared_ranges(prepared.ranges, prepared.plan)
    proto = onnx.load(str(prepared.pre))
    placed = insert_fake_quant(copy.deepcopy(model), prepared.plan, proto, ranges).eval()
    leaky = [m for m in placed.modules()
             if isinstance(m, OutputQuant) and isinstance(m.module, torch.nn.LeakyReLU)]
    assert len(leaky) > 50
    path = quantize_qdq(prepared.pre, tmp_path / "leaky.onnx", prepared.plan, ranges,
                        extra_options={"TensorQuantOverrides": learned_overrides(placed)},
                        hessians=prepared.hessians)
    assert parity_sqnr(placed, path, prepared.images[:2]) > MIN_PARITY_DB
