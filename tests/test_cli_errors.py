"""Bad input on the command line: one error line, the right exit code, no traceback, nothing written.

One row per case. Every row runs in a sandbox folder holding ``model.pt`` and ``data.yaml`` (their contents do
not matter: each case fails in the pre-flight, before a file is read), an existing folder ``adir`` (and
``dir.pt``), and an existing plain file ``afile`` (so ``afile/x`` has a parent that is not a folder).
``written`` is the output that must not exist afterwards. The same rows run once more in a fresh interpreter
to show that none of them imports torch or onnxruntime before failing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from yolocompress.cli import main

ROOT = Path(__file__).resolve().parents[1]

# (argv, exit code, text in the error line, output that must not be written)
CASES = [
    # missing inputs: "<what> not found: <path>"
    ("info missing.pt", 2, "model file not found: missing.pt", None),
    ("eval missing.pt --data data.yaml", 2, "model file not found: missing.pt", None),
    ("eval model.pt --data missing.yaml", 2, "data.yaml not found: missing.yaml", None),
    ("bench missing.onnx", 2, "model file not found: missing.onnx", None),
    ("export missing.pt -o out.onnx", 2, "model file not found: missing.pt", "out.onnx"),
    ("fuse missing.pt -o out.pt", 2, "model file not found: missing.pt", "out.pt"),
    ("prune missing.pt --data data.yaml -o out.pt", 2, "model file not found: missing.pt", "out.pt"),
    ("prune model.pt --data missing.yaml -o out.pt", 2, "data.yaml not found: missing.yaml", "out.pt"),
    ("quantize missing.pt --data data.yaml -o out.onnx", 2, "model file not found: missing.pt", "out.onnx"),
    ("quantize model.pt --data missing.yaml -o out.onnx", 2, "data.yaml not found", "out.onnx"),
    ("distill missing.pt --teacher model.pt --data data.yaml -o out.pt", 2,
     "model file not found: missing.pt", "out.pt"),
    ("distill yolov5n --teacher missing.pt --data data.yaml -o out.pt", 2, "model file not found: missing.pt",
     "out.pt"),
    ("train yolov5n --data missing.yaml --out run", 2, "data.yaml not found: missing.yaml", "run"),
    ("train missing.pt --data data.yaml --out run", 2, "model file not found: missing.pt", "run"),
    ("train yolov5n --data data.yaml --hyp missing.yaml --out run", 2, "hyp file not found: missing.yaml",
     "run"),
    ("train --resume gone/weights/last.pt", 2, "training checkpoint not found: gone/weights/last.pt",
     "gone"),
    ("run missing.yaml --out run", 2, "recipe not found: missing.yaml", "run"),
    ("run demo --model missing.pt --out run", 2, "model file not found: missing.pt", "run"),
    ("report missing", 2, "report not found: missing", None),
    ("check missing", 2, "report not found: missing", None),
    ("check adir --baseline missing.json", 2, "--baseline not found: missing.json", None),
    ("data check missing.yaml", 2, "data.yaml not found: missing.yaml", None),
    ("eval adir --data data.yaml", 2, "model file is a folder, not a file: adir", None),
    # outputs that cannot be written: "cannot write <what> <path>: <reason>"
    ("info model.pt --json adir", 2, "cannot write --json adir: it is a folder", None),
    ("eval model.pt --data data.yaml --json afile/m.json", 2, "afile is a file, not a folder",
     "afile/m.json"),
    ("bench model.pt --json afile/b.json", 2, "cannot write --json afile/b.json", "afile/b.json"),
    ("export model.pt -o adir", 2, "cannot write output adir: it is a folder", None),
    ("export model.pt -o afile/m.onnx", 2, "cannot write output afile/m.onnx", "afile/m.onnx"),
    ("fuse model.pt -o dir.pt", 2, "cannot write output dir.pt: it is a folder", None),
    ("prune model.pt --data data.yaml -o afile/p.pt", 2, "cannot write output afile/p.pt", "afile/p.pt"),
    ("prune model.pt --data data.yaml -o p.pt --json adir", 2, "cannot write --json adir", "p.pt"),
    ("quantize model.pt --data data.yaml -o adir/q.onnx --json afile/q.json", 2,
     "cannot write --json afile/q.json", "adir/q.onnx"),
    ("distill yolov5n --teacher model.pt --data data.yaml -o d.pt --out-dir afile", 2,
     "cannot write --out-dir afile: it is a file, not a folder", "d.pt"),
    ("train yolov5n --data data.yaml --out afile", 2, "cannot write --out afile: it is a file, not a folder",
     None),
    ("run demo --out afile/run", 2, "cannot write --out afile/run", "afile/run"),
    ("run demo --out r --json adir", 2, "cannot write --json adir: it is a folder", "r"),
    ("report adir --md afile/r.md", 2, "cannot write --md afile/r.md", "afile/r.md"),
    ("check adir --junit adir", 2, "cannot write --junit adir: it is a folder", None),
    ("check adir --md afile/c.md", 2, "cannot write --md afile/c.md", "afile/c.md"),
    ("data synth --out afile", 2, "cannot write --out afile: it is a file, not a folder", None),
    ("demo --out afile/demo", 2, "cannot write --out afile/demo", "afile/demo"),
    ("demo --json adir --out d", 2, "cannot write --json adir: it is a folder", "d"),
    # wrong kinds and usage errors
    ("fuse model.pt -o out.onnx", 2, "output must be a .pt file, got out.onnx", "out.onnx"),
    ("quantize model.pt --data data.yaml -o out.pt", 2, "output must be an .onnx file, got out.pt", "out.pt"),
    ("distill yolov5n --teacher model.pt --data data.yaml -o out.onnx", 2, "output must be a .pt file",
     "out.onnx"),
    ("prune model.pt --data data.yaml -o p.pt --ratio 0.5 --target-gflops 1", 2,
     "give --ratio, --target-gflops or --target-latency, not both", "p.pt"),
    ("report adir --plot r.txt", 2, "expected a .png or .svg file name", "r.txt"),
    ("eval model.pt", 2, "the following arguments are required: --data", None),
    ("info model.pt --imgsz 33", 2, "image size must be a multiple of 32", None),
    ("bench model.pt --backend tensorrt", 2, "invalid choice: 'tensorrt'", None),
]


def _sandbox(root: Path) -> None:
    (root / "model.pt").write_bytes(b"not read: the pre-flight fails first")
    (root / "data.yaml").write_text("path: .\ntrain: images\nval: images\nnames: [a]\n")
    (root / "adir").mkdir()
    (root / "dir.pt").mkdir()
    (root / "afile").write_text("a plain file")


@pytest.mark.parametrize("argv, code, message, written", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(argv, code, message, written, tmp_path, monkeypatch,
                                                  capsys):
    _sandbox(tmp_path)
    _check(argv, code, message, written, tmp_path, monkeypatch, capsys)


def _check(argv, code, message, written, tmp_path, monkeypatch, capsys) -> None:
    """Run ``argv`` in ``tmp_path``: exit ``code``, one error line holding ``message``, no traceback, no
    advice to load with ``weights_only=False``, ``written`` absent and nothing new in the folder."""
    monkeypatch.chdir(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    try:
        result = main(argv.split())
    except SystemExit as exc:  # argparse's own usage errors
        result = exc.code
    err = capsys.readouterr().err
    assert result == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("yolocompress: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in err and "weights_only" not in err
    assert "allowlist, which is outside the" not in err  # issue 19: the allowlist was named twice
    if written:
        assert not (tmp_path / written).exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written at all


# Cases that fail once a file is read (torch is imported): the same one-line contract. ``hostile.pt`` would
# run ``os.system`` if unpickled; ``noise.pt`` is random bytes; ``full/`` is a non-empty folder.
READ_CASES = [
    ("info hostile.pt", 2, "refusing to load hostile.pt: it needs posix.system, which is outside the "
                           "checkpoint allowlist (nothing in the file was executed)", None),
    ("train --resume hostile.pt", 2, "refusing to load hostile.pt: it needs posix.system", "runs"),
    ("fuse hostile.pt -o f.pt", 2, "refusing to load hostile.pt", "f.pt"),
    ("info noise.pt", 2, "noise.pt", None),
    ("train --resume noise.pt", 2, "cannot read training checkpoint noise.pt", "runs"),
    ("data synth --out full --n-train 1 --n-val 1 --imgsz 32", 2, "--overwrite replaces it", None),
    # a data.yaml that does not parse fails before the model is read (model.pt is not a model)
    ("quantize model.pt --data bad.yaml -o q.onnx", 2, "bad.yaml", "q.onnx"),
    ("prune model.pt --data bad.yaml -o p.pt", 2, "bad.yaml", "p.pt"),
]


class _Hostile:
    def __reduce__(self):
        return os.system, ("echo unpickled > pwned.txt",)


@pytest.mark.parametrize("argv, code, message, written", READ_CASES, ids=[c[0] for c in READ_CASES])
def test_unreadable_files_are_one_line_and_never_advise_weights_only_false(argv, code, message, written,
                                                                           tmp_path, monkeypatch, capsys):
    import random

    import torch

    _sandbox(tmp_path)
    torch.save({"model": _Hostile()}, tmp_path / "hostile.pt")
    (tmp_path / "noise.pt").write_bytes(random.Random(0).randbytes(4096))
    (tmp_path / "full").mkdir()
    (tmp_path / "bad.yaml").write_text("names: [a, b\ntrain: [\n")
    (tmp_path / "full" / "keep.txt").write_text("mine")
    _check(argv, code, message, written, tmp_path, monkeypatch, capsys)
    assert not (tmp_path / "pwned.txt").exists()


PROBE = """
import json, sys
from yolocompress.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    try:
        codes.append(main(argv))
    except SystemExit as exc:
        codes.append(exc.code)
