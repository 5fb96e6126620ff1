"""Scoring EagleEye's sub-nets (Li et al., ECCV 2020) fast.

- ``adaptive_bn``: reset every BatchNorm's running statistics and re-estimate them as a cumulative average
  (``momentum=None``) over a few training batches, in train mode, without gradients;
- ``cache_data``: decoded images of the calibration and held-out batches cached once as uint8 tensors;
  ``CachedData.head`` / ``SubnetScorer.on_head``: the first of them only (the search's cheaper probes);
- ``SubnetScorer``: a candidate costs one BN pass over the calibration batches and one batched evaluation
  (val.py's NMS and mAP) over the held-out ones. Without NMS and mAP, from the sub-net's raw head outputs
  on the held-out images (smooth signals, usable on fewer images; the search's probes):
  ``SubnetScorer.by_box_loss`` scores by ``box_loss`` (YOLOv5's box regression loss against the labels)
  and ``SubnetScorer.against`` by ``head_distortion`` (how far the outputs are from the unpruned model's).
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from yolocompress.engine.loss import DetectionLoss, bernoulli_kl
from yolocompress.errors import InputError


def adaptive_bn(model: nn.Module, batches: Sequence[torch.Tensor],
                device: str | torch.device = "cpu", reset: bool = True) -> None:
    """Re-estimate every BatchNorm's running statistics on ``batches`` (uint8 Tensor[B, 3, H, W]) in place.

    Running stats are reset and accumulated as a plain average over the batches (``momentum=None``), in train
    mode and without gradients; weights are untouched. The model's momenta and train/eval mode are restored.
    ``reset=False`` continues the average of an earlier call instead (the two calls give the statistics of
    one call on all the batches, to the bit).
    """
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        if reset:
            m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for imgs in batches:
                model(imgs.to(device).float().div_(255))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


@dataclass
class CachedData:
    """Decoded, letterboxed images kept in RAM for the whole search."""

    calib: list[torch.Tensor]                                   # uint8 [B, 3, S, S]
    eval_batches: list[tuple[torch.Tensor, torch.Tensor, list, list]]   # loader batches
    calib_images: int
    eval_images: int
    load_s: float

    def head(self, calib_batches: int, eval_images: int) -> CachedData:
        """The first ``calib_batches`` calibration batches and the first ``eval_images`` held-out images (the
        last batch cut to size; all of them when there are fewer), sharing the cached tensors."""
        if int(calib_batches) < 1 or int(eval_images) < 1:
            raise ValueError(f"need at least one batch and one image, got {calib_batches}, {eval_images}")
        calib = self.calib[:int(calib_batches)]
        batches, left = [], int(eval_images)
        for batch in self.eval_batches:
            if left <= 0:
                break
            imgs, targets, paths, shapes = batch
            k = min(left, len(imgs))
            batches.append(batch if k == len(imgs) else
                           (imgs[:k], targets[targets[:, 0] < k], paths[:k], shapes[:k]))
            left -= k
        return CachedData(calib, batches, sum(len(b) for b in calib), sum(len(b[0]) for b in batches), 0.0)

    def split(self, eval_images: int) -> tuple[CachedData, CachedData] | None:
        """The held-out batches split after the first ``eval_images`` images: ``(head, rest)``, both with all
        the calibration batches; ``None`` unless that falls between two batches with images on both sides."""
        sizes = [len(b[0]) for b in self.eval_batches]
        cut = next((k for k in range(1, len(sizes)) if sum(sizes[:k]) == int(eval_images)), None)
        if cut is None:
            return None
        return (CachedData(self.calib, self.eval_batches[:cut], self.calib_images, sum(sizes[:cut]), 0.0),
                CachedData(self.calib, self.eval_batches[cut:], self.calib_images, sum(sizes[cut:]), 0.0))


def _subset_batches(dataset, indices: Sequence[int], batch: int) -> list[tuple]:
    from yolocompress.data import collate

    return [collate([dataset[i] for i in indices[j:j + batch]]) for j in range(0, len(indices), batch)]


def _sample(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """``k`` of ``range(n)`` in increasing order, at random (all of them when ``k >= n``)."""
    return np.sort(rng.permutation(n)[:k]).tolist() if k < n else list(range(n))


def cache_data(data_cfg: Any, imgsz: int, stride: int, calib_batches: int, calib_batch: int, eval_images: int,
               eval_batch: int, seed: int, eval_split: str = "train") -> CachedData:
    """Load ``calib_batches`` x ``calib_batch`` random training images and ``eval_images`` random held-out
    images once, letterboxed to ``imgsz`` squares (no augmentation).

    With ``eval_split="train"`` (the default, as in the EagleEye paper) the scored images are training images
    disjoint from the calibration images, so the strategy is chosen without looking at the validation split
    that reports the final mAP; ``"val"`` scores on a subset of the validation split instead."""
    from yolocompress.data import build_eval_loader

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    train = build_eval_loader(data_cfg, "train", imgsz=imgsz, batch=calib_batch, stride=stride,
                              rect=False).dataset
    n_calib = min(len(train), calib_batches * calib_batch)
    calib_idx = _sample(rng, len(train), n_calib)
    calib = [b[0].contiguous(memory_format=torch.channels_last)
             for b in _subset_batches(train, calib_idx, calib_batch)]
    if eval_split == "train":
        held = train
        rest = sorted(set(range(len(train))) - set(calib_idx)) or list(range(len(train)))  # tiny sets: overlap
        idx = [rest[i] for i in _sample(rng, len(rest), min(len(rest), eval_images))]
    else:
        held = build_eval_loader(data_cfg, eval_split, imgsz=imgsz, batch=eval_batch, stride=stride,
                                 rect=False).dataset
        idx = _sample(rng, len(held), min(len(held), eval_images))
    n_eval = len(idx)
    eval_batches = [(b[0].contiguous(memory_format=torch.channels_last), *b[1:])
                    for b in _subset_batches(held, idx, eval_batch)]
    if not calib or not eval_batches:
        raise InputError("pruning needs at least one training image and one held-out image")
    return CachedData(calib, eval_batches, n_calib, n_eval, time.perf_counter() - t0)


def head_distortion(outputs: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    """How far a detector's raw head outputs are from a reference detector's on the same images.

    ``outputs``, ``reference``: per output level Tensor[N, na, ny, nx, 5 + nc] of logits (a YOLOv5 head
    applies a sigmoid to each). Per level: the Bernoulli KL divergence KL(reference || outputs) of the
    objectness averaged over every cell, plus those of the box (mean of the 4) and class outputs (mean over
    the classes) averaged over the cells weighted by the reference's objectness (background cells' boxes and
    classes are arbitrary); summed over the levels. 0 when the outputs agree, > 0 otherwise (nats)."""
    if len(outputs) != len(reference):
        raise ValueError(f"{len(outputs)} output levels against {len(reference)} reference levels")
    total = 0.0
    for out, ref in zip(outputs, reference):
        if out.shape != ref.shape:
            raise ValueError(f"output {tuple(out.shape)} != reference {tuple(ref.shape)}")
        kl = bernoulli_kl(out.float(), ref.float())
        w = ref[..., 4].float().sigmoid()
        norm = w.sum().clamp(min=1e-12)
        total += float(kl[..., 4].mean()) + float((kl[..., :4].mean(-1) * w).sum() / norm)
        if out.shape[-1] > 5:
            total += float((kl[..., 5:].mean(-1) * w).sum() / norm)
    return total


def box_loss(outputs: Sequence[torch.Tensor], targets: torch.Tensor, loss: Any) -> float:
    """YOLOv5's box regression loss of a detector's raw head outputs against the labels: per level the mean
    ``1 - CIoU`` of the predictions matched to a label, summed over the levels (times the loss's box gain).

    ``outputs``: per output level Tensor[N, na, ny, nx, 5 + nc] of logits for N images; ``targets``
    (Tensor[n, 6]): ``image_index, class, cx, cy, w, h`` (index into the N images, box normalised);
    ``loss``: an :class:`~yolocompress.engine.loss.DetectionLoss` of the detector."""
    _, parts = loss(list(outputs), targets)
    return float(parts[0])


@dataclass
class SubnetScore:
    """A candidate's held-out metrics and what scoring it cost (seconds): its mAPs, or (scored with a
    ``SubnetScorer.measure``) the ``loss`` it measured, the mAPs ``None``."""

    map50: float | None
    map50_95: float | None
    fitness: float | None
    bn_s: float
    inference_s: float
    nms_map_s: float
    loss: float | None = None

    def value(self, metric: str) -> float:
        """The score for ``metric`` (higher is better): a mAP (``METRICS``), or for any other name (the
        probe metrics ``box_loss``, ``distortion``) minus the ``loss``."""
        value = {"map50_95": self.map50_95, "map50": self.map50, "fitness": self.fitness}.get(
            metric, None if self.loss is None else -self.loss)
        if value is None:
            raise ValueError(f"this score has no {metric!r}")
        return value


class Bf16Autocast(nn.Module):
    """``module``'s forward under CPU bfloat16 autocast; its outputs as ``module`` returns them (decoded
    boxes from a bf16 head are cast back to fp32 by the elementwise ops that meet fp32 anchors)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.module(*args)


