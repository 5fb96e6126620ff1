"""Rich tables shared by the commands that print results."""
from __future__ import annotations

from typing import Any

from rich.table import Table


def eval_table(title: str, result: Any) -> Table:
    """An mAP table (all classes, then per class) for an ``EvalResult``."""
    table = Table(title=f"{title} @ {result.imgsz}px")
    for column in ("class", "images", "instances", "P", "R", "mAP50", "mAP50-95"):
        table.add_column(column, justify="left" if column == "class" else "right")
    table.add_row("all", str(result.images), str(result.instances), f"{result.precision:.3f}",
                  f"{result.recall:.3f}", f"{result.map50:.3f}", f"{result.map50_95:.3f}", style="bold")
    for c in result.per_class:
        table.add_row(c["name"], str(c["images"]), str(c["instances"]), f"{c['P']:.3f}", f"{c['R']:.3f}",
                      f"{c['map50']:.3f}", f"{c['map50_95']:.3f}")
    speed = result.speed_ms
    table.caption = (f"per image: {speed['pre']:.1f} ms pre, {speed['inference']:.1f} ms inference, "
                     f"{speed['nms']:.1f} ms NMS, {speed.get('metrics', 0.0):.1f} ms metrics")
    return table
