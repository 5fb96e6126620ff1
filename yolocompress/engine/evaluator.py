"""Evaluate a detector on a labelled data set: mAP@0.5, mAP@0.5:0.95, P, R as Ultralytics ``val.py``.

:func:`evaluate` takes any predictor (``yolocompress.engine.predictors``) and any loader that follows the
batch contract of ``docs/architecture.md``; :func:`evaluate_model` builds both from a model or a file
and a ``data.yaml``.

Conventions kept from ``val.py``: predictions and labels are mapped back to the original image (the
letterbox gain is the height ratio, as val.py uses) and clipped to it before matching; detections on
images without labels are false positives; labels on images without detections count as misses; a run
with no true positive at all reports zeros.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from yolocompress.engine.metrics import IOU_THRESHOLDS, ap_per_class, fitness, match_predictions
from yolocompress.engine.nms import non_max_suppression, xywh2xyxy
from yolocompress.engine.predictors import OnnxPredictor, OpenVinoPredictor, Predictor, TorchPredictor
from yolocompress.export.openvino import ONNX_BACKENDS
from yolocompress.errors import InputError
from yolocompress.models.inputs import max_stride
from yolocompress.progress import ProgressCallback, report
from yolocompress.io.checkpoint import DEFAULT_IMGSZ  # when neither the caller nor the model says


@dataclass
class EvalResult:
    """Metrics of one evaluation run.

    ``per_class`` has one dict per class that has labels: ``name``, ``images`` (images containing that
    class), ``instances``, ``P``, ``R``, ``map50``, ``map50_95``. ``speed_ms`` is milliseconds per image:
    ``pre`` (to float, to device), ``inference``, ``nms``, ``metrics`` (rescaling, matching and the final
    AP computation). ``imgsz`` is the longest side images were letterboxed to.
    """

    map50: float
    map50_95: float
    precision: float
    recall: float
    per_class: list[dict[str, Any]]
    images: int
    instances: int
    speed_ms: dict[str, float]
    imgsz: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def fitness(self) -> float:
        """``0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95``."""
        return fitness(self.map50, self.map50_95)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field plus ``fitness``."""
        out = asdict(self)
        out["fitness"] = self.fitness
        return out


def scale_boxes_to_original(boxes: Tensor, shapes: Sequence, image_index: Tensor) -> Tensor:
    """Map ``boxes (Tensor[n, 4])`` x1y1x2y2 from letterboxed input pixels to original-image pixels, clipped.

    ``image_index (long Tensor[n])`` says which entry of the loader's ``shapes`` each box belongs to:
    ``((h0, w0), ((ratio_h, ratio_w), (pad_w, pad_h)))``. Like val.py, the gain is ``ratio_h`` for both axes.
    """
    if boxes.shape[0] == 0:
        return boxes
    table = torch.tensor([[ratio[0], pad[0], pad[1], w0, h0] for (h0, w0), (ratio, pad) in shapes],
                         dtype=boxes.dtype, device=boxes.device)[image_index]
    gain, pad_w, pad_h, w0, h0 = table.unbind(1)
    zero = torch.zeros_like(w0)
    x1 = ((boxes[:, 0] - pad_w) / gain).clamp(zero, w0)
    y1 = ((boxes[:, 1] - pad_h) / gain).clamp(zero, h0)
    x2 = ((boxes[:, 2] - pad_w) / gain).clamp(zero, w0)
    y2 = ((boxes[:, 3] - pad_h) / gain).clamp(zero, h0)
    return torch.stack((x1, y1, x2, y2), 1)


