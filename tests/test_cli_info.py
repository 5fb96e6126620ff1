"""``yolocompress info`` and the CLI's error contract (one line, exit codes)."""
from __future__ import annotations

import json
import subprocess
import sys

from yolocompress.cli import main


def test_info_json_keys(ultra_dir, tmp_path, capsys):
    out = tmp_path / "info.json"
    assert main(["info", str(ultra_dir / "yolov5n-shapes-e12.pt"), "--imgsz", "256", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    for key in ("params", "gflops", "imgsz", "nc", "names", "strides"):
        assert key in data
    assert data["params"] == 1767976 and data["nc"] == 3 and data["imgsz"] == 256
    assert data["names"] == ["circle", "rectangle", "triangle"]
    assert 0.6 < data["gflops"] < 0.75  # 4.5 GFLOPs-class model scaled by (256/640)^2 ~ 0.16


def test_info_on_config_name(capsys):
    assert main(["info", "yolov5n", "--imgsz", "320"]) == 0
    assert "1,872,157" in capsys.readouterr().out


def test_missing_file_is_one_line_exit_2(tmp_path, capsys):
    code = main(["info", str(tmp_path / "nope.pt")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "not found" in err and "Traceback" not in err


def test_bad_usage_exit_2():
    proc = subprocess.run([sys.executable, "-m", "yolocompress", "info"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_verbose_shows_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "yolocompress", "info", str(tmp_path / "x.pt"), "--verbose"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_bad_imgsz_exit_2(capsys):
    try:
        main(["info", "yolov5n", "--imgsz", "100"])
    except SystemExit as exc:
        assert exc.code == 2
    else:  # pragma: no cover
        raise AssertionError("argparse should exit")
