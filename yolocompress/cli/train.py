"""``yolocompress train MODEL_OR_CFG --data DATA``: fine-tune a checkpoint or train a config from scratch.

MODEL_OR_CFG is a ``.pt`` (ours or Ultralytics') or a model config (shipped name or YAML). A checkpoint
whose class count differs from the data set's gets a new head (every other weight is transferred, as
YOLOv5 does). ``--resume [last.pt]`` continues an interrupted run with its stored settings. For several
processes run it under ``torchrun --nproc_per_node N -m yolocompress train ...``.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any


from yolocompress.cli.common import WORKERS, add_workers, image_size, positive_int
from yolocompress.errors import InputError
from yolocompress.io.paths import names_a_file, preflight


DESCRIPTION = (
    "Fine-tune a .pt checkpoint (ours or Ultralytics') or train a model config from scratch. A checkpoint whose "
    "class count differs from the data set's gets a new head. --resume continues an interrupted run with its "
    "stored settings. Several processes: torchrun --nproc_per_node N -m yolocompress train ...")


def _load_hyp(path: str | None):
    from yolocompress.engine.loss import Hyp

    return Hyp() if path is None else Hyp.from_yaml(path)


def _transfer(source, nc: int):
    """A model like ``source`` with an ``nc``-class head; every weight outside the head is copied.

    A resolved config (our format) cannot change its class count; its ``source`` (the config it was built
    from) is used instead, which is only right when the model was not pruned: checked below.
    """
    from yolocompress.models import DetectionModel

    config = source.yaml
    if "layers" in config and isinstance(config.get("source"), dict):
        config = config["source"]
    try:
        model = DetectionModel(config, nc=nc)
    except InputError as exc:
        raise InputError(f"the model has {source.nc} classes and the data set {nc}, and its head cannot be "
                         f"replaced ({exc})") from exc
    target = model.state_dict()
    head = f"model.{len(model.model) - 1}."
    fitting = {k: v for k, v in source.state_dict().items() if k in target and v.shape == target[k].shape}
    lost = [k for k in target if not k.startswith(head) and k not in fitting]
    if lost:
        raise InputError(f"the model has {source.nc} classes and the data set {nc}; a new head was built, but "
                         f"{len(lost)} weights outside it do not fit (a pruned or modified model?), e.g. {lost[0]}")
    model.load_state_dict(fitting, strict=False)
    return model


def build_training_model(model_or_cfg: str, data_cfg):
    """The model to train: a loaded checkpoint (re-headed when nc differs) or a fresh config model, and the
    image size the checkpoint records (``DEFAULT_IMGSZ``, 640, for a config or an Ultralytics file)."""
    from yolocompress.io.checkpoint import DEFAULT_IMGSZ, load_model_with_info
    from yolocompress.models import build_model

    path = Path(model_or_cfg)
    imgsz = DEFAULT_IMGSZ
    if path.suffix.lower() == ".pt":
        model, info = load_model_with_info(path)
        imgsz = info.imgsz
        if model.nc != data_cfg.nc:
            model = _transfer(model, data_cfg.nc)
    elif path.suffix.lower() == ".onnx":
        raise InputError(f"{path.name} is an ONNX model; training needs a .pt checkpoint or a model config")
    else:
        model = build_model(model_or_cfg, nc=data_cfg.nc)
    model.names = list(data_cfg.names)
    return model.train(), imgsz


def run(model: str | None = None, data: str | None = None, epochs: int = 100, imgsz: int | None = None,
        batch: int = 16, device: str = "cpu", workers: int = WORKERS, seed: int = 0, out: str = "runs/train",
        resume: str | None = None,
        patience: int = 100, close_mosaic: int = 10, cos_lr: bool = False, hyp: str | None = None,
        amp: bool = True, sync_bn: bool = False, val: bool = True, cache: bool = False,
        exist_ok: bool = False, progress: bool = True, bf16: bool = False, channels_last: bool = False,
        nominal_batch: int = 64):
    """Train and return the ``TrainResult``; every CLI flag is a keyword here.

    ``resume``: a ``last.pt`` to continue; the run's stored settings are used (``device`` and ``workers``
    as given here), and ``model``/``data`` may be left out. ``imgsz`` defaults to the size a checkpoint of
    ours records (640 for a config or an Ultralytics checkpoint), as in ``eval``, ``export`` and ``prune``.
    """
    from yolocompress.data import load_data_config
    from yolocompress.cli.common import ProgressPrinter
    from yolocompress.engine.trainer import TrainConfig, Trainer, load_checkpoint, seed_everything

    printer = ProgressPrinter() if progress else None

    if resume:
        ckpt = load_checkpoint(resume)
        if ckpt.get("wrapped"):
            raise InputError(f"{resume} trains a wrapped (e.g. quantization-aware) model; resume it through "
                             "the recipe that started it")
        stored: dict[str, Any] = dict(ckpt["train_config"])
        stored.update(resume=str(resume), device=device, workers=workers,
                      out_dir=str(Path(resume).resolve().parent.parent))
        config = TrainConfig(**{f.name: stored[f.name] for f in dataclasses.fields(TrainConfig) if f.name in stored})
        data_path = data or ckpt["data"].get("yaml_path")
        if not data_path:
            raise InputError(f"{resume} does not record its data.yaml: pass --data")
        data_cfg = load_data_config(data_path)
        from yolocompress.engine.loss import Hyp
        from yolocompress.models import DetectionModel

        net = DetectionModel(ckpt["model_config"])
        return Trainer(net, data_cfg, config, Hyp.from_dict(ckpt["hyp"]), on_progress=printer).train()

    if model is None or data is None:
        raise InputError("train needs MODEL_OR_CFG and --data (or --resume)")
    # any file counts, not only last.pt: a run killed before its first epoch ended leaves results and temporary
    # files behind, and a rerun must not mix its files with them unnoticed
    earlier = sorted(f for f in Path(out).rglob("*") if f.is_file()) if Path(out).is_dir() else []
    if earlier and not exist_ok:
        resume = "--resume to continue it, " if (Path(out) / "weights" / "last.pt").is_file() else ""
        raise InputError(f"{out} already holds {len(earlier)} file(s) of an earlier run (e.g. "
                         f"{earlier[0].relative_to(out)}): {resume}--exist-ok to overwrite, or choose another --out")
    hyperparameters = _load_hyp(hyp)
    data_cfg = load_data_config(data)
    seed_everything(seed)  # the fresh model's initial weights too
    net, recorded_imgsz = build_training_model(model, data_cfg)
    config = TrainConfig(epochs=epochs, imgsz=imgsz or recorded_imgsz, batch=batch, device=device,
                         workers=workers, seed=seed, out_dir=out, patience=patience,
                         close_mosaic=close_mosaic,
                         cos_lr=cos_lr, amp=amp, sync_bn=sync_bn, val=val, cache=cache, bf16=bf16,
                         channels_last=channels_last, nominal_batch=nominal_batch)
    return Trainer(net, data_cfg, config, hyperparameters, on_progress=printer).train()


def _main(args: argparse.Namespace) -> int:
    resume = args.resume
    if resume == "":  # bare --resume: the run in --out
        resume = str(Path(args.out) / "weights" / "last.pt")
    model = args.model if args.model and names_a_file(args.model) else None
    preflight(inputs=[("training checkpoint", resume), ("model file", model), ("data.yaml", args.data),
                      ("hyp file", args.hyp)],
              folders=[("--out", None if resume else args.out)])
    result = run(model=args.model, data=args.data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                 device=args.device, workers=args.workers, seed=args.seed, out=args.out, resume=resume,
                 patience=args.patience, close_mosaic=args.close_mosaic, cos_lr=args.cos_lr, hyp=args.hyp,
                 amp=not args.no_amp, sync_bn=args.sync_bn, val=not args.noval, cache=args.cache,
                 exist_ok=args.exist_ok, bf16=args.bf16, channels_last=args.channels_last,
                 nominal_batch=args.nominal_batch)
    from yolocompress.engine.distributed import context_from_env

    if context_from_env().is_main:
        how = "stopped early (no improvement)" if result.stopped_early else "done"
        print(f"{how} after {result.epochs_completed} epochs; best epoch {result.best_epoch + 1} "
              f"(fitness {result.best_fitness:.4f})\n  best: {result.best_path}\n  last: {result.last_path}\n"
              f"  results: {result.out_dir / 'results.csv'}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="fine-tune a checkpoint or train a model config on a data.yaml",
                              description=DESCRIPTION)
    p.add_argument("model", nargs="?", help="checkpoint (.pt) or model config (name such as yolov5n, or YAML)")
    p.add_argument("--data", help="data.yaml")
    p.add_argument("--epochs", type=positive_int, default=100, help="total epochs (default 100)")
    p.add_argument("--imgsz", type=image_size, default=None,
                   help="image size in pixels (default: the size the checkpoint records, else 640)")
    p.add_argument("--batch", type=positive_int, default=16, help="global batch size (default 16)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    add_workers(p, "data-loading (per training process)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default="runs/train", help="run folder (default runs/train)")
    p.add_argument("--exist-ok", action="store_true", help="overwrite a previous run in --out")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="PATH",
                   help="continue from a last.pt (bare --resume: the one in --out)")
    p.add_argument("--patience", type=int, default=100, help="stop after N epochs without improvement (0: never)")
    p.add_argument("--close-mosaic", type=int, default=10, help="no mosaic for the last N epochs (default 10)")
    p.add_argument("--cos-lr", action="store_true", help="cosine learning-rate decay")
    p.add_argument("--hyp", default=None, help="hyperparameter YAML (YOLOv5 keys; default hyp.scratch-low)")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm in multi-GPU runs")
    p.add_argument("--noval", action="store_true", help="skip per-epoch validation")
    p.add_argument("--cache", action="store_true", help="keep decoded, resized images in RAM")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast on the CPU (about 1.7x faster with AMX/AVX-512 BF16, with --channels-last)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (oneDNN's fast CPU path)")
    p.add_argument("--nominal-batch", type=int, default=64,
                   help="images per optimizer step; gradients are accumulated up to it (default 64, as YOLOv5)")
    p.set_defaults(func=_main)
