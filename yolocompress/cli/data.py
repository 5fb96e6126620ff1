"""``yolocompress data synth`` (write a synthetic shapes data set) and ``data check`` (scan a split)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from rich.table import Table

from typing import TYPE_CHECKING

from yolocompress.cli.common import console, non_negative_int, positive_int
from yolocompress.errors import CompressionError, EmptySplitError
from yolocompress.io.paths import preflight

if TYPE_CHECKING:  # torch is imported only when the command runs
    from yolocompress.data.labels import LabelScanResult


def synth(out: str, n_train: int = 512, n_val: int = 128, imgsz: int = 256, classes: str | None = None,
          seed: int = 0, overwrite: bool = False) -> str:
    """Write a synthetic data set to ``out``; returns the path of its ``data.yaml``."""
    from yolocompress.data.synthetic import DEFAULT_CLASSES, synthesize_dataset

    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else list(DEFAULT_CLASSES)
    return str(synthesize_dataset(out, n_train=n_train, n_val=n_val, imgsz=imgsz, classes=names, seed=seed,
                                  overwrite=overwrite))


def check(data: str, split: str = "val", label_cache: bool = True) -> tuple[Path, LabelScanResult]:
    """Scan one split of ``data`` (a data.yaml); returns the data set root and the split's report."""
    from yolocompress.data.config import load_data_config
    from yolocompress.data.scan import scan_split

    cfg = load_data_config(data)
    return cfg.root, scan_split(cfg, split, cache=label_cache).report


def _report_table(report: LabelScanResult) -> Table:
    table = Table(title=f"{report.split} split")
    table.add_column("images", justify="left")
    table.add_column("count", justify="right")
    rows = [("found", report.images), ("labelled", report.ok), ("background: no label file", report.missing),
            ("background: empty label file", report.empty), ("skipped: corrupt image", report.corrupt),
            ("skipped: bad labels", report.bad_labels), ("usable", report.usable), ("boxes", report.instances),
            ("duplicate label rows dropped", report.duplicates)]
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def _issues_table(report: LabelScanResult, root: Path, limit: int = 20) -> Table:
    table = Table(title=f"first {min(limit, len(report.issues))} problem(s) (paths relative to {root})")
    table.add_column("file", overflow="fold")
    table.add_column("action")
    table.add_column("reason", overflow="fold")
    for issue in report.issues[:limit]:
        path = Path(issue.path)
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        table.add_row(str(shown), "skipped" if issue.skipped else "warning", issue.reason)
    return table


def _synth_main(args: argparse.Namespace) -> int:
    preflight(folders=[("--out", args.out)])
    path = synth(args.out, n_train=args.n_train, n_val=args.n_val, imgsz=args.imgsz, classes=args.classes,
                 seed=args.seed, overwrite=args.overwrite)
    console.print(f"wrote {args.n_train} train + {args.n_val} val images; data config: {path}")
    return 0


def _check_main(args: argparse.Namespace) -> int:
    preflight(inputs=[("data.yaml", args.data)])
    # the tables below show what the scan would log; keep its per-file warnings off stderr
    scan_logger = logging.getLogger("yolocompress.data.scan")
    level = scan_logger.level
    scan_logger.setLevel(logging.ERROR)
    try:
        root, report = check(args.data, args.split, label_cache=not args.no_cache)
    except EmptySplitError as exc:  # a split with no image files fails the check like one with no labels
        console.print(f"[bold red]{args.split} split failed the check: {exc}[/]")
        return CompressionError.exit_code
    finally:
        scan_logger.setLevel(level)
    console.print(_report_table(report))
    if report.issues:
        console.print(_issues_table(report, root))
    problems = report.problems()
    if problems:
        console.print(f"[bold red]{report.split} split failed the check: {'; '.join(problems)}[/]")
        return CompressionError.exit_code
    return 0



def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="make or check detection data sets",
                              description="Synthetic data sets and data.yaml / label checks.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))
    sub.required = True

    s = sub.add_parser("synth", help="write a synthetic shapes data set (images, YOLO labels, data.yaml)")
    s.add_argument("--out", required=True, help="output folder (must not exist or be empty, see --overwrite)")
    s.add_argument("--n-train", type=positive_int, default=512, help="training images (default 512)")
    s.add_argument("--n-val", type=positive_int, default=128, help="validation images (default 128)")
    s.add_argument("--imgsz", type=positive_int, default=256, help="square image size in pixels (default 256)")
    s.add_argument("--classes", default=None,
                   help="comma-separated shapes in class order (default circle,rectangle,triangle,star,cross,ring; "
                        "also hexagon, diamond)")
    s.add_argument("--seed", type=non_negative_int, default=0, help="seed; same seed, same bytes (default 0)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    s.set_defaults(func=_synth_main)

    c = sub.add_parser("check", help="scan a split: count usable, background, corrupt and badly labelled "
                                     "images; exit 1 when any image is skipped or no image has a label")
    c.add_argument("data", help="data.yaml")
    c.add_argument("--split", choices=("train", "val", "test"), default="val", help="split to scan (default val)")
    c.add_argument("--no-cache", action="store_true", help="do not read or write the label cache file")
    c.set_defaults(func=_check_main)