class _Stats:
    """Per-detection and per-label records accumulated over the data set (kept on the CPU)."""

    def __init__(self, nc: int):
        self.nc = nc
        self.tp: list[Tensor] = []
        self.conf: list[Tensor] = []
        self.pred_cls: list[Tensor] = []
        self.target_cls: list[Tensor] = []
        self.images_per_class = torch.zeros(nc, dtype=torch.long)
        self.images = 0

    def add_batch(self, dets: list[Tensor], targets: Tensor, shapes: Sequence, height: int, width: int,
                  iouv: Tensor) -> None:
        """Match one batch. ``dets``: NMS output per image; ``targets``: ``Tensor[n, 6]``, normalised xywh."""
        device = iouv.device
        targets = targets.to(device=device, dtype=torch.float32)
        label_image = targets[:, 0].long()
        label_cls = targets[:, 1]
        if label_cls.numel() and (label_cls.min() < 0 or label_cls.max() >= self.nc):
            raise InputError(f"label class {int(label_cls.max())} is outside 0..{self.nc - 1}")
        size = torch.tensor((width, height, width, height), dtype=torch.float32, device=device)
        label_boxes = scale_boxes_to_original(xywh2xyxy(targets[:, 2:6] * size), shapes, label_image)

        counts = [len(d) for d in dets]
        all_dets = torch.cat(dets, 0).to(device) if dets else torch.zeros(0, 6, device=device)
        det_image = torch.repeat_interleave(torch.arange(len(dets), device=device),
                                            torch.tensor(counts, device=device))
        det_boxes = scale_boxes_to_original(all_dets[:, :4], shapes, det_image)
        all_dets = torch.cat((det_boxes, all_dets[:, 4:]), 1)

        label_order = label_image.argsort(stable=True)
        labels = torch.cat((label_cls[:, None], label_boxes), 1)[label_order]
        label_counts = torch.bincount(label_image, minlength=len(dets)).tolist()
        for d, lab in zip(all_dets.split(counts), labels.split(label_counts)):
            self.tp.append(match_predictions(d, lab, iouv).cpu())
        self.conf.append(all_dets[:, 4].cpu())
        self.pred_cls.append(all_dets[:, 5].cpu())
        self.target_cls.append(label_cls.cpu())
        # Images containing each class: count distinct (image, class) pairs.
        pairs = torch.unique(label_image * self.nc + label_cls.long()).cpu()
        self.images_per_class += torch.bincount(pairs % self.nc, minlength=self.nc)
        self.images += len(dets)

    def result(self, names: Sequence[str]) -> tuple[float, float, float, float, list[dict[str, Any]], int]:
        tp = torch.cat(self.tp).numpy() if self.tp else np.zeros((0, len(IOU_THRESHOLDS)), bool)
        conf = torch.cat(self.conf).numpy() if self.conf else np.zeros(0)
        pred_cls = torch.cat(self.pred_cls).numpy() if self.pred_cls else np.zeros(0)
        target_cls = torch.cat(self.target_cls).numpy() if self.target_cls else np.zeros(0)
        m = ap_per_class(tp, conf, pred_cls, target_cls)
        if not tp.any():  # val.py reports zeros, not the few thousandths interpolation gives all-miss curves
            m.precision[:], m.recall[:], m.ap[:] = 0.0, 0.0, 0.0
        per_class = [
            {"name": str(names[c]) if c < len(names) else str(c), "class": int(c),
             "images": int(self.images_per_class[c]), "instances": int(n),
             "P": float(p), "R": float(r), "map50": float(a50), "map50_95": float(a)}
            for c, n, p, r, a50, a in zip(m.classes, m.instances, m.precision, m.recall, m.ap50, m.ap50_95)
        ]
        if len(m.classes) == 0:
            return 0.0, 0.0, 0.0, 0.0, per_class, 0
        return (float(m.ap50.mean()), float(m.ap50_95.mean()), float(m.precision.mean()),
                float(m.recall.mean()), per_class, int(m.instances.sum()))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Evaluation:
    """val.py's detection metrics accumulated over batches: :func:`evaluate` in parts.

    ``run`` adds batches (any number of calls, each image counted once: give each call other images);
    ``result`` gives the metrics of everything added so far (it may be called between runs). The metrics of
    runs over consecutive parts of a loader equal one run over it, to the bit.
    """

    def __init__(self, nc: int, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
                 device: str | torch.device = "cpu"):
        self.settings = {"conf_thres": conf_thres, "iou_thres": iou_thres, "max_det": max_det}
        self.device = torch.device(device)
        self.iouv = IOU_THRESHOLDS.to(self.device)
        self.stats = _Stats(nc)
        self.timing = {"pre": 0.0, "inference": 0.0, "nms": 0.0, "metrics": 0.0}
        self.longest = 0

    def run(self, predictor: Predictor, loader: Iterable, on_progress: ProgressCallback | None = None
            ) -> Evaluation:
        """Run ``predictor`` over ``loader`` and add its batches (see :func:`evaluate`); returns ``self``."""
        device = self.device
        total = len(loader) if hasattr(loader, "__len__") else 0
        input_dtype = getattr(predictor, "input_dtype", torch.float32)
        timing = self.timing
        with torch.inference_mode():
            for batch_index, (imgs, targets, _paths, shapes) in enumerate(loader):
                t0 = time.perf_counter()
                imgs = imgs.to(device, input_dtype, non_blocking=True).div_(255)  # = (imgs.float() / 255).to
                _, _, height, width = imgs.shape
                self.longest = max(self.longest, height, width)
                _sync(device)
                t1 = time.perf_counter()
                pred = predictor(imgs)
                _sync(device)
                t2 = time.perf_counter()
                dets = non_max_suppression(pred.to(device), self.settings["conf_thres"],
                                           self.settings["iou_thres"], max_det=self.settings["max_det"],
                                           multi_label=True)
                _sync(device)
                t3 = time.perf_counter()
                self.stats.add_batch(dets, targets, shapes, height, width, self.iouv)
                t4 = time.perf_counter()
                timing["pre"] += t1 - t0
                timing["inference"] += t2 - t1
                timing["nms"] += t3 - t2
                timing["metrics"] += t4 - t3
                report(on_progress, "eval", batch_index + 1, total, "batch")
        return self

    def result(self, names: Sequence[str], imgsz: int | None = None) -> EvalResult:
        """The metrics of every batch added so far (``imgsz`` recorded; default the longest side seen)."""
        t0 = time.perf_counter()
        map50, map50_95, precision, recall, per_class, instances = self.stats.result(names)
        timing = dict(self.timing, metrics=self.timing["metrics"] + time.perf_counter() - t0)
        per_image = max(self.stats.images, 1)
        return EvalResult(
            map50=map50, map50_95=map50_95, precision=precision, recall=recall, per_class=per_class,
            images=self.stats.images, instances=instances,
            speed_ms={k: 1000 * v / per_image for k, v in timing.items()},
            imgsz=imgsz if imgsz is not None else (self.longest or None),
            settings=dict(self.settings),
        )


