"""Eager CPU kernels for the deploy form: convolution + bias + activation as one oneDNN call.

After ``fuse`` a layer is ``act(conv(x) + bias)``; PyTorch eager still runs that as two kernels (the
convolution, then a separate pass over the whole activation tensor for SiLU) and re-packs the weights into
oneDNN's blocked layout on every call. ``accelerate_cpu(model)`` swaps each fused conv+activation pair for
``OneDNNConvAct``, which calls ``torch.ops.mkldnn._convolution_pointwise`` (the kernel PyTorch's own
Inductor CPU backend emits) with the activation applied as a oneDNN post-op, and packs the weights once.
The arithmetic is the same fp32 convolution, so outputs agree with the plain fused model to float rounding
(tested at 1e-5 relative).

This is a runtime transform, not a checkpoint format: it returns a copy for inference on the CPU, and every
``OneDNNConvAct`` falls back to the plain ``act(conv(x))`` when the input is not an fp32 CPU tensor, when
gradients are needed, or while tracing/exporting (ONNX sees ordinary Conv + activation nodes).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from yolocompress.compress.fuse import is_fused
from yolocompress.models.common import Conv
from yolocompress.models.rep import RepConv


def _post_op(act: nn.Module) -> tuple[str, list[float]] | None:
    """oneDNN post-op name and scalars for ``act``; ``None`` when oneDNN has no equivalent."""
    if isinstance(act, nn.Identity):
        return "none", []
    if isinstance(act, nn.SiLU):
        return "swish", []
    if isinstance(act, nn.ReLU):
        return "relu", []
    if isinstance(act, nn.LeakyReLU):
        return "leaky_relu", [float(act.negative_slope)]
    if isinstance(act, nn.Hardswish):
        return "hardswish", []
    if isinstance(act, nn.Sigmoid):
        return "sigmoid", []
    return None


def available() -> bool:
    """True when this PyTorch build has the oneDNN (mkldnn) fused convolution kernel."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class OneDNNConvAct(nn.Module):
    """``act(conv(x))`` for a biased ``nn.Conv2d`` as one oneDNN kernel with pre-packed weights.

    ``Tensor[B, c1, H, W] -> Tensor[B, c2, H', W']``, numerically the fp32 result of ``act(conv(x))``.
    """

    def __init__(self, conv: nn.Conv2d, act: nn.Module, attr: str, scalars: list[float]):
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("OneDNNConvAct needs numeric zero padding")
        self.conv, self.act = conv, act
        self.attr, self.scalars = attr, scalars
        self._packed: tuple[tuple[int, ...], torch.Tensor] | None = None

    def _weight_for(self, x: torch.Tensor) -> torch.Tensor:
        """The conv weight in oneDNN's blocked layout for inputs shaped like ``x`` (packed once per shape)."""
        shape = tuple(x.shape)
        if self._packed is None or self._packed[0] != shape:
            c = self.conv
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                c.weight.detach().to_mkldnn(), list(c.padding), list(c.stride), list(c.dilation), c.groups, list(shape))
            self._packed = (shape, packed)
        return self._packed[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        plain = (x.device.type != "cpu" or x.dtype != torch.float32 or c.weight.dtype != torch.float32
                 or (torch.is_grad_enabled() and (x.requires_grad or c.weight.requires_grad))
                 or torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export())
        if plain:
            return self.act(c(x))
        bias = c.bias.detach() if c.bias is not None else None
        return torch.ops.mkldnn._convolution_pointwise(
            x, self._weight_for(x), bias, list(c.padding), list(c.stride), list(c.dilation), c.groups,
            self.attr, self.scalars, "")

    def __getstate__(self):  # copies and pickles re-pack lazily (oneDNN tensors do not deep-copy)
        state = dict(super().__getstate__())
        state["_packed"] = None
        return state

    def _apply(self, fn, recurse=True):  # .to()/.half() etc. invalidate the packed weight
        self._packed = None
        return super()._apply(fn, recurse)


def _wrap(conv: nn.Conv2d, act: nn.Module) -> OneDNNConvAct | None:
    post = _post_op(act)
    if post is None or conv.bias is None or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    return OneDNNConvAct(conv, act, *post)


def accelerate_cpu(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of a *fused* model whose conv+activation pairs run as single oneDNN kernels (eval, CPU, fp32).

    Returns the model unchanged (a copy unless ``inplace``) when oneDNN is not available. Raises
    ``ValueError`` for an unfused model: with BatchNorm between the convolution and the activation there is
    nothing to fuse (run ``fuse`` first).
    """
    if not is_fused(model):
        raise ValueError("accelerate_cpu needs a fused model (run fuse first)")
    if not inplace:
        model = copy.deepcopy(model)
    if not available():
        return model
    for m in model.modules():
        if isinstance(m, Conv) and isinstance(m.bn, nn.Identity) and isinstance(m.conv, nn.Conv2d):
            fused = _wrap(m.conv, m.act)
            if fused is not None:
                m.conv, m.act = fused, nn.Identity()
        elif isinstance(m, RepConv) and m.deployed and isinstance(m.rbr_reparam, nn.Conv2d):
            fused = _wrap(m.rbr_reparam, m.act)
            if fused is not None:
                m.rbr_reparam, m.act = fused, nn.Identity()
    return model
