"""Pruning against its peers (issue 18, item 1): Torch-Pruning side by side with our EagleEye search.

On the shipped baseline and the demo data (or ``--model`` / ``--data``), at the GFLOPs budget of our
``--ratio`` (the FLOPs of our uniform strategy at that ratio), four methods prune the same model:

``tp-magnitude``  Torch-Pruning's ``MagnitudePruner`` with grouped L1 importance
                  (``MagnitudeImportance(p=1)``: the L1 norms of every coupled layer of a DepGraph
                  group, averaged);
``tp-groupnorm``  Torch-Pruning's ``GroupNormPruner`` with group L2 importance
                  (``GroupMagnitudeImportance(p=2)``; no sparsity-learning phase: TP's ``group_norm``
                  method, not ``group_sl``);
``eagleeye``      our default ``prune`` search (``PruneConfig`` defaults, ``--ratio``);
``uniform``       our uniform strategy at ``--ratio`` (one candidate, no search).

Besides these (``--methods``): ``OUR_VARIANTS``, our search with other settings at the same GFLOPs
(``eagleeye-map``: the search before its probes were scored by the box loss; ``eagleeye-r8`` / ``-r16``: widths
in multiples of 8 (the default before 2026-12-07) / 16; ``eagleeye-r16n``: widths of 8 or multiples of 16, the
default on AVX-512 CPUs since; ``eagleeye-cap``: every candidate's predicted latency at most the uniform
strategy's), and ``TP_GLOBAL``, Torch-Pruning's pruners with ``global_pruning=True``.

Torch-Pruning prunes the way its YOLOv5 example and its benchmark do: the ``Detect`` module is an ignored
layer (its output convs keep their ``na * (nc + 5)`` channels, which Detect reshapes by anchors; their input
channels follow the neck), and the pruner steps iteratively (``pruning_ratio=1``, ``--tp-steps`` linear
steps, at most ``max_pruning_ratio`` per layer, channels rounded to ``round_to``) until the model's GFLOPs
(``profile.gflops`` at ``--imgsz``) are at or under the budget. TP gets our ``max_ratio`` and ``--round-to`` 8.
TP prunes in place, so it works on a deep copy; the result is still our ``DetectionModel``, which our
evaluator, trainer, exporter and checkpoint format take as it is (the script checks the ONNX export against
PyTorch and a checkpoint round trip).

Then every pruned model is fine-tuned with the same ``FinetuneConfig`` (``--epochs``, each seed of
``--seeds``, the same data; ``val=False``: the last epoch's EMA weights, no pick made on the val split) and
evaluated on the val split. Per method and seed: GFLOPs, params, ONNX Runtime latency (batch 1,
``--threads``) at each of ``--latency-sizes`` timed side by side with the original (interleaved rounds),
mAP50-95 straight after pruning (ours: after adaptive BN, as the search returns it) and after the fine-tune,
and the wall time of the pruning step (TP: the iterative steps; ours: the search without the final val
evaluation). Our search and the fine-tune take the seed; TP's pruning is deterministic.

Run from the repository root (the real run, 8 methods x 2 seeds at 10 epochs: 45 min on 2 cores):

    pip install torch-pruning==1.6.1   # or: pip install -e .[bench]
    PYTHONPATH=. python3 benchmarks/bench_prune_peers.py --epochs 10 --seeds 0 1 --json peers.json

``--smoke``: a minute-long check of the whole path on a tiny synthetic data set at 64 px (1 epoch, seed 0,
a 4-candidate search, latency at 64 px with few runs); its figures mean nothing.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

METHODS = ("tp-magnitude", "tp-groupnorm", "eagleeye", "uniform")
# our search with other settings, at the same GFLOPs budget (the uniform strategy's at --ratio)
OUR_VARIANTS: dict[str, dict[str, Any]] = {
    # the search before probes were scored by the box loss
    "eagleeye-map": {"probe_metric": "map", "probe_images": 256, "probe_calib_batches": 8},
    "eagleeye-r8": {"round_to": 8, "narrow": False},    # widths in multiples of 8 (the default before 2026-12-07)
    "eagleeye-r16": {"round_to": 16, "narrow": False},  # channel widths in multiples of 16
    # widths 8 or multiples of 16 (a 16-channel group may go to 8, as Torch-Pruning's uniform widths do)
    "eagleeye-r16n": {"round_to": 16, "narrow": True},
    "eagleeye-r16n-cap": {"round_to": 16, "narrow": True, "latency_cap": "uniform"},
    "eagleeye-cap": {"latency_cap": "uniform"},  # predicted latency at most the uniform strategy's
    # the same cap with the guided candidates ranked by score per FLOP (before 2026-12-06: per latency)
    "eagleeye-cap-flops": {"latency_cap": "uniform", "sensitivity_cost": "flops"},
    # channels kept by the grouped L1 magnitude (Torch-Pruning's criterion) instead of the producers' L1
    "uniform-gl1": {"importance": "grouped_l1", "candidates": 1, "guided": 0},
    "eagleeye-gl1": {"importance": "grouped_l1"},
    "eagleeye-cap-gl1": {"importance": "grouped_l1", "latency_cap": "uniform"},
    # a FLOPs budget with the guided candidates ranked per unit of predicted latency, no latency cap
    "eagleeye-lat": {"sensitivity_cost": "latency"},
    # near-ties (SearchConfig.near_tie) broken on predicted latency, per FLOP or per latency ranking
    "eagleeye-prefer-lat": {"prefer": "latency"},
    "eagleeye-lat-prefer-lat": {"sensitivity_cost": "latency", "prefer": "latency"},
    # channels ranked by step-wise removal with the grouped L1 recomputed after each step
    "uniform-igl1": {"importance": "iterative_grouped_l1", "candidates": 1, "guided": 0},
    "eagleeye-igl1": {"importance": "iterative_grouped_l1"},
    "eagleeye-cap-igl1": {"importance": "iterative_grouped_l1", "latency_cap": "uniform"},
    # not at equal GFLOPs: a latency budget at about Torch-Pruning's measured latency (widths in the CPU's
    # channel block, the latency budget's default)
    "eagleeye-lat0.55": {"target_latency": 0.55},
}
TP_GLOBAL = ("tp-magnitude-global", "tp-groupnorm-global")  # Torch-Pruning with global ranking
ALL_METHODS = METHODS + tuple(OUR_VARIANTS) + TP_GLOBAL


def tp_prune(model: nn.Module, method: str, target_gflops: float, imgsz: int, steps: int, max_ratio: float,
             round_to: int, global_pruning: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Torch-Pruning's ``method`` (``tp-magnitude`` / ``tp-groupnorm``) on a copy of ``model``, stepped until
    its GFLOPs at ``imgsz`` are at or under ``target_gflops`` (``global_pruning``: TP ranks the channels of
    all groups together instead of pruning each group by the same ratio). Returns ``(pruned copy in eval
    mode, info)``."""
    import torch_pruning as tp

    from yolocompress.profile import gflops

    net = copy.deepcopy(model).float().cpu().eval()
    for p in net.parameters():
        p.requires_grad_(True)  # TP traces the graph through autograd
    if method == "tp-magnitude":
        importance, pruner_cls = tp.importance.MagnitudeImportance(p=1), tp.pruner.MagnitudePruner
    elif method == "tp-groupnorm":
        importance, pruner_cls = tp.importance.GroupMagnitudeImportance(p=2), tp.pruner.GroupNormPruner
    else:
        raise ValueError(f"not a Torch-Pruning method: {method}")
    t0 = time.perf_counter()
    pruner = pruner_cls(net, torch.zeros(1, 3, imgsz, imgsz), importance=importance, pruning_ratio=1.0,
                        max_pruning_ratio=max_ratio, iterative_steps=steps, ignored_layers=[net.model[-1]],
                        round_to=round_to, global_pruning=global_pruning)
    now = gflops(net, imgsz)
    while now > target_gflops and pruner.current_step < steps:
        pruner.step()
        now = gflops(net, imgsz)
    wall = time.perf_counter() - t0
    for p in net.parameters():
        p.requires_grad_(True)
    net.eval()
    return net, {"prune_s": wall, "tp_steps": pruner.current_step, "reached_budget": now <= target_gflops}


