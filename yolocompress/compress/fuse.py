"""The fuse stage: the deploy form of a model (BatchNorm folded, RepConv branches merged), parity-checked.

The re-parameterization itself (the fuser registry, the arithmetic, ``fuse``) is the model layer's
deploy step, :mod:`yolocompress.models.deploy`; its public names are re-exported here. This module adds the
stage of the stage contract: ``fuse_stage(model, data, FuseConfig()) -> (fused model, StageReport)``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from yolocompress.compress.stage import ModelSnapshot, StageReport, config_dict
from yolocompress.errors import CompressionError, InputError
from yolocompress.models.deploy import (
    Fuser, batchnorm_affine, foldable, fuse, fuse_structure, is_fused, register_fuser, relative_error,
    remaining_batchnorms, require_unfused,
)
from yolocompress.models.inputs import max_stride
from yolocompress.models.rep import RepConv
from yolocompress.models.shapes import num_params


# Fused and unfused eval outputs must agree to this maximum relative error (fp32 rounding is ~1e-7).
FUSE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class FuseConfig:
    """Settings of the fuse stage: the parity bound between the fused and the original model, checked in
    eval mode on a random batch of 2 at ``check_imgsz`` pixels (``None``: twice the largest stride)."""

    tolerance: float = FUSE_TOLERANCE
    check_imgsz: int | None = None

    def __post_init__(self) -> None:
        if not self.tolerance > 0:
            raise InputError(f"tolerance must be > 0, got {self.tolerance}")
        if self.check_imgsz is not None and (int(self.check_imgsz) < 32 or int(self.check_imgsz) % 32):
            raise InputError(f"check_imgsz must be a positive multiple of 32, got {self.check_imgsz}")


def _structure_counts(model: nn.Module) -> tuple[int, int, int]:
    """(parameters, BatchNorm2d modules, RepConv modules not merged yet)."""
    modules = list(model.modules())
    return (num_params(model),
            sum(isinstance(m, nn.BatchNorm2d) for m in modules),
            sum(isinstance(m, RepConv) and not m.deployed for m in modules))


def fuse_stage(model: nn.Module, data: object = None, config: FuseConfig | None = None
               ) -> tuple[nn.Module, StageReport]:
    """The fuse stage: ``(fuse(model), StageReport)``; ``model`` is not modified, ``data`` unused.

    The fused and original models are compared on a random batch; a relative difference above
    ``config.tolerance`` raises ``CompressionError`` (nothing is returned to be written). ``details``:
    ``already_fused``, ``batchnorms_folded``, ``batchnorms_left`` (names no fuser handles), ``repconvs_merged``,
    ``max_relative_error``, ``check_imgsz``; ``before`` / ``after`` carry the parameter counts.
    """
    config = config or FuseConfig()
    t0 = time.perf_counter()
    already = is_fused(model)
    params, bns, reps = _structure_counts(model)
    fused = fuse(model)
    params_after, bns_after, reps_after = _structure_counts(fused)
    imgsz = int(config.check_imgsz or 2 * max_stride(model))
    x = torch.rand(2, int(getattr(model, "input_channels", 3)), imgsz, imgsz,
                   generator=torch.Generator().manual_seed(0))
    error = relative_error(model, fused, x)
    if error > config.tolerance:
        raise CompressionError(f"fused model differs from the original (max relative error {error:.2e} > "
                               f"{config.tolerance:.0e}); not written")
    left = remaining_batchnorms(fused)
    warnings = [f"left unfused (no rule for them): {', '.join(left)}"] if left else []
    report = StageReport(
        stage="fuse", config=config_dict(config), seconds=time.perf_counter() - t0,
        before=ModelSnapshot(imgsz=imgsz, params=params), after=ModelSnapshot(imgsz=imgsz, params=params_after),
        details={"already_fused": already, "batchnorms_folded": bns - bns_after, "batchnorms_left": left,
                 "repconvs_merged": reps - reps_after, "max_relative_error": error, "check_imgsz": imgsz},
        warnings=tuple(warnings))
    return fused, report


__all__ = ["FUSE_TOLERANCE", "FuseConfig", "Fuser", "batchnorm_affine", "foldable", "fuse", "fuse_stage",
           "fuse_structure", "is_fused", "register_fuser", "relative_error", "remaining_batchnorms", "require_unfused"]
