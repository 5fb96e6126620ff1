"""Progress of long library calls, as events: library code reports, the CLI draws.

A long-running function (training, evaluation, the pruning search) takes ``on_progress: ProgressCallback |
None`` and calls it with a :class:`ProgressEvent` after each unit of work; it never draws anything itself.
The command line turns the events into progress bars in a terminal and into plain periodic lines in a log
(``yolocompress.cli.common.progress_printer``); library users pass their own callback, or none.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` units of ``task`` (``"epoch 3/20"``, ``"eval"``, ``"eagleeye"``, ...).

    ``info``: figures to show beside it (running losses, the best score so far); ``message``: a line worth
    printing as it is (an epoch's metrics); ``final``: the task has ended.
    """

    task: str
    done: int
    total: int
    unit: str = "it"
    info: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""
    final: bool = False


ProgressCallback = Callable[[ProgressEvent], None]


def report(callback: ProgressCallback | None, task: str, done: int, total: int, unit: str = "it",
           info: Mapping[str, Any] | None = None, message: str = "", final: bool = False) -> None:
    """Send one event to ``callback`` (nothing when it is ``None``)."""
    if callback is not None:
        callback(ProgressEvent(task, done, total, unit, dict(info or {}), message, final))


__all__ = ["ProgressCallback", "ProgressEvent", "report"]
