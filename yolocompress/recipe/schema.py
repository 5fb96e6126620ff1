"""The recipe format: parsing, ``--set`` overrides and strict validation, before any work is done.

A recipe is YAML (see ``recipes/README.md`` for every key)::

    version: 1
    name: prune-int8
    model: yolov5n.pt          # optional; --model overrides (relative paths: from the recipe's folder)
    data: data.yaml            # optional; --data overrides
    imgsz: 256                 # optional; default: the model's recorded training size
    seed: 0
    measure: {latency: [onnxruntime, torch], threads: 2, runs: 50}
    stages:
      - prune: {ratio: 0.5}
      - finetune: {epochs: 20, distill: 1.0}
      - fuse: {}
      - quantize: {method: ptq, calibration: mse}
    gate: {max_map_drop: 2.0}

Every problem is one ``InputError`` line naming the key path (``stages[1].finetune.epoch: unknown key; did
you mean 'epochs'?``): an unknown key at any level is never ignored. This module checks the document
(:func:`parse_recipe`); :mod:`yolocompress.recipe.plan` checks it against the real model and data.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from yolocompress.errors import InputError
from yolocompress.export.openvino import OPENVINO_BACKENDS, openvino_version
from yolocompress.report.gate import DEFAULT_LATENCY_BACKENDS, LATENCY_BACKENDS, GateLimits
from yolocompress.yamlfile import load_yaml_text, read_yaml_text

RECIPE_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "recipes"
TOP_LEVEL_KEYS = ("version", "name", "model", "data", "imgsz", "seed", "measure", "stages", "gate")


def did_you_mean(key: str, allowed: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest allowed key, or the list of allowed keys."""
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f" (allowed: {', '.join(allowed)})"


