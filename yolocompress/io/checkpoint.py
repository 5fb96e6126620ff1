"""Load and save models: Ultralytics ``.pt`` files, bare state_dicts, and our own format.

Our format is a plain dict that ``torch.load(weights_only=True)`` reads with no allowlist at all::

    {"format": "yolocompress", "format_version": 1,
     "config": DetectionModel.resolved_config()  # every layer's real channel counts + module shapes
     "state_dict": {name: Tensor}, "names": [...], "stride": [...], "imgsz": int,
     "history": [{"step": "train" | "prune" | ..., "time": ISO-8601, ...}], "metrics": {...}}

so pruned or fused models reload without any pickled module.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from yolocompress.errors import InputError, YoloCompressError
from yolocompress.io.atomic import atomic_torch_save
from yolocompress.io.ultralytics import (
    PickledObject, is_pickled, pickled_batchnorm_eps, pickled_state_dict, safe_torch_load,
)
from yolocompress.models.yolo import DetectionModel

FORMAT_NAME = "yolocompress"
FORMAT_VERSION = 1
# The image size assumed for a model that records none (Ultralytics checkpoints, in-memory modules): YOLOv5's.
DEFAULT_IMGSZ = 640
# Tensors older Ultralytics releases stored that our model recomputes (v5.0 Detect.anchor_grid).
_LEGACY_KEYS = ("anchor_grid",)


@dataclass
class ModelInfo:
    """What a checkpoint says about its model beyond the weights."""

    source: str                      # "yolocompress", "ultralytics" or "state_dict"
    imgsz: int = DEFAULT_IMGSZ
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"           # how the file stores the float weights (the model is loaded as float32)


def load_model(path: str | os.PathLike, cfg: str | Path | dict | None = None,
               device: str | torch.device = "cpu") -> DetectionModel:
    """Load a model from any supported checkpoint; see ``load_model_with_info``."""
    return load_model_with_info(path, cfg=cfg, device=device)[0]


def load_model_with_info(path: str | os.PathLike, cfg: str | Path | dict | None = None,
                         device: str | torch.device = "cpu") -> tuple[DetectionModel, ModelInfo]:
    """Load a float32 model in eval mode plus its ``ModelInfo``.

    Accepts our format (also nested under ``"ema"``/``"model"`` in a training checkpoint), Ultralytics v5-v7
    checkpoints (``ema`` or ``model`` key, fp16 or fp32) and, with ``cfg``, a bare state_dict.
    Never unpickles anything outside the allowlist (see ``yolocompress.io.ultralytics``).
    """
    ckpt = safe_torch_load(path)
    name = Path(path).name
    try:
        model, info = _from_loaded(ckpt, cfg, name)
    except YoloCompressError:
        raise
    except Exception as exc:  # the unpickled contents are untrusted data: a damaged config, state or field
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise InputError(f"{name}: not a usable model checkpoint (its contents are damaged: "
                         f"{type(exc).__name__} {first})") from exc
    return model.to(device).float().eval(), info


def _from_loaded(ckpt: Any, cfg: str | Path | dict | None, name: str) -> tuple[DetectionModel, ModelInfo]:
    if isinstance(ckpt, dict):
        ours = _find_ours(ckpt)
        if ours is not None:
            return _from_ours(ours, name)
        pickled = ckpt.get("ema")
        if not is_pickled(pickled, "DetectionModel", "Model"):
            pickled = ckpt.get("model")
        if is_pickled(pickled, "DetectionModel", "Model"):
            return _from_ultralytics(pickled, name)
        return _from_state_dict(ckpt, cfg, name)
    if is_pickled(ckpt, "DetectionModel", "Model"):
        return _from_ultralytics(ckpt, name)
    raise InputError(f"{name} is not a model checkpoint (found {type(ckpt).__name__})")


def _find_ours(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    if ckpt.get("format") == FORMAT_NAME:
        return ckpt
    for key in ("ema", "model"):
        inner = ckpt.get(key)
        if isinstance(inner, dict) and inner.get("format") == FORMAT_NAME:
            return inner
    return None


def _load_weights(model: DetectionModel, state: dict[str, torch.Tensor], name: str) -> str:
    """Load ``state`` as float32 into ``model``; returns how the file stored its float weights
    (``float32``, ``float16``, ...)."""
    stored = [v.dtype for v in state.values() if v.is_floating_point()]
    dtype = str(max(set(stored), key=stored.count)).removeprefix("torch.") if stored else "float32"
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()
             if k.rsplit(".", 1)[-1] not in _LEGACY_KEYS}
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    wrong = [k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"shape mismatch at {wrong[:3]}")
        raise InputError(f"{name}: weights do not fit the model config ({detail})")
    model.load_state_dict(state, strict=True)
    return dtype


def _from_ours(ckpt: dict[str, Any], name: str) -> tuple[DetectionModel, ModelInfo]:
    version = ckpt.get("format_version", 0)
    if version > FORMAT_VERSION:
        raise InputError(f"{name} was written by a newer yolocompress (format {version} > {FORMAT_VERSION})")
    try:
        config, state = ckpt["config"], ckpt["state_dict"]
    except KeyError as exc:
        raise InputError(f"{name}: yolocompress checkpoint lacks {exc}") from exc
    model = DetectionModel(config)
    dtype = _load_weights(model, state, name)
    if ckpt.get("names"):
        model.names = list(ckpt["names"])
    info = ModelInfo("yolocompress", int(ckpt.get("imgsz", DEFAULT_IMGSZ)), list(ckpt.get("history", [])),
                     dict(ckpt.get("metrics", {})), dtype)
    return model, info


def _from_ultralytics(pickled: PickledObject, name: str) -> tuple[DetectionModel, ModelInfo]:
    attrs = pickled.attrs
    config = attrs.get("yaml")
    if not isinstance(config, dict):
        raise InputError(f"{name}: Ultralytics model has no config (yaml attribute)")
    config = dict(config)
    config.pop("ch", None)
    model = DetectionModel(config)
    state = pickled_state_dict(pickled)
    dtype = _load_weights(model, state, name)
    for module_name, eps in pickled_batchnorm_eps(pickled).items():
        bn = model.get_submodule(module_name)
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.eps = eps
    names = attrs.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if isinstance(names, (list, tuple)) and len(names) == model.nc:
        model.names = [str(n) for n in names]
    history = [{"step": "import", "from": "ultralytics", "file": name, "time": _now()}]
    return model, ModelInfo("ultralytics", DEFAULT_IMGSZ, history, dtype=dtype)


def _from_state_dict(ckpt: dict[str, Any], cfg: Any, name: str) -> tuple[DetectionModel, ModelInfo]:
    state = ckpt.get("state_dict", ckpt.get("model", ckpt))
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{name} is neither a yolocompress, Ultralytics nor state_dict checkpoint")
    if cfg is None:
        raise InputError(f"{name} is a bare state_dict: pass its model config with --cfg")
    detect_weights = sorted(k for k in state if k.endswith(".weight") and ".m." in k and k.split(".")[1].isdigit())
    nc = None
    if detect_weights:
        last = max(detect_weights, key=lambda k: int(k.split(".")[1]))
        anchors_key = last.rsplit(".m.", 1)[0] + ".anchors"
        if anchors_key in state:
            na = state[anchors_key].shape[1]
            nc = state[last].shape[0] // na - 5
    model = DetectionModel(cfg, nc=nc)
    dtype = _load_weights(model, state, name)
    imported = {"step": "import", "from": "state_dict", "file": name, "time": _now()}
    return model, ModelInfo("state_dict", DEFAULT_IMGSZ, [imported], dtype=dtype)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def model_to_dict(model: DetectionModel, imgsz: int = 640, history: list[dict[str, Any]] | None = None,
                  metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Our checkpoint dict for ``model`` (tensors cloned to CPU float32; plain data otherwise)."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.resolved_config(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "names": list(model.names),
        "stride": [float(s) for s in model.stride],
        "imgsz": int(imgsz),
        "history": list(history or []),
        "metrics": dict(metrics or {}),
    }


def save_model(model: DetectionModel, path: str | os.PathLike, imgsz: int = 640,
               history: list[dict[str, Any]] | None = None, metrics: dict[str, Any] | None = None,
               half: bool = False) -> Path:
    """Save ``model`` in our format, atomically. ``half`` stores float weights as fp16 (half the size)."""
    data = model_to_dict(model, imgsz, history, metrics)
    if half:
        data["state_dict"] = {k: v.half() if v.is_floating_point() and not k.endswith("anchors") else v
                              for k, v in data["state_dict"].items()}
    return atomic_torch_save(data, path)


def history_entry(step: str, **details: Any) -> dict[str, Any]:
    """A history record ``{"step": step, "time": now, **details}`` for ``save_model``."""
    return {"step": step, "time": _now(), **details}
