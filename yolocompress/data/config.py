"""``data.yaml`` loading, with the keys and path rules Ultralytics users know.

Keys: ``path`` (dataset root; relative to the yaml's own folder, default that folder), ``train``,
``val``, optional ``test`` (each a folder of images, a ``.txt`` list of image paths, or a list of
those; relative to ``path``), ``names`` (a list, or a dict ``{int: name}`` with keys 0..n-1) and
optional ``nc`` (must equal the number of names). Other keys (``download``, ...) are ignored.

Deviation from YOLOv5: a relative ``path`` is resolved against the yaml's folder, not the YOLOv5 checkout.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


from yolocompress.errors import InputError
from yolocompress.yamlfile import load_yaml_file

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataConfig:
    """A parsed and validated ``data.yaml``.

    Attributes:
        root: absolute dataset root (the resolved ``path`` key).
        train, val, test: absolute image sources of each split (folders or ``.txt`` lists); ``test``
            may be empty.
        nc: number of classes.
        names: class names, index = class id.
        yaml_path: the file this was loaded from (``None`` when built from a dict).
    """

    root: Path
    train: list[Path]
    val: list[Path]
    test: list[Path]
    nc: int
    names: list[str]
    yaml_path: Path | None = field(default=None, compare=False)

    def split(self, name: str) -> list[Path]:
        """The image sources of split ``name`` (``train``, ``val`` or ``test``); InputError if absent."""
        if name not in SPLITS:
            raise InputError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        sources = getattr(self, name)
        if not sources:
            where = f" in {self.yaml_path}" if self.yaml_path else ""
            raise InputError(f"data.yaml has no {name!r} split{where}")
        return sources


def load_data_config(path: str | os.PathLike) -> DataConfig:
    """Read and validate a ``data.yaml``; every problem is an InputError with one clear message."""
    path = Path(path)
    raw = load_yaml_file(path, "data.yaml")  # bounded: no alias bombs, duplicate keys or huge files
    if not isinstance(raw, Mapping):
        raise InputError(f"{path}: expected a mapping of keys (path, train, val, names), got {type(raw).__name__}")
    return data_config_from_dict(raw, base_dir=path.parent.resolve(), yaml_path=path.resolve())


def as_data_config(data: "DataConfig | str | os.PathLike") -> DataConfig:
    """``data`` itself when it is a ``DataConfig``, else the ``data.yaml`` it names, loaded."""
    return data if isinstance(data, DataConfig) else load_data_config(data)


def data_config_from_dict(raw: Mapping[str, Any], base_dir: str | os.PathLike,
                          yaml_path: Path | None = None) -> DataConfig:
    """Validate a parsed ``data.yaml`` mapping; relative ``path`` resolves against ``base_dir``."""
    where = str(yaml_path) if yaml_path else "data config"
    missing = [k for k in ("train", "val", "names") if raw.get(k) in (None, "", [])]
    if missing:
        raise InputError(f"{where}: missing key(s) {', '.join(missing)} (need train, val, names)")
    names = _parse_names(raw["names"], where)
    if "nc" in raw and raw["nc"] is not None:
        nc = raw["nc"]
        if isinstance(nc, bool) or not isinstance(nc, int):
            raise InputError(f"{where}: nc must be an integer, got {nc!r}")
        if nc != len(names):
            raise InputError(f"{where}: nc is {nc} but names lists {len(names)} classes")
    root_value = raw.get("path") or "."
    if not isinstance(root_value, (str, os.PathLike)):
        raise InputError(f"{where}: path must be a string, got {root_value!r}")
    root = Path(root_value).expanduser()
    root = (root if root.is_absolute() else Path(base_dir) / root).resolve()
    if not root.is_dir():
        raise InputError(f"{where}: dataset root {root} (key 'path') is not a folder")
    splits = {name: _parse_sources(raw.get(name), name, root, where) for name in SPLITS}
    return DataConfig(root=root, train=splits["train"], val=splits["val"], test=splits["test"],
                      nc=len(names), names=names, yaml_path=yaml_path)


def _parse_names(value: Any, where: str) -> list[str]:
    """Class names from a list or a ``{int: name}`` dict with keys 0..n-1."""
    if isinstance(value, (list, tuple)):
        names = [str(v) for v in value]
    elif isinstance(value, Mapping):
        keys = list(value)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            raise InputError(f"{where}: names keys must be integers (e.g. 0: person), got {keys!r}")
        if sorted(keys) != list(range(len(keys))):
            raise InputError(f"{where}: names keys must be 0..{len(keys) - 1} without gaps, got {sorted(keys)}")
        names = [str(value[i]) for i in range(len(keys))]
    else:
        raise InputError(f"{where}: names must be a list or a dict {{id: name}}, got {type(value).__name__}")
    if not names:
        raise InputError(f"{where}: names is empty")
    return names


def _parse_sources(value: Any, split: str, root: Path, where: str) -> list[Path]:
    """Resolve one split's image sources (folder, .txt list, or a list of them) against ``root``."""
    if value in (None, "", []):
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    sources = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise InputError(f"{where}: {split} entries must be paths, got {item!r}")
        p = Path(item).expanduser()
        p = (p if p.is_absolute() else root / p).resolve()
        if p.is_dir() or (p.is_file() and p.suffix.lower() == ".txt"):
            sources.append(p)
        elif p.is_file():
            raise InputError(f"{where}: {split} source {p} must be an image folder or a .txt list of images")
        else:
            raise InputError(f"{where}: {split} images not found: {p}")
    return sources
