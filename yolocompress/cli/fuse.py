"""``yolocompress fuse MODEL -o OUT.pt``: fold BatchNorm into convolutions and merge RepConv branches."""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from yolocompress.errors import CompressionError, InputError

# Fused and unfused eval outputs must agree to this maximum relative error (fp32 rounding is ~1e-7).
FUSE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class FuseResult:
    """What ``run`` did: the file written, sizes before / after, and the measured output difference."""

    output: str
    already_fused: bool
    params_before: int
    params_after: int
    batchnorms_folded: int
    batchnorms_left: list[str]
    repconvs_merged: int
    max_relative_error: float
    check_imgsz: int


def _count(model: torch.nn.Module) -> tuple[int, int, int]:
    from yolocompress.models.rep import RepConv

    modules = list(model.modules())
    return (sum(p.numel() for p in model.parameters()),
            sum(isinstance(m, torch.nn.BatchNorm2d) for m in modules),
            sum(isinstance(m, RepConv) and not m.deployed for m in modules))


def run(model: str, output: str, cfg: str | None = None, half: bool = False) -> FuseResult:
    """Fuse the checkpoint ``model`` and save it (our format, atomically) to ``output``.

    The fused and original models are compared in eval mode on a random batch at a small size (two
    largest strides); a difference above ``FUSE_TOLERANCE`` raises ``CompressionError`` and nothing is written.
    """
    from yolocompress.cli.common import load_cli_model
    from yolocompress.compress.fuse import fuse_model, is_fused, relative_error, remaining_batchnorms
    from yolocompress.io.checkpoint import history_entry, save_model

    if Path(output).suffix.lower() != ".pt":
        raise InputError(f"output must be a .pt file, got {output}")
    if not Path(model).is_file():
        raise InputError(f"model file not found: {model}")
    net, info = load_cli_model(model, cfg)
    already = is_fused(net)
    params, bns, reps = _count(net)
    fused = fuse_model(net)
    params_after, bns_after, reps_after = _count(fused)
    imgsz = 2 * int(net.stride.max())
    x = torch.rand(2, net.input_channels, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    error = relative_error(net, fused, x)
    if error > FUSE_TOLERANCE:
        raise CompressionError(f"fused model differs from the original (max relative error {error:.2e} > "
                               f"{FUSE_TOLERANCE:.0e}); not written")
    result = FuseResult(output=str(output), already_fused=already, params_before=params, params_after=params_after,
                        batchnorms_folded=bns - bns_after, batchnorms_left=remaining_batchnorms(fused),
                        repconvs_merged=reps - reps_after, max_relative_error=error, check_imgsz=imgsz)
    entry = history_entry("fuse", file=Path(model).name, **{k: v for k, v in asdict(result).items() if k != "output"})
    save_model(fused, output, imgsz=info.imgsz, history=[*info.history, entry], metrics=info.metrics, half=half)
    return result


def _main(args: argparse.Namespace) -> int:
    r = run(args.model, args.output, cfg=args.cfg, half=args.half)
    if r.already_fused:
        print(f"{args.model} was already fused; written unchanged to {r.output}")
        return 0
    print(f"fused {args.model} -> {r.output}: {r.batchnorms_folded} BatchNorm folded, {r.repconvs_merged} RepConv "
          f"merged, params {r.params_before:,} -> {r.params_after:,}, max relative output difference "
          f"{r.max_relative_error:.1e} (at {r.check_imgsz} px)")
    if r.batchnorms_left:
        print(f"left unfused (no rule for them): {', '.join(r.batchnorms_left)}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("fuse", help="fold BatchNorm into convolutions and merge RepConv branches (deploy form)",
                              description="Write the deploy form of a checkpoint: every BatchNorm folded into the "
                                          "convolution before it and every RepConv merged into one convolution. "
                                          "Outputs are unchanged up to float rounding (checked). Prune before "
                                          "fusing: pruning needs the BatchNorm layers.")
    p.add_argument("model", help="checkpoint (.pt: ours, Ultralytics, or a state_dict with --cfg)")
    p.add_argument("-o", "--output", required=True, help="fused checkpoint to write (.pt, our format)")
    p.add_argument("--cfg", default=None, help="model config for a bare state_dict")
    p.add_argument("--half", action="store_true", help="store the weights as fp16 (half the file size)")
    p.set_defaults(func=_main)
