"""Run the fuzz targets of ``tests/test_fuzz.py`` with many more examples and count the outcomes.

Every case is a valid result, one of our one-line errors, or a crash (any other exception, or a failed check
of the result). Prints one row per target; the first crash of each kind is shown with its input. Exit status
1 when anything crashed.

    PYTHONPATH=. python3 benchmarks/fuzz_counts.py --examples 5000 --seed 0
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import sys
import tempfile
import time
import warnings
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings

ROOT = Path(__file__).resolve().parent.parent


def load_targets():
    """The ``tests/test_fuzz.py`` module (its ``TARGETS`` and ``make_workdir``)."""
    spec = importlib.util.spec_from_file_location("fuzz_targets", ROOT / "tests" / "test_fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fuzz(strategy, check, workdir: Path, examples: int, rng_seed: int) -> tuple[collections.Counter, dict]:
    """Outcome counts (``result``, ``error``, ``crash``) and the first input of each crash kind."""
    counts: collections.Counter = collections.Counter()
    crashes: dict[str, object] = {}

    @seed(rng_seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(value):
        try:
            counts[check(value, workdir)] += 1
        except Exception as exc:  # noqa: BLE001 - a crash is what is being counted
            counts["crash"] += 1
            crashes.setdefault(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}",
                               value)

    run()
    return counts, crashes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="cases per target (default 5000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", nargs="*", help="a subset of the targets (default: all)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    module = load_targets()
    names = args.targets or list(module.TARGETS)
    print(f"{'target':<12} {'tried':>7} {'results':>8} {'errors':>7} {'crashes':>8} {'seconds':>8}")
    crashed = 0
    with tempfile.TemporaryDirectory(prefix="yc-fuzz-") as tmp:
        workdir = module.make_workdir(Path(tmp))
        for name in names:
            strategy, check = module.TARGETS[name]
            start = time.perf_counter()
            counts, crashes = fuzz(strategy, check, workdir, args.examples, args.seed)
            tried = sum(counts.values())
            print(f"{name:<12} {tried:>7} {counts['result']:>8} {counts['error']:>7} {counts['crash']:>8} "
                  f"{time.perf_counter() - start:>8.1f}")
            for kind, value in crashes.items():
                print(f"  crash {kind}\n    input: {value!r:.300}")
            crashed += counts["crash"]
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
