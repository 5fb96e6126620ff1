"""Helpers shared by the CLI command modules (argument types, model loading, output)."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
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


# Data-loading worker processes of every command that loads images (eval, train, distill; prune and quantize
# take PruneConfig's / QatConfig's, the same value; a test holds them equal): 0 loads in the calling
# process. Augmentation is identical for any count (seeded per image), so this only changes speed.
WORKERS = 0


def add_workers(parser: argparse.ArgumentParser, what: str = "data-loading") -> None:
    """The ``--workers`` flag with the one default (``WORKERS``)."""
    parser.add_argument("--workers", type=non_negative_int, default=WORKERS,
                        help=f"{what} worker processes (default {WORKERS}: load in the main process; more "
                             "help on machines with spare cores)")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return 0 if text.strip() == "0" else positive_int(text)


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def add_max_map_drop(parser: argparse.ArgumentParser) -> None:
    """The ``--max-map-drop POINTS`` flag of the commands that change a model and measure it."""
    parser.add_argument("--max-map-drop", type=non_negative_float, default=None, metavar="POINTS",
                        help="exit 1 when mAP50-95 falls by more than POINTS (e.g. 1.0) from the input model; "
                             "the outputs are still written. A fall of more than 5 points is always warned about")


def print_stage_warnings(report: Any, verdict: Any) -> None:
    """A stage report's warnings on stderr; the accuracy verdict's (a fall past 5 mAP50-95 points) first and
    loudest."""
    if verdict.warning:
        err_console.print(f"[bold red]WARNING:[/] {verdict.warning}", highlight=False, soft_wrap=True)
    for warning in report.warnings:
        if warning != verdict.warning:
            err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def image_size(text: str) -> int:
    """argparse type: image size, a positive multiple of 32."""
    value = positive_int(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"image size must be a multiple of 32, got {value}")
    return value


def config_help(**sources: str) -> type[argparse.HelpFormatter]:
    """A help formatter that fills ``{name.attr}`` in help texts from the library when help is shown.

    A source ``"module:Config"`` (a dataclass) gives its fields' defaults, ``"module:function"`` its
    parameters' defaults, ``"module"`` its attributes (tuples of names shown as ``a, b, c``); e.g.
    ``config_help(prune="yolocompress.compress.prune.pruner:PruneConfig")`` with
    ``"(default {prune.imgsz})"``.
    The library is imported only then: importing it imports torch, which would make every usage or path
    error wait for it. So flags keep ``default=None`` ("the library's") and the library holds the value.
    """

    def values(target: str) -> argparse.Namespace:
        module_name, _, attr = target.partition(":")
        obj = importlib.import_module(module_name)
        if not attr:
            return argparse.Namespace(**{k: ", ".join(map(str, v)) if isinstance(v, tuple) else v
                                         for k, v in vars(obj).items() if not k.startswith("_")})
        obj = getattr(obj, attr)
        if dataclasses.is_dataclass(obj):  # nested defaults by attribute: {prune.search.guided}
            return argparse.Namespace(**{f.name: f.default if f.default is not dataclasses.MISSING
                                         else f.default_factory() for f in dataclasses.fields(obj)})
        parameters = inspect.signature(obj).parameters
        return argparse.Namespace(**{name: p.default for name, p in parameters.items()})

    class Formatter(argparse.HelpFormatter):
        def _get_help_string(self, action: argparse.Action) -> str | None:
            text = action.help
            if text and "{" in text:
                text = text.format_map({name: values(target) for name, target in sources.items()})
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
    """A run report's top-level warnings, on stderr, one line each (a log is not wrapped at its width)."""
    for warning in report.get("warnings") or ():
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


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
