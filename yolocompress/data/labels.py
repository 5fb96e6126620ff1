"""YOLO label files: parsing with checks, the images->labels path rule, and the per-split report.

A label file has one object per line: ``class cx cy w h`` (normalised to the image, 0..1), or a
polygon ``class x1 y1 x2 y2 ...`` (at least 3 points) which becomes its bounding box, as YOLOv5 does
with segment labels. An image whose label file has any bad line is skipped as a whole (an image with
half its objects unlabelled would teach or score wrongly); duplicate rows are dropped with a warning.

Coordinates may exceed [0, 1] by at most ``COORD_TOL`` (float round-off in exported labels) and are
then clipped; YOLOv5 allows no excess at all. As in YOLOv5, each value is checked, not the box edges:
``cx + w/2`` may pass 1 and is clipped when the box is used.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from yolocompress.errors import InputError

COORD_TOL = 1e-6
MAX_ISSUES = 50  # offending files kept in a report (the counts are always complete)


class LabelError(InputError):
    """A label file is malformed; the message says which line and why (a scan skips the image)."""


def label_path_for(image: str | os.PathLike) -> Path:
    """Label file of an image: the last ``/images/`` component becomes ``/labels/``, extension ``.txt``.

    Without an ``images`` folder in the path the label sits beside the image (as YOLOv5).
    """
    s = os.fspath(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        head, tail = s.rsplit(sa, 1)
        s = head + sb + tail
    return Path(s).with_suffix(".txt")


def parse_label_text(text: str, nc: int) -> tuple[np.ndarray, int]:
    """Parse and check the contents of one label file.

    Returns ``(labels, duplicates)``: ``labels (float32 ndarray[n, 5])`` rows ``class, cx, cy, w, h``
    normalised to the image, duplicate rows removed (first occurrence kept, order preserved), and the
    number of duplicates dropped. Raises :class:`LabelError` naming the first bad line.
    """
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        rows.append(_parse_line(parts, lineno, nc))
    if not rows:
        return np.zeros((0, 5), dtype=np.float32), 0
    labels = np.asarray(rows, dtype=np.float32)
    _, first = np.unique(labels, axis=0, return_index=True)
    if len(first) < len(labels):
        keep = np.sort(first)
        return labels[keep], len(labels) - len(keep)
    return labels, 0


def _parse_line(parts: list[str], lineno: int, nc: int) -> list[float]:
    """One label line -> ``[class, cx, cy, w, h]``, or LabelError."""
    n = len(parts)
    if n != 5 and (n < 7 or n % 2 == 0):
        raise LabelError(f"line {lineno}: expected 5 values (class cx cy w h) or a polygon "
                         f"(class x1 y1 x2 y2 x3 y3 ...), got {n}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        bad = next(p for p in parts if not _is_float(p))
        raise LabelError(f"line {lineno}: non-numeric value {bad!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise LabelError(f"line {lineno}: non-finite value")
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < nc:
        raise LabelError(f"line {lineno}: class {parts[0]} out of range (expected an integer in 0..{nc - 1})")
    coords = values[1:]
    for v in coords:
        if not -COORD_TOL <= v <= 1 + COORD_TOL:
            raise LabelError(f"line {lineno}: coordinate {v:g} outside [0, 1] (labels must be normalised)")
    coords = [min(max(v, 0.0), 1.0) for v in coords]
    if n == 5:
        return [cls, *coords]
    xs, ys = coords[0::2], coords[1::2]
    x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
    return [cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class LabelIssue:
    """One offending file: ``path``, the ``reason``, and whether the image was ``skipped``."""

    path: str
    reason: str
    skipped: bool = True


@dataclass(frozen=True)
class LabelScanResult:
    """What a scan of one split found.

    ``images`` files were found; ``ok`` have at least one box; ``missing`` have no label file and
    ``empty`` an empty one (both are kept as background images, as YOLOv5 does); ``corrupt`` images
    (missing, unreadable, undecodable) and ``bad_labels`` (a malformed label file) were skipped.
    ``duplicates`` counts duplicate label rows dropped, ``instances`` the boxes in usable images.
    ``issues`` lists the first offending files (at most ``MAX_ISSUES``), skipped or only warned about.
    """

    split: str
    images: int
    ok: int
    missing: int
    empty: int
    corrupt: int
    bad_labels: int
    duplicates: int
    instances: int
    issues: tuple[LabelIssue, ...] = ()

    @property
    def usable(self) -> int:
        """Images a loader will use (labelled plus background)."""
        return self.ok + self.missing + self.empty

    @property
    def skipped(self) -> int:
        return self.corrupt + self.bad_labels

    def problems(self) -> tuple[str, ...]:
        """What makes the split unfit, one phrase each with its count (empty: nothing found): corrupt images,
        images with bad labels (both skipped), or no labelled image at all."""
        found = []
        if self.corrupt:
            found.append(f"{self.corrupt} corrupt image{'s' if self.corrupt != 1 else ''} (skipped)")
        if self.bad_labels:
            plural = "s" if self.bad_labels != 1 else ""
            found.append(f"{self.bad_labels} image{plural} with bad labels (skipped)")
        if not self.ok:
            found.append(f"no labelled image ({self.usable} usable, all background: an empty or misplaced "
                         "labels folder?)")
        return tuple(found)

    def summary(self) -> str:
        """One line: ``val: 128 images, 120 labelled, 8 background, 0 corrupt, 0 bad labels ...``."""
        text = (f"{self.split}: {self.images} images, {self.ok} labelled ({self.instances} boxes), "
                f"{self.missing + self.empty} background ({self.missing} without label file, {self.empty} empty), "
                f"{self.corrupt} corrupt, {self.bad_labels} with bad labels")
        if self.duplicates:
            text += f", {self.duplicates} duplicate rows dropped"
        return text

    def to_dict(self) -> dict:
        out = asdict(self)
        out["issues"] = [asdict(i) for i in self.issues]
        out["usable"] = self.usable
        return out
