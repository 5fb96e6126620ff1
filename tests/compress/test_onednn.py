"""oneDNN conv+activation kernels for the fused deploy form: same outputs, plain fallback, ONNX unchanged."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from yolocompress.compress.fuse import fuse
from yolocompress.compress.onednn import OneDNNConvAct, accelerate_cpu, available
from yolocompress.models import build_model, load_config

from .helpers import TOLERANCE, max_relative_error, randomize_batchnorms, randomize_detect

pytestmark = pytest.mark.skipif(not available(), reason="this PyTorch build has no oneDNN")


def _fused(name: str, **cfg_overrides) -> nn.Module:
    cfg = load_config(name)
    cfg["width_multiple"] = 0.125
    cfg.update(cfg_overrides)
    torch.manual_seed(0)
    return fuse(randomize_detect(randomize_batchnorms(build_model(cfg, nc=3))).eval())


@pytest.mark.parametrize("name, overrides", [
    ("yolov5n", {}), ("yolov5s-rep", {}), ("yolov7-tiny-like", {}),
    ("yolov5n", {"activation": "nn.ReLU()"}), ("yolov5n", {"activation": "nn.Hardswish()"}),
])
def test_accelerated_model_matches_fused(name, overrides, one_thread):
    fused = _fused(name, **overrides)
    fast = accelerate_cpu(fused)
    kernels = [m for m in fast.modules() if isinstance(m, OneDNNConvAct)]
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert len(kernels) >= len(convs) - 3  # all but the three Detect output convs (no activation after them)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = fused(x)[0], fast(x)[0]
        again = fast(x)[0]  # the packed weights are reused
    assert max_relative_error([got], [want]) <= TOLERANCE
    assert torch.equal(got, again)


def test_falls_back_to_plain_ops_for_gradients_and_other_dtypes(one_thread):
    conv = nn.Conv2d(4, 8, 3, 1, 1, bias=True)
    kernel = OneDNNConvAct(conv, nn.SiLU(), "swish", [])
    x = torch.randn(1, 4, 16, 16, requires_grad=True)
    y = kernel(x)
    y.sum().backward()  # the plain path is differentiable
    assert x.grad is not None
    kernel.double()  # another dtype: the plain ops run it
    xd = x.detach().double()
    torch.testing.assert_close(kernel(xd), nn.functional.silu(conv(xd)))


def test_needs_a_fused_model():
    with pytest.raises(ValueError, match="fused"):
        accelerate_cpu(build_model(load_config("yolov5n") | {"width_multiple": 0.125}, nc=3))


def test_onnx_export_of_accelerated_model_sees_plain_convolutions(tmp_path, one_thread):
    from yolocompress.export.onnx import export_onnx

    fast = accelerate_cpu(_fused("yolov5n"))
    path = export_onnx(fast, tmp_path / "m.onnx", imgsz=64)
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Conv" in ops and not any("mkldnn" in op.lower() for op in ops)
