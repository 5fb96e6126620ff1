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
def one_thread():
    """Tiny models run fastest on one thread, and more steadily on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """16 training and 8 validation images of 64 px from the synthetic generator (6 classes)."""
    from yolocompress.data import load_data_config
    from yolocompress.data.synthetic import synthesize_dataset

    root = tmp_path_factory.mktemp("prune-synthetic")
    return load_data_config(synthesize_dataset(root, n_train=16, n_val=8, imgsz=64, seed=0))
