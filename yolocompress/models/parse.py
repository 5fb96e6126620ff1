"""Turn a YOLOv5 model config (Ultralytics YAML layout) into concrete layers.

Two steps, so the middle is plain data: ``resolve_layers`` applies the depth/width multiples and fills in
every layer's real channel counts (a ``LayerSpec`` list, stored in our checkpoints so that pruned models
need no pickle), then ``build_layers`` instantiates the modules.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch.nn as nn

from yolocompress.errors import InputError
from yolocompress.models.registry import ChannelRule, lookup
from yolocompress.models.shapes import num_params


@dataclass
class LayerSpec:
    """One top-level layer: ``from`` index(es), repeat count ``n``, module name, full constructor args."""

    index: int
    from_: int | list[int]
    n: int
    module: str
    args: list[Any]
    c2: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["from"] = d.pop("from_")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerSpec":
        d = dict(d)
        return cls(index=d["index"], from_=d["from"], n=d["n"], module=d["module"], args=list(d["args"]),
                   c2=d["c2"], extra=dict(d.get("extra", {})))


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is >= x."""
    return int(math.ceil(x / divisor) * divisor)


def _literal_arg(a: Any, nc: int, anchors: Any) -> Any:
    """Config arguments are literals, or the names ``nc``, ``anchors``, ``None`` (never evaluated code)."""
    if isinstance(a, str):
        return {"nc": nc, "anchors": anchors, "None": None, "True": True, "False": False}.get(a, a)
    return a


def resolve_layers(cfg: dict[str, Any], ch: int = 3) -> list[LayerSpec]:
    """Resolve a config's ``backbone`` + ``head`` into layers with explicit channel counts."""
    try:
        nc = int(cfg["nc"])
        anchors = cfg["anchors"]
        gd = float(cfg.get("depth_multiple", 1.0))
        gw = float(cfg.get("width_multiple", 1.0))
        rows = list(cfg["backbone"]) + list(cfg["head"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"model config is missing or has a bad key: {exc}") from exc
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else int(anchors)
    no = na * (nc + 5)
    chans: list[int] = [ch]
    specs: list[LayerSpec] = []
    for i, row in enumerate(rows):
        try:
            f, n, name, args = row
        except (TypeError, ValueError) as exc:
            raise InputError(f"model config layer {i} must be [from, number, module, args], got {row!r}") from exc
        try:
            entry = lookup(name)
        except KeyError:
            raise InputError(f"model config layer {i}: unknown module {name!r}") from None
        args = [_literal_arg(a, nc, anchors) for a in args]
        n = max(round(n * gd), 1) if n > 1 else n

        def cin(j: int) -> int:
            return chans[j] if j < 0 else chans[j + 1]  # chans[0] is the image input

        if entry.rule in (ChannelRule.CONV, ChannelRule.CONV_REPEAT):
            c1, c2 = cin(f), args[0]
            if c2 != no:
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if entry.rule is ChannelRule.CONV_REPEAT:
                args.insert(2, n)
                n = 1
        elif entry.rule is ChannelRule.BATCHNORM:
            c2 = cin(f)
            args = [c2]
        elif entry.rule is ChannelRule.CONCAT:
            c2 = sum(cin(j) for j in f)
        elif entry.rule is ChannelRule.DETECT:
            args.append([cin(j) for j in f])
            if isinstance(args[1], int):
                args[1] = [list(range(args[1] * 2))] * len(f)
            c2 = 0
        else:
            c2 = cin(f)
        specs.append(LayerSpec(index=i, from_=f, n=n, module=name, args=args, c2=c2))
        chans.append(c2)
    return specs


def build_layers(specs: list[LayerSpec]) -> tuple[nn.Sequential, list[int]]:
    """Instantiate resolved layers; returns the layer stack and the indices whose outputs must be kept."""
    layers: list[nn.Module] = []
    save: list[int] = []
    for spec in specs:
        entry = lookup(spec.module)
        try:
            module = (nn.Sequential(*(entry.ctor(*spec.args) for _ in range(spec.n))) if spec.n > 1
                      else entry.ctor(*spec.args))
        except (TypeError, ValueError, AssertionError) as exc:
            raise InputError(f"cannot build layer {spec.index} ({spec.module} {spec.args}): {exc}") from exc
        module.i, module.f, module.type = spec.index, spec.from_, spec.module
        module.np = num_params(module)
        froms = [spec.from_] if isinstance(spec.from_, int) else spec.from_
        save.extend(j % spec.index for j in froms if j != -1)
        layers.append(module)
    return nn.Sequential(*layers), sorted(set(save))
