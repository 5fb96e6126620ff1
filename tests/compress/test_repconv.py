"""RepConv: the merged kernel reproduces the three-branch block; the block trains and fuses."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from yolocompress.compress.fuse import fuse
from yolocompress.models import build_model, load_config
from yolocompress.models.rep import RepConv

from .helpers import TOLERANCE, randomize_batchnorms


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("c1,c2,k,s,g,d,identity", [
    (8, 8, 3, 1, 1, 1, True),     # identity branch
    (8, 8, 3, 1, 1, 1, False),    # identity disabled
    (8, 16, 3, 1, 1, 1, True),    # channels differ: no identity
    (8, 8, 3, 2, 1, 1, True),     # stride 2: no identity
    (8, 8, 3, 1, 4, 1, True),     # grouped, with identity
    (8, 16, 3, 2, 2, 1, True),    # grouped, no identity
    (8, 8, 3, 1, 8, 1, True),     # depth-wise, with identity
    (8, 8, 5, 1, 2, 1, True),     # 5x5 kernel
    (8, 8, 3, 1, 1, 2, True),     # dilated
])
def test_merged_kernel_matches_branches(c1, c2, k, s, g, d, identity):
    torch.manual_seed(0)
    block = randomize_batchnorms(RepConv(c1, c2, k, s, g=g, d=d, identity=identity)).eval()
    assert (block.rbr_identity is not None) == (identity and c1 == c2 and s == 1)
    x = torch.randn(2, c1, 17, 19)
    with torch.no_grad():
        reference = block(x)
        merged = fuse(block)
        assert merged.deployed and not hasattr(merged, "rbr_dense") and merged.rbr_identity is None
        assert merged.rbr_reparam.groups == g and merged.rbr_reparam.kernel_size == (k, k)
        out = merged(x)
    assert out.shape == reference.shape
    assert _relative(out, reference) <= TOLERANCE


def test_even_kernel_is_rejected():
    with pytest.raises(ValueError, match="odd"):
        RepConv(4, 4, 2)


def test_rep_model_trains_then_fuses():
    """A few SGD steps with the YOLOv5 loss and our optimizer groups; BN statistics move; fusing is exact."""
    from yolocompress.engine.loss import DetectionLoss, Hyp
    from yolocompress.engine.optim import build_optimizer

    torch.manual_seed(0)
    cfg = load_config("yolov5n-rep")
    cfg["width_multiple"] = 0.0625
    model = build_model(cfg, nc=2).train()
    loss_fn = DetectionLoss(model, Hyp(), imgsz=64)
    opt = build_optimizer(model, Hyp(), batch=4)
    for group in opt.param_groups:
        group["lr"] = 0.01
    x = torch.rand(4, 3, 64, 64)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.4], [1, 1, 0.3, 0.6, 0.2, 0.2], [3, 0, 0.7, 0.3, 0.4, 0.3]])
    rep = model.model[1]
    stats = rep.rbr_1x1.bn.running_mean.clone()
    for _ in range(3):
        loss, _ = loss_fn(model(x), targets)
        opt.zero_grad()
        loss.backward()
        assert rep.rbr_1x1.conv.weight.grad is not None and model.model[2].m[0].cv2.rbr_identity.weight.grad is not None
        opt.step()
    assert torch.isfinite(loss).all() and not torch.equal(stats, rep.rbr_1x1.bn.running_mean)
    model.eval()
    fused = fuse(model)
    with torch.no_grad():
        assert _relative(fused(x)[0], model(x)[0]) <= TOLERANCE


def test_rep_config_deploys_to_the_plain_architecture():
    """yolov5s-rep's deploy form has exactly the convolution shapes of a fused yolov5s."""
    rep = fuse(build_model("yolov5n-rep"))
    plain = fuse(build_model("yolov5n"))
    shapes = lambda m: [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.groups)  # noqa: E731
                        for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert shapes(rep) == shapes(plain)
    assert sum(p.numel() for p in rep.parameters()) == sum(p.numel() for p in plain.parameters())
