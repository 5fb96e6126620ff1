"""The stage contract every compression step follows, and the snapshot of one artifact that reports show.

A *stage* is a library function ``stage(artifact, data, config) -> (artifact, StageReport)``: an artifact is
a ``DetectionModel`` (PyTorch) or a path to an ``.onnx`` file, ``config`` is the stage's frozen, validated
dataclass (``PruneConfig``, ``QuantConfig``, ``FinetuneConfig``, ``FuseConfig``, ...). The stage never
prints, parses arguments or writes a report; the CLI and the recipe runner do.

``ModelSnapshot`` is what a report shows for one artifact (params, GFLOPs at the image size, file bytes,
mAP50 / mAP50-95 overall and per class, latency per backend); ``StageReport`` is what one stage did: its
name, resolved config, the snapshots before and after, wall seconds, stage-specific ``details`` and
warnings. Both are frozen and round-trip through ``to_dict`` / ``from_dict`` as plain JSON, with one metric
vocabulary everywhere: ``map50``, ``map50_95``, ``median_ms``, ``p90_ms``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, Union

if TYPE_CHECKING:  # torch is imported only where a stage runs
    from yolocompress.models.yolo import DetectionModel

Artifact = Union["DetectionModel", Path]


def plain_data(value: Any) -> Any:
    """``value`` as JSON-ready data (what every report stores): mappings -> dict, tuples/lists -> list, paths -> str, NaN -> None."""
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_data(value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value))
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return plain_data(value.item())
    return value


@dataclass(frozen=True)
class Latency:
    """Batch-1 latency of one artifact on one backend: median and p90 milliseconds per call, on the CPU
    ``cpu`` with the ISA flags ``cpu_flags`` (empty in reports written before they were recorded)."""

    backend: str
    median_ms: float
    p90_ms: float
    threads: int
    cpu: str
    runs: int = 0
    cpu_flags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "cpu_flags": list(self.cpu_flags)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Latency":
        return cls(backend=str(d["backend"]), median_ms=float(d["median_ms"]), p90_ms=float(d["p90_ms"]),
                   threads=int(d["threads"]), cpu=str(d["cpu"]), runs=int(d.get("runs", 0)),
                   cpu_flags=tuple(str(f) for f in d.get("cpu_flags") or ()))

    @classmethod
    def from_result(cls, result: Any) -> "Latency":
        """From a :class:`~yolocompress.profile.latency.LatencyResult`."""
        return cls(backend=result.backend, median_ms=float(result.median_ms), p90_ms=float(result.p90_ms),
                   threads=int(result.threads), cpu=str(result.cpu), runs=int(result.runs),
                   cpu_flags=tuple(result.cpu_flags))


@dataclass(frozen=True)
class ModelSnapshot:
    """What a report shows for one artifact. ``None`` where a figure was not measured.

    Attributes:
        imgsz: image size (pixels, square) of GFLOPs, evaluation and latency.
        params: parameter count (an ONNX artifact: the PyTorch model it was made from).
        gflops: 2 x multiply-adds at ``imgsz`` (convolutions), as Ultralytics reports.
        file_bytes: size of the artifact's file.
        map50, map50_95: val-split mAP@0.5 and mAP@0.5:0.95 (fractions, 0..1).
        per_class: class name -> mAP@0.5:0.95 (classes with labels).
        latency: backend (``torch``, ``onnxruntime``) -> :class:`Latency`.
        kind: ``torch`` (a ``.pt`` model) or ``onnx``.
    """

    imgsz: int
    params: int | None = None
    gflops: float | None = None
    file_bytes: int | None = None
    map50: float | None = None
    map50_95: float | None = None
    per_class: Mapping[str, float] = field(default_factory=dict)
    latency: Mapping[str, Latency] = field(default_factory=dict)
    kind: str = "torch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_class", MappingProxyType(dict(self.per_class)))
        object.__setattr__(self, "latency", MappingProxyType(dict(self.latency)))

    def to_dict(self) -> dict[str, Any]:
        return {"imgsz": self.imgsz, "kind": self.kind, "params": self.params, "gflops": self.gflops,
                "file_bytes": self.file_bytes, "map50": self.map50, "map50_95": self.map50_95,
                "per_class": dict(self.per_class),
                "latency": {k: v.to_dict() for k, v in self.latency.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelSnapshot":
        return cls(imgsz=int(d["imgsz"]), params=d.get("params"), gflops=d.get("gflops"),
                   file_bytes=d.get("file_bytes"), map50=d.get("map50"), map50_95=d.get("map50_95"),
                   per_class=dict(d.get("per_class") or {}),
                   latency={k: Latency.from_dict(v) for k, v in (d.get("latency") or {}).items()},
                   kind=str(d.get("kind", "torch")))

    def replace(self, **changes: Any) -> "ModelSnapshot":
        """A copy with ``changes`` applied (frozen dataclass ``replace``)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class StageReport:
    """What one stage did and measured (``to_dict()`` is JSON-ready, ``from_dict`` reads it back).

    Attributes:
        stage: the stage type (``prune``, ``finetune``, ``distill``, ``fuse``, ``quantize``, ``export``,
            ``evaluate``).
        config: the resolved config (every field, defaults filled in).
        before, after: snapshots of the input and output artifact (``None`` where not measured).
        seconds: wall time of the stage.
        details: stage-specific, JSON-ready (prune: groups, candidates, sensitivities; quantize: plan,
            integer-kernel report, SQNR; ...).
        warnings: sentences a user should read.
        name: the stage's name in a recipe (defaults to ``stage``).
    """

    stage: str
    config: Mapping[str, Any]
    before: ModelSnapshot | None = None
    after: ModelSnapshot | None = None
    seconds: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", MappingProxyType(plain_data(self.config)))
        object.__setattr__(self, "details", MappingProxyType(plain_data(self.details)))
        object.__setattr__(self, "warnings", tuple(str(w) for w in self.warnings))
        if not self.name:
            object.__setattr__(self, "name", self.stage)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "name": self.name, "config": dict(self.config),
                "before": self.before.to_dict() if self.before else None,
                "after": self.after.to_dict() if self.after else None,
                "seconds": float(self.seconds), "details": dict(self.details), "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StageReport":
        return cls(stage=str(d["stage"]), name=str(d.get("name") or d["stage"]), config=dict(d.get("config") or {}),
                   before=ModelSnapshot.from_dict(d["before"]) if d.get("before") else None,
                   after=ModelSnapshot.from_dict(d["after"]) if d.get("after") else None,
                   seconds=float(d.get("seconds", 0.0)), details=dict(d.get("details") or {}),
                   warnings=tuple(d.get("warnings") or ()))

    def replace(self, **changes: Any) -> "StageReport":
        """A copy with ``changes`` applied (frozen dataclass ``replace``)."""
        return dataclasses.replace(self, **changes)


