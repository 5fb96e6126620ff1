"""One bounded YAML loader for every user file: data.yaml, recipes, hyp files and model configs.

It sits in the bottom layer (beside ``errors``) so that ``models`` can read model configs with it.

``yaml.safe_load`` builds no Python objects, but it still expands aliases without limit (a "billion laughs"
document of a few hundred bytes takes minutes and gigabytes), keeps the last of two duplicate keys without a
word and accepts a document of any size. This loader refuses all three, quickly, with one line each
(``InputError``, exit 2): more than ``MAX_ALIASES`` alias uses, a duplicate key (with its line), a file larger
than ``MAX_BYTES``; and a syntax error names its line and column.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from yolocompress.errors import InputError

MAX_BYTES = 2 * 1024 * 1024
# A hand-written recipe or data.yaml uses a handful of aliases, if any. 16 bound the expanded size to a
# few hundred nodes (k levels of 16/k aliases each), while a bomb needs thousands.
MAX_ALIASES = 16


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts alias uses and refuses duplicate mapping keys."""

    def __init__(self, stream: Any, where: str) -> None:
        super().__init__(stream)
        self.where = where
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102 - yaml API
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise InputError(f"{self.where}: more than {MAX_ALIASES} YAML aliases (line {mark.line + 1}); "
                                 "refusing to expand them (an alias bomb?)")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:  # noqa: D102 - yaml API
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if duplicate:
                raise InputError(f"{self.where}: duplicate key {key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str, where: str = "<yaml>") -> Any:
    """Parse ``text`` with the bounds above; ``where`` names the source in error messages."""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise InputError(f"{where}: larger than {MAX_BYTES // (1024 * 1024)} MB; not a hand-written YAML file")
    loader = None
    try:
        loader = _BoundedLoader(text, where)  # its reader refuses control characters at once
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InputError(f"{where}: not valid YAML{at}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{where}: not valid YAML ({first})") from None
    except RecursionError:
        raise InputError(f"{where}: YAML nested too deeply") from None
    except (ValueError, IndexError, TypeError, KeyError, OverflowError) as exc:
        # a tagged scalar's constructor (an empty ``!!int``, a ``!!timestamp`` of month 13) fails with a plain
        # Python error
        raise InputError(f"{where}: not valid YAML (a value cannot be read: {type(exc).__name__} "
                         f"{exc})") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml_text(path: str | os.PathLike, what: str = "YAML file") -> str:
    """The text of a YAML file, refused (``InputError``) when missing, unreadable, not UTF-8 or over the size
    bound."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    if path.stat().st_size > MAX_BYTES:
        raise InputError(f"{path}: larger than {MAX_BYTES // (1024 * 1024)} MB; not a hand-written YAML file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_yaml_file(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """Read and parse a YAML file with the bounds above (see :func:`read_yaml_text`)."""
    return load_yaml_text(read_yaml_text(path, what), str(path))


def load_yaml_mapping(path: str | os.PathLike, what: str = "YAML file",
                      expected: str = "keys") -> dict[str, Any]:
    """:func:`load_yaml_file` for a document that must be a mapping (an empty file is ``{}``);
    ``expected`` says what the mapping holds, for the error message."""
    raw = load_yaml_file(path, what)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: {what} must be a mapping of {expected}, got {type(raw).__name__}")
    return raw


__all__ = ["MAX_ALIASES", "MAX_BYTES", "load_yaml_file", "load_yaml_mapping", "load_yaml_text",
           "read_yaml_text"]
