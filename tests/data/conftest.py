"""Fixtures of the data package tests."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from yolocompress.data import scan

from .helpers import write_dataset


@pytest.fixture
def make_dataset(tmp_path) -> Callable[..., Path]:
    """``make_dataset(images, labels, **kw)`` -> data.yaml in a fresh folder under ``tmp_path``."""
    counter = iter(range(1000))

    def make(images, labels, **kw) -> Path:
        return write_dataset(tmp_path / f"ds{next(counter)}", images, labels, **kw)

    return make


@pytest.fixture(autouse=True)
def _fresh_scan_memo():
    """Each test scans from scratch (the in-memory scan memo is process-wide)."""
    scan._MEMO.clear()
    yield
    scan._MEMO.clear()
