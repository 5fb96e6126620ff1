"""``results.csv``: a training run's per-epoch rows (losses, metrics, learning rates), one file per run."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

from yolocompress.io.atomic import atomic_write_text


def write_results_csv(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Write ``history`` (one dict per epoch) atomically to ``path``: the union of the rows' keys as columns
    in the order they first appear, floats with 6 significant digits, missing values empty."""
    fields: list[str] = []
    for row in history:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else v)
                         for k, v in row.items()})
    atomic_write_text(buffer.getvalue(), path)
