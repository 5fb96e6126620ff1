"""The one ``yolocompress`` entry point.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``; the
module parses arguments and calls a library function, nothing more. ``main`` turns library errors into
one line on stderr and an exit code (0 success, 1 failure or regression, 2 bad usage or bad input);
``--verbose`` shows the traceback as well.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import Sequence

from yolocompress.errors import YoloCompressError

# Modules under yolocompress.cli that each add one or more sub-commands.
COMMAND_MODULES = ("info", "export", "bench", "data", "eval", "train", "fuse", "prune", "quantize", "distill",
                   "run", "report", "check", "demo")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.exit(2, f"yolocompress: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser with every registered sub-command."""
    parser = _Parser(prog="yolocompress", description="Compress YOLOv5-family detectors with measured accuracy cost.")
    parser.add_argument("--verbose", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"yolocompress.cli.{name}")
        except ModuleNotFoundError as exc:  # a command module not written yet
            if exc.name == f"yolocompress.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv  # accepted anywhere on the line, not only before the command
    parser = build_parser()
    args = parser.parse_args(["--verbose", *[a for a in argv if a != "--verbose"]] if verbose else argv)
    try:
        code = args.func(args)
        return int(code or 0)
    except YoloCompressError as exc:
        if verbose:
            traceback.print_exc()
        print(f"yolocompress: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("yolocompress: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: still one line unless --verbose
        if verbose:
            traceback.print_exc()
        print(f"yolocompress: error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
