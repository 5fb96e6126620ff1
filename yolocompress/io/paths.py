"""Pre-flight checks of a command's paths: inputs exist, outputs can be written, before any work starts.

Light on purpose (no torch, no numpy): the CLI calls :func:`preflight` right after parsing, so a missing file,
a YAML input that does not parse (an alias bomb included) or an unwritable output is reported in a fraction
of a second and nothing is written. Every failure is one :class:`~yolocompress.errors.InputError` line naming
the path, in one wording per kind:
``<what> not found: <path>`` and ``cannot write <what> <path>: <reason>``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Optional, Tuple

from yolocompress.errors import InputError

# (what, path): ``what`` names the input or option in the message ("model file", "data.yaml", "--json");
# a ``None`` path (an option not given) is skipped.
Named = Tuple[str, Optional[str]]

# Suffixes that name a file on disk rather than a shipped model config or recipe (``yolov5n``, ``demo``; a
# shipped config may also be named ``yolov5n.yaml``, so YAML names are left to the library).
FILE_SUFFIXES = (".pt", ".pth", ".onnx", ".json")
# Inputs with these suffixes are parsed in the pre-flight (the bounded loader, yaml only), so that a YAML
# bomb, a duplicate key or a syntax error is reported before the heavy imports; the library checks the
# contents.
YAML_SUFFIXES = (".yaml", ".yml")


def names_a_file(text: str) -> bool:
    """Whether a MODEL_OR_CONFIG style argument is a path (a known suffix or a folder part) rather than a
    shipped name such as ``yolov5n`` (which only the library can resolve)."""
    path = Path(text)
    return path.suffix.lower() in FILE_SUFFIXES or len(path.parts) > 1 or path.exists()


def require_input(what: str, path: str | os.PathLike, folder_ok: bool = False) -> Path:
    """``path`` exists and is a file (or, with ``folder_ok``, a folder); else ``InputError``."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if p.is_dir() and not folder_ok:
        raise InputError(f"{what} is a folder, not a file: {p}")
    return p


def _existing_ancestor(path: Path) -> Path:
    """The nearest part of ``path`` (itself excluded) that exists on disk."""
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")  # pragma: no cover - the root always exists


def require_writable(what: str, path: str | os.PathLike, folder: bool = False,
                     expected_bytes: int | None = None) -> Path:
    """``path`` can be created (or replaced) and written: a file, or with ``folder`` a folder.

    Refused, with ``InputError``: a file output that is a folder (or a folder output that is a file); a parent
    that is a file; a nearest existing parent folder that is not writable; an existing read-only file; and,
    when ``expected_bytes`` is given, less free space than that in the target file system. Nothing is created.
    """
    p = Path(path)
    if not folder and (str(path) == "" or p.name in ("", ".", "..")):
        raise InputError(f"cannot write {what} {str(path)!r}: not a file name")
    if p.exists():
        if folder and not p.is_dir():
            raise InputError(f"cannot write {what} {p}: it is a file, not a folder")
        if not folder and p.is_dir():
            raise InputError(f"cannot write {what} {p}: it is a folder")
        if not os.access(p, os.W_OK) or (folder and not os.access(p, os.X_OK)):
            raise InputError(f"cannot write {what} {p}: permission denied")
        if not folder and not os.access(p.parent, os.W_OK):  # atomic writes rename a temporary file in
            raise InputError(f"cannot write {what} {p}: its folder {p.parent} is not writable")
        base = p if folder else p.parent
    else:
        base = _existing_ancestor(p)
        if not base.is_dir():
            raise InputError(f"cannot write {what} {p}: {base} is a file, not a folder")
        if not os.access(base, os.W_OK | os.X_OK):
            raise InputError(f"cannot write {what} {p}: {base} is not writable")
    if expected_bytes:
        free = shutil.disk_usage(base).free
        if free < expected_bytes:
            raise InputError(f"cannot write {what} {p}: {free / 1e6:.1f} MB free in {base}, about "
                             f"{expected_bytes / 1e6:.1f} MB needed")
    return p


def preflight(inputs: Iterable[Named] = (), outputs: Iterable[Named] = (), folders: Iterable[Named] = (),
              input_folders: Iterable[Named] = (), expected_bytes: int | None = None) -> None:
    """Check a command's paths before any work, in order: ``inputs`` (files that must exist; YAML ones must
    parse), ``input_folders`` (a file or a folder that must exist), ``outputs`` (files to write;
    ``expected_bytes``, when known, is the free space each needs) and ``folders`` (output folders to create
    or fill).
    The first failure raises ``InputError``; entries whose path is ``None`` or ``""`` are skipped."""
    for what, path in inputs:
        if path:
            require_input(what, path)
            if Path(path).suffix.lower() in YAML_SUFFIXES:
                from yolocompress.yamlfile import load_yaml_file

                load_yaml_file(path, what)  # bounded: an alias bomb or a duplicate key fails here, in ms
    for what, path in input_folders:
        if path:
            require_input(what, path, folder_ok=True)
    for what, path in outputs:
        if path is not None:
            require_writable(what, path, expected_bytes=expected_bytes)
    for what, path in folders:
        if path:
            require_writable(what, path, folder=True)


def file_size(path: str | os.PathLike | None) -> int | None:
    """Size of an existing file in bytes (``None`` when there is none): an estimate of an output's size."""
    if path and Path(path).is_file():
        return Path(path).stat().st_size
    return None
