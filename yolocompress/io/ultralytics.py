"""Read Ultralytics YOLOv5 ``.pt`` checkpoints without ever running arbitrary pickled code.

An Ultralytics checkpoint is a pickle of whole modules (``models.yolo.DetectionModel`` made of
``models.common.*`` and ``torch.nn.*`` objects). We unpickle it with ``torch.load(weights_only=True)``,
whose restricted unpickler only creates tensors, plain containers and the classes we allow. Each allowed
module class is mapped onto an *inert stand-in* (``PickledObject``): creating it runs no constructor and
no code of the original class, it only keeps the attribute dict. From the stand-ins we read the model's
config (``yaml``), class names and tensors, then build our own ``DetectionModel`` and copy the tensors.
A file that needs any other global (``os.system``, ``builtins.eval``, an unknown class...) is refused
before anything in it runs.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from yolocompress.errors import InputError, UnsafeCheckpointError


class PickledObject:
    """Inert stand-in for one pickled object; ``pickled_name`` says which class it was."""

    pickled_name = "?"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = {**state[0], **(state[1] or {})}
        self.__dict__["state"] = state if isinstance(state, dict) else {"value": state}

    @property
    def attrs(self) -> dict[str, Any]:
        return self.__dict__.get("state", {})

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_name}>"


def _opaque_value(*args: Any, **kwargs: Any) -> None:
    """Stand-in for harmless value constructors (paths, numpy scalars): the value is dropped."""
    return None


# Ultralytics module classes (models.common / models.yolo / models.experimental / utils.activations) that
# may appear in a checkpoint: only those whose structure we can rebuild from the stored config.
_ULTRALYTICS_CLASSES = {
    "models.yolo": ["DetectionModel", "Model", "Detect"],
    "models.common": ["Conv", "DWConv", "Focus", "Bottleneck", "BottleneckCSP", "C3", "C3Ghost", "GhostConv",
                      "GhostBottleneck", "SPP", "SPPF", "Concat", "conv_bn_relu_maxpool", "Shuffle_Block",
                      "conv_bn_hswish", "MobileNet_Block", "SELayer", "h_sigmoid", "h_swish"],
    "models.experimental": [],
    "utils.activations": ["SiLU", "Hardswish", "Mish", "MemoryEfficientMish", "FReLU", "AconC", "MetaAconC"],
}
_TORCH_NN_CLASSES = {
    "torch.nn.modules.conv": ["Conv2d"],
    "torch.nn.modules.batchnorm": ["BatchNorm2d"],
    "torch.nn.modules.activation": ["SiLU", "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "Hardsigmoid", "Mish",
                                    "Sigmoid", "Tanh"],
    "torch.nn.modules.pooling": ["MaxPool2d", "AdaptiveAvgPool2d"],
    "torch.nn.modules.upsampling": ["Upsample"],
    "torch.nn.modules.container": ["Sequential", "ModuleList"],
    "torch.nn.modules.linear": ["Linear", "Identity"],
}
_VALUE_FUNCTIONS = [
    "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.Path",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
]


def _stand_ins() -> list[tuple[Any, str]]:
    """(stand-in, full pickled name) pairs for ``torch.serialization.safe_globals``."""
    pairs: list[tuple[Any, str]] = []
    for table in (_ULTRALYTICS_CLASSES, _TORCH_NN_CLASSES):
        for module, names in table.items():
            for name in names:
                full = f"{module}.{name}"
                cls = type(name, (PickledObject,), {"pickled_name": full, "__module__": __name__})
                pairs.append((cls, full))
    pairs.extend((_opaque_value, full) for full in _VALUE_FUNCTIONS)
    return pairs


_STAND_INS = _stand_ins()


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` with the Ultralytics allowlist; never executes pickled code.

    Raises:
        UnsafeCheckpointError: the file references a global outside the allowlist (nothing was run).
        InputError: the file is missing, truncated or not a torch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    try:
        with torch.serialization.safe_globals(_STAND_INS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError (bad zip), EOFError, ...
        raise load_error(path, exc) from exc


def load_error(path: Path, exc: BaseException, what: str = "checkpoint") -> InputError:
    """The one-line error for a failed ``torch.load(weights_only=True)`` of ``path``.

    torch's own message for a refused global advises re-running with ``weights_only=False``, which is
    exactly what must never be done with an untrusted file: it is never passed on. A refused global gives
    ``UnsafeCheckpointError`` naming the global; anything else (truncated, not a torch file) ``InputError``
    with the first line of the cause.
    """
    message = str(exc)
    match = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"unrecognized function ([^\s]+)", message)
    if match:
        return UnsafeCheckpointError(f"refusing to load {path}: it needs {match.group(1)}, which is "
                                     "outside the checkpoint allowlist (nothing in the file was executed)")
    _, found, detail = message.partition("WeightsUnpickler error:")  # garbage: "Unsupported operand 205"
    lines = [line.strip() for line in (detail if found else message).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if "weights_only" in first:  # never repeat torch's advice to turn the safety off
        first = type(exc).__name__
    return InputError(f"cannot read {what} {path}: not a valid torch file ({first})")


def is_pickled(obj: Any, *names: str) -> bool:
    """Whether ``obj`` is a stand-in for one of the classes named (short names, e.g. ``'DetectionModel'``)."""
    return isinstance(obj, PickledObject) and obj.pickled_name.rsplit(".", 1)[-1] in names


def pickled_state_dict(module: PickledObject) -> "OrderedDict[str, torch.Tensor]":
    """Collect parameters and persistent buffers of a pickled module tree, with ``nn.Module`` names."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()

    def walk(obj: PickledObject, prefix: str) -> None:
        attrs = obj.attrs
        for name, p in (attrs.get("_parameters") or {}).items():
            if p is not None:
                out[prefix + name] = p.detach() if isinstance(p, torch.Tensor) else p
        skip = attrs.get("_non_persistent_buffers_set") or set()
        for name, b in (attrs.get("_buffers") or {}).items():
            if b is not None and name not in skip:
                out[prefix + name] = b
        for name, child in (attrs.get("_modules") or {}).items():
            if isinstance(child, PickledObject):
                walk(child, f"{prefix}{name}.")

    walk(module, "")
    return out


def pickled_batchnorm_eps(module: PickledObject) -> dict[str, float]:
    """``{module_name: eps}`` of every pickled BatchNorm2d (Ultralytics sets 1e-3; keep what the file says)."""
    out: dict[str, float] = {}

    def walk(obj: PickledObject, prefix: str) -> None:
        if obj.pickled_name.endswith("BatchNorm2d") and "eps" in obj.attrs:
            out[prefix.rstrip(".")] = float(obj.attrs["eps"])
        for name, child in (obj.attrs.get("_modules") or {}).items():
            if isinstance(child, PickledObject):
                walk(child, f"{prefix}{name}.")

    walk(module, "")
    return out
