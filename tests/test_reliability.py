"""Issue 19's acceptance table: every case of the issue, run through the real CLI in a fresh process.

One row per case: its id, the issue item it covers ("why N": the Why list, or a What-to-build bullet), the
command line, the files to create first in the case's working folder, the exit code, and a regex. Each row
runs ``python -m yolocompress ...`` in an empty folder (plus the listed files) with ``YOLOCOMPRESS_TMP``
pointing at a folder of its own (the rows without a time limit two at a time, each process with one OpenMP
thread; the timed rows alone), and checks:

- the exit code;
- no traceback, never the advice ``weights_only=False``, no ``\\r`` on stderr (it is not a terminal: plain
  progress lines), and the hostile pickle never ran;
- exit 2: exactly one non-empty stderr line, ``yolocompress: error: ...`` matching the regex, and nothing
  written (the output name does not exist, the working folder holds only the files made for the case);
- other exit codes: the regex matches a line of stdout or stderr, and the outputs that must be written are;
- the temporary-work folder is empty afterwards;
- a row with a time limit ends within it (a YAML bomb: 1 s, the unbounded loader took 90 s and failed).

Placeholders in the command lines name files made once per session: ``{base}`` the shipped baseline (trained,
256 px, 6 classes), ``{half}`` the same weights stored as fp16, ``{onnx}`` it exported, ``{ds}`` a synthetic
8 + 8 image data set at 256 px, ``{nolabels}`` its images with empty labels folders, ``{badlabels}`` its
train split with a malformed label line and an out-of-range class id, ``{ruin}`` a recipe that prunes half
the channels without a fine-tune, ``{ro}`` a folder this user cannot write into.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from yolocompress.export.ort import omp_threads

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "yolocompress" / "assets" / "baseline.pt"


@dataclass(frozen=True)
class Case:
    """One row: ``out`` must not exist afterwards, ``keep`` must; ``seconds``: a limit on the whole run.
    In ``files``, ``out`` and ``keep``, ``DEAD.`` stands for the owner tag of a process of this host that has
    ended (a killed run's temporary name); ``TMP/`` names a file in the temp folder, a trailing ``/`` a
    folder."""

    id: str
    item: str
    argv: str
    files: tuple[str, ...]
    code: int
    regex: str
    out: str | None = None
    keep: tuple[str, ...] = ()
    seconds: float | None = None


# Per-case files (made in the case's working folder). A billion-laughs body: 9 levels of 9 aliases each.
_LAUGHS = "\n".join(['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
                    + [f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]"
                       for p, c in zip("abcdefgh", "bcdefghi")])


class _Hostile:
    def __reduce__(self):
        return os.system, ("echo unpickled > pwned.txt",)


def _hostile(path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _Hostile()}, path)


FILES = {
    "TMP/yolocompress-ptq-DEAD.k2j4/calib.onnx": lambda p: p.write_bytes(b"a killed quantize's work"),
    "run/weights/.last.pt.DEAD.x8f1.tmp": lambda p: p.write_bytes(b"half a checkpoint"),
    "afile": lambda p: p.write_text("a plain file"),
    "full": lambda p: (p.mkdir(), (p / "keep.txt").write_text("mine")),
    "hostile.pt": _hostile,
    "hr/weights/last.pt": _hostile,  # a hostile last.pt where --resume looks for it
    "noise.pt": lambda p: p.write_bytes(__import__("random").Random(0).randbytes(4096)),
    "bomb-data.yaml": lambda p: p.write_text(f"path: .\ntrain: images\nval: images\n{_LAUGHS}\nnames: *i\n"),
    "bomb-hyp.yaml": lambda p: p.write_text(f"{_LAUGHS}\nlr0: 0.01\nfl_gamma: *i\n"),
    "bomb-model.yaml": lambda p: p.write_text(f"{_LAUGHS}\nnc: 6\nbackbone: *i\n"),
    "bomb-recipe.yaml": lambda p: p.write_text(f"version: 1\nname: bomb\n{_LAUGHS}\nstages: *i\n"),
    "dup.yaml": lambda p: p.write_text("path: .\ntrain: images\nval: images\nnames: [a]\nnames: [b]\n"),
    "dup-recipe.yaml": lambda p: p.write_text("version: 1\nname: d\nstages: [{fuse: {}}]\nstages: []\n"),
    "list.yaml": lambda p: p.write_text("- train: images\n- val: images\n"),
    "big.yaml": lambda p: p.write_text("path: .\n# " + "x" * (3 * 1024 * 1024) + "\nnames: [a]\n"),
}

FAST_BENCH = "--runs 3 --warmup 1 --threads 1"
WRITERS = {  # command -> (line with MODEL as the input checkpoint and OUT as its output, the output's "what")
    "quantize": ("quantize MODEL --data {ds} -o OUT --calib-images 2", "output", "q.onnx"),
    "prune": ("prune MODEL --data {ds} -o OUT --ratio 0.5 --candidates 1 --finetune-epochs 0", "output",
              "p.pt"),
    "fuse": ("fuse MODEL -o OUT", "output", "f.pt"),
    "export": ("export MODEL -o OUT", "output", "e.onnx"),
    "train": ("train MODEL --data {ds} --epochs 1 --out OUT --noval", "--out", "run"),
    "distill": ("distill MODEL --teacher {base} --data {ds} -o OUT --epochs 1 --out-dir dr", "output",
                "d.pt"),
    "run": ("run {ruin} --model MODEL --data {ds} --out OUT", "--out", "run"),
}


def _writer_cases() -> list[Case]:
    """Issue item 3 and the checkpoint safety the Why list starts with, for every command that writes."""
    cases = []
    for command, (line, what, out) in WRITERS.items():
        folder_output = what == "--out"
        def argv(model: str, target: str) -> str:
            return line.replace("MODEL", model).replace("OUT", target)
        blocked, made, reason = (("afile", "afile", "it is a file, not a folder") if folder_output else
                                 (out, out + "/", "it is a folder"))
        cases += [
            Case(f"{command}-output-is-a-{'file' if folder_output else 'folder'}", "why 3",
                 argv("{base}", blocked), (made,), 2,
                 rf"cannot write {re.escape(what)} {re.escape(blocked)}: {reason}$"),
            Case(f"{command}-read-only-parent", "why 3", argv("{base}", "{ro}/" + out), (), 2,
                 rf"cannot write {re.escape(what)} .*{re.escape(out)}: .* (is )?not writable"),
            Case(f"{command}-missing-input", "why 8: one wording", argv("missing.pt", out), (), 2,
                 r"model file not found: missing\.pt$", out=out),
            Case(f"{command}-corrupt-checkpoint", "why: checkpoints", argv("noise.pt", out), ("noise.pt",), 2,
                 r"cannot read [a-z ]+ noise\.pt: not a valid torch file", out=out),
            Case(f"{command}-malicious-pickle", "why: checkpoints", argv("hostile.pt", out), ("hostile.pt",),
                 2,
                 r"refusing to load hostile\.pt: it needs posix\.system, which is outside the checkpoint "
                 r"allowlist \(nothing in the file was executed\)$", out=out),
        ]
    return cases


PRUNE_RUIN = ("prune {base} --data {ds} -o p.pt --ratio 0.5 --candidates 1 --guided 0 --finetune-epochs 0 "
              "--quiet")
NO_LABELS = r"split has no labels: none of its 8 usable images has a box"
STALE_TMP = "TMP/yolocompress-ptq-DEAD.k2j4/calib.onnx"  # a killed quantize's work folder
STALE_LAST = "run/weights/.last.pt.DEAD.x8f1.tmp"  # a killed train's half-written last.pt

CASES = [
    *_writer_cases(),
    Case("synth-output-is-a-file", "why 3", "data synth --out afile --n-train 1 --n-val 1 --imgsz 32",
         ("afile",), 2, r"cannot write --out afile: it is a file, not a folder"),
    Case("synth-read-only-parent", "why 3", "data synth --out {ro}/s --n-train 1 --n-val 1 --imgsz 32", (), 2,
         r"cannot write --out .*/s: .*not writable"),
    Case("synth-existing-folder-says---overwrite", "why 8", "data synth --out full --n-train 1 --n-val 1 "
         "--imgsz 32", ("full",), 2, r"full already exists .*--overwrite replaces it"),
    # 1. no silent ruin: a loud warning past 5 points, --max-map-drop exits 1, the outputs still written
    Case("prune-ruin-is-warned-about", "why 1", PRUNE_RUIN, (), 0,
         r"^WARNING: mAP50-95 fell [0-9.]+ points in prune .*needs about 150 fine-tune epochs",
         keep=("p.pt",)),
    Case("prune-max-map-drop-exits-1", "why 1", PRUNE_RUIN + " --max-map-drop 1 --json p.json", (), 1,
         r"^yolocompress: error: mAP50-95 fell [0-9.]+ points in prune, more than --max-map-drop 1 .*the "
         r"outputs are written\)$", keep=("p.pt", "p.json")),
    Case("quantize-max-map-drop-exits-1", "why 1, why 6", "quantize {base} --data {ds} -o q.onnx "
         "--calib-images 1 --per-tensor --max-map-drop 0.5 --json q.json", (STALE_TMP,), 1,
         r"^yolocompress: error: mAP50-95 fell [0-9.]+ points in quantize, more than --max-map-drop 0.5 ",
         out=STALE_TMP, keep=("q.onnx", "q.json")),
    Case("run-ruin-is-warned-about-and-fails-the-gate", "why 1",
         "run {ruin} --model {base} --data {ds} --out r", (), 1,
         r"^warning: the compressed model is [0-9.]+ mAP50-95 points below the baseline .*needs about "
         r"150 fine-tune epochs \(see benchmarks/RESULTS\.md\)$", keep=("r/report.json", "r/report.md")),
    # 2. bounded YAML: data.yaml, hyp, model config and recipe
    Case("alias-bomb-data-yaml", "why 2", "data check bomb-data.yaml", ("bomb-data.yaml",), 2,
         r"bomb-data\.yaml: more than 16 YAML aliases .*an alias bomb", seconds=1.0),
    Case("alias-bomb-data-yaml-eval", "why 2", "eval {base} --data bomb-data.yaml", ("bomb-data.yaml",), 2,
         r"bomb-data\.yaml: more than 16 YAML aliases", seconds=1.0),
    Case("alias-bomb-hyp", "why 2", "train yolov5n --data {ds} --hyp bomb-hyp.yaml --out run",
         ("bomb-hyp.yaml",), 2, r"bomb-hyp\.yaml: more than 16 YAML aliases", out="run", seconds=1.0),
    Case("alias-bomb-model-config", "why 2", "train bomb-model.yaml --data {ds} --out run",
         ("bomb-model.yaml",), 2, r"bomb-model\.yaml: more than 16 YAML aliases", out="run", seconds=1.0),
    Case("alias-bomb-recipe", "why 2", "run bomb-recipe.yaml --model {base} --data {ds} --out run",
         ("bomb-recipe.yaml",), 2, r"bomb-recipe\.yaml: more than 16 YAML aliases", out="run", seconds=1.0),
    Case("duplicate-key-data-yaml", "bounded YAML", "data check dup.yaml", ("dup.yaml",), 2,
         r"dup\.yaml: duplicate key 'names' \(line 5\)"),
    Case("duplicate-key-recipe", "bounded YAML", "run dup-recipe.yaml --model {base} --out run",
         ("dup-recipe.yaml",), 2, r"dup-recipe\.yaml: duplicate key 'stages' \(line 4\)", out="run"),
    Case("non-mapping-data-yaml", "bounded YAML", "data check list.yaml", ("list.yaml",), 2,
         r"list\.yaml: expected a mapping .*got list"),
    Case("non-mapping-hyp", "bounded YAML", "train yolov5n --data {ds} --hyp list.yaml --out run",
         ("list.yaml",), 2, r"list\.yaml: hyp file must be a mapping .*got list", out="run"),
    Case("non-mapping-model-config", "bounded YAML", "train list.yaml --data {ds} --out run", ("list.yaml",),
         2, r"list\.yaml: model config must be a mapping .*got list", out="run"),
    Case("non-mapping-recipe", "bounded YAML", "run list.yaml --out run", ("list.yaml",), 2,
         r"list\.yaml: a recipe is a mapping .*got list", out="run"),
    Case("oversize-data-yaml", "bounded YAML", "data check big.yaml", ("big.yaml",), 2,
         r"big\.yaml: larger than 2 MB"),
    Case("oversize-recipe", "bounded YAML", "run big.yaml --out run", ("big.yaml",), 2,
         r"big\.yaml: larger than 2 MB", out="run"),
    # 4. consistent defaults and bench
    Case("bench-onnx-picks-onnxruntime", "why 4", f"bench {{onnx}} {FAST_BENCH}", (), 0,
         r"onnxruntime +│ +1x3x256x256"),
    Case("bench-default-imgsz-is-the-checkpoints", "why 4", f"bench {{base}} {FAST_BENCH} --json b.json", (),
         0, r"torch +│ +1x3x256x256", keep=("b.json",)),
    # the progress line shows the size trained at; stderr is a pipe: plain lines, no \r (why 9)
    Case("train-default-imgsz-is-the-checkpoints", "why 4, why 9", "train {base} --data {ds} --epochs 1 "
         "--batch 8 --noval --out run", (), 0, r"^epoch 1/1: 1/1 batch .* size 256$",
         keep=("run/weights/last.pt",)),
    # 5. data checks that fail
    Case("data-check-empty-labels-folder", "why 5", "data check {nolabels}", (), 1,
         r"failed the check: no labelled image \(8 usable, all background"),
    Case("eval-empty-labels-folder", "why 5", "eval {base} --data {nolabels}", (), 2, NO_LABELS),
    Case("train-empty-labels-folder", "why 5", "train {base} --data {nolabels} --epochs 1 --noval --out run",
         (), 2, NO_LABELS, out="run"),
    Case("quantize-empty-labels-folder", "why 5", "quantize {base} --data {nolabels} -o q.onnx", (), 2,
         NO_LABELS, out="q.onnx"),
    Case("data-check-bad-label-lines-counts", "why 5", "data check {badlabels} --split train --no-cache", (),
         1, r"failed the check: 2 images with bad labels \(skipped\)"),
    Case("data-check-out-of-range-class-id", "why 5", "data check {badlabels} --split train --no-cache", (),
         1, r"class 9 .*(out of range|nc)"),
    # 6. kill -9 litter (the kill tests: tests/engine/test_kill_train.py, the quantize and prune CLI tests)
    Case("train-refuses-a-folder-with-a-killed-runs-temp-file", "why 6",
         "train {base} --data {ds} --epochs 1 --noval --out run", (STALE_LAST,), 2,
         r"run already holds 1 file\(s\) of an earlier run .*--exist-ok to overwrite"),
    Case("train-exist-ok-removes-a-killed-runs-temp-file", "why 6", "train {base} --data {ds} --epochs 1 "
         "--batch 8 --noval --out run --exist-ok", (STALE_LAST,), 0, r"^done after 1 epochs",
         out=STALE_LAST, keep=("run/weights/last.pt",)),
    # 7. usage and path errors before the heavy imports
    Case("help-under-a-second", "why 7", "info --help", (), 0, r"^usage: yolocompress info", seconds=1.0),
    Case("path-error-under-a-second", "why 7", "quantize {base} --data {ds} -o q.onnx", ("q.onnx/",), 2,
         r"cannot write output q\.onnx: it is a folder", seconds=1.0),
    # 8. one voice (every exit-2 row: one line, never weights_only=False)
    Case("fuse-fp16-to-fp32-says-so", "why 8", "fuse {half} -o f.pt", (), 0,
         r"stores float16 weights, f\.pt stores float32 .*--half", keep=("f.pt",)),
    Case("train-resume-hostile-file", "why 8", "train --resume hostile.pt", ("hostile.pt",), 2,
         r"refusing to load hostile\.pt: it needs posix\.system"),
    Case("distill-resume-hostile-last-pt", "why 8", "distill {base} --teacher {base} --data {ds} -o d.pt "
         "--out-dir hr --resume", ("hr/weights/last.pt",), 2, r"refusing to load hr/weights/last\.pt",
         out="d.pt"),
]


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> dict[str, str]:
    """The session's shared files, by placeholder name (see the module docstring)."""
    from yolocompress.data.synthetic import synthesize_dataset
    from yolocompress.export.onnx import export_onnx
    from yolocompress.io.checkpoint import load_model_with_info, save_model

    root = tmp_path_factory.mktemp("reliability")
    ds = synthesize_dataset(root / "ds", n_train=8, n_val=8, imgsz=256, seed=1)
    nolabels = root / "nolabels"
    shutil.copytree(ds.parent / "images", nolabels / "images")
    for split in ("train", "val"):
        (nolabels / "labels" / split).mkdir(parents=True)
    (nolabels / "data.yaml").write_text(ds.read_text())
    bad = root / "badlabels"
    shutil.copytree(ds.parent, bad, ignore=shutil.ignore_patterns("*.cache"))
    labels = sorted((bad / "labels" / "train").glob("*.txt"))
    labels[0].write_text("0 0.5 0.5 0.2\n")  # four numbers, not five
    labels[1].write_text("9 0.5 0.5 0.2 0.2\n")  # 6 classes: 0-5
    model, info = load_model_with_info(BASELINE)
    half = save_model(model, root / "half.pt", imgsz=info.imgsz, half=True)
    onnx = export_onnx(model, root / "base.onnx", imgsz=info.imgsz)
    ruin = root / "ruin.yaml"
    ruin.write_text("version: 1\nname: ruin\nseed: 0\nmeasure: {latency: [], threads: 1}\n"
                    "stages:\n  - prune: {ratio: 0.5, search: {candidates: 1, guided: 0}}\n"
                    "gate: {max_map_drop: 1.0}\n")
    return {"base": str(BASELINE), "half": str(half), "onnx": str(onnx), "ds": str(ds),
            "nolabels": str(nolabels / "data.yaml"), "badlabels": str(bad / "data.yaml"), "ruin": str(ruin),
            "ro": _read_only_folder(root), "cache": str(root / "cache")}


def _read_only_folder(root: Path) -> str:
    """A folder this process cannot write into: a chmod 555 one, or for root (which ignores the mode) a
    read-only mount such as ``/proc/sys`` in a container; "" when there is none."""
    ro = root / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    for folder in (ro, Path("/proc/sys")):
        if folder.is_dir() and not os.access(folder, os.W_OK):
            return str(folder)
    return ""


@pytest.fixture(scope="session")
def dead_tag() -> str:
    """The owner tag (``pid<PID>@<host>.``) of a process of this host that has ended."""
    from yolocompress.io.workdir import owner_tag

    proc = subprocess.Popen(["true"])
    proc.wait()
    return owner_tag().replace(f"pid{os.getpid()}@", f"pid{proc.pid}@")


def _place(name: str, cwd: Path, work: Path, dead_tag: str) -> Path:
    """Where a name of the table lies: ``TMP/...`` in the temp folder, else in the working folder."""
    name = name.replace("DEAD.", dead_tag)
    return work / name[len("TMP/"):] if name.startswith("TMP/") else cwd / name


@dataclass
class Ran:
    """One case run: its working and temp folders, what the working folder held before, the argv, the
    finished process and its wall time."""

    cwd: Path
    work: Path
    before: list[Path]
    argv: list[str]
    proc: subprocess.CompletedProcess
    elapsed: float


def _run_case(case: Case, world: dict[str, str], dead_tag: str, folder: Path, threads: int) -> Ran:
    """Make the case's files in ``folder`` and run its command in a fresh ``python -m yolocompress``."""
    cwd, work = folder / "cwd", folder / "yc-tmp"
    cwd.mkdir(parents=True)
    for name in case.files:
        path = _place(name, cwd, work, dead_tag)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if name.endswith("/") else FILES[name](path)
    before = sorted(p.relative_to(cwd) for p in cwd.rglob("*"))
    argv = case.argv.format(**world).split()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YOLOCOMPRESS_TMP": str(work),
           "YOLOCOMPRESS_CACHE": world["cache"], "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "yolocompress", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return Ran(cwd, work, before, argv, proc, time.perf_counter() - start)


def _runnable(case: Case, world: dict[str, str]) -> bool:
    return "{ro}" not in case.argv or bool(world["ro"])


@pytest.fixture(scope="session")
def untimed_runs(world, dead_tag, tmp_path_factory) -> dict[str, Ran]:
    """Every case without a time limit, run two at a time (each process with one OpenMP thread): most of a
    case's wall time is the interpreter starting and importing, which two cores share well. The timed cases
    run alone, in their test, so that nothing else competes for the CPU while they are timed."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("untimed")
    cases = [c for c in CASES if c.seconds is None and _runnable(c, world)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {c.id: pool.submit(_run_case, c, world, dead_tag, root / c.id, 1) for c in cases}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_issue_19_case(case: Case, world, dead_tag, tmp_path, request):
    if not _runnable(case, world):
        pytest.skip("no folder here is read-only to this user (root outside a container)")
    threads = omp_threads() or 2  # OMP_NUM_THREADS: 1 in a worker of pytest -n 2
    ran = (_run_case(case, world, dead_tag, tmp_path, threads) if case.seconds is not None
           else request.getfixturevalue("untimed_runs")[case.id])
    cwd, work, proc = ran.cwd, ran.work, ran.proc
    out, err = proc.stdout, proc.stderr
    where = (f"[{case.item}] yolocompress {' '.join(ran.argv)}\n"
             f"--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}")
    assert proc.returncode == case.code, where
    assert "Traceback" not in err and "weights_only=False" not in out + err and "\r" not in err, where
    assert not (cwd / "pwned.txt").exists(), where
    if case.code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("yolocompress: error: "), where
        assert re.search(case.regex, lines[0]), f"{case.regex!r} not in {lines[0]!r}\n{where}"
        assert sorted(p.relative_to(cwd) for p in cwd.rglob("*")) == ran.before, where  # nothing written
    else:
        assert re.search(case.regex, out + err, re.M), f"{case.regex!r} not found\n{where}"
    if case.out:
        assert not _place(case.out, cwd, work, dead_tag).exists(), where
    for name in case.keep:
        assert _place(name, cwd, work, dead_tag).is_file(), f"{name} not written\n{where}"
    assert not work.exists() or not list(work.rglob("*")), f"left in the temp folder: {list(work.rglob('*'))}"
    if case.seconds is not None:
        assert ran.elapsed < case.seconds, f"{ran.elapsed:.2f} s (limit {case.seconds} s)\n{where}"


def test_the_table_covers_every_item_of_the_why_list():
    items = {int(n) for c in CASES for n in re.findall(r"why (\d)", c.item)}
    assert items == set(range(1, 10))
    assert {c.argv.split()[0] for c in CASES if c.id.endswith("-malicious-pickle")} == set(WRITERS)
