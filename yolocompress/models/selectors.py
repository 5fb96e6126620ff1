"""Layer selectors: the one grammar that names layers of a detector, shared by prune's and quantize's
``exclude`` (``PruneConfig.exclude``, ``PlanConfig.exclude``, ``--exclude`` and recipes' ``exclude:``).

A selector is a string, one of:

- ``9``: a layer index, short for the module path ``model.9``;
- ``model.9.cv1`` (a module path, as ``named_modules`` spells it; a trailing ``.`` is ignored): that module
  and every module under it (``model.9.cv1.conv``, ``model.9.cv1.bn``), not ``model.9.cv10``;
- ``/model.9/cv1/conv/Conv`` (starts with ``/``): an ONNX node name, that node only. Node names are matched
  only where the layers are nodes of an exported graph (quantize); any other selector is compared with node
  names verbatim as well (exporters other than ours name nodes ``Conv_12``).

A selector that matches nothing is an error (``InputError``), like NNCF's ``IgnoredScope(validate=True)``:
a typo must not silently select nothing.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from yolocompress.errors import InputError


@dataclass(frozen=True)
class LayerSelector:
    """One parsed selector: ``text`` as written, ``path`` the module path it selects (``None`` for an ONNX
    node name, which selects no module path)."""

    text: str
    path: str | None

    @classmethod
    def parse(cls, text: str) -> LayerSelector:
        """Parse one selector; ``InputError`` for an empty one."""
        text = str(text).strip()
        if not text.rstrip("."):
            raise InputError("an empty layer selector (use a layer index such as 9 or a module path such as "
                             "model.9.cv1)")
        if text.startswith("/"):
            return cls(text, None)
        if text.isdigit():
            return cls(text, f"model.{int(text)}")
        return cls(text, text.rstrip("."))

    @property
    def is_node_name(self) -> bool:
        """True for an ONNX node name (it can be checked only against an exported graph)."""
        return self.path is None

    def matches(self, path: str, node: str | None = None) -> bool:
        """Whether this selects the module at ``path`` (or, for a graph node, the node named ``node`` whose
        module path is ``path``)."""
        if node is not None and node == self.text:
            return True
        return self.path is not None and (path == self.path or path.startswith(self.path + "."))


def select_layers(selectors: Iterable[str], layers: Mapping[str, str], what: str, hint: str,
                  context: str = "--exclude") -> set[str]:
    """The keys of ``layers`` that any of ``selectors`` matches.

    Args:
        selectors: selector strings (the grammar above).
        layers: layer name -> module path: for modules the path itself, for ONNX nodes the node name -> the
            module path it was exported from.
        what, hint: what a layer is (``"prunable layer"``) and what selectors look like, for the error.
        context: where the selectors come from, the start of the error line (a flag or a recipe key path).

    Raises:
        InputError: ``"{context} '{selector}' matches no {what} ({hint})"`` for the first selector that
            matches no layer.
    """
    chosen: set[str] = set()
    for text in selectors:
        selector = LayerSelector.parse(text)
        hit = {name for name, path in layers.items() if selector.matches(path, name)}
        if not hit:
            raise InputError(f"{context} {str(text)!r} matches no {what} ({hint})")
        chosen |= hit
    return chosen
