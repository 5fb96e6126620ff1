"""``yolocompress run RECIPE``: apply a compression recipe and write the before/after report."""
from __future__ import annotations

import argparse
from pathlib import Path

from yolocompress.cli.common import (ProgressPrinter, console, print_gate, print_warnings, show_progress,
                                     write_json)


def _main(args: argparse.Namespace) -> int:
    from yolocompress.io.paths import preflight

    recipe_file = Path(args.recipe).suffix or len(Path(args.recipe).parts) > 1  # else a shipped recipe's name
    preflight(inputs=[("recipe", args.recipe if recipe_file else None), ("model file", args.model),
                      ("data.yaml", args.data)],
              outputs=[("--json", args.json)], folders=[("--out", None if args.dry_run else args.out)])
    import yaml

    from yolocompress.recipe import dry_run, load_recipe, run_recipe
    from yolocompress.report.pipeline import pipeline_table

    loaded = load_recipe(args.recipe, overrides=args.set, model=args.model, data=args.data)
    if args.dry_run:
        plan = dry_run(loaded)
        console.print(yaml.safe_dump(plan["recipe"], sort_keys=False).rstrip())
        m = plan["model"]
        console.print(f"model: {m['path']}: {m['params']:,} params, {m['gflops']:.3f} GFLOPs at {m['imgsz']} px")
        for b in plan["prune_budget"]:
            console.print(f"stage {b['stage']}: budget {b['budget_gflops']:.3f} GFLOPs "
                          f"({b['budget_fraction']:.3f} of the model's), {b['searchable_groups']} searchable groups")
        write_json(plan, args.json)
        return 0
    out = Path(args.out) if args.out else Path("runs") / "recipe" / loaded.plan.name
    result = run_recipe(loaded, out, resume=args.resume, on_progress=show_progress,
                        on_inner_progress=ProgressPrinter())
    console.print(pipeline_table(result.report))
    print_warnings(result.report)
    console.print(f"report: {out / 'report.md'}, {out / 'report.json'}; plot: {out / 'tradeoff.png'}")
    write_json(result.report, args.json)
    if result.gate is None:
        return 0
    print_gate(result.gate, failed="gate FAILED (the report is written)")
    return 0 if result.gate.passed else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="apply a YAML compression recipe and report the before/after deltas",
        description="Run a recipe (a YAML file, or a shipped recipe name: demo, prune, ptq, qat, prune-int8, full, "
                    "rep-fuse) stage by stage into --out, then measure every artifact and write report.json, "
                    "report.md and tradeoff.png/.svg. The whole recipe is checked against the model and data "
                    "before any work.")
    p.add_argument("recipe", help="recipe file or shipped recipe name")
    p.add_argument("--model", default=None, help="input checkpoint (.pt); overrides the recipe's model:")
    p.add_argument("--data", default=None, help="data.yaml; overrides the recipe's data:")
    p.add_argument("--out", default=None, help="output folder (default runs/recipe/<name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set stages.0.prune.ratio=0.3 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue a run in --out: finished stages with the same input and config are skipped")
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit; writes nothing")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report (or the plan) as JSON")
    p.set_defaults(func=_main)
