"""``DetectionModel``: a YOLOv5-family detector built from a config."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from yolocompress.errors import InputError
from yolocompress.models.activations import parse_activation
from yolocompress.models.common import Conv
from yolocompress.models.detect import Detect
from yolocompress.models.parse import LayerSpec, build_layers, resolve_layers
from yolocompress.models.rep import RepConv
from yolocompress.models.shapes import apply_shape_spec, shape_spec
from yolocompress.yamlfile import load_yaml_mapping

CONFIG_DIR = Path(__file__).parent / "configs"


def list_configs() -> list[str]:
    """Names of the shipped model configs (``yolov5n``, ``yolov5s-ghost``, ...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(cfg: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A config dict from a dict, a shipped config name (``yolov5s``) or a YAML path."""
    if isinstance(cfg, dict):
        return copy.deepcopy(cfg)
    path = Path(cfg)
    if not path.is_file():
        for shipped in (CONFIG_DIR / f"{path.name}.yaml", CONFIG_DIR / path.name):
            if shipped.is_file():
                path = shipped
                break
    if not path.is_file():
        raise InputError(f"model config not found: {cfg} (shipped: {', '.join(list_configs())})")
    data = load_yaml_mapping(path, "model config")  # bounded: no alias bombs, duplicate keys or huge files
    data.setdefault("name", path.stem)
    return data


class DetectionModel(nn.Module):
    """A YOLOv5-family detector.

    Args:
        cfg: an Ultralytics-style config (dict, shipped name or YAML path) or one of our resolved configs
            (a dict with ``layers`` and optionally ``shapes``, see ``resolved_config``).
        ch: input channels.
        nc: override the config's class count (unresolved configs only).

    Forward takes ``x`` float Tensor[B, ch, H, W] (RGB, 0..1) with H, W multiples of the largest stride.
    """

    def __init__(self, cfg: str | Path | dict[str, Any] = "yolov5s", ch: int = 3, nc: int | None = None):
        super().__init__()
        cfg = load_config(cfg)
        if nc is not None and int(nc) != int(cfg.get("nc", -1)):
            if "layers" in cfg:
                raise InputError("cannot change nc of a resolved (possibly pruned) model config")
            cfg["nc"] = int(nc)
        self.yaml = cfg
        if "layers" in cfg:
            specs = [LayerSpec.from_dict(d) for d in cfg["layers"]]
        else:
            specs = resolve_layers(cfg, ch)
        self.layer_specs = specs
        self.model, self.save = build_layers(specs)
        self.activation = parse_activation(cfg.get("activation"))
        self._apply_activation()
        if cfg.get("fused"):  # a saved deploy-form model: BN folded, RepConv merged (before sizes and weights)
            from yolocompress.models.deploy import fuse_structure

            fuse_structure(self)
        if cfg.get("shapes"):
            apply_shape_spec(self, cfg["shapes"])
        self.nc = int(cfg["nc"])
        names = cfg.get("names")
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names)]
        self.names = list(names) if names and len(names) == self.nc else [str(i) for i in range(self.nc)]
        self.input_channels = ch
        detect = self.model[-1]
        if not isinstance(detect, Detect):
            raise InputError("the last layer of a detection model config must be Detect")
        self._init_strides(ch)
        detect.initialize_biases()

    # ------------------------------------------------------------------ construction helpers
    def _apply_activation(self) -> None:
        if self.activation.name == "SiLU" and not self.activation.args:
            return
        for m in self.modules():
            if isinstance(m, Conv) and m.uses_default_act:
                m.act = self.activation.build(m.conv.out_channels)
            elif isinstance(m, RepConv) and m.uses_default_act:
                m.act = self.activation.build(m.rbr_dense.conv.out_channels)

    def _init_strides(self, ch: int) -> None:
        detect: Detect = self.model[-1]
        s = 256
        was_training = self.training
        self.eval()
        with torch.no_grad():
            _, raw = self.forward(torch.zeros(1, ch, s, s))
        self.train(was_training)
        detect.stride = torch.tensor([s / r.shape[2] for r in raw], dtype=torch.float32)
        # anchors (pixels in the config) must grow with stride; flip them if listed the other way round
        area = detect.anchors.prod(-1).mean(-1).view(-1)
        if (area[-1] - area[0]) != 0 and (area[-1] - area[0]).sign() != (detect.stride[-1] - detect.stride[0]).sign():
            detect.anchors[:] = detect.anchors.flip(0)
        detect.anchors /= detect.stride.view(-1, 1, 1)
        self.stride = detect.stride
        detect._grid_cache = {}

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor):
        outputs: list[torch.Tensor | None] = []
        for m in self.model:
            if m.f != -1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
            x = m(x)
            outputs.append(x if m.i in self.save else None)
        return x

    # ------------------------------------------------------------------ description
    @property
    def detect(self) -> Detect:
        """The detection head (last layer)."""
        return self.model[-1]

    def resolved_config(self) -> dict[str, Any]:
        """Plain-data description that rebuilds this exact architecture (real channel counts, shapes)."""
        return {
            "name": self.yaml.get("name", "custom"),
            "nc": self.nc,
            "names": list(self.names),
            "activation": None if str(self.activation) == "nn.SiLU()" else str(self.activation),
            "layers": [s.to_dict() for s in self.layer_specs],
            "shapes": shape_spec(self),
            "fused": bool(self.yaml.get("fused", False)),
            "source": {k: v for k, v in self.yaml.items() if k not in ("layers", "shapes", "source")},
        }

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.stride = self.detect.stride
        return self


def build_model(cfg: str | Path | dict[str, Any] = "yolov5s", nc: int | None = None, ch: int = 3) -> DetectionModel:
    """Build a fresh (randomly initialised) model from a shipped config name, YAML path or dict."""
    return DetectionModel(cfg, ch=ch, nc=nc)
