"""Fixtures of the recipe tests: a tiny model checkpoint and a tiny synthetic data set (6 classes, 64 px)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from yolocompress.cli import main
from yolocompress.io.checkpoint import save_model
from yolocompress.models import build_model, load_config


RECIPE = textwrap.dedent("""\
    version: 1
    name: tiny
    imgsz: 64
    seed: 0
    measure: {latency: [onnxruntime, torch], runs: 3, warmup: 1, rounds: 3, eval_batch: 8}
    stages:
      - prune: {ratio: 0.5, channels: {min_channels: 1, round_to: 1},
                search: {candidates: 2, guided: 0, calib_batches: 1, calib_batch: 4, eval_images: 4,
                         eval_batch: 4}}
      - finetune: {epochs: 3, batch: 4}
      - fuse: {}
      - quantize: {method: ptq, calib_images: 4}
""")


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


@pytest.fixture(scope="session")
def recipe_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="session")
def finished_run(recipe_file, tiny_checkpoint, recipe_data, tmp_path_factory):
    """One uninterrupted run through the CLI; returns its output folder."""
    out = tmp_path_factory.mktemp("run") / "out"
    code = main(["run", str(recipe_file), "--model", str(tiny_checkpoint), "--data", str(recipe_data.yaml_path),
                 "--out", str(out)])
    assert code == 0
    return out
