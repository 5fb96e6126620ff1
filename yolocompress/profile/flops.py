"""FLOPs of a model at an image size, counted by ``torch.utils.flop_counter.FlopCounterMode``.

Convention: one multiply-accumulate = 2 FLOPs, and only convolutions and matrix products count (BN,
activations, resampling and the Detect decoding are free) - the same convention as the "GFLOPs" column of
Ultralytics' tables (thop MACs x 2). Counting is done on a deep copy in eval mode, batch 1, under
``no_grad``; by default the copy lives on the ``meta`` device, so no arithmetic is actually performed and a
count costs milliseconds instead of a real forward pass (what a pruning search that asks many times wants).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from yolocompress.models.inputs import check_image_size, image_hw, input_channels


def _layers(model: nn.Module) -> nn.Module:
    """The top-level layer container: ``model.model`` for a DetectionModel, the model itself if Sequential."""
    layers = getattr(model, "model", model)
    if not isinstance(layers, (nn.Sequential, nn.ModuleList)):
        raise TypeError(f"expected a model with a `model` layer list (DetectionModel) or an nn.Sequential, "
                        f"got {type(model).__name__}")
    return layers


def meta_copy(model: nn.Module) -> nn.Module:
    """Deep copy whose parameters and buffers are data-less ``meta`` tensors (no weight memory is copied)."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta", dtype=torch.float32), p.requires_grad)
    for b in model.buffers():
        dtype = torch.float32 if b.is_floating_point() else b.dtype
        memo[id(b)] = torch.empty_like(b, device="meta", dtype=dtype)
    return copy.deepcopy(model, memo)


def _count(model: nn.Module, hw: tuple[int, int], by_layer: bool, meta: bool) -> tuple[int, list[int]]:
    """Run one counted forward; returns (total FLOPs, FLOPs of each top-level layer or [])."""
    h, w = hw
    device = "meta" if meta else "cpu"
    net = meta_copy(model) if meta else copy.deepcopy(model).float().cpu()
    net.eval()
    x = torch.zeros(1, input_channels(model), h, w, device=device)
    counter = FlopCounterMode(display=False)
    per_layer: list[int] = []
    handles = []
    if by_layer:
        layers = list(_layers(net))
        per_layer = [0] * len(layers)
        at_entry = [0] * len(layers)

        def enter(i: int):
            def hook(module, args):
                at_entry[i] = counter.get_total_flops()
            return hook

        def leave(i: int):
            def hook(module, args, output):
                # Layers do not nest, so what the counter gained since the layer's entry is its own cost.
                per_layer[i] += counter.get_total_flops() - at_entry[i]
            return hook

        for i, layer in enumerate(layers):
            handles += [layer.register_forward_pre_hook(enter(i)), layer.register_forward_hook(leave(i))]
    try:
        with counter, torch.no_grad():
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    return counter.get_total_flops(), per_layer


def _count_any(model: nn.Module, imgsz: int | Sequence[int], by_layer: bool) -> tuple[int, list[int]]:
    hw = image_hw(imgsz)
    check_image_size(model, hw)
    if by_layer:
        _layers(model)  # a wrong model type is reported as such, not as a meta failure
    try:
        return _count(model, hw, by_layer, meta=True)
    except (RuntimeError, NotImplementedError):
        # A module that keeps unregistered tensors or reads values (`.item()`) cannot run on `meta`;
        # count it with a real forward instead (same numbers, slower).
        return _count(model, hw, by_layer, meta=False)


def gflops(model: nn.Module, imgsz: int | Sequence[int] = 640) -> float:
    """GFLOPs (1e9 FLOPs, 2 per multiply-accumulate) of one forward pass of ``model`` on one image.

    Args:
        model: any module taking ``Tensor[1, ch, H, W]``; it is not modified.
        imgsz: image size in pixels, ``int`` for square or ``(H, W)``.
    """
    return _count_any(model, imgsz, by_layer=False)[0] / 1e9


def flops_by_layer(model: nn.Module, imgsz: int | Sequence[int] = 640) -> list[float]:
    """GFLOPs of each top-level layer of ``model.model`` (index ``i`` = layer ``i``) at ``imgsz`` pixels.

    The list sums to ``gflops(model, imgsz)`` (up to work done outside every layer, which a DetectionModel
    has none of). ``model`` may also be a plain ``nn.Sequential``.
    """
    return [f / 1e9 for f in _count_any(model, imgsz, by_layer=True)[1]]
