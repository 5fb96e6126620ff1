"""Post-training int8 quantization of an exported detector with ONNX Runtime's quantization tools.

Pipeline (``quantize_ptq``): export fp32 ONNX (when given a model) -> ``quant_pre_process`` -> the
:class:`~yolocompress.compress.quant.plan.QuantPlan` of that graph -> calibration of every planned tensor
on letterboxed images of the **training** split (ORT's MinMax / Percentile / Entropy calibrators, or our MSE
search over ORT's histograms) -> ranges merged over each scale-sharing group -> ``quantize_static`` (QDQ,
only the planned nodes, symmetric int8 per-channel weights, calibration ranges passed as its cache) ->
verification of the integer kernels ORT really builds, and the int8-vs-fp32 output SQNR. The steps live in
:mod:`~yolocompress.compress.quant.calibrate` (images, ranges), :mod:`~yolocompress.compress.quant.qdq`
(graph passes, ``quantize_static``, metadata) and :mod:`~yolocompress.compress.quant.verify` (kernels,
SQNR); this module holds the settings, the pipeline and its report.

Activation type: unsigned 8-bit by default. On x86 ONNX Runtime fuses ``DQ -> Conv -> Q`` into an integer
kernel only for uint8 activations (u8 x s8 is what VNNI's ``vpdpbusd`` multiplies); with int8 activations
every Conv stays float between Q/DQ pairs and the model ran about 3x slower than fp32 (measured with ORT
1.32 on the benchmark CPU; ``activation_type="s8"`` is kept to measure that).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from yolocompress.compress.quant.autotune import (PlanCandidate, autotune_details, choose_plan,
                                                  slower_than_fp32_warning, speed_details, time_plans)
from yolocompress.compress.quant.calibrate import (
    CALIBRATION_METHODS, calibrate, calibration_images, shared_ranges,
)
from yolocompress.compress.quant.head import head_hessians
from yolocompress.compress.quant.plan import SILU_MODES, STEM_MODES, PlanConfig, QuantPlan, build_plan
from yolocompress.compress.quant.qdq import copy_metadata, preprocess, quantize_qdq
from yolocompress.compress.quant.verify import KernelCheckResult, integer_kernel_report, output_sqnr
from yolocompress.compress.stage import ModelSnapshot, StageReport
from yolocompress.errors import InputError
from yolocompress.export.openvino import ONNX_BACKENDS
from yolocompress.io.workdir import work_dir

logger = logging.getLogger(__name__)

ACTIVATION_TYPES = ("u8", "s8")
# silu / stem value that lets PTQ time the candidate plans on this machine (compress/quant/autotune.py)
AUTO = "auto"
# float_prefix values "auto" tries: none, the stem block, the stem and the next layer
AUTO_FLOAT_PREFIXES = (0, 1, 2)


@dataclass(frozen=True)
class QuantConfig:
    """Settings of one PTQ run (validated on construction).

    Attributes:
        calibration: ``minmax``, ``percentile`` (ORT), ``entropy`` (KL, ORT) or ``mse`` (ours, the default:
            the range minimising the expected quantization MSE over ORT's histogram; on the baseline it lost
            the least mAP and gave the highest output SQNR, see benchmarks/RESULTS.md).
        calib_images: calibration images, taken evenly spread over the training split.
        per_channel: per-output-channel weight scales (else one scale per tensor).
        activation_type: ``u8`` (what ORT's x86 integer kernels take) or ``s8``.
        silu, stem, head, exclude: see :class:`~yolocompress.compress.quant.plan.PlanConfig`; ``silu`` and
            ``stem`` may also be ``"auto"``: PTQ builds each candidate plan, times them on this machine with
            ``tune_backend`` and keeps the fastest within ``tune_tolerance_db`` of the default plan's output
            SQNR (:mod:`~yolocompress.compress.quant.autotune`).
        float_prefix: leading layers kept float (:class:`~yolocompress.compress.quant.plan.PlanConfig`), or
            ``"auto"``: try 0, 1 and 2.
        tune_backend: runtime the candidates, and the written int8 file against the fp32 one, are timed on
            (``onnxruntime``, ``openvino``, ``openvino-bf16``): where the file will be deployed. Every run
            reports that speed (``details["speed"]``) and warns when int8 is no faster on this CPU
            (:func:`~yolocompress.compress.quant.autotune.slower_than_fp32_warning`).
        tune_threads, tune_runs: threads and timed batch-1 calls per file.
        tune_tolerance_db: SQNR a candidate may lose against the default plan and still be chosen.
        imgsz: export size for a PyTorch model (an ONNX file keeps its own fixed size); ``None``: a
            checkpoint's recorded training size, 640 for an in-memory model.
        percentile: for ``calibration="percentile"``.
        bins: histogram bins for ``percentile`` and ``mse`` (``entropy`` uses ORT's 128).
        check_images: calibration images used to measure the int8-vs-fp32 output SQNR.
    """

    calibration: str = "mse"
    calib_images: int = 256
    per_channel: bool = True
    activation_type: str = "u8"
    silu: str = "int8"
    stem: str = "float"
    head: str = "int8"
    exclude: tuple[str, ...] = ()
    imgsz: int | None = None
    percentile: float = 99.999
    bins: int = 2048
    check_images: int = 4
    float_prefix: int | str = 0
    tune_backend: str = "onnxruntime"
    tune_threads: int = 2
    tune_runs: int = 20
    tune_tolerance_db: float = 1.0

    def __post_init__(self) -> None:
        if self.calibration not in CALIBRATION_METHODS:
            raise InputError(f"calibration must be one of {', '.join(CALIBRATION_METHODS)}, "
                             f"got {self.calibration!r}")
        if self.activation_type not in ACTIVATION_TYPES:
            raise InputError(f"activation_type must be one of {', '.join(ACTIVATION_TYPES)}, "
                             f"got {self.activation_type!r}")
        if self.calib_images < 1:
            raise InputError(f"calib_images must be >= 1, got {self.calib_images}")
        if not 0 < self.percentile <= 100:
            raise InputError(f"percentile must be in (0, 100], got {self.percentile}")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if self.tune_backend not in ONNX_BACKENDS:
            raise InputError(f"tune_backend must be one of {', '.join(ONNX_BACKENDS)}, "
                             f"got {self.tune_backend!r}")
        if self.tune_threads < 1 or self.tune_runs < 1:
            raise InputError(f"tune_threads and tune_runs must be >= 1, got {self.tune_threads}, "
                             f"{self.tune_runs}")
        if not float(self.tune_tolerance_db) >= 0:
            raise InputError(f"tune_tolerance_db must be >= 0, got {self.tune_tolerance_db}")
        if self.float_prefix != AUTO and not isinstance(self.float_prefix, int):
            raise InputError(f"float_prefix must be a layer count >= 0 or 'auto', got {self.float_prefix!r}")
        self.plan_config()  # validates silu / stem / head / float_prefix

    @property
    def autotune(self) -> bool:
        """Whether PTQ chooses the SiLU and/or stem form by timing candidate plans."""
        return AUTO in (self.silu, self.stem, self.float_prefix)

    def plan_candidates(self) -> list[PlanConfig]:
        """The plans to choose from: the configured one, or with ``"auto"`` every value of that setting (the
        default plan's values first: it is the reference of :func:`~.autotune.choose_plan`)."""
        silus = SILU_MODES if self.silu == AUTO else (self.silu,)
        stems = tuple(reversed(STEM_MODES)) if self.stem == AUTO else (self.stem,)  # "float" (default) first
        prefixes = AUTO_FLOAT_PREFIXES if self.float_prefix == AUTO else (self.float_prefix,)
        return [PlanConfig(silu=a, stem=b, head=self.head, exclude=self.exclude, float_prefix=k)
                for k in prefixes for a in silus for b in stems]

    def plan_config(self, exclude: Sequence[str] = ()) -> PlanConfig:
        """The plan settings, with ``exclude`` added to the configured exclusions. With ``"auto"`` this is the
        plan that quantizes every tensor any candidate quantizes (SiLU and stem int8), so one calibration
        serves all candidates."""
        silu = "int8" if self.silu == AUTO else self.silu
        stem = "int8" if self.stem == AUTO else self.stem
        prefix = 0 if self.float_prefix == AUTO else self.float_prefix
        return PlanConfig(silu=silu, stem=stem, head=self.head, exclude=(*self.exclude, *exclude),
                          float_prefix=prefix)



def _fp32_onnx(model_or_onnx: Any, imgsz: int | None, tmp: Path) -> Path:
    """The fp32 ONNX file to quantize: the given ``.onnx``, or an export of a model / ``.pt`` checkpoint at
    ``imgsz`` (``None``: the checkpoint's training size, 640 for a module)."""
    from torch import nn

    from yolocompress.export.onnx import export_onnx
    from yolocompress.io.checkpoint import DEFAULT_IMGSZ

    if isinstance(model_or_onnx, nn.Module):
        return export_onnx(model_or_onnx, tmp / "model.onnx", imgsz=imgsz or DEFAULT_IMGSZ)
    path = Path(model_or_onnx)
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    if path.suffix.lower() == ".onnx":
        return path
    from yolocompress.io.checkpoint import load_model_with_info

    model, info = load_model_with_info(path)
    return export_onnx(model, tmp / f"{path.stem}.onnx", imgsz=imgsz or info.imgsz)


def _input_hw(path: Path) -> tuple[int, int]:
    from yolocompress.engine.predictors import onnx_input_shape

    shape = onnx_input_shape(path)
    if not shape.static_size or shape.height != shape.width:
        raise InputError(f"{path.name}: quantization needs a fixed square input size, got "
                         f"{shape.height}x{shape.width}; export it with a fixed --imgsz")
    if shape.batch not in (1, None):
        raise InputError(f"{path.name}: quantization needs batch 1 or a dynamic batch, got {shape.batch}")
    return shape.height, shape.width


def default_output(model_or_onnx: Any) -> Path:
    """``<name>-int8.onnx`` beside a model file; a temporary folder for an in-memory model."""
    if isinstance(model_or_onnx, (str, os.PathLike)):
        p = Path(model_or_onnx)
        return p.with_name(f"{p.stem}-int8.onnx")
    return Path(tempfile.mkdtemp(prefix="yolocompress-int8-")) / "model-int8.onnx"


@dataclass
class CalibratedGraph:
    """A graph ready to be quantized under any plan derived from ``plan``: the fp32 file, its
    pre-processed form, the calibration images and the observed range of every tensor ``plan`` quantizes
    (a plan with more nodes excluded quantizes a subset of them)."""

    fp32: Path
    pre: Path
    imgsz: tuple[int, int]
    images: np.ndarray
    plan: QuantPlan
    ranges: dict[str, tuple[float, float]]
    hessians: dict[str, np.ndarray] = field(default_factory=dict)  # inputs of the integer head convs


def calibrated_graph(model_or_onnx: Any, data_cfg: Any, config: QuantConfig,
                     folder: Path) -> CalibratedGraph:
    """Export (for a model), pre-process, plan and calibrate into ``folder``."""
    fp32 = _fp32_onnx(model_or_onnx, config.imgsz, folder)
    hw = _input_hw(fp32)
    pre = folder / "pre.onnx"
    preprocess(fp32, pre)
    plan = build_plan(pre, config.plan_config())
    images = calibration_images(data_cfg, hw[0], config.calib_images)
    ranges = calibrate(pre, plan, images, config.calibration, config.percentile, config.bins)
    hessians = head_hessians(pre, [c.name for c in plan.int8_head], images) if plan.int8_head else {}
    return CalibratedGraph(fp32, pre, hw, images, plan, ranges, hessians)


def build_int8(prepared: CalibratedGraph, plan: QuantPlan, config: QuantConfig, out_path: Path,
               extra_options: dict[str, Any] | None = None) -> Path:
    """Write the int8 QDQ model of ``plan`` (a plan of ``prepared.pre``) to ``out_path``, with metadata."""
    try:
        quantize_qdq(prepared.pre, out_path, plan, shared_ranges(prepared.ranges, plan),
                     per_channel=config.per_channel, activation_type=config.activation_type,
                     extra_options=extra_options, hessians=prepared.hessians)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise InputError(f"ONNX Runtime cannot quantize {prepared.fp32.name}: {exc}") from exc
    copy_metadata(prepared.fp32, out_path)
    return out_path


def quantize_ptq(model_or_onnx: Any, data_cfg: Any, config: QuantConfig | None = None,
                 output: str | os.PathLike | None = None) -> tuple[Path, StageReport]:
    """Post-training int8 quantization of a detector for ONNX Runtime.

    Args:
        model_or_onnx: a detector module, a ``.pt`` checkpoint or an exported fp32 ``.onnx`` file (fixed
            square input, batch 1 or dynamic).
        data_cfg: ``data.yaml`` path or ``DataConfig``; calibration images come from its ``train`` split.
        config: :class:`QuantConfig`.
        output: where to write the int8 ``.onnx`` (atomically); default :func:`default_output`.
    Returns:
        ``(int8 path, StageReport)``: the ``quantize`` stage report built by :func:`write_verified`. Planned
        convs that ORT left float are listed in ``report.warnings`` (and in
        ``report.details["kernels"]["stayed_float"]``).
    """
    config = config or QuantConfig()
    t0 = time.perf_counter()
    output = Path(output) if output is not None else default_output(model_or_onnx)
    with work_dir("yolocompress-ptq-") as tmp_name:
        tmp = Path(tmp_name)
        prepared = calibrated_graph(model_or_onnx, data_cfg, config, tmp)
        if not config.autotune:
            qdq = build_int8(prepared, prepared.plan, config, tmp / "int8.onnx")
            return output, write_verified(prepared, prepared.plan, config, qdq, output, t0)
        plan, qdq, tuning, speed = _autotuned_int8(prepared, config, tmp)
        report = write_verified(prepared, plan, config, qdq, output, t0, speed=speed)
    return output, report.replace(details={**report.details, "autotune": tuning})


def _autotuned_int8(prepared: CalibratedGraph, config: QuantConfig,
                    folder: Path) -> tuple[QuantPlan, Path, dict[str, Any], dict[str, Any]]:
    """Build every candidate plan of ``config`` from one calibration, measure and time them (the fp32 file
    beside them), and return the chosen (plan, int8 file, ``details["autotune"]``, ``details["speed"]``)."""
    built = []
    for k, plan_cfg in enumerate(config.plan_candidates()):
        plan = build_plan(prepared.pre, plan_cfg)
        qdq = build_int8(prepared, plan, config, folder / f"candidate-{k}.onnx")
        sqnr = output_sqnr(prepared.fp32, qdq, prepared.images[:config.check_images])
        built.append((plan_cfg, plan, qdq, sqnr))
    times = time_plans({**{str(k): b[2] for k, b in enumerate(built)}, "fp32": prepared.fp32},
                       prepared.imgsz[0], config.tune_backend, config.tune_threads, config.tune_runs)
    candidates = [PlanCandidate(cfg.silu, cfg.stem, sqnr[0], sqnr[1], *times[str(k)],
                                float_prefix=cfg.float_prefix) for k, (cfg, _, _, sqnr) in enumerate(built)]
    chosen, reason = choose_plan(candidates, config.tune_tolerance_db)
    details = autotune_details(candidates, chosen, reason, config.tune_backend, config.tune_threads)
    speed = speed_details((candidates[chosen].median_ms, candidates[chosen].min_ms), times["fp32"],
                          config.tune_backend, config.tune_threads)
    return built[chosen][1], built[chosen][2], details, speed


def write_verified(prepared: CalibratedGraph, plan: QuantPlan, config: QuantConfig, qdq: Path, output: Path,
                   t0: float, method: str = "ptq", speed: dict[str, Any] | None = None) -> StageReport:
    """Verify the integer kernels of ``qdq``, measure it against ``prepared.fp32``, write it atomically to
    ``output`` and return the ``quantize`` stage report (the one place it is built; QAT adds its own
    ``config["qat"]`` and ``details["qat"]`` with ``StageReport.replace``).

    ``config`` is ``{"method": method, **QuantConfig fields}``; ``before`` / ``after`` snapshot the fp32 and
    int8 ONNX files (size only: the caller measures mAP and latency). ``details``: ``output``,
    ``calib_images``, ``imgsz`` ([h, w]), ``plan``, ``kernels`` (the integer-kernel verification of the
    optimized graph), ``fp32_bytes``, ``int8_bytes``, ``size_ratio`` (int8 / fp32 file bytes), ``sqnr_db``
    (int8 vs fp32 decoded outputs, all columns, on ``check_images`` calibration images; ``None`` for a
    noiseless output), ``score_sqnr_db`` (objectness and class-score columns only), ``qat`` (``None``) and
    ``speed`` (:func:`~yolocompress.compress.quant.autotune.speed_details`: ``speed`` when the caller timed
    the file already, else ``qdq`` and the fp32 file timed side by side here on ``config.tune_backend``, a
    second or two); a warning when the int8 file is no faster on this CPU.
    """
    from yolocompress.io.atomic import atomic_path

    kernels = integer_kernel_report(qdq, plan)
    sqnr, score_sqnr = output_sqnr(prepared.fp32, qdq, prepared.images[:config.check_images])
    if speed is None:
        times = time_plans({"int8": qdq, "fp32": prepared.fp32}, prepared.imgsz[0], config.tune_backend,
                           config.tune_threads, config.tune_runs)
        speed = speed_details(times["int8"], times["fp32"], config.tune_backend, config.tune_threads)
    with atomic_path(output) as target:
        shutil.copyfile(qdq, target)
    warnings = []
    if kernels.stayed_float:
        warnings.append(f"{len(kernels.stayed_float)} planned convolutions stayed float after ONNX Runtime "
                        f"optimization: {', '.join(kernels.stayed_float[:6])}")
    slower = slower_than_fp32_warning(speed)
    if slower:
        warnings.append(slower)
    fp32_bytes, int8_bytes = prepared.fp32.stat().st_size, qdq.stat().st_size
    side = int(prepared.imgsz[0])
    return StageReport(
        stage="quantize", config={"method": method, **asdict(config)},
        before=ModelSnapshot(imgsz=side, file_bytes=fp32_bytes, kind="onnx"),
        after=ModelSnapshot(imgsz=side, file_bytes=int8_bytes, kind="onnx"),
        seconds=time.perf_counter() - t0, warnings=tuple(warnings),
        details={"output": str(output), "calib_images": len(prepared.images), "imgsz": list(prepared.imgsz),
                 "plan": _plan_summary(plan), "kernels": kernels.to_dict(), "fp32_bytes": fp32_bytes,
                 "int8_bytes": int8_bytes, "size_ratio": int8_bytes / fp32_bytes, "sqnr_db": sqnr,
                 "score_sqnr_db": score_sqnr, "qat": None, "speed": speed})


def _plan_summary(plan: QuantPlan) -> dict[str, Any]:
    return {"quantized_nodes": len(plan.nodes), "op_types": list(plan.op_types),
            "quantized_tensors": len(plan.tensors), "shared_scale_groups": len(plan.shared),
            "int8_convs": len(plan.int8_convs),
            "float_convs": {c.scope: c.reason for c in plan.float_convs},
            "int8_mac_share": plan.int8_mac_share}


def kernel_summary(report: KernelCheckResult) -> str:
    """One line: planned convs as integer kernels and their share of conv multiply-adds."""
    return (f"{report.planned_integer}/{report.planned} planned convs run as integer kernels "
            f"({100 * report.planned_mac_share:.1f}% of their MACs; {100 * report.integer_mac_share:.1f}% of "
            f"all conv MACs)")


__all__: Sequence[str] = ("ACTIVATION_TYPES", "AUTO", "CalibratedGraph", "QuantConfig", "build_int8",
                          "calibrated_graph", "default_output", "kernel_summary", "quantize_ptq",
                          "write_verified")
