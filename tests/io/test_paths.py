"""``io.paths``: the commands' pre-flight checks (inputs exist, outputs writable), nothing created."""
from __future__ import annotations

import os
import shutil
from collections import namedtuple

import pytest

from yolocompress.errors import InputError
from yolocompress.io.paths import names_a_file, preflight, require_input, require_writable


def test_outputs_may_be_new_files_in_new_folders_and_nothing_is_created(tmp_path):
    require_writable("output", tmp_path / "a" / "b" / "m.pt")
    require_writable("--out", tmp_path / "runs" / "x", folder=True)
    (tmp_path / "old.pt").write_text("x")
    require_writable("output", tmp_path / "old.pt")  # replaced atomically later
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.pt"]


def test_free_space_is_checked_when_the_size_is_known(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    require_writable("output", tmp_path / "m.pt", expected_bytes=10**5)
    with pytest.raises(InputError, match=r"cannot write output .*m.pt: 1.0 MB free in .*, about 7.0 MB needed"):
        require_writable("output", tmp_path / "m.pt", expected_bytes=7 * 10**6)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(InputError, match="is not writable"):
            require_writable("--json", locked / "r.json")
    finally:
        locked.chmod(0o755)


def test_inputs_and_names():
    with pytest.raises(InputError, match="^data.yaml not found: nowhere.yaml$"):
        require_input("data.yaml", "nowhere.yaml")
    assert names_a_file("runs/best.pt") and names_a_file("m.onnx") and names_a_file("sub/yolov5n")
    assert not names_a_file("yolov5n") and not names_a_file("yolov5n.yaml")  # shipped config names
    preflight(inputs=[("model file", None)], outputs=[("--json", None)], folders=[("--out", "")])  # not given
    with pytest.raises(InputError, match="not a file name"):
        preflight(outputs=[("--json", "")])
