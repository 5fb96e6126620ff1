"""Fixtures of the quantization tests: a tiny detector exported to ONNX and a tiny synthetic data set."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from yolocompress.data.synthetic import synthesize_dataset
from yolocompress.export.onnx import export_onnx
from yolocompress.models import build_model

from ..helpers import randomize_batchnorms, randomize_detect

IMGSZ = 64
NC = 3


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    """yolov5n with 3 classes, non-trivial BatchNorm statistics and Detect weights (fixed seeds)."""
    torch.manual_seed(0)
    model = build_model("yolov5n", nc=NC)
    randomize_batchnorms(model, seed=1)
    randomize_detect(model, seed=2)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory) -> Path:
    """The tiny model exported at 64 px, batch 1."""
    return export_onnx(tiny_model, tmp_path_factory.mktemp("quant-onnx") / "tiny.onnx", imgsz=IMGSZ)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """data.yaml of 8 train + 4 val synthetic 64 px images with the model's 3 classes."""
    root = tmp_path_factory.mktemp("quant-data") / "synthetic"
    return synthesize_dataset(root, n_train=8, n_val=4, imgsz=IMGSZ, classes=("circle", "rectangle", "triangle"))