@dataclass
class SubnetScorer:
    """Score sub-nets on cached data: adaptive BN (optional) then val.py metrics on the held-out batches.

    The model runs in channels-last memory format while it is scored (oneDNN's fast path: about 1.8x faster
    BN re-calibration on a CPU) and is returned to the default format afterwards. With ``fast_inference``
    (default) the held-out pass on a CPU runs a fused copy with oneDNN conv+activation kernels
    (``compress.onednn``; the same outputs to float rounding, about 1.6x faster inference).

    With ``bf16`` the BN re-estimation and the held-out pass run under CPU bfloat16 autocast (on a plain fused
    copy: the oneDNN kernels are fp32 only). On a CPU with bf16 units (AMX, AVX512-BF16) both take about half
    the time; the scores are those of a bf16 network, close to but not equal to the fp32 ones (weights, BN
    statistics and the returned model stay fp32). On a CPU without bf16 units it is slower: see
    :func:`~yolocompress.profile.cpu.native_bf16`.
    """

    data: CachedData
    nc: int
    names: list[str]
    device: str | torch.device = "cpu"
    conf_thres: float = 0.001
    iou_thres: float = 0.6
    fast_inference: bool = True
    calibrated: int = 0   # see ``continuing``
    # raw head outputs on the held-out images -> a loss: no NMS, no mAP (``by_box_loss``, ``against``)
    measure: Callable[[tuple[torch.Tensor, ...]], float] | None = None
    bf16: bool = False

    def _cpu_bf16(self) -> bool:
        """``bf16`` on a CPU device: the passes run under CPU bfloat16 autocast (a GPU scores in fp32)."""
        return self.bf16 and torch.device(self.device).type == "cpu"

    def _autocast(self) -> contextlib.AbstractContextManager:
        """CPU bfloat16 autocast with ``bf16`` (a CPU device), else nothing."""
        return torch.autocast("cpu", dtype=torch.bfloat16) if self._cpu_bf16() else contextlib.nullcontext()

    @contextlib.contextmanager
    def _channels_last(self, model: nn.Module) -> Iterator[None]:
        """``model`` on the scorer's device in channels-last memory format (oneDNN's fast path) for the block,
        back in the default format afterwards."""
        model.to(self.device, memory_format=torch.channels_last)
        try:
            yield
        finally:
            model.to(memory_format=torch.contiguous_format)

    def _inference_model(self, model: nn.Module) -> nn.Module:
        """What the held-out pass runs: with ``bf16`` ``model`` (a fused copy with ``fast_inference``) under
        bf16 autocast; else on a CPU with ``fast_inference`` a fused copy with oneDNN kernels; else
        ``model``."""
        from yolocompress.compress.fuse import fuse
        from yolocompress.compress.onednn import accelerate_cpu

        if self._cpu_bf16():
            return Bf16Autocast(fuse(model.eval()) if self.fast_inference else model)
        if not self.fast_inference or torch.device(self.device).type != "cpu":
            return model
        return accelerate_cpu(fuse(model.eval()), inplace=True)

    def _input_dtype(self) -> torch.dtype:
        """The held-out images' type: bfloat16 with ``bf16`` (autocast's first layer would cast them to it,
        the same values), else float32."""
        return torch.bfloat16 if self._cpu_bf16() else torch.float32

    def on_head(self, calib_batches: int, eval_images: int) -> SubnetScorer:
        """The same scorer on the first ``calib_batches`` and ``eval_images`` of its data
        (:meth:`CachedData.head`)."""
        if self.measure is not None:
            raise ValueError("on_head after by_box_loss or against: the measure holds all the images")
        return replace(self, data=self.data.head(calib_batches, eval_images))

    def by_box_loss(self, model: nn.Module) -> SubnetScorer:
        """The same scorer scoring by :func:`box_loss` against the held-out images' labels (``model``: the
        detector whose head the sub-nets share, for its anchors and classes): a sub-net's score is then
        ``SubnetScore.loss``, the mAPs ``None``."""
        targets, seen = [], 0
        for imgs, labels, *_ in self.data.eval_batches:   # one image index over all the batches
            targets.append(labels + torch.tensor([seen, 0, 0, 0, 0, 0], dtype=labels.dtype))
            seen += len(imgs)
        imgsz = int(self.data.eval_batches[0][0].shape[-1])
        loss = DetectionLoss(model, imgsz=imgsz).to(self.device)
        return replace(self, measure=partial(box_loss, targets=torch.cat(targets).to(self.device), loss=loss))

    def against(self, reference: nn.Module) -> SubnetScorer:
        """The same scorer scoring by :func:`head_distortion` from ``reference``'s raw head outputs on the
        held-out images (computed now, with its own BN statistics; ``reference`` is not modified): a
        sub-net's score is then ``SubnetScore.loss``, the mAPs ``None``."""
        model = copy.deepcopy(reference)
        model.to(self.device, memory_format=torch.channels_last)
        return replace(self, measure=partial(head_distortion,
                                             reference=self._raw_outputs(self._inference_model(model))))

    def _raw_outputs(self, model: nn.Module) -> tuple[torch.Tensor, ...]:
        """``model``'s raw head outputs (per level, all the held-out images concatenated) in eval mode."""
        was_training = model.training
        model.eval()
        levels: list[list[torch.Tensor]] = []
        try:
            with torch.inference_mode():
                for imgs, *_ in self.data.eval_batches:
                    _, raw = model(imgs.to(self.device, self._input_dtype()).div_(255))
                    levels.append(list(raw))
        finally:
            model.train(was_training)
        return tuple(torch.cat(level) for level in zip(*levels))

    def continuing(self, calibrated: int) -> SubnetScorer:
        """The same scorer for a model whose BN statistics already hold those of the first ``calibrated``
        calibration batches (it was just scored by ``on_head(calibrated, ...)``): only the others are added,
        which gives the statistics of one pass over all of them, to the bit."""
        return replace(self, calibrated=int(calibrated))

    def __call__(self, model: nn.Module, recalibrate: bool = True) -> SubnetScore:
        """Score ``model`` (BN statistics re-estimated in place unless ``recalibrate`` is false)."""
        with self._channels_last(model):
            return self._score(model, recalibrate)

    def calibrate(self, model: nn.Module) -> None:
        """Only the BN re-estimation of scoring ``model`` (in place, in the scorer's precision), no score."""
        with self._channels_last(model):
            self._calibrate(model)

    def _calibrate(self, model: nn.Module) -> None:
        with self._autocast():
            adaptive_bn(model, self.data.calib[self.calibrated:], self.device, reset=not self.calibrated)

    def _predictor(self, model: nn.Module) -> Any:
        """The held-out pass's predictor for ``model`` (after its BN statistics are final)."""
        from yolocompress.engine.predictors import TorchPredictor

        return TorchPredictor(self._inference_model(model), self.device, input_dtype=self._input_dtype())

    def _evaluation(self) -> Any:
        from yolocompress.engine.evaluator import Evaluation

        return Evaluation(self.nc, self.conf_thres, self.iou_thres, device=self.device)

    def _timed_calibration(self, model: nn.Module, recalibrate: bool = True) -> float:
        """Seconds of re-estimating ``model``'s BN statistics (none when not ``recalibrate``)."""
        t0 = time.perf_counter()
        if recalibrate:
            self._calibrate(model)
        return time.perf_counter() - t0

    def _timed_predictor(self, model: nn.Module) -> tuple[Any, float]:
        """:meth:`_predictor` and the seconds it took (the fused copy)."""
        t0 = time.perf_counter()
        return self._predictor(model), time.perf_counter() - t0

    def _score(self, model: nn.Module, recalibrate: bool) -> SubnetScore:
        bn_s = self._timed_calibration(model, recalibrate)
        if self.measure is not None:
            t1 = time.perf_counter()
            outputs = self._raw_outputs(self._inference_model(model))
            t2 = time.perf_counter()
            loss = self.measure(outputs)
            return SubnetScore(None, None, None, bn_s, t2 - t1, time.perf_counter() - t2, loss)
        predictor, prepare_s = self._timed_predictor(model)
        evaluation = self._evaluation().run(predictor, self.data.eval_batches)
        return _as_score(evaluation, self.names, bn_s, prepare_s)

    def in_stages(self, model: nn.Module, head_images: int, floor: float, metric: str
                  ) -> tuple[SubnetScore, SubnetScore | None]:
        """Score ``model`` (BN statistics re-estimated in place on every calibration batch) on its first
        ``head_images`` held-out images, then, unless that score's ``metric`` is below ``floor``, on the
        others: ``(head score, full score or None)``. The full score counts the head's detections once,
        so it is ``self(model)``'s to the bit, and it costs no more than that (its timings: the rest only).
        The head must end between two held-out batches (:meth:`CachedData.split`)."""
        parts = self.data.split(head_images)
        if parts is None or self.measure is not None:
            raise ValueError(f"scoring in stages needs mAP scoring and a head of whole batches, got "
                             f"{head_images} images")
        head_data, rest_data = parts
        with self._channels_last(model):
            bn_s = self._timed_calibration(model)
            predictor, prepare_s = self._timed_predictor(model)
            evaluation = self._evaluation().run(predictor, head_data.eval_batches)
            head = _as_score(evaluation, self.names, bn_s, prepare_s)
            if head.value(metric) < floor:
                return head, None
            spent = dict(evaluation.timing)
            return head, _as_score(evaluation.run(predictor, rest_data.eval_batches), self.names, 0.0, 0.0,
                                   since=spent)


def _as_score(evaluation: Any, names: list[str], bn_s: float, prepare_s: float,
              since: dict[str, float] | None = None) -> SubnetScore:
    """A candidate's score from its held-out ``Evaluation`` so far; its seconds: ``bn_s``, ``prepare_s``, the
    evaluation's own since its ``timing`` was ``since`` (default: all of it) and the final AP computation."""
    t0 = time.perf_counter()
    result = evaluation.result(names)
    ap_s = time.perf_counter() - t0
    t = {k: v - (since or {}).get(k, 0.0) for k, v in evaluation.timing.items()}
    return SubnetScore(result.map50, result.map50_95, result.fitness, bn_s,
                       prepare_s + t["pre"] + t["inference"], t["nms"] + t["metrics"] + ap_s)
