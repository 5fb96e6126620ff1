"""Re-parameterization for deployment: fold every BatchNorm into its convolution, merge RepConv branches.

In eval mode a BatchNorm is a per-channel affine map ``y = x * scale + shift`` with
``scale = gamma / sqrt(running_var + eps)`` and ``shift = beta - running_mean * scale`` (each BN's own ``eps``:
YOLOv5 uses 1e-3). A convolution followed by it is the same convolution with its output channels scaled
(``W' = W * scale``) and a bias ``b' = b * scale + shift``. A ``RepConv`` is a sum of such branches, so it
becomes one convolution whose kernel is the sum of the branch kernels (the 1x1 kernel zero-padded to the
centre tap, the identity written as a kernel with a single 1 per output channel).

This is the model layer's own deploy step (``DetectionModel`` rebuilds a saved fused model with
``fuse_structure``); the compression stage built on it, with its parity check and report, is
:func:`yolocompress.compress.fuse.fuse_stage`.

One walker, one verb: ``fuse(model)`` returns the deploy form (like timm's ``reparameterize_model``).
The walker finds fusion sites through a registry of per-module-type *fusers* (``register_fuser``), so a new
block type adds one entry instead of another ``isinstance`` branch. A fuser changes the structure (BN ->
``nn.Identity``, the conv gains a bias, RepConv branches -> ``rbr_reparam``) and, when asked to, computes
the folded weights; the structure-only pass (``fuse_structure``) is what ``DetectionModel`` runs to rebuild a
saved fused model before its state_dict is loaded. Folding is done in float64 and rounded once.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from yolocompress.errors import InputError
from yolocompress.models.backbones import conv_bn_hswish
from yolocompress.models.common import BottleneckCSP, Conv
from yolocompress.models.rep import RepConv
from yolocompress.models.shapes import refresh_layer_params

# A fuser rewrites one module in place: ``fuser(module, fold_weights)``. With ``fold_weights=False`` it only
# changes the structure (the new weights are placeholders, to be overwritten by a state_dict).
Fuser = Callable[[nn.Module, bool], None]

_FUSERS: dict[type, Fuser] = {}


def register_fuser(module_type: type, fuser: Fuser) -> None:
    """Make ``fuse`` rewrite modules of ``module_type`` (and its subclasses) with ``fuser``."""
    _FUSERS[module_type] = fuser


def _fuser_for(module: nn.Module) -> Fuser | None:
    for cls in type(module).__mro__:
        if cls in _FUSERS:
            return _FUSERS[cls]
    return None


# ---------------------------------------------------------------------------------------------- arithmetic
def batchnorm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)``, float64 Tensor[C] each, with ``bn(x) == x * scale + shift`` in eval mode."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    shift = -mean * scale
    if bn.affine:
        gamma, beta = bn.weight.double(), bn.bias.double()
        scale, shift = scale * gamma, shift * gamma + beta
    return scale, shift


def foldable(bn: nn.Module) -> bool:
    """A BatchNorm2d that uses running statistics in eval mode (one that always normalises with batch
    statistics, ``track_running_stats=False``, is not a fixed affine map and cannot be folded)."""
    return isinstance(bn, nn.BatchNorm2d) and bn.running_var is not None and bn.running_mean is not None


def _conv_kernel(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 kernel Tensor[out, in / groups, kh, kw] and bias Tensor[out] (zeros when the conv has none)."""
    w = conv.weight.double()
    b = conv.bias.double() if conv.bias is not None else w.new_zeros(conv.out_channels)
    return w, b


