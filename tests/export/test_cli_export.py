from pathlib import Path

import onnx
import pytest

from yolocompress.cli import main

CKPT = Path(__file__).parents[1] / "fixtures" / "ultralytics-yolov5" / "yolov5n-shapes-e12.pt"


def test_export_ultralytics_checkpoint(tmp_path, capsys):
    out = tmp_path / "n.onnx"
    assert main(["export", str(CKPT), "-o", str(out), "--imgsz", "64", "--dynamic"]) == 0
    onnx.checker.check_model(onnx.load(str(out)))
    assert "max relative error" in capsys.readouterr().out


def test_bad_inputs_exit_2(tmp_path):
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("hello")
    out = tmp_path / "o.onnx"
    assert main(["export", str(tmp_path / "missing.pt"), "-o", str(out)]) == 2
    assert main(["export", str(not_a_model), "-o", str(out)]) == 2
    with pytest.raises(SystemExit) as exc:  # argparse rejects it before anything runs
        main(["export", str(CKPT), "-o", str(out), "--imgsz", "50"])
    assert exc.value.code == 2
    assert not out.exists()
