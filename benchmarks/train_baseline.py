"""Train the shipped baseline: yolov5n on the synthetic shapes set at 256 px, with our own trainer.

Writes ``yolocompress/assets/baseline.pt`` (our format, fp16 weights, < 5 MB) and
``yolocompress/assets/baseline.json`` (metrics, training curve, the exact command). The validation split
is the generator's default val set (seed 0, 128 images, 256 px): exactly what ``yolocompress demo``
generates, so the demo reproduces the recorded metrics.

    PYTHONPATH=. python3 benchmarks/train_baseline.py --epochs 80 --n-train 2048 --close-mosaic 10
    PYTHONPATH=. python3 benchmarks/train_baseline.py --epochs 80 --n-train 2048 --close-mosaic 10 --resume   # after a kill
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from yolocompress.cli.common import ProgressPrinter
from yolocompress.data import load_data_config
from yolocompress.data.synthetic import synthesize_dataset
from yolocompress.engine.evaluator import evaluate_model
from yolocompress.engine.rng import seed_everything
from yolocompress.engine.trainer import TrainConfig, Trainer
from yolocompress.io.atomic import atomic_write_json
from yolocompress.io.checkpoint import history_entry, load_model, save_model
from yolocompress.models import build_model

ASSETS = Path(__file__).resolve().parents[1] / "yolocompress" / "assets"


def _current_best(run_dir: Path):
    """(model, epochs done, best epoch, history rows) from a run folder's best.pt and last.pt."""
    from yolocompress.engine.train_checkpoint import load_checkpoint

    last = load_checkpoint(run_dir / "weights" / "last.pt")
    history = last.get("history", [])
    best_row = max(history, key=lambda h: h.get("fitness", 0.0)) if history else {"epoch": -1}
    return load_model(run_dir / "weights" / "best.pt"), len(history), best_row["epoch"], history


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default="yolov5n")
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--n-train", type=int, default=2048)
    parser.add_argument("--n-val", type=int, default=128)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--nominal-batch", type=int, default=16,
                        help="images per optimizer step (more steps converge faster on a CPU budget)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--close-mosaic", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (1 is faster when other jobs share the cores: no OpenMP barrier stalls)")
    parser.add_argument("--fp32", action="store_true", help="train in fp32 (default: bf16 autocast, channels-last)")
    parser.add_argument("--work", default="runs/baseline", help="where data and the training run go")
    parser.add_argument("--resume", action="store_true", help="continue the run in --work from last.pt")
    parser.add_argument("--out", default=str(ASSETS / "baseline.pt"))
    parser.add_argument("--export-only", action="store_true",
                        help="skip training: export the run's current best.pt (e.g. while it still trains)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    data_yaml = work / "data" / "data.yaml"
    if not data_yaml.is_file():
        synthesize_dataset(work / "data", n_train=args.n_train, n_val=args.n_val, imgsz=args.imgsz, seed=args.seed)
    data = load_data_config(data_yaml)
    seed_everything(args.seed)
    model = build_model(args.cfg, nc=data.nc)
    model.names = list(data.names)
    last = work / "train" / "weights" / "last.pt"
    config = TrainConfig(epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, device="cpu",
                         workers=args.workers, seed=args.seed, out_dir=str(work / "train"),
                         resume=str(last) if args.resume and last.is_file() else None,
                         close_mosaic=args.close_mosaic, patience=0, cache=True,
                         nominal_batch=args.nominal_batch, bf16=not args.fp32, channels_last=True)
    start = time.time()
    if args.export_only:
        best, epochs, best_epoch, curve_rows = _current_best(work / "train")
    else:
        result = Trainer(model, data, config, on_progress=ProgressPrinter()).train()
        best, epochs, best_epoch, curve_rows = result.model, result.epochs_completed, result.best_epoch, result.history
    train_s = time.time() - start

    best = best.float().eval()
    best.names = list(data.names)
    history = [history_entry("train", cfg=args.cfg, epochs=epochs, imgsz=args.imgsz,
                             data="synthetic shapes seed %d (%d train)" % (args.seed, args.n_train))]
    # the metrics are measured on the model exactly as shipped (fp16 weights read back as fp32)
    save_model(best, args.out, imgsz=args.imgsz, history=history, half=True)
    shipped = load_model(args.out)
    metrics = evaluate_model(shipped, data_yaml, imgsz=args.imgsz, batch=32).to_dict()
    command = "PYTHONPATH=. python3 benchmarks/train_baseline.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    record = {
        "model": args.cfg, "imgsz": args.imgsz, "epochs": epochs, "best_epoch": best_epoch,
        "data": {"generator": "yolocompress.data.synthetic", "seed": args.seed, "n_train": args.n_train,
                 "n_val": args.n_val, "imgsz": args.imgsz},
        "map50": metrics["map50"], "map50_95": metrics["map50_95"], "precision": metrics["precision"],
        "recall": metrics["recall"], "per_class": metrics["per_class"],
        "train_seconds_this_invocation": round(train_s, 1),
        "curve": [{"epoch": h["epoch"], "box": h.get("train/box_loss"), "obj": h.get("train/obj_loss"),
                   "cls": h.get("train/cls_loss"), "map50": h.get("metrics/mAP_0.5"),
                   "map50_95": h.get("metrics/mAP_0.5:0.95")} for h in curve_rows],
        "command": command,
    }
    save_model(shipped, args.out, imgsz=args.imgsz, history=history,
               metrics={"map50": metrics["map50"], "map50_95": metrics["map50_95"]}, half=True)
    atomic_write_json(record, Path(args.out).with_suffix(".json"))
    print(json.dumps({k: record[k] for k in ("map50", "map50_95", "epochs", "best_epoch")}, indent=1))
    print(f"saved {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
