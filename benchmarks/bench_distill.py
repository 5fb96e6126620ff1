"""Distillation benchmarks (issue 16): does a teacher make a compressed student better than plain fine-tuning?

``pruned``   the shipped baseline pruned at ``--ratio 0.5`` with the default EagleEye search (the student, made
             once with ``yolocompress prune --finetune-epochs 0`` and kept in ``--work``), then fine-tuned for
             each of ``--epochs`` with each of ``--methods`` (``none``: labels only; ``output``, ``feature``,
             ``both``: under the unpruned baseline as teacher) and each of ``--seeds``. Same data, epochs and
             seed for every method; the only difference is the distillation term.
``scratch``  a yolov5s teacher trained from scratch on the same data by this script (kept in ``--work``, not
             shipped), then yolov5n trained from scratch with and without it as teacher, same epochs. The
             teacher and the students step the optimizer every ``--nominal-batch`` images (give 16 for
             training from scratch on the 512-image demo set: 64 leaves 8 steps per epoch).

Every run prints one line and is written to ``--json``; the table at the end gives mAP50-95 per method and
seed and the gain of each KD method over ``none`` with the same epochs and seed. Run from the repository root:

    PYTHONPATH=. python3 benchmarks/bench_distill.py pruned --epochs 20 40 --seeds 0 1 --json out.json

``--share-lock FILE``: hold an ``flock`` on FILE while computing and let it go for a moment every
``--share-every`` seconds, so that other heavy jobs waiting on the same lock run in between (accuracy figures
do not depend on it; wall times then do, so this script reports none).
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

METHODS = ("none", "output", "feature", "both")
MAP = "metrics/mAP_0.5:0.95"  # the val split's, after the last epoch (EMA weights): no choice made on val


class SharedLock:
    """An ``flock`` held while working and released for ``pause`` seconds every ``every`` seconds (a progress
    callback: it is called after every batch)."""

    def __init__(self, path: str | None, every: float = 20.0, pause: float = 1.0):
        self.path, self.every, self.pause = path, every, pause
        self.fd: int | None = None
        self.since = 0.0

    def acquire(self) -> None:
        if self.path and self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.since = time.monotonic()

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __call__(self, event: Any = None) -> None:
        if self.fd is not None and time.monotonic() - self.since > self.every:
            self.release()
            time.sleep(self.pause)
            self.acquire()


def make_student(args, lock: SharedLock) -> Path:
    """The default EagleEye pick at ``--ratio`` on the shipped baseline, without fine-tuning (made once)."""
    from yolocompress.demo import baseline_path

    student = Path(args.work) / f"student-ratio{args.ratio}-seed{args.prune_seed}.pt"
    if student.is_file():
        return student
    cmd = [sys.executable, "-m", "yolocompress", "prune", str(baseline_path()), "--data", args.data,
           "--ratio", str(args.ratio), "--finetune-epochs", "0", "--seed", str(args.prune_seed), "-o", str(student),
           "--json", str(student.with_suffix(".json")), "--quiet"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)  # under the lock held by the caller
    return student


def one_run(student_path: Path, teacher_path: Path, args, method: str, epochs: int, seed: int,
            lock: SharedLock) -> dict[str, Any]:
    """Fine-tune the student ``epochs`` with ``method`` and ``seed``; the val mAPs and the KD terms' history."""
    from yolocompress.compress.distill import DistillConfig, distill_model
    from yolocompress.compress.finetune import FinetuneConfig, finetune
    from yolocompress.io.checkpoint import load_model

    student, teacher = load_model(student_path), load_model(teacher_path)
    train = FinetuneConfig(epochs=epochs, imgsz=args.imgsz, batch=args.batch, nominal_batch=args.nominal_batch,
                           seed=seed, bf16=args.bf16)
    t0 = time.perf_counter()
    if method == "none":
        _, report = finetune(student, args.data, train, on_progress=lock)
    else:
        given = {k: getattr(args, k) for k in ("weight", "feature_weight", "temperature")
                 if getattr(args, k) is not None}  # the rest: the library's defaults
        kd = DistillConfig(method=method, check_teacher=False, **given)
        _, report = distill_model(student, teacher, args.data, kd, train, on_progress=lock)
    history = report.details["history"]
    last = history[-1]
    best = max(history, key=lambda r: r[MAP])
    return {"method": method, "epochs": epochs, "seed": seed, "map50": last["metrics/mAP_0.5"],
            "map50_95": last[MAP], "best_map50_95": best[MAP], "best_epoch": best["epoch"],
            "wall_s": time.perf_counter() - t0,
            "last_epoch_losses": {k: v for k, v in last.items() if k.startswith("train/")},
            "warnings": list(report.warnings)}