def our_prune(model: nn.Module, data: Any, method: str, args, seed: int,
              budget: float | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Our ``eagleeye`` default search, one of its ``OUR_VARIANTS`` (at the GFLOPs ``budget``) or the
    ``uniform`` strategy at ``args.ratio``, without fine-tuning."""
    from yolocompress.compress.prune import PruneConfig, prune_model

    if method == "uniform":
        search = {"candidates": 1, "guided": 0}
    else:
        search = {k: v for k, v in (("candidates", args.candidates), ("guided", args.guided),
                                    ("calib_batches", args.calib_batches), ("eval_images", args.eval_images))
                  if v is not None}
    variant = OUR_VARIANTS.get(method, {})
    if "target_latency" in variant:  # its own budget
        size = {"ratio": None}
    else:
        size = {"ratio": args.ratio} if budget is None else {"target_gflops": budget}
    cfg = PruneConfig.from_flat(**size, imgsz=args.imgsz, finetune_epochs=0, eval_baseline=False,
                                seed=seed, latency_threads=args.threads, **search, **variant)
    t0 = time.perf_counter()
    pruned, report = prune_model(model, data, cfg)
    wall = time.perf_counter() - t0 - report.details["timing_s"].get("eval", 0.0)
    return pruned, {"prune_s": wall, "budget_gflops": report.details["budget_gflops"],
                    "chosen": report.details["chosen"], "candidates": len(report.details["candidates"])}


def checks(model: nn.Module, imgsz: int) -> dict[str, Any]:
    """Does the pruned model run, export to ONNX (parity with PyTorch) and survive our checkpoint format?"""
    from yolocompress.export.onnx import export_checked
    from yolocompress.io.checkpoint import load_model, save_model
    from yolocompress.models.shapes import shape_spec

    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 3, imgsz, imgsz))[0]
    with tempfile.TemporaryDirectory() as tmp:
        _, err = export_checked(model, Path(tmp) / "m.onnx", imgsz=imgsz)
        save_model(model, Path(tmp) / "m.pt", imgsz=imgsz)
        same = shape_spec(load_model(Path(tmp) / "m.pt")) == shape_spec(model)
    return {"output_shape": list(out.shape), "onnx_parity_error": err, "checkpoint_round_trip": same}


def evaluate(model: nn.Module, data: Any, imgsz: int) -> float:
    from yolocompress.engine.evaluator import evaluate_model

    return float(evaluate_model(model, data, split="val", imgsz=imgsz, batch=32).map50_95)


def finetuned(model: nn.Module, data: Any, args, seed: int) -> nn.Module:
    from yolocompress.compress.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                         nominal_batch=args.nominal_batch, seed=seed, val=False)
    return finetune(model, data, cfg)[0]


def latencies(models: dict[str, nn.Module], args) -> dict[str, dict[int, float]]:
    """Median ORT milliseconds of each model at each of ``args.latency_sizes``, all timed side by side."""
    from yolocompress.export.onnx import export_onnx
    from yolocompress.profile.latency import time_onnx_files

    out: dict[str, dict[int, float]] = {name: {} for name in models}
    for size in args.latency_sizes:
        with tempfile.TemporaryDirectory() as tmp:
            files = {name: export_onnx(m, Path(tmp) / f"{i}.onnx", imgsz=size)
                     for i, (name, m) in enumerate(models.items())}
            times = time_onnx_files(files, size, threads=args.threads, warmup=args.warmup, runs=args.runs,
                                    rounds=args.rounds)
        for name, t in times.items():
            out[name][size] = float(statistics.median(t.tolist()))
    return out


def data_and_model(args, work: Path):
    from yolocompress.data import load_data_config
    from yolocompress.demo import baseline_path, demo_data
    from yolocompress.io.checkpoint import load_model

    if args.data:
        data_yaml = args.data
    elif args.smoke:
        from yolocompress.data.synthetic import synthesize_dataset
        data_yaml = synthesize_dataset(work / "data", n_train=32, n_val=16, imgsz=64, seed=0)
    else:
        data_yaml = demo_data()
    model = load_model(args.model or baseline_path()).float().cpu().eval()
    return load_data_config(data_yaml), model


def table(rows: list[dict[str, Any]], base: dict[str, Any], sizes: list[int]) -> str:
    lat = " ".join(f"{f'ORT@{s} ms':>11} {'x':>5}" for s in sizes)
    head = (f"{'method':19} {'seed':>4} {'GFLOPs':>7} {'x':>5} {'params':>9} {lat} "
            f"{'mAP pruned':>10} {'mAP tuned':>9} {'prune s':>8}")
    lines = [head]
    for r in [base] + rows:
        cells = " ".join(f"{r['ort_ms'][s]:11.2f} {r['ort_ms'][s] / base['ort_ms'][s]:5.3f}" for s in sizes)
        pruned = f"{r['map_pruned']:10.4f}" if r.get("map_pruned") is not None else f"{'-':>10}"
        tuned = f"{r['map_finetuned']:9.4f}" if r.get("map_finetuned") is not None else f"{'-':>9}"
        wall = f"{r['prune_s']:8.1f}" if r.get("prune_s") is not None else f"{'-':>8}"
        seed = str(r["seed"]) if r.get("seed") is not None else "-"
        lines.append(f"{r['method']:19} {seed:>4} {r['gflops']:7.3f} {r['gflops'] / base['gflops']:5.3f} "
                     f"{r['params']:9,} {cells} {pruned} {tuned} {wall}")
    means = []
    for m in dict.fromkeys(r["method"] for r in rows):
        tuned = [r["map_finetuned"] for r in rows if r["method"] == m and r["map_finetuned"] is not None]
        means.append(f"{m} {statistics.mean(tuned):.4f}" if tuned else f"{m} -")
    lines.append("mean mAP50-95 after the fine-tune over seeds: " + ", ".join(means))
    return "\n".join(lines)


def run(args) -> dict[str, Any]:
    from yolocompress.models.shapes import num_params
    from yolocompress.profile import gflops
    from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name

    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    data, model = data_and_model(args, work)
    cpu = {"cpu": cpu_name(), "isa": cpu_flags(), "threads": args.threads,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(f"{cpu_line(cpu['cpu'], cpu['isa'])}; {args.threads} threads; {cpu['date']}",
          flush=True)
    base = {"method": "original", "gflops": gflops(model, args.imgsz), "params": num_params(model),
            "map_pruned": None, "map_finetuned": evaluate(model, data, args.imgsz)}
    rows: list[dict[str, Any]] = []
    models: dict[str, nn.Module] = {"original": model}
    budget = None
    for seed in args.seeds:
        # ours first: the uniform strategy at --ratio sets the GFLOPs budget every method meets
        for method in sorted(args.methods, key=lambda m: m != "uniform"):
            if budget is None and method != "uniform":
                budget = gflops(our_prune(model, data, "uniform", args, seed)[0], args.imgsz)
            if method in ("eagleeye", "uniform"):
                pruned, info = our_prune(model, data, method, args, seed)
                if method == "uniform":
                    budget = gflops(pruned, args.imgsz)
            elif method in OUR_VARIANTS:
                # the budget in GFLOPs (not the ratio): round_to 16's uniform strategy at the ratio differs
                pruned, info = our_prune(model, data, method, args, seed, budget=budget)
            else:
                pruned, info = tp_prune(model, method.removesuffix("-global"), budget, args.imgsz,
                                        args.tp_steps, args.max_ratio, args.round_to,
                                        args.tp_global or method in TP_GLOBAL)
            row = {"method": method, "seed": seed, "gflops": gflops(pruned, args.imgsz),
                   "params": num_params(pruned), "budget_gflops": budget, **info,
                   **checks(pruned, args.imgsz), "map_pruned": evaluate(pruned, data, args.imgsz)}
            tuned = finetuned(pruned, data, args, seed) if args.epochs else pruned
            row["map_finetuned"] = evaluate(tuned, data, args.imgsz) if args.epochs else None
            rows.append(row)
            models[f"{method}/{seed}"] = tuned
            print(f"[{method} seed {seed}] {row['gflops']:.3f} GFLOPs (budget {budget:.3f}), "
                  f"{row['params']:,} params, pruned in {row['prune_s']:.1f} s; "
                  f"mAP50-95 {row['map_pruned']:.4f} "
                  f"-> {'-' if row['map_finetuned'] is None else format(row['map_finetuned'], '.4f')} "
                  f"after {args.epochs} epochs; ONNX parity "
                  f"{row['onnx_parity_error']:.1e}", flush=True)
    lat = latencies(models, args)
    base["ort_ms"] = lat["original"]
    for r in rows:
        r["ort_ms"] = lat[f"{r['method']}/{r['seed']}"]
    print(f"ONNX Runtime, batch 1, {args.threads} threads, {args.rounds} interleaved rounds, "
          f"{args.runs} timed runs per model and size (median); mAP50-95 on the val split at {args.imgsz} px")
    print(f"budget: our uniform strategy at ratio {args.ratio}; Torch-Pruning "
          f"{'global' if args.tp_global else 'local'} pruning, {args.tp_steps} steps, max ratio "
          f"{args.max_ratio}, round_to {args.round_to}; fine-tune {args.epochs} epochs")
    print(table(rows, base, args.latency_sizes))
    return {"cpu": cpu, "original": base, "rows": rows}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    from yolocompress.compress.prune import PruneConfig

    defaults = PruneConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped baseline)")
    p.add_argument("--data", default=None, help="data.yaml (default: the demo data)")
    p.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(METHODS),
                   help=f"default: {' '.join(METHODS)}; also our variants {' '.join(OUR_VARIANTS)} "
                        f"({OUR_VARIANTS}) and Torch-Pruning with global ranking ({' '.join(TP_GLOBAL)})")
    p.add_argument("--ratio", type=float, default=0.5,
                   help="our ratio; its uniform GFLOPs are everyone's budget")
    p.add_argument("--imgsz", type=int, default=256, help="pruning, fine-tune and evaluation size")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=10,
                   help="fine-tune epochs (every method); 0: no fine-tune (a screen of the picks' latency)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--nominal-batch", type=int, default=64)
    p.add_argument("--candidates", type=int, default=None, help="eagleeye: candidates (library default)")
    p.add_argument("--guided", type=int, default=None, help="eagleeye: guided candidates (library default)")
    p.add_argument("--calib-batches", type=int, default=None, help="eagleeye: adaptive-BN batches")
    p.add_argument("--eval-images", type=int, default=None, help="eagleeye: scored images per candidate")
    p.add_argument("--tp-steps", type=int, default=200, help="Torch-Pruning: iterative steps to ratio 1")
    p.add_argument("--max-ratio", type=float, default=defaults.search.max_ratio,
                   help="Torch-Pruning: max_pruning_ratio")
    p.add_argument("--round-to", type=int, default=8,
                   help="Torch-Pruning: round_to (8: every run before 2026-12-07, when it was our default too)")
    p.add_argument("--tp-global", action="store_true",
                   help="Torch-Pruning: global_pruning (default: off, TP's default and its YOLOv5 example's)")
    p.add_argument("--latency-sizes", type=int, nargs="+", default=[256, 640])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--smoke", action="store_true",
                   help="tiny settings on a tiny synthetic data set (checks the path; figures mean nothing)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.smoke:
        args.imgsz, args.epochs, args.seeds, args.tp_steps = 64, 1, args.seeds[:1], 50
        args.candidates, args.guided, args.calib_batches, args.eval_images = 3, 1, 1, 16
        args.batch, args.nominal_batch = 8, 8
        args.warmup, args.runs, args.rounds = 2, 10, 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **result}, indent=1, default=str))


if __name__ == "__main__":
    main()
