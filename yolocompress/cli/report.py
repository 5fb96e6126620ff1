"""``yolocompress report DIR|report.json``: the before/after table of a recipe run, as Markdown and a plot."""
from __future__ import annotations

import argparse
from pathlib import Path

from yolocompress.cli.common import console
from yolocompress.errors import InputError
from yolocompress.io.paths import preflight


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render a recipe run's report.json: table, Markdown, trade-off plot")
    p.add_argument("report", help="output folder of a recipe run, or its report.json")
    p.add_argument("--md", default=None, metavar="FILE", help="also write the report as Markdown")
    p.add_argument("--plot", default=None, metavar="FILE", help="also plot mAP50-95 vs latency and size (.png or .svg)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plot = Path(args.plot) if args.plot else None
    if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
        raise InputError(f"--plot {plot}: expected a .png or .svg file name")
    preflight(input_folders=[("report", args.report)], outputs=[("--md", args.md), ("--plot", args.plot)])
    from yolocompress.io.atomic import atomic_write_text
    from yolocompress.report.pipeline import load_report, pipeline_markdown, pipeline_table, plot_tradeoff

    report = load_report(args.report)
    console.print(pipeline_table(report))
    written = []
    if args.md:
        written.append(atomic_write_text(pipeline_markdown(report), args.md))
    if plot is not None:
        png = plot.suffix.lower() == ".png"
        written += plot_tradeoff(report, plot if png else None, None if png else plot)
    for path in written:
        console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
    return 0
