"""Atomic writes: all-or-nothing, and ordinary file permissions."""
from __future__ import annotations

import os
import stat

import pytest

from yolocompress.io.atomic import atomic_path, atomic_write_json


def test_result_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_json({"a": 1}, tmp_path / "r.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_failure_leaves_target_untouched(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