def check_keys(mapping: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    """Refuse any key of ``mapping`` outside ``allowed`` (one line naming the key path)."""
    for key in mapping:
        if not isinstance(key, str):
            raise InputError(f"{where}: keys must be strings, got {key!r}")
        if key not in allowed:
            raise InputError(f"{where}.{key}: unknown key{did_you_mean(key, allowed)}")


def _describe(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return f"a mapping of {', '.join(f.name for f in dataclasses.fields(hint))}"
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args) + " or null"
    if typing.get_origin(hint) is tuple:
        return {int: "a list of integers", str: "a list of strings"}.get(typing.get_args(hint)[0], "a list")
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def coerce_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against a dataclass field type (``int``, ``float``, ``bool``, ``str``, ``X | None``,
    ``tuple[str, ...]``, or a config dataclass given as a mapping of its keys, e.g. ``distill: {method:
    feature}``); ints are accepted for floats, nothing else is converted."""
    origin = typing.get_origin(hint)
    if isinstance(value, Mapping) and dataclasses.is_dataclass(hint):
        check_keys(value, [f.name for f in dataclasses.fields(hint)], where)
        return build_config(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        nested = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, Mapping) and nested:  # its own messages (key paths), not "expected ..."
            return coerce_value(value, nested[0], where)
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce_value(value, arg, where)
            except InputError:
                continue
        raise InputError(f"{where}: expected {_describe(hint)}, got {value!r}")
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if isinstance(value, (list, tuple)):
            return tuple(coerce_value(v, item, f"{where}[{k}]") for k, v in enumerate(value))
        raise InputError(f"{where}: expected {_describe(hint)}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise InputError(f"{where}: a field of type {hint} cannot be set from a recipe")
    raise InputError(f"{where}: expected {_describe(hint)}, got {value!r}")


def field_hints(config_type: type) -> dict[str, Any]:
    """Field name -> resolved type of a config dataclass."""
    hints = typing.get_type_hints(config_type)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_type)}


def build_config(config_type: type, values: Mapping[str, Any], where: str) -> Any:
    """A frozen config from recipe values (types checked here, ranges by the config itself)."""
    hints = field_hints(config_type)
    kwargs = {k: coerce_value(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    try:
        return config_type(**kwargs)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class MeasureConfig:
    """How the report measures every artifact.

    Attributes:
        latency: backends timed (default ``onnxruntime`` and ``torch``; also ``openvino`` (fp32 precision)
            and ``openvino-bf16`` with the ``openvino`` extra; ``[]``: none). A torch model is exported to
            fp32 ONNX for the ``onnxruntime`` and OpenVINO figures; an ONNX artifact has no ``torch`` figure.
        threads: intra-op threads for every latency figure.
        runs, warmup: timed and untimed batch-1 calls per artifact and backend.
        rounds: the timed calls are split into this many rounds, interleaved over all artifacts, so that a
            busy moment of the machine hits every artifact alike.
        eval_batch: images per batch for the val-split mAPs.
    """

    latency: tuple[str, ...] = DEFAULT_LATENCY_BACKENDS
    threads: int = 2
    runs: int = 50
    warmup: int = 10
    rounds: int = 5
    eval_batch: int = 32

    def __post_init__(self) -> None:
        for name in ("threads", "runs", "rounds", "eval_batch"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.warmup) < 0:
            raise InputError(f"warmup must be >= 0, got {self.warmup}")
        for backend in self.latency:
            if backend not in LATENCY_BACKENDS:
                raise InputError(f"latency backend {backend!r} is not one of {', '.join(LATENCY_BACKENDS)}")
        if len(set(self.latency)) != len(self.latency):
            raise InputError("latency lists a backend twice")
        if any(b in OPENVINO_BACKENDS for b in self.latency) and openvino_version() is None:
            raise InputError("latency backend openvino needs OpenVINO: pip install 'yolocompress[openvino]'")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "latency": list(self.latency)}


@dataclass(frozen=True)
class RecipeDocument:
    """A parsed recipe whose top level is valid; stage entries are checked by ``recipe.plan``.

    ``stages`` holds ``(stage type, name or None, raw keys)`` per entry, with its key path for messages.
    """

    name: str
    model: Path | None
    data: Path | None
    imgsz: int | None
    seed: int
    measure: MeasureConfig
    stages: tuple[tuple[str, str | None, Mapping[str, Any], str], ...]
    gate: Mapping[str, Any]
    text: str
    sha256: str
    source: Path | None
    overrides: tuple[str, ...] = field(default=())


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped inside the package (``yolocompress run NAME``)."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def find_recipe(recipe: str | Path) -> Path:
    """The recipe file: a path, or the name of a shipped recipe."""
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = SHIPPED_DIR / f"{recipe}.yaml"
    if not path.suffix and shipped.is_file():
        return shipped
    raise InputError(f"recipe not found: {recipe} (a YAML file, or a shipped recipe: {', '.join(shipped_recipes())})")


def _set_path(raw: Any, dotted: str, value: Any, where: str) -> None:
    """Set ``stages.0.prune.ratio``-style ``dotted`` in ``raw`` (mappings gain missing keys; list indices
    must exist)."""
    parts = dotted.split(".")
    node = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        at = ".".join(parts[:depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise InputError(f"{where}: {at}: no list entry {part!r} (the list has {len(node)})")
            if last:
                node[int(part)] = value
            else:
                if node[int(part)] is None:
                    node[int(part)] = {}
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise InputError(f"{where}: {at}: {'.'.join(parts[:depth]) or 'the recipe'} is not a mapping or list")


def apply_overrides(raw: Any, overrides: Sequence[str]) -> Any:
    """Apply ``KEY=VALUE`` overrides (VALUE parsed as YAML: ``0.3``, ``true``, ``[a, b]``) to the raw document."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {item!r}: expected KEY=VALUE, e.g. stages.0.prune.ratio=0.3")
        _set_path(raw, key.strip(), load_yaml_text(text, f"--set {key.strip()}"), f"--set {item}")
    return raw


def _path_value(value: Any, where: str, base: Path | None) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: expected a file path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() or base is None else base / path


