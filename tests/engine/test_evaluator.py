"""The evaluator on synthetic batches that follow the loader contract, and the predictors."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from yolocompress.engine.evaluator import (EvalResult, Evaluation, evaluate, evaluate_model,
                                          scale_boxes_to_original)
from yolocompress.engine.predictors import OnnxPredictor, TorchPredictor, onnx_input_shape
from yolocompress.errors import InputError

NAMES = ["a", "b", "c"]


class Replay:
    """A predictor returning prepared decoded outputs, one per call."""

    def __init__(self, outputs):
        self.outputs = list(outputs)

    def __call__(self, imgs):
        out = self.outputs.pop(0)
        assert out.shape[0] == imgs.shape[0] and imgs.dtype == torch.float32 and imgs.max() <= 1
        return out


def decoded(boxes_per_image, nc=3, n=8):
    """Decoded head output ``[B, n, 5 + nc]`` holding the given (x1, y1, x2, y2, conf, cls) boxes, input px."""
    out = torch.zeros(len(boxes_per_image), n, 5 + nc)
    for b, boxes in enumerate(boxes_per_image):
        for k, (x1, y1, x2, y2, conf, cls) in enumerate(boxes):
            out[b, k, :4] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
            out[b, k, 4] = 1.0
            out[b, k, 5 + int(cls)] = conf
    return out


def batch(labels_per_image, size=(64, 64), shapes=None):
    """``(imgs, targets, paths, shapes)`` with labels (cls, x1, y1, x2, y2) given in input pixels."""
    h, w = size
    rows = []
    for b, labels in enumerate(labels_per_image):
        for c, x1, y1, x2, y2 in labels:
            rows.append([b, c, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h])
    targets = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
    imgs = torch.zeros(len(labels_per_image), 3, h, w, dtype=torch.uint8)
    shapes = shapes or [((h, w), ((1.0, 1.0), (0.0, 0.0)))] * len(labels_per_image)
    return imgs, targets, [f"{i}.jpg" for i in range(len(labels_per_image))], shapes


def run(batches, outputs, **kw):
    return evaluate(Replay(outputs), batches, nc=3, names=NAMES, **kw)


def test_perfect_predictions():
    labels = [[(0, 5, 5, 20, 20), (1, 30, 30, 50, 60)], [(2, 10, 10, 40, 30)]]
    dets = [[(*lab[1:], 0.9, lab[0]) for lab in image] for image in labels]
    r = run([batch(labels)], [decoded(dets)])
    assert r.map50 == pytest.approx(0.995) and r.map50_95 == pytest.approx(0.995)
    assert r.precision == pytest.approx(1.0) and r.recall == pytest.approx(1.0)
    assert r.images == 2 and r.instances == 3
    assert [c["name"] for c in r.per_class] == NAMES
    assert [c["images"] for c in r.per_class] == [1, 1, 1]
    assert r.imgsz == 64


def test_image_without_labels_counts_false_positives():
    labels = [[(0, 5, 5, 20, 20)], []]
    dets = [[(5, 5, 20, 20, 0.5, 0)], [(5, 5, 20, 20, 0.9, 0)]]
    r = run([batch(labels)], [decoded(dets)])
    assert r.map50 == pytest.approx(0.5 * 0.995)  # FP ranked first: precision envelope 1/2


def test_image_without_predictions_counts_its_labels():
    labels = [[(0, 5, 5, 20, 20)], [(0, 30, 30, 50, 50)]]
    dets = [[(5, 5, 20, 20, 0.9, 0)], []]
    r = run([batch(labels)], [decoded(dets)])
    # Recall stops at 0.5 with precision 1; val.py interpolates to (1, 0): 0.5 + 0.25.
    assert r.map50 == pytest.approx(0.75)
    assert r.per_class[0]["instances"] == 2 and r.per_class[0]["images"] == 2


def test_no_true_positive_reports_zeros():
    labels = [[(0, 5, 5, 20, 20)]]
    dets = [[(40, 40, 60, 60, 0.9, 0), (5, 5, 20, 20, 0.8, 1)]]
    r = run([batch(labels)], [decoded(dets)])
    assert (r.map50, r.map50_95, r.precision, r.recall) == (0, 0, 0, 0)
    assert [c["name"] for c in r.per_class] == ["a"]  # class b has detections but no labels: not reported


def test_boxes_mapped_to_original_image_and_clipped():
    # Original 50 x 100 (h x w) letterboxed into 64 x 64: gain 0.64 (ratio_h), pad (0, 16) -> 32 x 64 content.
    shapes = [((50, 100), ((0.64, 0.64), (0.0, 16.0)))]
    gt_in = (0, 0.0, 10 * 0.64 + 16, 30 * 0.64, 40 * 0.64 + 16)  # original (0, 10, 30, 40): on the left edge
    # The detection sticks out of the image into the left padding by 20 px: clipped, it is exact.
    det = (-20.0, gt_in[2], gt_in[3], gt_in[4], 0.9, 0)
    r = run([batch([[gt_in]], shapes=shapes)], [decoded([[det]])])
    assert r.map50_95 == pytest.approx(0.995)
    boxes = torch.tensor([[-20.0, 22.4, 19.2, 41.6]])
    torch.testing.assert_close(scale_boxes_to_original(boxes, shapes, torch.tensor([0])),
                               torch.tensor([[0.0, 10.0, 30.0, 40.0]]))


def test_many_batches_and_result_dict():
    rng = np.random.default_rng(0)
    batches, outputs = [], []
    for _ in range(3):
        labels = [[(int(rng.integers(0, 3)), *(lambda x, y: (x, y, x + 12, y + 12))(*rng.uniform(0, 50, 2)))
                   for _ in range(int(rng.integers(0, 4)))] for _ in range(4)]
        dets = [[(x1 + rng.normal(0, 1), y1, x2, y2, rng.uniform(0.1, 1), c) for c, x1, y1, x2, y2 in image]
                for image in labels]
        batches.append(batch(labels))
        outputs.append(decoded(dets))
    events = []
    r = run(batches, outputs, on_progress=events.append)
    assert [(e.task, e.done, e.total) for e in events] == [("eval", k, 3) for k in (1, 2, 3)]
    assert isinstance(r, EvalResult) and r.images == 12
    d = json.loads(json.dumps(r.to_dict()))
    keys = ("map50", "map50_95", "precision", "recall", "per_class", "imgsz", "images", "speed_ms", "fitness")
    assert set(keys) <= set(d)
    assert set(d["speed_ms"]) >= {"pre", "inference", "nms"}
    assert d["fitness"] == pytest.approx(0.1 * r.map50 + 0.9 * r.map50_95)


def noisy_batches(seed, n=4):
    """``n`` batches of 4 images with random labels, and detections near them (some missed, some shifted)."""
    rng = np.random.default_rng(seed)
    batches, outputs = [], []
    for _ in range(n):
        labels = [[(int(rng.integers(0, 3)), *(lambda x, y: (x, y, x + 12, y + 12))(*rng.uniform(0, 50, 2)))
                   for _ in range(int(rng.integers(0, 5)))] for _ in range(4)]
        dets = [[(x1 + rng.normal(0, 2), y1 + rng.normal(0, 2), x2, y2, rng.uniform(0.05, 1), c)
                 for c, x1, y1, x2, y2 in image if rng.uniform() < 0.8] for image in labels]
        batches.append(batch(labels))
        outputs.append(decoded(dets))
    return batches, outputs


def test_an_evaluation_in_parts_equals_one_run_to_the_bit():
    """``Evaluation.run`` over consecutive parts of the batches gives ``evaluate``'s metrics over all of them;
    ``result`` between the runs gives the metrics of the first part alone."""
    batches, outputs = noisy_batches(3)
    whole = run(batches, outputs)
    parts = Evaluation(3).run(Replay(outputs[:1]), batches[:1])
    first = parts.result(NAMES)
    alone = run(batches[:1], outputs[:1])
    assert first.to_dict() | {"speed_ms": None} == alone.to_dict() | {"speed_ms": None}
    together = parts.run(Replay(outputs[1:]), batches[1:]).result(NAMES)
    assert together.images == 16 and 0 < whole.map50_95 < 1 and whole.map50_95 != first.map50_95
    assert together.to_dict() | {"speed_ms": None} == whole.to_dict() | {"speed_ms": None}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_images_reach_a_predictor_in_its_input_dtype_with_float_division_s_values(dtype):
    """A predictor with ``input_dtype`` gets ``(imgs.float() / 255).to(input_dtype)``: every one of the 256
    uint8 values converted as float division then rounding would."""
    imgs = torch.arange(256, dtype=torch.uint8).repeat(3 * 16).reshape(1, 3, 64, 64)
    seen = []

    def predictor(x):
        seen.append(x)
        return torch.zeros(1, 8, 8)

    predictor.input_dtype = dtype
    shapes = [((64, 64), ((1.0, 1.0), (0.0, 0.0)))]
    evaluate(predictor, [(imgs, torch.zeros(0, 6), ["0.jpg"], shapes)], 3, NAMES)
    assert seen[0].dtype == dtype and torch.equal(seen[0], (imgs.float() / 255).to(dtype))
    out = TorchPredictor(nn.Sequential(), input_dtype=dtype)(seen[0])   # the model gets them as they are
    assert out.dtype == torch.float32 and torch.equal(out, seen[0].float())


def test_label_class_out_of_range_is_input_error():
    with pytest.raises(InputError):
        run([batch([[(5, 1, 1, 9, 9)]])], [decoded([[]])])


class TinyDetector(nn.Module):
    """Stride-8 grid, one anchor: decoded ``[B, H/8 * W/8, 5 + nc]`` like a YOLO head in eval mode."""

    def __init__(self, nc=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5 + nc, 8, stride=8)

    def forward(self, x):
        y = self.conv(x).flatten(2).transpose(1, 2).sigmoid()
        xy = y[..., :2] * x.shape[-1]
        return torch.cat((xy, y[..., 2:4] * 32, y[..., 4:]), -1), [y]


def test_torch_predictor_returns_decoded_tensor_in_eval_mode():
    model = TinyDetector().train()
    predict = TorchPredictor(model)
    model.conv.register_forward_pre_hook(lambda m, _: seen.append(m.training))
    seen = []
    out = predict(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 16, 8) and seen == [False] and not out.requires_grad
    assert model.training  # the caller's mode is restored
    with pytest.raises(InputError):
        TorchPredictor(model, "cpu", half=True)


def _export(tmp_path, name, batch, dynamic):
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Decoded(TinyDetector()), (torch.zeros(batch, 3, 32, 32),), str(path), dynamo=False,
                          input_names=["images"], output_names=["output0", "extra"], opset_version=17,
                          dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}} if dynamic else None)
    return path


class _Decoded(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out, raw = self.model(x)
        return out, raw[0]


@pytest.mark.parametrize("batch_dim,dynamic", [(1, False), (2, False), (1, True)])
def test_onnx_predictor_matches_torch(tmp_path, batch_dim, dynamic):
    path = _export(tmp_path, f"tiny-{batch_dim}-{dynamic}.onnx", batch_dim, dynamic)
    shape = onnx_input_shape(path)
    assert (shape.batch, shape.height, shape.width) == (None if dynamic else batch_dim, 32, 32)
    predict = OnnxPredictor(path, threads=1)
    x = torch.rand(3, 3, 32, 32)  # 3 images: one by one, padded pairs, or one call
    ref = TorchPredictor(TinyDetector())(x)
    torch.testing.assert_close(predict(x), ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="rect=False"):
        predict(torch.rand(1, 3, 64, 32))


# --- parity with Ultralytics val.py on the real fixture --------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ultralytics-yolov5"
CHECKPOINT = FIXTURES / "yolov5n-shapes-e12.pt"
DATA = FIXTURES / "shapes-val" / "data.yaml"


@pytest.fixture(scope="module")
def reference():
    entry = json.loads((FIXTURES / "reference.json").read_text())["yolov5n-shapes-e12.pt"]
    return entry["ultralytics_val_on_shapes-val"]


@pytest.mark.slow
def test_parity_with_ultralytics_val(reference):
    """yolov5n-shapes-e12 on shapes-val at 256, batch 32, conf 0.001, IoU 0.6, rect batches (pad 0.5).

    Measured: mAP50 0.17370 (ref 0.17374), mAP50-95 0.06420 (ref 0.06445), P 0.20034 (0.20092),
    R 0.27750 (0.2775). The small remainder comes from image decoding (val.py used OpenCV).
    """
    r = evaluate_model(CHECKPOINT, DATA, imgsz=reference["imgsz"], batch=reference["batch_size"],
                       conf_thres=reference["conf_thres"], iou_thres=reference["iou_thres"],
                       label_cache=False)
    assert r.images == 128
    assert abs(r.map50 - reference["mAP50"]) <= 0.003
    assert abs(r.map50_95 - reference["mAP50_95"]) <= 0.003
    assert abs(r.precision - reference["P"]) <= 0.01 and abs(r.recall - reference["R"]) <= 0.01
    per_class = [c["map50_95"] for c in r.per_class]
    np.testing.assert_allclose(per_class, reference["per_class_mAP50_95"], atol=0.003)


@pytest.mark.slow
def test_onnx_eval_agrees_with_pytorch(tmp_path):
    """The exported model (fixed 1x3x256x256) evaluated image by image on square letterboxed batches
    gives the mAP of the PyTorch model on the same batches (measured difference ~1e-8)."""
    from yolocompress.data.loaders import build_eval_loader
    from yolocompress.export.onnx import export_onnx
    from yolocompress.io.checkpoint import load_model

    model = load_model(CHECKPOINT)
    path = export_onnx(model, tmp_path / "m.onnx", imgsz=256, batch=1)
    # imgsz 640 is overridden by the file's fixed 256
    onnx_result = evaluate_model(path, DATA, imgsz=640, batch=32, label_cache=False)
    assert onnx_result.imgsz == 256
    loader = build_eval_loader(DATA, "val", imgsz=256, batch=32, stride=32, rect=False, label_cache=False)
    torch_result = evaluate(TorchPredictor(model), loader, model.nc, model.names)
    assert abs(onnx_result.map50 - torch_result.map50) <= 0.002
    assert abs(onnx_result.map50_95 - torch_result.map50_95) <= 0.002


@pytest.mark.slow
def test_cli_eval_prints_table_and_writes_json(tmp_path, capsys):
    import shutil

    from yolocompress.cli import main

    data = shutil.copytree(DATA.parent, tmp_path / "shapes-val") / "data.yaml"  # the label cache goes there
    out = tmp_path / "metrics.json"
    code = main(["eval", str(CHECKPOINT), "--data", str(data), "--imgsz", "256", "--batch", "64",
                 "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "rectangle" in printed and "times per image on CPU: " in printed and "; ISA: " in printed
    report = json.loads(out.read_text())
    for key in ("map50", "map50_95", "precision", "recall", "per_class", "imgsz", "images", "speed_ms"):
        assert key in report
    assert report["imgsz"] == 256 and report["images"] == 128
    assert main(["eval", str(CHECKPOINT), "--data", str(tmp_path / "missing.yaml")]) == 2
    assert main(["eval", str(tmp_path / "missing.pt"), "--data", str(data)]) == 2
