"""Helpers shared by the CLI command modules (argument types, model loading, output)."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from yolocompress.errors import InputError

# Wide enough for the 11-column before/after table when output goes to a file or CI log (rich's default
# there is 80 columns, which wraps every figure); a terminal keeps its own width.
LOG_WIDTH = 160
console = Console(width=None if sys.stdout.isatty() else LOG_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else LOG_WIDTH)


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def image_size(text: str) -> int:
    """argparse type: image size, a positive multiple of 32."""
    value = positive_int(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"image size must be a multiple of 32, got {value}")
    return value


def config_help(**configs: str) -> type[argparse.HelpFormatter]:
    """A help formatter that fills ``{name.field}`` in help texts with the default of a library config's
    field, e.g. ``config_help(prune="yolocompress.compress.prune.pruner:PruneConfig")`` and
    ``"(default {prune.ratio})"``.

    The config is imported only when help is shown: importing it imports torch, which would make every
    usage or path error of the command wait for it. So flags keep ``default=None`` ("the config's") and
    the library stays the one place that holds the value.
    """

    class Formatter(argparse.HelpFormatter):
        def _get_help_string(self, action: argparse.Action) -> str | None:
            text = action.help
            if text and "{" in text:
                values = {}
                for name, target in configs.items():
                    module, _, cls = target.partition(":")
                    config = getattr(importlib.import_module(module), cls)
                    values[name] = argparse.Namespace(**{f.name: f.default for f in dataclasses.fields(config)})
                text = text.format_map(values)
            return text

    return Formatter


def load_cli_model(path: str, cfg: str | None = None):
    """Load a model file for a command; returns (model, ModelInfo)."""
    from yolocompress.io.checkpoint import load_model_with_info

    p = Path(path)
    if p.suffix.lower() == ".onnx":
        raise InputError(f"{p.name} is an ONNX model; this command needs a .pt checkpoint")
    return load_model_with_info(p, cfg=cfg)


def write_json(obj: Any, path: str | None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically when a path was given."""
    if path:
        from yolocompress.io.atomic import atomic_write_json

        atomic_write_json(obj, path)


def show_progress(event: Any) -> None:
    """The recipe runner's progress callback (a ``RecipeProgress``): ``[2/4] finetune`` lines on stderr."""
    label = f"[{event.index}/{event.total}] {event.name}" if event.index else f"[0/{event.total}] baseline"
    if event.status == "measure":
        err_console.print("measuring latency of every artifact side by side ...")
    elif event.status == "start":
        err_console.print(f"{label} ...")
    elif event.status == "skip":
        err_console.print(f"{label}: done in an earlier run, skipped (--resume)")
    elif event.status == "done" and event.name != "latency":
        err_console.print(f"{label}: done in {event.seconds:.1f} s")


def print_warnings(report: dict[str, Any]) -> None:
    """A run report's top-level warnings, on stderr."""
    for warning in report.get("warnings") or ():
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


def print_gate(gate: Any, failed: str = "gate FAILED") -> None:
    """One line per verdict of a ``GateResult`` (``PASS max_map_drop 0.41 <= 1 points``), then the outcome
    (``failed`` when a limit does not hold)."""
    for verdict in gate.verdicts:
        console.print(verdict.line(), markup=False, highlight=False)
    console.print("gate passed" if gate.passed else failed, markup=False)


class ProgressPrinter:
    """A ``ProgressCallback`` that draws: tqdm bars when stderr is a terminal, else one plain line per task
    every ``interval_s`` seconds and at its end (no carriage-return frames in a log file or CI log)."""

    def __init__(self, interval_s: float = 30.0) -> None:
        self.terminal = sys.stderr.isatty()
        self.interval_s = interval_s
        self.bars: dict[str, Any] = {}
        self.last_line: dict[str, float] = {}

    def __call__(self, event: Any) -> None:
        import time

        if event.message:
            if self.terminal:
                from tqdm import tqdm

                tqdm.write(event.message, file=sys.stderr)
            else:
                print(event.message, file=sys.stderr, flush=True)
        if not event.total:
            return
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in event.info.items())
        if self.terminal:
            from tqdm import tqdm

            bar = self.bars.get(event.task)
            if bar is None:
                bar = self.bars[event.task] = tqdm(total=event.total, desc=event.task, unit=event.unit,
                                                   leave=False, dynamic_ncols=True, file=sys.stderr)
            bar.n = event.done
            bar.set_postfix_str(info, refresh=False)
            bar.refresh()
            if event.final or event.done >= event.total:
                bar.close()
                del self.bars[event.task]
            return
        now = time.monotonic()
        last = self.last_line.setdefault(event.task, now)
        if event.final or event.done >= event.total or now - last >= self.interval_s:
            self.last_line[event.task] = now
            print(f"{event.task}: {event.done}/{event.total} {event.unit}  {info}".rstrip(), file=sys.stderr,
                  flush=True)
            if event.final or event.done >= event.total:
                del self.last_line[event.task]