def evaluate(
    predictor: Predictor,
    loader: Iterable,
    nc: int,
    names: Sequence[str],
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    device: str | torch.device = "cpu",
    on_progress: ProgressCallback | None = None,
    imgsz: int | None = None,
) -> EvalResult:
    """Run ``predictor`` over ``loader`` and compute val.py's detection metrics.

    Args:
        predictor: ``predict(imgs float Tensor[B, 3, H, W] in 0..1) -> decoded Tensor[B, N, 5 + nc]``; the
            images are given in its ``input_dtype`` when it has one (float32 otherwise).
        loader: yields ``(imgs uint8 Tensor[B, 3, H, W], targets Tensor[n, 6], paths, shapes)``.
        nc, names: number of classes and their names.
        conf_thres, iou_thres, max_det: NMS settings (val.py's defaults).
        device: where images are converted, NMS and matching run.
        on_progress: called with a ``ProgressEvent`` (task ``eval``) after every batch.
        imgsz: recorded in the result (default: the longest image side seen).
    """
    evaluation = Evaluation(nc, conf_thres, iou_thres, max_det, device)
    return evaluation.run(predictor, loader, on_progress).result(names, imgsz)


def evaluate_model(
    model_or_path: nn.Module | str | os.PathLike,
    data_yaml: Any,
    split: str = "val",
    imgsz: int | None = None,
    batch: int = 32,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    device: str | torch.device = "cpu",
    half: bool = False,
    threads: int | None = None,
    workers: int = 0,
    label_cache: bool = True,
    on_progress: ProgressCallback | None = None,
    backend: str = "onnxruntime",
) -> EvalResult:
    """Evaluate a model, a checkpoint or an ONNX file on a split of a ``data.yaml``.

    The loader follows val.py: rectangular batches with half a stride of padding for PyTorch models
    (``imgsz`` is the long side; by default a checkpoint's recorded training size, 640 for a module or a
    checkpoint without one). An ONNX file with a fixed image size is evaluated on square letterboxed
    images at that size (``imgsz`` is ignored and the result records the model's size); a fixed batch of
    1 runs image by image.

    Args:
        model_or_path: a detector module, a ``.pt`` checkpoint (ours or Ultralytics') or an ``.onnx`` file.
        data_yaml: a ``data.yaml`` path or a ``DataConfig``.
        split: ``val``, ``test`` or ``train``.
        threads: ONNX Runtime / OpenVINO inference threads (PyTorch uses the process setting).
        backend: the runtime of an ``.onnx`` file: ``"onnxruntime"``, ``"openvino"`` (fp32 inference
            precision) or ``"openvino-bf16"`` (:mod:`yolocompress.export.openvino`); ignored for PyTorch
            models.
        workers: loader worker processes.
        label_cache: read/write the label scan cache beside the labels.
        on_progress: see :func:`evaluate`.
        Others: as :func:`evaluate` and :class:`TorchPredictor`.
    """
    from yolocompress.data.config import as_data_config
    from yolocompress.data.loaders import build_eval_loader

    data = as_data_config(data_yaml)
    predictor, stride, rect, imgsz = _predictor_for(model_or_path, data.nc, imgsz, device, half, threads,
                                                    backend)
    loader = build_eval_loader(data, split, imgsz=imgsz, batch=batch, stride=stride, pad=0.5, rect=rect,
                               workers=workers, label_cache=label_cache)
    return evaluate(predictor, loader, data.nc, data.names, conf_thres=conf_thres, iou_thres=iou_thres,
                    max_det=max_det, device=device, on_progress=on_progress, imgsz=imgsz)


