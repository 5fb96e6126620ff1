"""Fixtures of the recipe tests: a tiny model checkpoint and a tiny synthetic data set (6 classes, 64 px)."""
from __future__ import annotations

import pytest
import torch

from yolocompress.io.checkpoint import save_model
from yolocompress.models import build_model, load_config


@pytest.fixture(scope="session")
def recipe_data(make_synthetic_data):
    """16 training and 8 validation images of 64 px (6 classes)."""
    return make_synthetic_data("recipe-synthetic", n_train=16, n_val=8)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, recipe_data):
    """yolov5n at an eighth of its width, 6 classes, recorded image size 64, in our format."""
    cfg = load_config("yolov5n")
    cfg["width_multiple"] = 0.125
    torch.manual_seed(0)
    model = build_model(cfg, nc=recipe_data.nc)
    return save_model(model.eval(), tmp_path_factory.mktemp("recipe-model") / "tiny.pt", imgsz=64)
