"""Scan a split once: list its images, decode each to check it, read and check its labels.

The result (:class:`SplitIndex`) is cached in memory and in a ``*.yolocompress.cache`` file beside the
labels folder (or beside the split's ``.txt`` list), keyed by every image's and label's path, size and
modification time, so an edited label file triggers a rescan. The cache is a plain ``.npz`` read with
``allow_pickle=False``; an unwritable dataset folder only costs a rescan next time.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from yolocompress.data.config import DataConfig
from yolocompress.data.images import IMG_FORMATS, ImageDecodeError, decode_rgb
from yolocompress.data.labels import (COORD_TOL, MAX_ISSUES, LabelError, LabelIssue, LabelScanResult,
                                      label_path_for, parse_label_text)
from yolocompress.errors import EmptySplitError, InputError
from yolocompress.io.atomic import atomic_path

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
CACHE_SUFFIX = ".yolocompress.cache"
_MEMO: OrderedDict[str, "SplitIndex"] = OrderedDict()
_MEMO_SIZE = 8
_PARALLEL_MIN = 256  # scan with worker processes from this many images on

# per-image status codes
OK, MISSING, EMPTY, CORRUPT, BAD_LABELS = range(5)


@dataclass(frozen=True)
class SplitIndex:
    """The usable images of one split and their labels, in file order (sorted path strings).

    Attributes:
        split: split name (``train``, ``val``, ``test``).
        images: usable image files.
        labels: per image ``float32 ndarray[n, 5]`` rows ``class, cx, cy, w, h`` normalised to the image.
        image_hw (int64 ndarray[N, 2]): original ``(h, w)`` in pixels, EXIF orientation applied.
        report: counts and offending files of the scan.
        nc, names: the classes of the data config.
    """

    split: str
    images: list[Path]
    labels: list[np.ndarray]
    image_hw: np.ndarray
    report: LabelScanResult
    nc: int
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)


def list_images(sources: Sequence[Path]) -> list[Path]:
    """Image files of a split: folders searched recursively, ``.txt`` lists read (relative entries
    resolve against the list's folder; YOLOv5 only does so for ``./`` entries). Sorted, deduplicated,
    filtered to ``IMG_FORMATS`` extensions."""
    found: list[str] = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            found += glob.glob(os.path.join(glob.escape(str(src)), "**", "*.*"), recursive=True)
        elif src.is_file():
            try:
                lines = src.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"cannot read image list {src}: {exc}") from exc
            for line in lines:
                line = line.strip()
                if line:
                    p = Path(line).expanduser()
                    found.append(str(p if p.is_absolute() else (src.parent / p).resolve()))
        else:
            raise InputError(f"image source not found: {src}")
    files = sorted({f for f in found if f.rsplit(".", 1)[-1].lower() in IMG_FORMATS})
    return [Path(f) for f in files]


def scan_split(data: DataConfig, split: str = "val", *, cache: bool = True,
               workers: int | None = None) -> SplitIndex:
    """Scan one split of ``data`` (see module doc). Never raises for bad samples: they are counted in
    the report and logged; InputError only if the split has no image files at all."""
    sources = data.split(split)
    images = list_images(sources)
    if not images:
        raise EmptySplitError(f"no images found in {split} split: {', '.join(map(str, sources))} "
                         f"(extensions {', '.join(sorted(IMG_FORMATS))})")
    cache_file = _cache_file(sources, images) if cache else None
    return scan_images(images, data.nc, data.names, split=split, cache_file=cache_file, workers=workers)


def load_split(data: DataConfig, split: str = "val", *, cache: bool = True,
               workers: int | None = None, require_labels: bool = True) -> SplitIndex:
    """:func:`scan_split`, then InputError if no usable image is left or (``require_labels``) no image has a
    box: training or scoring on such a split would run and report nothing (mAP 0) without a word."""
    index = scan_split(data, split, cache=cache, workers=workers)
    if not index.images:
        first = f"; first problem: {index.report.issues[0].path}: {index.report.issues[0].reason}" \
            if index.report.issues else ""
        raise InputError(f"no usable images in the {split} split ({index.report.summary()}){first}")
    if require_labels and not index.report.ok:
        raise InputError(f"the {split} split has no labels: none of its {len(index.images)} usable images has "
                         f"a box (labels are read from {label_path_for(index.images[0])} and the like)")
    return index


def scan_images(images: Sequence[Path], nc: int, names: Sequence[str], *, split: str = "val",
                cache_file: Path | None = None, workers: int | None = None) -> SplitIndex:
    """Check ``images`` and their labels, using the memory and disk caches when they are current."""
    key = _cache_key(images, nc)
    memo_key = f"{split}:{key}:{list(names)}"
    if memo_key in _MEMO:
        _MEMO.move_to_end(memo_key)
        return _MEMO[memo_key]
    index = _read_cache(cache_file, key, split, nc, names) if cache_file else None
    if index is None:
        index = _scan(images, nc, names, split, workers)
        if cache_file is not None:
            _write_cache(cache_file, key, index)
    _log_report(index.report)
    _MEMO[memo_key] = index
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return index


def check_image(image: str | Path, nc: int) -> tuple[int, np.ndarray | None, tuple[int, int] | None, int, str]:
    """Check one image and its label file.

    Returns ``(status, labels, (h, w), duplicates, note)``: ``status`` one of OK, MISSING, EMPTY (usable)
    or CORRUPT, BAD_LABELS (skipped, ``labels`` and ``hw`` None); ``note`` is the reason or a warning.
    """
    try:
        img, note = decode_rgb(image)
    except ImageDecodeError as exc:
        return CORRUPT, None, None, 0, str(exc)
    hw = (int(img.shape[1]), int(img.shape[2]))
    label_file = label_path_for(image)
    if not label_file.is_file():
        return MISSING, np.zeros((0, 5), np.float32), hw, 0, note
    try:
        labels, dup = parse_label_text(label_file.read_text(encoding="utf-8-sig"), nc)
    except (OSError, UnicodeDecodeError) as exc:
        return BAD_LABELS, None, None, 0, f"cannot read label file {label_file}: {exc}"
    except LabelError as exc:
        return BAD_LABELS, None, None, 0, f"{label_file.name}: {exc}"
    if dup:
        note = "; ".join(filter(None, [note, f"{dup} duplicate label rows removed"]))
    return (OK if len(labels) else EMPTY), labels, hw, dup, note


class _CheckDataset(torch.utils.data.Dataset):
    """Lets a DataLoader fan :func:`check_image` out to worker processes."""

    def __init__(self, images: Sequence[Path], nc: int) -> None:
        self.images, self.nc = [str(p) for p in images], nc

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return check_image(self.images[i], self.nc)


def _identity(x):
    return x


def _scan(images: Sequence[Path], nc: int, names: Sequence[str], split: str,
          workers: int | None) -> SplitIndex:
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if len(images) >= _PARALLEL_MIN else 0
    loader = torch.utils.data.DataLoader(_CheckDataset(images, nc), batch_size=None, num_workers=workers,
                                         collate_fn=_identity)
    counts = [0] * 5
    dups = instances = 0
    issues: list[LabelIssue] = []
    kept, labels, hws = [], [], []
    for path, (status, lb, hw, dup, note) in zip(images, loader):
        counts[status] += 1
        dups += dup
        if status in (CORRUPT, BAD_LABELS):
            if len(issues) < MAX_ISSUES:
                issues.append(LabelIssue(str(path), note, skipped=True))
            continue
        if note and len(issues) < MAX_ISSUES:
            issues.append(LabelIssue(str(path), note, skipped=False))
        kept.append(Path(path))
        labels.append(lb)
        hws.append(hw)
        instances += len(lb)
    report = LabelScanResult(split=split, images=len(images), ok=counts[OK], missing=counts[MISSING],
                             empty=counts[EMPTY], corrupt=counts[CORRUPT], bad_labels=counts[BAD_LABELS],
                             duplicates=dups, instances=instances, issues=tuple(issues))
    image_hw = np.asarray(hws, dtype=np.int64).reshape(-1, 2)
    return SplitIndex(split, kept, labels, image_hw, report, nc, list(names))


def _cache_file(sources: Sequence[Path], images: Sequence[Path]) -> Path:
    """``<list>.yolocompress.cache`` beside a single ``.txt`` source, else beside the first labels folder."""
    if len(sources) == 1 and Path(sources[0]).is_file():
        return Path(sources[0]).with_suffix(CACHE_SUFFIX)
    labels_dir = label_path_for(images[0]).parent
    return labels_dir.with_name(labels_dir.name + CACHE_SUFFIX)


def _cache_key(images: Sequence[Path], nc: int) -> str:
    """Hash of every image's and label's path, size and mtime, plus what changes the scan's outcome."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|nc={nc}|tol={COORD_TOL}".encode())
    for image in images:
        for f in (Path(image), label_path_for(image)):
            try:
                st = f.stat()
                h.update(f"|{f}:{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(f"|{f}:-".encode())
    return h.hexdigest()


def _write_cache(path: Path, key: str, index: SplitIndex) -> None:
    if not path.parent.is_dir():
        return
    counts = np.asarray([len(lb) for lb in index.labels], dtype=np.int64)
    labels = np.concatenate(index.labels, 0) if index.labels else np.zeros((0, 5), np.float32)
    meta = {"version": CACHE_VERSION, "key": key, "report": index.report.to_dict()}
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), images=np.array([str(p) for p in index.images], dtype=str),
                     image_hw=index.image_hw, counts=counts, labels=labels.astype(np.float32))
    except OSError as exc:
        logger.warning("label cache not written (%s): %s", path, exc)