def parse_recipe(recipe: str | Path, overrides: Sequence[str] = ()) -> RecipeDocument:
    """Read a recipe file (or shipped recipe name), apply ``overrides`` and check its top level."""
    path = find_recipe(recipe)
    text = read_yaml_text(path, "recipe")
    raw = load_yaml_text(text, str(path))
    where = path.name
    if not isinstance(raw, dict):
        raise InputError(f"{where}: a recipe is a mapping of keys (version, stages, ...), got "
                         f"{type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    check_keys(raw, TOP_LEVEL_KEYS, "recipe")
    version = raw.get("version", RECIPE_VERSION)
    if version != RECIPE_VERSION or isinstance(version, bool):
        raise InputError(f"recipe.version: this yolocompress reads recipe version {RECIPE_VERSION}, got {version!r}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"recipe.name: expected a non-empty string, got {name!r}")
    base = None if path.resolve().parent == SHIPPED_DIR else path.resolve().parent
    model = _path_value(raw.get("model"), "recipe.model", base)
    data = _path_value(raw.get("data"), "recipe.data", base)
    imgsz = coerce_value(raw.get("imgsz"), int | None, "recipe.imgsz")
    if imgsz is not None and (imgsz < 32 or imgsz % 32):
        raise InputError(f"recipe.imgsz: must be a positive multiple of 32, got {imgsz}")
    seed = coerce_value(raw.get("seed", 0), int, "recipe.seed")
    measure_raw = raw.get("measure") or {}
    if not isinstance(measure_raw, dict):
        raise InputError(f"recipe.measure: expected a mapping, got {measure_raw!r}")
    check_keys(measure_raw, [f.name for f in dataclasses.fields(MeasureConfig)], "recipe.measure")
    measure = build_config(MeasureConfig, measure_raw, "recipe.measure")
    gate = raw.get("gate") or {}
    if not isinstance(gate, dict):
        raise InputError(f"recipe.gate: expected a mapping, got {gate!r}")
    check_keys(gate, [f.name for f in dataclasses.fields(GateLimits)], "recipe.gate")
    build_config(GateLimits, gate, "recipe.gate")  # types and ranges; the document keeps what was written
    gate = {k: coerce_value(v, field_hints(GateLimits)[k], f"recipe.gate.{k}") for k, v in gate.items()}
    backend = gate.get("backend", GateLimits.backend)
    if "max_latency_ratio" in gate and backend not in measure.latency:
        raise InputError(f"recipe.gate.max_latency_ratio: needs the {backend} latency, but measure.latency is "
                         f"{list(measure.latency)}")
    stages = _parse_stage_list(raw.get("stages"))
    canonical = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return RecipeDocument(name=name.strip(), model=model, data=data, imgsz=imgsz, seed=seed, measure=measure,
                          stages=stages, gate=gate, text=text, sha256=canonical, source=path,
                          overrides=tuple(overrides))


def _parse_stage_list(value: Any) -> tuple[tuple[str, str | None, Mapping[str, Any], str], ...]:
    if not isinstance(value, list) or not value:
        raise InputError(f"recipe.stages: expected a non-empty list of stages, got {value!r}")
    entries = []
    for i, entry in enumerate(value):
        where = f"stages[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise InputError(f"{where}: each stage is a mapping with one key, the stage type "
                             f"(e.g. '- prune: {{ratio: 0.5}}'), got {entry!r}")
        (stage_type, keys), = entry.items()
        keys = {} if keys is None else keys
        if not isinstance(stage_type, str):
            raise InputError(f"{where}: the stage type must be a string, got {stage_type!r}")
        if not isinstance(keys, dict):
            raise InputError(f"{where}.{stage_type}: expected a mapping of settings, got {keys!r}")
        keys = dict(keys)
        name = keys.pop("name", None)
        if name is not None and (not isinstance(name, str) or not name.strip() or "/" in name):
            raise InputError(f"{where}.{stage_type}.name: expected a short name without '/', got {name!r}")
        entries.append((stage_type, name, keys, f"{where}.{stage_type}"))
    return tuple(entries)


__all__ = ["LATENCY_BACKENDS", "MeasureConfig", "RECIPE_VERSION", "RecipeDocument", "SHIPPED_DIR",
           "apply_overrides", "build_config", "check_keys", "coerce_value", "did_you_mean", "field_hints",
           "find_recipe", "parse_recipe", "shipped_recipes"]