def config_dict(config: Any) -> dict[str, Any]:
    """A frozen config dataclass as plain JSON data (every field)."""
    return plain_data(config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config))


def model_snapshot(model: Any, imgsz: int, data: Any = None, file: str | Path | None = None,
                   eval_batch: int = 32, workers: int = 0, conf_thres: float = 0.001,
                   device: str = "cpu") -> ModelSnapshot:
    """Measure a PyTorch model (params, GFLOPs at ``imgsz``; val mAPs when ``data`` is given; the size of
    ``file`` when given). Latency is measured separately, side by side for all artifacts of a report
    (:func:`yolocompress.profile.latency.interleaved_latency`)."""
    from yolocompress.profile.flops import gflops
    from yolocompress.profile.params import count_params

    snap = ModelSnapshot(imgsz=int(imgsz), params=int(count_params(model).total), gflops=float(gflops(model, imgsz)),
                         file_bytes=Path(file).stat().st_size if file is not None else None, kind="torch")
    if data is not None:
        snap = with_metrics(snap, model, data, eval_batch=eval_batch, workers=workers, conf_thres=conf_thres,
                            device=device)
    return snap


def onnx_snapshot(path: str | Path, imgsz: int, source: ModelSnapshot | None = None, data: Any = None,
                  eval_batch: int = 32, workers: int = 0, conf_thres: float = 0.001) -> ModelSnapshot:
    """Measure an ONNX file: its size and (with ``data``) val mAPs; params and GFLOPs are those of the
    PyTorch model it was made from (``source``), since int8 quantization keeps the architecture."""
    snap = ModelSnapshot(imgsz=int(imgsz), params=source.params if source else None,
                         gflops=source.gflops if source else None, file_bytes=Path(path).stat().st_size,
                         kind="onnx")
    if data is not None:
        snap = with_metrics(snap, Path(path), data, eval_batch=eval_batch, workers=workers, conf_thres=conf_thres)
    return snap


def with_metrics(snap: ModelSnapshot, artifact: Any, data: Any, eval_batch: int = 32, workers: int = 0,
                 conf_thres: float = 0.001, device: str = "cpu") -> ModelSnapshot:
    """``snap`` with val-split mAP50, mAP50-95 and per-class mAP50-95 of ``artifact`` filled in."""
    from yolocompress.engine.evaluator import evaluate_model

    result = evaluate_model(artifact, data, split="val", imgsz=snap.imgsz, batch=eval_batch, conf_thres=conf_thres,
                            workers=workers, device=device)
    return snap.replace(map50=float(result.map50), map50_95=float(result.map50_95),
                        per_class={c["name"]: float(c["map50_95"]) for c in result.per_class})


__all__ = ["Artifact", "Latency", "ModelSnapshot", "StageReport", "config_dict", "model_snapshot",
           "onnx_snapshot", "plain_data", "with_metrics"]