def _read_cache(path: Path, key: str, split: str, nc: int, names: Sequence[str]) -> SplitIndex | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("version") != CACHE_VERSION or meta.get("key") != key:
                return None
            images = [Path(p) for p in z["images"].tolist()]
            image_hw = z["image_hw"].astype(np.int64).reshape(-1, 2)
            counts = z["counts"]
            labels = np.split(z["labels"].astype(np.float32), np.cumsum(counts)[:-1]) if len(counts) else []
        r = dict(meta["report"])
        issues = tuple(LabelIssue(**i) for i in r.pop("issues"))
        r.pop("usable", None)
        report = LabelScanResult(**{**r, "split": split, "issues": issues})
    except Exception as exc:  # any damage: rescan
        logger.debug("ignoring unreadable label cache %s: %s", path, exc)
        return None
    return SplitIndex(split, images, [np.ascontiguousarray(lb) for lb in labels], image_hw, report, nc,
                      list(names))


def _log_report(report: LabelScanResult) -> None:
    logger.info("%s", report.summary())
    for issue in report.issues[:10]:
        logger.warning("%s%s: %s", "skipped " if issue.skipped else "", issue.path, issue.reason)
    extra = len(report.issues) - 10 + max(0, report.skipped - sum(i.skipped for i in report.issues))
    if extra > 0:
        logger.warning("... and %d more problem(s) in the %s split", extra, report.split)
