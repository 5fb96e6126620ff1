"""``yolocompress check REPORT``: gate CI on accuracy against size and speed (exit 0 pass, 1 regression)."""
from __future__ import annotations

import argparse
import dataclasses

from rich.table import Table

from yolocompress.cli.common import console, print_gate, write_json
from yolocompress.io.paths import preflight
from yolocompress.profile.cpu import cpu_line
from yolocompress.report.gate import LATENCY_BACKENDS

# (flag, GateLimits field, help)
LIMIT_FLAGS = (
    ("--max-map-drop", "max_map_drop", "largest mAP50-95 drop, points"),
    ("--max-map50-drop", "max_map50_drop", "largest mAP50 drop, points"),
    ("--max-map-drop-rel", "max_map_drop_rel", "largest mAP50-95 drop as a fraction of the reference (0.02)"),
    ("--min-map50-95", "min_map50_95", "smallest mAP50-95 (a fraction, e.g. 0.75)"),
    ("--max-class-map-drop", "max_class_map_drop", "largest mAP50-95 drop of any class, points"),
    ("--max-latency-ratio", "max_latency_ratio", "largest latency / reference latency (--backend)"),
    ("--max-size-ratio", "max_size_ratio", "largest file size / reference file size"),
    ("--max-gflops-ratio", "max_gflops_ratio", "largest GFLOPs / reference GFLOPs"),
    ("--max-params-ratio", "max_params_ratio", "largest params / reference params"),
)


def _main(args: argparse.Namespace) -> int:
    preflight(input_folders=[("report", args.report), ("--baseline", args.baseline)],
              outputs=[("--junit", args.junit), ("--md", args.md), ("--json", args.json)])
    from yolocompress.io.atomic import atomic_write_text
    from yolocompress.recipe.check import check_run
    from yolocompress.report.gate import gate_markdown, junit_xml
    from yolocompress.report.pipeline import pipeline_markdown

    limits = {field: getattr(args, field) for _, field, _ in LIMIT_FLAGS}
    limits.update(backend=args.backend, tolerance=args.tolerance)
    result = check_run(args.report, limits, args.baseline, remeasure_latency=args.remeasure)
    gate = result.gate
    table = Table(title=f"gate: {gate.candidate} against {gate.reference}")
    for column in ("verdict", "limit", "value", "", "bound", "unit", "detail"):
        table.add_column(column)
    for v in gate.verdicts:
        table.add_row("PASS" if v.passed else "[bold red]FAIL[/]", v.name, f"{v.value:.4g}", v.comparison,
                      f"{v.limit:.4g}", v.unit, v.detail)
    if console.is_terminal:
        console.print(table)
        console.print("gate passed" if gate.passed else "gate FAILED", markup=False)
    else:
        print_gate(gate)
    if any(v.name == "max_latency_ratio" for v in gate.verdicts):  # the CPU the latencies were measured on
        cpu = (result.report.get("provenance") or {}).get("cpu") or {}
        console.print(f"latency: {cpu_line(cpu.get('model'), cpu.get('flags'))}", markup=False,
                      highlight=False)
    if args.junit:
        atomic_write_text(junit_xml(gate), args.junit)
    if args.md:
        atomic_write_text(pipeline_markdown(result.report) + "\n" + gate_markdown(gate), args.md)
    write_json({**gate.to_dict(), "limits": dataclasses.asdict(result.limits)}, args.json)
    return 0 if gate.passed else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "check", help="CI gate: fail when accuracy dropped, or size or latency grew, past the limits",
        description="Gate a `yolocompress run` report. Without --baseline: the compressed model (last row) against "
                    "the report's own baseline row. With --baseline BASE (a stored report.json): the new "
                    "compressed model against the stored one, and a result that is worse and neither smaller "
                    "nor faster fails. Limits not given on the command line come from the recipe's gate: "
                    "section. Exit 0: every limit holds; 1: a regression; 2: bad or incomparable input.")
    p.add_argument("report", help="a run folder or its report.json")
    p.add_argument("--baseline", default=None, metavar="BASE", help="a stored report.json (or run folder) to compare with")
    for flag, field, text in LIMIT_FLAGS:
        p.add_argument(flag, dest=field, type=float, default=None, help=text)
    p.add_argument("--backend", choices=LATENCY_BACKENDS, default="onnxruntime",
                   help="latency figure of --max-latency-ratio (default onnxruntime)")
    p.add_argument("--tolerance", type=float, default=0.02,
                   help="relative margin of 'smaller' and 'faster' in the dominance check (default 0.02)")
    p.add_argument("--remeasure", action="store_true",
                   help="time both final artifacts side by side on this machine (reports from different CPUs)")
    p.add_argument("--junit", default=None, metavar="FILE", help="write JUnit XML (one testcase per limit)")
    p.add_argument("--md", default=None, metavar="FILE", help="write Markdown: the report table and the verdicts")
    p.add_argument("--json", default=None, metavar="FILE", help="write the verdicts as JSON")
    p.set_defaults(func=_main)
