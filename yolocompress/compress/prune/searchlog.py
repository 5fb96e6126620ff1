"""The record of a pruning search, so that a killed search continues where it stopped.

One JSON object per line: a header with the fingerprint of what every score depends on (the model's weights,
the data set's splits and the scoring settings), then one row per scored sub-net (``task`` ``probes`` or
``eagleeye``, its index and channel counts, its scores). A row is appended and flushed as soon as its sub-net
is scored; a half-written last line (a kill during the write) is ignored. A row is reused only when its
task, index and channel counts all match the sub-net about to be scored, so the resumed search picks exactly
what an uninterrupted one with the same seed would.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn

from yolocompress.errors import InputError

# the settings a score depends on (the strategies themselves are checked row by row through their counts)
SCORING_FIELDS = ("imgsz", "calib_batches", "calib_batch", "eval_images", "eval_batch", "eval_split", "metric",
                  "seed", "conf_thres")


def search_fingerprint(model: nn.Module, data: Any, settings: Mapping[str, Any]) -> str:
    """sha256 over the model's tensors, the data set's split sources and class names, and the scoring
    ``settings`` (``SCORING_FIELDS``: ``PruneConfig``'s ``imgsz``, ``seed``, ``conf_thres`` and its
    ``search`` settings, as one flat mapping)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    described = {"splits": {s: [str(p) for p in getattr(data, s, [])] for s in ("train", "val", "test")},
                 "names": list(getattr(data, "names", [])),
                 "settings": {k: settings.get(k) for k in SCORING_FIELDS}}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _counts_key(counts: Mapping[int, int]) -> list[list[int]]:
    return sorted([int(k), int(v)] for k, v in counts.items())


class SearchLog:
    """Rows of scored sub-nets kept in ``path`` (see the module doc). ``resume=False`` starts a new file."""

    def __init__(self, path: str | os.PathLike, fingerprint: str, resume: bool) -> None:
        self.path = Path(path)
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}
        if resume and self.path.is_file():
            self._read(fingerprint)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"fingerprint": fingerprint}) + "\n", encoding="utf-8")

    def _read(self, fingerprint: str) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if not isinstance(header, dict) or header.get("fingerprint") != fingerprint:
            raise InputError(f"{self.path} records a search of another model, data set or scoring settings; "
                             "run without --resume to start a new search")
        for line in lines[1:]:
            try:
                row = json.loads(line)
                self.rows[(str(row["task"]), int(row["row"]["index"]))] = row
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut short by a kill

    def get(self, task: str, index: int, counts: Mapping[int, int]) -> dict[str, Any] | None:
        """The recorded row of sub-net ``index`` of ``task``, when its channel counts are ``counts``."""
        found = self.rows.get((task, index))
        if found is None or found.get("counts") != _counts_key(counts):
            return None
        return dict(found["row"])

    def add(self, task: str, counts: Mapping[int, int], row: Mapping[str, Any]) -> None:
        """Append one scored sub-net's row and flush it to disk."""
        record = {"task": task, "counts": _counts_key(counts), "row": dict(row)}
        self.rows[(task, int(row["index"]))] = record
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


__all__ = ["SCORING_FIELDS", "SearchLog", "search_fingerprint"]
