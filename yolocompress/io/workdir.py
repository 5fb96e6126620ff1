"""Temporary work folders and atomic-write leftovers that a killed run cannot litter for ever.

Every temporary name carries its owner: ``pid<PID>@<host>.`` (a folder ``yc-prune-ft-pid123@box.k2j4``, a file
``.last.pt.pid123@box.x8f1.tmp``). A run removes its own on success or on an exception; what a ``kill -9``
leaves is removed by the next run that makes a work folder (or writes a file atomically into the same folder),
once the owner process is gone. Entries of another host, or of a live process, are never touched.

Work folders live under :func:`temp_root`: ``$YOLOCOMPRESS_TMP``, else ``<cache>/tmp`` with
:func:`cache_dir` (``$YOLOCOMPRESS_CACHE`` or ``~/.cache/yolocompress``), not in the system temp folder.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

_OWNER = re.compile(r"pid(\d+)@([A-Za-z0-9-]*)\.")


def cache_dir() -> Path:
    """yolocompress's cache folder: ``$YOLOCOMPRESS_CACHE``, else ``$XDG_CACHE_HOME/yolocompress`` or
    ``~/.cache/yolocompress``."""
    explicit = os.environ.get("YOLOCOMPRESS_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "yolocompress"


def temp_root() -> Path:
    """Where work folders go: ``$YOLOCOMPRESS_TMP``, else ``cache_dir() / "tmp"``."""
    explicit = os.environ.get("YOLOCOMPRESS_TMP")
    return Path(explicit) if explicit else cache_dir() / "tmp"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def owner_tag() -> str:
    """``pid<PID>@<host>.``: the part of a temporary name that says which process made it."""
    return f"pid{os.getpid()}@{_host()}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, as another user's process
        return True
    return True


def is_stale(name: str) -> bool:
    """Whether ``name`` carries an owner tag of this host whose process is gone."""
    match = _OWNER.search(name)
    if match is None or match.group(2) != _host():
        return False
    return not _pid_alive(int(match.group(1)))


def remove_stale(folder: str | os.PathLike, suffix: str = "") -> list[Path]:
    """Remove the entries of ``folder`` (ending in ``suffix``) left by dead processes of this host; returns
    what was removed. A missing folder or an entry that vanishes meanwhile is fine."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.endswith(suffix) or not is_stale(entry.name):
            continue
        path = Path(entry.path)
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


@contextlib.contextmanager
def work_dir(prefix: str, parent: str | os.PathLike | None = None) -> Iterator[Path]:
    """A fresh folder ``<parent>/<prefix>pid<PID>@<host>.<random>`` (``parent``: :func:`temp_root`), removed
    when the block ends, however it ends; stale folders of dead runs in ``parent`` are removed first."""
    root = Path(parent) if parent is not None else temp_root()
    root.mkdir(parents=True, exist_ok=True)
    remove_stale(root)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["cache_dir", "is_stale", "owner_tag", "remove_stale", "temp_root", "work_dir"]
