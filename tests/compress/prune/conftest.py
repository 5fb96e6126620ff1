"""Fixtures of the pruning tests: tiny models of every shipped config and a tiny synthetic data set."""
from __future__ import annotations

import pytest
import torch

from yolocompress.models import build_model, load_config


def tiny_model(name: str, nc: int = 3, width: float = 0.25):
    """A shipped config at a fraction of its width (the light backbones keep theirs: their block arguments
    are not width-scaled), with non-trivial BatchNorm statistics and Detect weights."""
    from ..helpers import randomize_batchnorms, randomize_detect

    cfg = load_config(name)
    cfg["width_multiple"] = float(cfg.get("width_multiple", 1.0)) * width
    torch.manual_seed(0)
    model = build_model(cfg, nc=nc)
    randomize_batchnorms(model)
    randomize_detect(model)
    return model.eval()


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_thread):
    """Every test here uses the shared ``one_thread`` fixture."""


@pytest.fixture(autouse=True)
def _fp32_scoring_on_every_cpu(request, monkeypatch):
    """``score_precision="auto"`` scores in fp32 here whatever the CPU, so that these tests run the same on
    CPUs with and without bf16 units (bf16 autocast made 64 px tiny models about 15% slower to score on an
    AMX CPU); ``test_score_precision.py`` tests the bf16 scoring and the resolution per CPU."""
    if request.module.__name__.rsplit(".", 1)[-1] != "test_score_precision":
        from yolocompress.profile import cpu

        monkeypatch.setattr(cpu, "native_bf16", lambda: False)


@pytest.fixture(scope="session")
def tiny_data(make_synthetic_data):
    """16 training and 8 validation images of 64 px from the synthetic generator (6 classes)."""
    return make_synthetic_data("prune-synthetic", n_train=16, n_val=8)
