"""``yolocompress demo``: the embedded default (shipped baseline + synthetic data), compressed by the shipped
``demo`` recipe, ending with the before/after table and the plot."""
from __future__ import annotations

import argparse

from yolocompress.cli.common import (ProgressPrinter, console, err_console, print_gate, print_warnings,
                                     show_progress, write_json)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="compress the shipped baseline with the demo recipe and show the report",
                       description="Prune, fine-tune briefly, fuse and int8-quantize the shipped baseline on the "
                                   "synthetic demo data (generated on first use, no downloads), then print the "
                                   "before/after table. A second run in the same --out resumes.")
    p.add_argument("--data-dir", default=None, help="where to generate the demo data (default: a cache folder)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the demo recipe, e.g. --set stages.1.finetune.epochs=1")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from yolocompress.io.paths import preflight

    preflight(outputs=[("--json", args.json)], folders=[("--out", args.out), ("--data-dir", args.data_dir)])
    from yolocompress.demo import baseline_record, demo_data, run_demo
    from yolocompress.report.pipeline import pipeline_table

    console.print("yolocompress demo: the shipped baseline, compressed by the 'demo' recipe "
                  "(prune, short fine-tune, fuse, int8 PTQ)")
    with err_console.status("preparing the demo data set (generated once, about a minute) ..."):
        demo_data(args.data_dir)
    result = run_demo(args.data_dir, args.out, overrides=args.set, on_progress=show_progress,
                      on_inner_progress=ProgressPrinter())
    console.print(pipeline_table(result.report))
    print_warnings(result.report)
    recorded = baseline_record()
    if "map50_95" in recorded:
        console.print(f"baseline as recorded at training time: mAP50 {recorded['map50']:.4f}, "
                      f"mAP50-95 {recorded['map50_95']:.4f} (now {result.report['rows'][0]['map50_95']:.4f})")
    if result.gate is not None:
        print_gate(result.gate, failed="gate FAILED (the report is written)")
    console.print(f"report: {result.out_dir / 'report.md'}; plot: {result.out_dir / 'tradeoff.png'}; "
                  f"gate it in CI with: yolocompress check {result.out_dir} --max-map-drop 1.0")
    write_json(result.report, args.json)
    return 0  # a showcase: the gate's verdict is printed, `yolocompress run demo` / `check` exit 1 on it
