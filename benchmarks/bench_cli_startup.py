"""Time from starting ``python -m yolocompress ...`` to its exit, for help and bad-input command lines.

Each command line runs ``--repeat`` times in a fresh interpreter (the process's wall time, which includes the
error line); the median is printed, side by side for two source trees when ``--before`` names one (e.g. an
older checkout)::

    python3 benchmarks/bench_cli_startup.py --before /work/main --repeat 5

Run it alone on the machine: the "before" tree imports torch, which is what is measured.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

COMMANDS = [
    "--help",
    "info --help",
    "prune --help",
    "info missing.pt",
    "eval model.pt --data missing.yaml",
    "quantize model.pt --data data.yaml -o adir",
    "prune model.pt --data data.yaml -o afile/out.pt",
    "data check bomb.yaml",
    "train yolov5n --data data.yaml --hyp bomb.yaml --out r",
]
# A billion-laughs YAML (9 levels of 9 aliases), refused by the bounded loader (issue 19).
BOMB = "\n".join(['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
                  + [f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi")]
                  + ["names: *i"])


def time_command(tree: Path, argv: str, cwd: Path, repeat: int) -> tuple[float, int]:
    """Median wall seconds of ``python -m yolocompress argv`` with ``tree`` first on the path, and its exit
    code."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    times, code = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", "yolocompress", *argv.split()], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        times.append(time.perf_counter() - t0)
    return statistics.median(times), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, default=None, help="another source tree to compare with")
    parser.add_argument("--after", type=Path, default=HERE, help="the tree measured (default: this one)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per command line (median; default 5)")
    args = parser.parse_args()
    trees = [("before", args.before)] if args.before else []
    trees.append(("after", args.after))
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "model.pt").write_bytes(b"x")
        (cwd / "data.yaml").write_text("names: [a]\n")
        (cwd / "adir").mkdir()
        (cwd / "afile").write_text("x")
        (cwd / "bomb.yaml").write_text(BOMB + "\n")
        header = f"{'command line':<58}" + "".join(f"{name + ' s (exit)':>18}" for name, _ in trees)
        print(header)
        for argv in COMMANDS:
            cells = []
            for _, tree in trees:
                seconds, code = time_command(tree, argv, cwd, args.repeat)
                cells.append(f"{seconds:>13.2f} ({code})")
            print(f"{argv:<58}" + "".join(cells))


if __name__ == "__main__":
    main()