def table(rows: list[dict[str, Any]]) -> str:
    """mAP50-95 per (epochs, seed, method) and each KD method's gain over ``none`` (points)."""
    lines = [f"{'epochs':>6} {'seed':>4} " + " ".join(f"{m:>8}" for m in METHODS) + "   gain (points) over none"]
    keys = sorted({(r["epochs"], r["seed"]) for r in rows})
    for epochs, seed in keys:
        got = {r["method"]: r["map50_95"] for r in rows if (r["epochs"], r["seed"]) == (epochs, seed)}
        cells = " ".join(f"{got[m]:8.4f}" if m in got else f"{'-':>8}" for m in METHODS)
        gains = " ".join(f"{m} {100 * (got[m] - got['none']):+.2f}" for m in METHODS[1:]
                         if m in got and "none" in got)
        lines.append(f"{epochs:>6} {seed:>4} {cells}   {gains}")
    return "\n".join(lines)


def part_pruned(args, lock: SharedLock) -> list[dict[str, Any]]:
    from yolocompress.demo import baseline_path

    lock.acquire()
    student = make_student(args, lock)
    rows = []
    for epochs in args.epochs:
        for seed in args.seeds:
            for method in args.methods:
                row = one_run(student, baseline_path(), args, method, epochs, seed, lock)
                rows.append(row)
                print(f"[pruned] epochs {epochs} seed {seed} {method:>7}: mAP50 {row['map50']:.4f} "
                      f"mAP50-95 {row['map50_95']:.4f} ({row['wall_s']:.0f} s) {row['last_epoch_losses']}",
                      flush=True)
                save(args, rows)
    lock.release()
    return rows


def part_scratch(args, lock: SharedLock) -> list[dict[str, Any]]:
    """yolov5s teacher from scratch (kept), then yolov5n from scratch with and without it."""
    from yolocompress.engine.trainer import TrainConfig, Trainer
    from yolocompress.io.checkpoint import save_model
    from yolocompress.models import build_model

    lock.acquire()
    teacher_path = Path(args.work) / f"teacher-yolov5s-{args.teacher_epochs}ep-nb{args.nominal_batch}.pt"
    if not teacher_path.is_file():
        from yolocompress.data import load_data_config
        nc = load_data_config(args.data).nc
        model = build_model("yolov5s", nc=nc)
        tc = TrainConfig(epochs=args.teacher_epochs, imgsz=args.imgsz, batch=args.batch,
                         nominal_batch=args.nominal_batch, seed=0, out_dir=str(Path(args.work) / "teacher-run"),
                         bf16=args.bf16)
        result = Trainer(model, args.data, tc, on_progress=lock).train()
        save_model(result.model, teacher_path, imgsz=args.imgsz)
    student_path = Path(args.work) / "student-yolov5n-init.pt"
    if not student_path.is_file():
        from yolocompress.data import load_data_config
        save_model(build_model("yolov5n", nc=load_data_config(args.data).nc), student_path, imgsz=args.imgsz)
    rows = []
    for epochs in args.epochs:
        for seed in args.seeds:
            for method in args.methods:
                row = one_run(student_path, teacher_path, args, method, epochs, seed, lock)
                rows.append(row)
                print(f"[scratch] epochs {epochs} seed {seed} {method:>7}: mAP50-95 {row['map50_95']:.4f}",
                      flush=True)
                save(args, rows)
    lock.release()
    return rows


def save(args, rows: list[dict[str, Any]]) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps({"part": args.part, "args": {k: v for k, v in vars(args).items()
                                                                           if k != "func"}, "rows": rows},
                                              indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("pruned", "scratch"))
    p.add_argument("--data", default=None, help="data.yaml (default: the demo data set)")
    p.add_argument("--work", default="runs/bench_distill", help="folder for the student and teacher files")
    p.add_argument("--epochs", type=int, nargs="+", default=[20])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--prune-seed", type=int, default=0)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--nominal-batch", type=int, default=64)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--weight", type=float, default=None, help="output KD weight (default: the library's)")
    p.add_argument("--feature-weight", type=float, default=None,
                   help="feature KD (CWD) weight (default: the library's)")
    p.add_argument("--temperature", type=float, default=None, help="CWD temperature (default: the library's)")
    p.add_argument("--teacher-epochs", type=int, default=60, help="scratch: epochs of the yolov5s teacher")
    p.add_argument("--json", default=None)
    p.add_argument("--share-lock", default=None)
    p.add_argument("--share-every", type=float, default=20.0)
    args = p.parse_args(argv)
    from yolocompress.demo import demo_data
    from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name

    args.data = args.data or str(demo_data())
    Path(args.work).mkdir(parents=True, exist_ok=True)
    print(f"{cpu_line(cpu_name(), cpu_flags())}; torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}",
          flush=True)
    lock = SharedLock(args.share_lock, args.share_every)
    rows = part_pruned(args, lock) if args.part == "pruned" else part_scratch(args, lock)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