def _predictor_for(model_or_path: nn.Module | str | os.PathLike, nc: int, imgsz: int | None,
                   device: str | torch.device, half: bool, threads: int | None, backend: str = "onnxruntime"
                   ) -> tuple[Predictor, int, bool, int]:
    """The predictor for a model or file, and the loader settings it needs: predictor, stride, rect, imgsz."""
    if isinstance(model_or_path, nn.Module):
        model = model_or_path
    else:
        path = Path(model_or_path)
        if not path.is_file():
            raise InputError(f"model file not found: {path}")
        if path.suffix.lower() == ".onnx":
            return _onnx_predictor_for(path, nc, imgsz or DEFAULT_IMGSZ, threads, backend)
        from yolocompress.io.checkpoint import load_model_with_info

        model, info = load_model_with_info(path)
        imgsz = imgsz or info.imgsz
    model_nc = getattr(model, "nc", None)
    if model_nc is not None and int(model_nc) != nc:
        raise InputError(f"the model predicts {model_nc} classes but the data set has {nc}")
    stride = max_stride(model) or 32
    return TorchPredictor(model, device, half=half), stride, True, imgsz or DEFAULT_IMGSZ


def _onnx_predictor_for(path: Path, nc: int, imgsz: int, threads: int | None,
                        backend: str = "onnxruntime") -> tuple[Predictor, int, bool, int]:
    from yolocompress.export.onnx import read_onnx_metadata

    if backend == "onnxruntime":
        predictor: OnnxPredictor | OpenVinoPredictor = OnnxPredictor(path, threads=threads)
    elif backend in ONNX_BACKENDS:
        predictor = OpenVinoPredictor(path, threads=threads, backend=backend)
    else:
        raise InputError(f"unknown backend {backend!r} for an ONNX file; choose from "
                         f"{', '.join(ONNX_BACKENDS)}")
    meta = read_onnx_metadata(path)
    if meta.names is not None and len(meta.names) != nc:
        raise InputError(f"{path.name} predicts {len(meta.names)} classes but the data set has {nc}")
    stride = meta.stride or 32
    shape = predictor.input_shape
    if not shape.static_size:
        return predictor, stride, True, imgsz
    if shape.height != shape.width:
        raise InputError(f"{path.name} has a fixed non-square input {shape.height}x{shape.width}; "
                         "export it square (or with a dynamic size) to evaluate it")
    return predictor, stride, False, shape.height