def _conv_bn_kernel(conv: nn.Conv2d, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 kernel and bias of ``bn(conv(x))``; ``bn`` may be a BatchNorm2d or already an Identity."""
    w, b = _conv_kernel(conv)
    if foldable(bn):
        scale, shift = batchnorm_affine(bn)
        w, b = w * scale.view(-1, 1, 1, 1), b * scale + shift
    return w, b


def _ensure_bias(conv: nn.Conv2d) -> None:
    if conv.bias is None:
        conv.bias = nn.Parameter(conv.weight.new_zeros(conv.out_channels), requires_grad=conv.weight.requires_grad)


def _fold_bn_into(conv: nn.Conv2d, bn: nn.BatchNorm2d, fold: bool, channels: slice = slice(None)) -> None:
    """Give ``conv`` a bias and, when ``fold``, absorb the ``channels`` slice of ``bn`` (which follows it)."""
    if fold:
        scale, shift = (t[channels] for t in batchnorm_affine(bn))
        w, b = _conv_kernel(conv)
        w, b = w * scale.view(-1, 1, 1, 1), b * scale + shift
    _ensure_bias(conv)
    if fold:
        conv.weight.copy_(w.to(conv.weight.dtype))
        conv.bias.copy_(b.to(conv.bias.dtype))


# ---------------------------------------------------------------------------------------------- fusers
def _fuse_conv_bn_attributes(module: nn.Module, fold: bool) -> None:
    """Modules whose forward is ``act(bn(conv(x)))``: Conv (and DWConv, Focus/GhostConv inside), conv_bn_hswish."""
    if foldable(module.bn) and isinstance(module.conv, nn.Conv2d):
        _fold_bn_into(module.conv, module.bn, fold)
        module.bn = nn.Identity()


def _fuse_bottleneck_csp(module: BottleneckCSP, fold: bool) -> None:
    """BottleneckCSP applies ``bn`` to ``cat(cv3(...), cv2(x))``, and cv3 / cv2 are plain bias-free Conv2d
    whose outputs go nowhere else: BN channels ``[:c]`` fold into cv3 and ``[c:]`` into cv2, exactly."""
    if not foldable(module.bn):
        return
    c = module.cv3.out_channels
    _fold_bn_into(module.cv3, module.bn, fold, slice(0, c))
    _fold_bn_into(module.cv2, module.bn, fold, slice(c, None))
    module.bn = nn.Identity()


def _fuse_sequential(seq: nn.Sequential, fold: bool) -> None:
    """A Conv2d immediately followed by a BatchNorm2d in an ``nn.Sequential`` (MobileNetV3, ShuffleNetV2)."""
    items = list(seq.named_children())
    for (_, conv), (bn_name, bn) in zip(items, items[1:]):
        # DetectionModel's layer stack is an nn.Sequential too, but its layers route by ``.f``, so being
        # neighbours there says nothing about data flow: leave such layers alone.
        if hasattr(conv, "f") or hasattr(bn, "f"):
            continue
        if isinstance(conv, nn.Conv2d) and foldable(bn) and bn.num_features == conv.out_channels:
            _fold_bn_into(conv, bn, fold)
            setattr(seq, bn_name, nn.Identity())


def _merge_repconv(module: RepConv, fold: bool) -> None:
    """Replace the three branches by one ``rbr_reparam`` convolution (RepVGG steps 1-3)."""
    if module.deployed:
        return
    dense = module.rbr_dense.conv
    merged = nn.Conv2d(dense.in_channels, dense.out_channels, dense.kernel_size, dense.stride, dense.padding,
                       dense.dilation, dense.groups, bias=True, device=dense.weight.device, dtype=dense.weight.dtype)
    merged.requires_grad_(dense.weight.requires_grad)
    if fold:
        w, b = _conv_bn_kernel(dense, module.rbr_dense.bn)
        kh, kw = dense.kernel_size
        w1, b1 = _conv_bn_kernel(module.rbr_1x1.conv, module.rbr_1x1.bn)
        w = w + F.pad(w1, [kw // 2, kw // 2, kh // 2, kh // 2])  # the 1x1 tap is the kernel's centre tap
        b = b + b1
        if module.rbr_identity is not None:
            # identity: output channel o reads input channel o, which is index o % (in / groups) of its group
            scale, shift = batchnorm_affine(module.rbr_identity)
            o = torch.arange(dense.out_channels, device=w.device)
            w[o, o % (dense.in_channels // dense.groups), kh // 2, kw // 2] += scale
            b = b + shift
        merged.weight.copy_(w.to(merged.weight.dtype))
        merged.bias.copy_(b.to(merged.bias.dtype))
    del module.rbr_dense, module.rbr_1x1
    module.rbr_identity = None
    module.rbr_reparam = merged


register_fuser(Conv, _fuse_conv_bn_attributes)
register_fuser(conv_bn_hswish, _fuse_conv_bn_attributes)
register_fuser(BottleneckCSP, _fuse_bottleneck_csp)
register_fuser(nn.Sequential, _fuse_sequential)
register_fuser(RepConv, _merge_repconv)


# ---------------------------------------------------------------------------------------------- walker
def _walk(module: nn.Module, fold: bool) -> None:
    fuser = _fuser_for(module)
    if fuser is not None:
        fuser(module, fold)
    for child in list(module.children()):  # after the fuser ran: merged branches are gone
        _walk(child, fold)


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The deploy form of ``model``: every foldable BatchNorm folded into the convolution before it
    (replaced by ``nn.Identity``; the conv gains a bias) and every ``RepConv`` merged into ``rbr_reparam``.

    Outputs in eval mode are unchanged up to float rounding. The model's train/eval mode is kept, but the
    result has no BatchNorm to train: fuse after training (and after pruning, which needs BN). Fusing a
    fused model changes nothing. A ``DetectionModel``'s config is marked ``"fused": true`` so a saved
    checkpoint rebuilds this structure (``fuse_structure``) before its weights are loaded.

    Args:
        model: any module; a ``DetectionModel`` in practice.
        inplace: rewrite ``model`` itself instead of a deep copy.
    """
    if not inplace:
        model = copy.deepcopy(model)
    with torch.no_grad():
        _walk(model, fold=True)
    cfg = getattr(model, "yaml", None)
    if isinstance(cfg, dict):
        cfg["fused"] = True
    refresh_layer_params(model)
    return model


def fuse_structure(model: nn.Module) -> nn.Module:
    """Rewrite ``model`` in place into the fused *structure* without computing weights (biases are zeros,
    merged kernels are placeholders): the step that lets a fused state_dict load into a freshly built
    model. Returns ``model``."""
    with torch.no_grad():
        _walk(model, fold=False)
    refresh_layer_params(model)
    return model


def remaining_batchnorms(model: nn.Module) -> list[str]:
    """Names of the BatchNorm2d modules no fuser handles (e.g. a stand-alone ``BatchNorm2d`` config layer)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


def is_fused(model: nn.Module) -> bool:
    """True when ``model`` is in deploy form: its config says ``fused``, or it has convolutions and no
    BatchNorm at all (then nothing is left for BN-based pruning or BN re-calibration to work on)."""
    cfg = getattr(model, "yaml", None)
    if isinstance(cfg, dict) and cfg.get("fused"):
        return True
    kinds = {type(m) for m in model.modules()}
    return any(issubclass(k, nn.Conv2d) for k in kinds) and not any(issubclass(k, nn.BatchNorm2d) for k in kinds)


def require_unfused(model: nn.Module, purpose: str = "pruning") -> None:
    """Raise ``InputError`` when ``model`` is fused; for steps that need BatchNorm (pruning, BN statistics)."""
    if is_fused(model):
        raise InputError(
            f"{purpose} needs the model's BatchNorm layers, but this model is fused (BatchNorm folded into the "
            f"convolutions, RepConv branches merged) and cannot be un-fused: run {purpose} on the unfused "
            f"checkpoint and fuse afterwards (`yolocompress fuse`)")


def _flat_outputs(y) -> list[torch.Tensor]:
    if isinstance(y, torch.Tensor):
        return [y]
    return [t for item in y for t in _flat_outputs(item)]


def relative_error(reference: nn.Module, candidate: nn.Module, x: torch.Tensor) -> float:
    """Largest, over the output tensors (eval mode: decoded, then each raw level), of
    ``max|candidate - reference| / max|reference|`` on input ``x`` (Tensor[B, ch, H, W]); both models run in
    eval mode and are restored to their previous mode."""
    modes = [(m, m.training) for m in (reference, candidate)]
    try:
        with torch.no_grad():
            ref, out = _flat_outputs(reference.eval()(x)), _flat_outputs(candidate.eval()(x))
    finally:
        for m, training in modes:
            m.train(training)
    if len(ref) != len(out):
        raise ValueError(f"the models return {len(ref)} and {len(out)} tensors")
    return max(float((o.double() - r.double()).abs().max() / r.double().abs().max().clamp_min(1e-30))
               for r, o in zip(ref, out))
