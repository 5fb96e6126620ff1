"""Shared test fixtures: paths to the copied Ultralytics fixtures and small helpers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
ULTRA = FIXTURES / "ultralytics-yolov5"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def ultra_dir() -> Path:
    """Folder of the real Ultralytics checkpoints with reference outputs (copied from shared/fixtures)."""
    return ULTRA


@pytest.fixture(scope="session")
def reference() -> dict:
    """``reference.json`` of the Ultralytics fixtures."""
    return json.loads((ULTRA / "reference.json").read_text())
