"""Quantization-aware training with small fake-quant modules in plain torch, placed where the plan says.

Placement follows the :class:`~yolocompress.compress.quant.plan.QuantPlan` of the model's own export: each
planned tensor that an arithmetic op produces (a Conv output, a SiLU's sigmoid and product, a residual Add,
another activation module's output such as LeakyReLU's, the image for an int8 stem) gets fake quantization
at the torch module that produces it, found through the ONNX node's module path. Concat / MaxPool / nearest
Resize outputs need none: their inputs share one scale (the plan's ``shared`` groups share one
:class:`ActivationFakeQuant`), so they stay on the grid.

Numerics mirror what ONNX Runtime will run:
- weights: per-output-channel symmetric int8 in [-127, 127], ``scale = max|w| / 127`` recomputed every
  step, which is what ``quantize_static`` recomputes from the trained fp32 weights;
- activations: uint8 asymmetric with ORT's formula (range widened to contain 0, ``scale = (hi - lo) / 255``,
  ``zero_point = round(-lo / scale)``); ranges start at the PTQ calibration and are tracked (EMA of the
  batch min / max) while training; straight-through gradients.

BatchNorm is folded into the convolutions before QAT (``compress.fuse.fuse``), so the weights being
fake-quantized are the deployed ones. The Detect convs of an integer head (``head="int8"``) train in float;
their weights are rounded to int8 at export by GPTQ against the trained model's own inputs
(``compress.quant.head``), which lost less mAP than training them with round-to-nearest fake quantization.
Export: the fp32 ONNX of the trained weights, then ``quantize_static`` with ``TensorQuantOverrides`` carrying
the learned scales and zero points.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolocompress.compress.distill.config import (DistillConfig, as_distill_config, distill_json, distill_terms,
                                                  kd_warnings, teacher_overhead)
from yolocompress.compress.quant.calibrate import shared_ranges
from yolocompress.compress.quant.head import head_hessians
from yolocompress.compress.quant.numerics import QMAX, QMIN, WMAX, ort_scale_zero_point, sqnr_db
from yolocompress.compress.quant.plan import QuantPlan, node_scope
from yolocompress.compress.quant.ptq import (
    CalibratedGraph, QuantConfig, calibrated_graph, default_output, write_verified,
)
from yolocompress.compress.quant.qdq import copy_metadata, preprocess, quantize_qdq
from yolocompress.compress.stage import StageReport
from yolocompress.errors import InputError
from yolocompress.io.workdir import work_dir


class _FakeQuant(torch.autograd.Function):
    """``(clamp(round(x / scale) + zp, qmin, qmax) - zp) * scale`` with a straight-through gradient inside the
    range and none outside; only a boolean mask is kept for backward (a chain of autograd ops would keep
    several float copies of every activation)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int) -> Tensor:  # noqa: D102
        q = torch.round(x / scale) + zero_point
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return (torch.clamp(q, qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quant_weight(w: Tensor) -> Tensor:
    """Per-output-channel symmetric int8 fake quantization of a conv weight ``Tensor[out, in, kh, kw]``."""
    amax = w.detach().abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True)
    scale = torch.where(amax > 0, amax / WMAX, torch.ones_like(amax))
    return _FakeQuant.apply(w, scale, torch.zeros_like(scale), -WMAX, WMAX)


class ActivationFakeQuant(nn.Module):
    """uint8 fake quantization of an activation with a tracked range (buffers ``lo``, ``hi``).

    ``tensors`` names the ONNX tensors it stands for (several when they share one scale).
    """

    def __init__(self, lo: float, hi: float, tensors: list[str] | None = None, momentum: float = 0.01):
        super().__init__()
        self.register_buffer("lo", torch.tensor(float(min(lo, 0.0))))
        self.register_buffer("hi", torch.tensor(float(max(hi, 0.0))))
        self.tensors = list(tensors or [])
        self.momentum = momentum

    def scale_zero_point(self) -> tuple[float, int]:
        return ort_scale_zero_point(float(self.lo), float(self.hi))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                m = self.momentum
                self.lo.mul_(1 - m).add_(m * torch.clamp(x.detach().min(), max=0.0))
                self.hi.mul_(1 - m).add_(m * torch.clamp(x.detach().max(), min=0.0))
        lo, hi = torch.clamp(self.lo, max=0.0), torch.clamp(self.hi, min=0.0)
        scale = torch.clamp((hi - lo) / (QMAX - QMIN), min=1e-12)
        zero_point = torch.clamp(torch.round(QMIN - lo / scale), QMIN, QMAX)
        return _FakeQuant.apply(x, scale, zero_point, QMIN, QMAX)


class QuantConv2d(nn.Module):
    """A convolution with optional fake quantization of its input, weight (per channel) and output."""

    def __init__(self, conv: nn.Conv2d, weight: bool = True):
        super().__init__()
        self.conv = conv
        self.weight_fq = weight
        self.input_fq: ActivationFakeQuant | None = None
        self.output_fq: ActivationFakeQuant | None = None

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv
        if self.input_fq is not None:
            x = self.input_fq(x)
        w = fake_quant_weight(c.weight) if self.weight_fq else c.weight
        y = F.conv2d(x, w, c.bias, c.stride, c.padding, c.dilation, c.groups)
        return self.output_fq(y) if self.output_fq is not None else y


class QuantSiLU(nn.Module):
    """``x * sigmoid(x)`` with the sigmoid output (QLinearSigmoid) and / or the product fake-quantized."""

    def __init__(self) -> None:
        super().__init__()
        self.sigmoid_fq: ActivationFakeQuant | None = None
        self.output_fq: ActivationFakeQuant | None = None

    def forward(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        if self.sigmoid_fq is not None:
            s = self.sigmoid_fq(s)
        y = x * s
        return self.output_fq(y) if self.output_fq is not None else y


class OutputQuant(nn.Module):
    """Any module followed by fake quantization of its output (a residual block's Add); keeps the layer
    attributes (``f``, ``i``, ``type``) the detector's forward reads."""

    def __init__(self, module: nn.Module, fq: ActivationFakeQuant):
        super().__init__()
        self.module, self.output_fq = module, fq
        for attr in ("f", "i", "type", "np"):
            if hasattr(module, attr):
                setattr(self, attr, getattr(module, attr))

    def forward(self, *args: Any) -> Tensor:
        return self.output_fq(self.module(*args))


def _producers(proto) -> dict[str, Any]:
    return {out: node for node in proto.graph.node for out in node.output}


def _get(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"the model has no module {path} (the plan comes from another model?)") from None


# activation ops whose module (found by the node's scope) outputs exactly the op's output
_ACTIVATION_OPS = ("LeakyRelu", "Relu", "HardSwish", "HardSigmoid", "Clip", "Elu", "Tanh")


def insert_fake_quant(model: nn.Module, plan: QuantPlan, proto, ranges: dict[str, tuple[float, float]],
                      momentum: float = 0.01) -> nn.Module:
    """Put fake quantization into ``model`` (in place, BatchNorm already folded) where ``plan`` quantizes;
    returns ``model``.

    ``proto`` is the ONNX graph the plan was built on (an export of ``model``: node names give module paths);
    ``ranges`` the calibrated float range of every planned tensor, merged over the shared groups;
    ``momentum`` how fast the activation ranges follow the batches' min / max (0: fixed at ``ranges``).
    """
    placer = _FakeQuantPlacer(model, plan, ranges, momentum)
    by_name = {n.name: n for n in proto.graph.node}
    for name in plan.nodes:  # weights of every planned conv
        if by_name[name].op_type == "Conv":
            placer.conv(node_scope(name), True)
    producers = _producers(proto)
    consumers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    graph_inputs = {i.name for i in proto.graph.input}
    for tensor in plan.tensors:
        node = producers.get(tensor)
        if node is not None:
            placer.output(node, tensor)
        elif tensor in graph_inputs:
            placer.image(tensor, consumers.get(tensor, []))
    return model


class _FakeQuantPlacer:
    """Puts the fake-quant modules of one plan into one model: one quantizer per tensor or shared group."""

    def __init__(self, model: nn.Module, plan: QuantPlan, ranges: dict[str, tuple[float, float]],
                 momentum: float):
        self.model, self.plan, self.ranges, self.momentum = model, plan, ranges, momentum
        self.planned = set(plan.nodes)
        self.group_of = {t: k for k, group in enumerate(plan.shared) for t in group}
        self.by_key: dict[Any, ActivationFakeQuant] = {}

    def quantizer(self, tensor: str) -> ActivationFakeQuant:
        """The activation quantizer of ``tensor`` (its shared group's one, created on first use)."""
        group_of = self.group_of
        key = ("group", group_of[tensor]) if tensor in group_of else tensor
        if key not in self.by_key:  # a shared group's quantizer stands for every member (Concat outputs too)
            members = list(self.plan.shared[group_of[tensor]]) if tensor in group_of else []
            self.by_key[key] = ActivationFakeQuant(*self.ranges[tensor], tensors=members,
                                                   momentum=self.momentum)
        if tensor not in self.by_key[key].tensors:
            self.by_key[key].tensors.append(tensor)
        return self.by_key[key]

    def conv(self, scope: str, planned: bool) -> QuantConv2d:
        """The :class:`QuantConv2d` at ``scope`` (the Conv2d there wrapped on first use)."""
        module = _get(self.model, scope)
        if not isinstance(module, QuantConv2d):
            if not isinstance(module, nn.Conv2d):
                raise ValueError(f"{scope} is a {type(module).__name__}, not a Conv2d")
            module = QuantConv2d(module, weight=planned)
            self.model.set_submodule(scope, module)
        return module

    def silu(self, scope: str) -> QuantSiLU:
        """The :class:`QuantSiLU` at ``scope`` (replacing the SiLU there on first use)."""
        module = _get(self.model, scope)
        if not isinstance(module, QuantSiLU):
            module = QuantSiLU()
            self.model.set_submodule(scope, module)
        return module

    def image(self, tensor: str, consumers: list[Any]) -> None:
        """Fake-quantize the graph input ``tensor`` where convs read it (the image into an int8 stem)."""
        for conv in consumers:
            if conv.op_type == "Conv":
                self.conv(node_scope(conv.name), conv.name in self.planned).input_fq = self.quantizer(tensor)

    def output(self, node: Any, tensor: str) -> None:
        """Fake-quantize ``tensor`` at the module of ``node``, the ONNX node that produces it."""
        model, scope, op = self.model, node_scope(node.name), node.op_type
        if op in ("Concat", "MaxPool", "Resize") and node.name in self.planned:
            return  # its inputs share the output's scale: the output is already on the grid
        if op == "Conv":
            self.conv(scope, node.name in self.planned).output_fq = self.quantizer(tensor)
        elif op == "Sigmoid":
            self.silu(scope).sigmoid_fq = self.quantizer(tensor)
        elif op == "Mul" and isinstance(_get(model, scope), (nn.SiLU, QuantSiLU)):
            self.silu(scope).output_fq = self.quantizer(tensor)
        elif op == "Add" or op in _ACTIVATION_OPS and not isinstance(_get(model, scope), nn.Sequential):
            # a residual Add, or an activation module other than SiLU (LeakyReLU models): the module's output
            module = _get(model, scope)
            if not isinstance(module, OutputQuant):
                model.set_submodule(scope, OutputQuant(module, self.quantizer(tensor)))
        else:
            raise ValueError(f"no fake-quant rule for {op} node {node.name} (tensor {tensor})")


def quantizers(model: nn.Module) -> list[ActivationFakeQuant]:
    """Every distinct activation fake-quant module of a QAT model."""
    seen, out = set(), []
    for module in model.modules():
        if isinstance(module, ActivationFakeQuant) and id(module) not in seen:
            seen.add(id(module))
            out.append(module)
    return out


def learned_overrides(model: nn.Module) -> dict[str, list[dict[str, Any]]]:
    """``TensorQuantOverrides`` for ``quantize_static``: the learned scale and zero point of every tensor."""
    out = {}
    for fq in quantizers(model):
        scale, zero_point = fq.scale_zero_point()
        for tensor in fq.tensors:
            out[tensor] = [{"scale": np.array(scale, np.float32), "zero_point": np.array(zero_point, np.uint8)}]
    return out


def learned_ranges(model: nn.Module) -> dict[str, tuple[float, float]]:
    """``{tensor: (lo, hi)}`` of every fake-quantized tensor."""
    return {t: (float(fq.lo), float(fq.hi)) for fq in quantizers(model) for t in fq.tensors}


def strip_fake_quant(model: nn.Module) -> nn.Module:
    """A float copy of a QAT model with the original module types back (same state_dict as before QAT)."""
    net = copy.deepcopy(model)
    for name, module in sorted(net.named_modules(), key=lambda kv: -kv[0].count(".")):
        if isinstance(module, QuantConv2d):
            net.set_submodule(name, module.conv)
        elif isinstance(module, QuantSiLU):
            net.set_submodule(name, nn.SiLU())
        elif isinstance(module, OutputQuant):
            net.set_submodule(name, module.module)
    return net


@dataclass(frozen=True)
class QatConfig:
    """Fine-tuning settings of QAT (the quantization settings are a :class:`QuantConfig`).

    ``lr`` is SGD's initial rate (no warm-up: the model is trained already; linear decay to
    ``lr * lrf``); mosaic is off for every QAT epoch (a converged YOLOv5 ends its training without it).
    The loss is distillation from the float model (``distill``: a weight, output KD as
    :class:`~yolocompress.compress.distill.output.OutputDistillation`, or a
    :class:`~yolocompress.compress.distill.config.DistillConfig`: output, feature or both; the fake-quant
    student has the float model's channels, so feature KD needs no connectors), plus the detection loss on
    the labels when ``labels``: on the shipped baseline the label loss alone pulls the converged network away
    from its optimum (1.07 mAP50-95 points lost after 3 epochs at lr 1e-3, 0.65 at 1e-4) while distillation
    alone keeps the quantized network next to the float one (0.27; benchmarks/RESULTS.md). ``val=False``:
    the last EMA weights are exported, the validation split is not used to pick them. ``range_momentum``: how
    fast the activation ranges follow each batch's min / max (0 keeps the PTQ calibration's ranges).
    """

    epochs: int = 3
    lr: float = 1e-4
    lrf: float = 0.1
    batch: int = 16
    workers: int = 0
    seed: int = 0
    out_dir: str | None = None
    distill: float | DistillConfig = 1.0
    labels: bool = False
    range_momentum: float = 0.01

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1:
            raise InputError(f"QAT needs epochs >= 1 and batch >= 1, got {self.epochs} and {self.batch}")
        if not self.lr > 0:
            raise InputError(f"QAT lr must be > 0, got {self.lr}")
        if not 0.0 <= self.range_momentum <= 1.0:
            raise InputError(f"QAT range_momentum must be in [0, 1], got {self.range_momentum}")
        if as_distill_config(self.distill) is None and not self.labels:  # the first refuses a weight < 0
            raise InputError("QAT needs a loss: labels, distillation from the float model, or both")


def fake_quant_output(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Decoded eval output ``[n, N, 5 + nc]`` of a (fake-quant) model, image by image."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return np.concatenate([model(torch.from_numpy(images[k:k + 1]))[0].numpy() for k in range(len(images))])
    finally:
        model.train(was)


def parity_sqnr(model: nn.Module, int8_path: Path, images: np.ndarray) -> float:
    """SQNR in dB of the ONNX Runtime int8 output against the torch fake-quant output (same images)."""
    from yolocompress.export.ort import create_session

    ref = fake_quant_output(model, images).astype(np.float64)
    session = create_session(int8_path)
    name = session.get_inputs()[0].name
    out = np.concatenate([session.run(None, {name: images[k:k + 1]})[0] for k in range(len(images))])
    return sqnr_db(float((ref ** 2).sum()), float(((ref - out) ** 2).sum()))


def quantize_qat(model: nn.Module, data_cfg: Any, config: QuantConfig | None = None,
                 qat: QatConfig | None = None,
                 output: str | os.PathLike | None = None) -> tuple[Path, StageReport]:
    """Quantization-aware fine-tuning, then int8 export for ONNX Runtime.

    Steps: fold BatchNorm; PTQ preparation of the folded model (export, plan, calibration on training
    images); fake quantization inserted where the plan says, ranges from the calibration; fine-tuning with
    the project's trainer (``wrap_model``); fp32 export of the trained weights; ``quantize_static`` with
    ``TensorQuantOverrides`` holding the learned scales. A module is exported at ``config.imgsz`` (640 when
    unset): pass the size the model was trained at. Returns ``(int8 path, StageReport)``: the ``quantize``
    stage report of PTQ (:func:`~yolocompress.compress.quant.ptq.write_verified`) with
    ``config["method"] = "qat"``, ``config["qat"]`` = the :class:`QatConfig` fields and ``details["qat"]`` =
    epochs, lr and ``parity_sqnr_db`` (ORT int8 vs torch fake-quant, calibration images).
    """
    from yolocompress.compress.fuse import fuse
    from yolocompress.data.config import as_data_config

    config = config or QuantConfig()
    qat = qat or QatConfig()
    _check_quant_config(config)
    t0 = time.perf_counter()
    output = Path(output) if output is not None else default_output(model)
    data = as_data_config(data_cfg)
    with work_dir("yolocompress-qat-") as tmp_name:
        tmp = Path(tmp_name)
        folded = fuse(model).float().cpu()
        prepared = calibrated_graph(folded, data, config, tmp)
        ranges = shared_ranges(prepared.ranges, prepared.plan)
        trained, history, terms = _finetune(folded, data, prepared, ranges, qat, tmp)
        trained_prep, qdq = _export_int8(trained, prepared, ranges, config, tmp)
        parity = parity_sqnr(trained, qdq, prepared.images[:config.check_images])
        report = write_verified(trained_prep, prepared.plan, config, qdq, output, t0, method="qat")
    details = {**_qat_details(qat, parity), **teacher_overhead(terms, history), "history": history}
    report = report.replace(config={**report.config, "qat": dataclasses.asdict(qat)},
                            details={**report.details, "qat": details},
                            warnings=(*report.warnings, *kd_warnings(history)))
    return output, report


def _check_quant_config(config: QuantConfig) -> None:
    """Refuse the PTQ-only settings: ``"auto"`` plans, per-tensor weights, int8 activations."""
    if config.autotune:
        raise InputError("silu/stem 'auto' times candidate plans after calibration, which PTQ does; QAT "
                         "trains one plan: choose int8 or float (or run PTQ with auto first and use its "
                         "choice)")
    if not config.per_channel or config.activation_type != "u8":
        raise InputError("QAT trains per-channel int8 weights and uint8 activations (what its fake "
                         "quantization simulates); per_channel=false and activation_type=s8 are for PTQ only")


def _finetune(folded: nn.Module, data: Any, prepared: CalibratedGraph, ranges: dict[str, tuple[float, float]],
              qat: QatConfig, tmp: Path) -> tuple[nn.Module, list[dict[str, Any]], list[Any]]:
    """Train ``folded`` with fake quantization where ``prepared.plan`` says; return it trained (in eval), the
    per-epoch history (every loss term, KD included) and the distillation terms it trained with."""
    import onnx

    from yolocompress.engine.loss import Hyp
    from yolocompress.engine.trainer import TrainConfig, Trainer

    plan, proto = prepared.plan, onnx.load(str(prepared.pre))
    imgsz = prepared.imgsz[0]
    train_cfg = TrainConfig(epochs=qat.epochs, imgsz=imgsz, batch=qat.batch, workers=qat.workers,
                            seed=qat.seed, out_dir=qat.out_dir or str(tmp / "train"),
                            # no mosaic: a converged model's last phase ran without it
                            close_mosaic=qat.epochs,
                            val=False, amp=False, nominal_batch=qat.batch)
    hyp = Hyp(lr0=qat.lr, lrf=qat.lrf, warmup_epochs=0.0)
    if not qat.labels:
        hyp = dataclasses.replace(hyp, box=0.0, obj=0.0, cls=0.0)
    kd = as_distill_config(qat.distill)
    extra = distill_terms(kd, folded, folded, imgsz, qat.seed, hyp)[0] if kd is not None else []
    trainer = Trainer(folded, data, train_cfg, hyp=hyp, extra_losses=extra,
                      wrap_model=lambda m: insert_fake_quant(m, plan, proto, ranges, qat.range_momentum))
    result = trainer.train()
    return result.model.eval(), result.history, extra


def _export_int8(trained: nn.Module, prepared: CalibratedGraph, ranges: dict[str, tuple[float, float]],
                 config: QuantConfig, tmp: Path) -> tuple[CalibratedGraph, Path]:
    """The int8 QDQ file of ``trained`` with its learned scales, and the graph it was quantized from."""
    from yolocompress.export.onnx import export_onnx

    plan, imgsz = prepared.plan, prepared.imgsz[0]
    # the trained weights as plain fp32 ONNX, named as the plan expects
    fp32 = export_onnx(strip_fake_quant(trained), tmp / "qat-fp32.onnx", imgsz=imgsz)
    pre = tmp / "qat-pre.onnx"
    preprocess(fp32, pre)
    learned = learned_ranges(trained)
    qdq = tmp / "qat-int8.onnx"
    quantize_qdq(pre, qdq, plan, {t: learned.get(t, ranges[t]) for t in plan.tensors},
                 per_channel=config.per_channel, activation_type=config.activation_type,
                 extra_options={"TensorQuantOverrides": learned_overrides(trained)},
                 hessians=head_hessians(pre, [c.name for c in plan.int8_head], prepared.images))
    copy_metadata(fp32, qdq, method="QAT")
    return CalibratedGraph(fp32, pre, prepared.imgsz, prepared.images, plan, ranges), qdq


def _qat_details(qat: QatConfig, parity: float) -> dict[str, Any]:
    """``details["qat"]`` of the stage report: the fine-tuning settings and the ORT-vs-torch parity."""
    return {"epochs": qat.epochs, "lr": qat.lr, "batch": qat.batch, "parity_sqnr_db": parity,
            "distill": distill_json(qat.distill), "labels": qat.labels,
            "batchnorm": "folded before QAT", "range_momentum": qat.range_momentum,
            "activation_ranges": ("PTQ-calibrated, fixed" if qat.range_momentum == 0
                                  else f"PTQ-initialised, EMA-tracked (momentum {qat.range_momentum:g})")}


__all__ = ["ActivationFakeQuant", "OutputQuant", "QuantConv2d", "QuantSiLU", "fake_quant_weight",
           "insert_fake_quant", "learned_overrides", "learned_ranges", "ort_scale_zero_point", "quantizers",
           "strip_fake_quant", "QatConfig", "quantize_qat", "parity_sqnr", "fake_quant_output"]