heavy = sorted(m for m in ("torch", "onnxruntime", "numpy") if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_help_and_path_errors_do_not_import_torch(tmp_path):
    """``--help``, ``info --help`` and every pre-flight failure answer before torch, onnxruntime (and numpy)
    are imported: that import is what took 3.5-5 s (benchmarks/bench_cli_startup.py measures the time).
    (``prune --help`` and ``quantize --help`` do import them: they show the library configs' defaults.)"""
    _sandbox(tmp_path)
    argvs = [["--help"], ["info", "--help"], ["eval", "--help"], ["train", "--help"],
             *[c[0].split() for c in CASES]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["codes"] == [0, 0, 0, 0, *[c[1] for c in CASES]]
    assert result["heavy"] == []


def test_one_workers_default_across_commands():
    """eval, train and distill default to ``cli.common.WORKERS``; prune and quantize leave it to PruneConfig
    and QatConfig, which must hold the same value."""
    from yolocompress.cli import build_parser
    from yolocompress.cli.common import WORKERS
    from yolocompress.compress.prune import PruneConfig
    from yolocompress.compress.quant import QatConfig

    parser = build_parser()
    library = {"prune": PruneConfig.workers, "quantize": QatConfig.workers}
    lines = {"eval": "eval m.pt --data d.yaml", "train": "train m.pt --data d.yaml",
             "distill": "distill m.pt --teacher t.pt --data d.yaml -o o.pt",
             "prune": "prune m.pt --data d.yaml -o o.pt", "quantize": "quantize m.pt --data d.yaml -o o.onnx"}
    for command, line in lines.items():
        given = parser.parse_args(line.split()).workers
        assert (library[command] if given is None else given) == WORKERS, command


def test_train_and_bench_default_to_the_checkpoint_image_size():
    from yolocompress.cli import build_parser

    parser = build_parser()
    assert parser.parse_args("train m.pt --data d.yaml".split()).imgsz is None  # None: the checkpoint's size
    assert parser.parse_args("bench m.pt".split()).imgsz is None
    assert parser.parse_args("bench m.onnx".split()).backend is None  # None: picked from the file


@pytest.mark.parametrize("leftover", ["weights/last.pt", "weights/.last.pt.4242.tmp", "results.csv"])
def test_train_refuses_a_folder_with_an_earlier_runs_files(tmp_path, monkeypatch, capsys, leftover):
    """A run killed before its first epoch ended leaves no last.pt but other files; --exist-ok reuses it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.yaml").write_text("train: images\nval: images\nnames: [a]\n")
    (tmp_path / "run" / leftover).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "run" / leftover).write_text("x")
    assert main(["train", "yolov5n", "--data", "data.yaml", "--out", "run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "earlier run" in err and "--exist-ok" in err
    assert ("--resume" in err) == (leftover == "weights/last.pt")
    assert sorted(p.name for p in (tmp_path / "run").rglob("*") if p.is_file()) == [Path(leftover).name]
