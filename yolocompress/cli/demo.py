"""``yolocompress demo``: the embedded default (shipped baseline + synthetic data), no arguments needed."""
from __future__ import annotations

import argparse

from rich.table import Table

from yolocompress.cli.common import console, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run on the embedded default: the shipped baseline and synthetic demo data")
    p.add_argument("--data-dir", default=None, help="where to generate the demo data (default: a cache folder)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from yolocompress.demo import run_demo
    from yolocompress.report.tables import eval_table

    with console.status("preparing the demo data set and evaluating the baseline ..."):
        result = run_demo(args.data_dir)
    s = result.summary
    table = Table(title="shipped baseline", show_header=False)
    table.add_column("key")
    table.add_column("value")
    for key, value in (("model", result.recorded.get("model", "?")), ("params", f"{s['params']:,}"),
                       ("GFLOPs", f"{s['gflops']:.3f} at {s['imgsz']}"),
                       ("classes", ", ".join(s["names"])), ("data", str(result.data_yaml))):
        table.add_row(key, value)
    console.print(table)
    console.print(eval_table("baseline on the demo val split", result.evaluation))
    recorded = result.recorded
    if "map50_95" in recorded:
        delta = result.evaluation.map50_95 - recorded["map50_95"]
        console.print(f"recorded at training time: mAP50 {recorded['map50']:.4f}, mAP50-95 {recorded['map50_95']:.4f} "
                      f"(now {delta:+.4f})")
    write_json({"summary": {k: v for k, v in s.items() if k != "layers"}, "eval": result.evaluation.to_dict(),
                "recorded": {k: recorded[k] for k in ("map50", "map50_95") if k in recorded},
                "data": str(result.data_yaml)}, args.json)
    return 0
