"""Helpers for the fusion tests: non-trivial BatchNorm statistics and a strict output comparison."""
from __future__ import annotations

import torch
import torch.nn as nn

# fused vs unfused, fp32, eval mode: max|a - b| / max|b| per output tensor
TOLERANCE = 1e-5


def randomize_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm2d non-trivial running mean / var, gamma and beta (in place; returns ``model``)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(c, generator=g))
                m.running_var.copy_(torch.empty(c).uniform_(0.3, 3.0, generator=g))
                m.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=g))
                m.bias.copy_(0.3 * torch.randn(c, generator=g))
    return model


def randomize_detect(model: nn.Module, seed: int = 0) -> nn.Module:
    """Detect's default biases (objectness ~ -7) dominate its logits; give its 1x1 convs weights that make the
    raw outputs depend on the features, so the comparison tests the network and not the bias prior."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in model.detect.m:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / conv.in_channels ** 0.5)
            conv.bias.zero_()
    return model


def outputs_with_features(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Eval-mode outputs: decoded, each raw level, and each feature map that enters Detect."""
    features: list[torch.Tensor] = []
    handle = model.detect.register_forward_pre_hook(lambda m, args: features.extend(args[0]))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            decoded, raw = model(x)
    finally:
        handle.remove()
        model.train(was_training)
    return [decoded, *raw, *features]


def max_relative_error(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """Largest per-tensor ``max|a - b| / max|b|``."""
    assert len(ours) == len(reference)
    return max(float((a.double() - b.double()).abs().max() / b.double().abs().max()) for a, b in zip(ours, reference))
