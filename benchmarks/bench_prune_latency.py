"""A latency budget for pruning (issue 18, item 2): ``prune --target-latency R`` on the shipped baseline and
the demo data, no fine-tune; prints the CPU model and ISA flags, how long the per-layer latency table took
to measure (or that it came from the cache), its calibration (the share of the latency that does not shrink,
fitted once from a uniform sub-net measured whole), every candidate's predicted latency ratio and score, and,
for the chosen candidate and the uniform strategy, the predicted and the measured ONNX Runtime latency ratio
(measured side by side with the original: ``profile.latency.interleaved_times``) with the prediction error,
calibrated and not.

Run from the repository root (slow at 640 px: the table times every convolution's widths on a grid once per
CPU model and image size; later runs read it from the cache folder):
``PYTHONPATH=. python3 benchmarks/bench_prune_latency.py --imgsz 640 --target-latency 0.5 --candidates 6``
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def run(args: argparse.Namespace) -> dict:
    import torch

    from yolocompress.compress.prune import PruneConfig, prune_model
    from yolocompress.compress.prune.config import default_round_to
    from yolocompress.data import load_data_config
    from yolocompress.demo import baseline_path, demo_data
    from yolocompress.io.checkpoint import load_model
    from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name
    from yolocompress.profile.latency_table import latency_table

    torch.set_num_threads(args.threads)
    model = load_model(args.model or baseline_path()).float().eval()
    data = load_data_config(args.data or demo_data())
    print(f"{cpu_line(cpu_name(), cpu_flags())}; ONNX Runtime, {args.threads} "
          f"threads, batch 1, {args.imgsz} px; model {args.model or 'the shipped baseline'}", flush=True)
    t0 = time.perf_counter()
    round_to = args.round_to or default_round_to()
    table = latency_table(model, args.imgsz, threads=args.threads, round_to=round_to)
    table_s = time.perf_counter() - t0
    print(f"latency table: {len(table.ms)} layer shapes, {table.measured} measured now in {table_s:.0f} s "
          f"({'cache' if table.measured == 0 else 'measured'}: {table.path}); calibration "
          f"{'cached' if table.calibration else 'measured by the first search'}", flush=True)
    runs = []
    for target in args.target_latency:
        cfg = PruneConfig.from_flat(ratio=None, target_latency=target, imgsz=args.imgsz,
                                    candidates=args.candidates, guided=args.guided,
                                    eval_images=args.eval_images, calib_batches=args.calib_batches,
                                    finetune_epochs=0, seed=args.seed,
                                    latency_threads=args.threads, eval_baseline=False, round_to=round_to)
        t0 = time.perf_counter()
        _, report = prune_model(model, data, cfg)
        prune_s = time.perf_counter() - t0
        calibration = latency_table(model, args.imgsz, threads=args.threads,
                                    round_to=round_to).calibration
        f = calibration["fixed_fraction"] if calibration else 0.0
        d = report.details
        budget = d["budget"]
        points = ", ".join(f"{name} {p:.3f} -> {m:.3f} ({100 * e:+.1f}%)" for name, p, m, e in zip(
            calibration["subnets"], calibration["predicted"], calibration["measured"], calibration["errors"]))
        print(f"target {target}: calibration fixed fraction {f:.4f} (sub-nets, plain predicted -> measured "
              f"(calibrated error): {points}); margin {100 * budget['latency_margin']:.1f}%: candidates held "
              f"to a predicted {budget['search_limit']:.3f}")
        for c in d["candidates"]:
            mark = "  <- chosen" if c["index"] == d["chosen"] else ""
            score = "rejected early" if c["score"] is None else f"score {c['score']:.4f}"
            print(f"  #{c['index']} {c['kind']:8s} predicted latency ratio {c['latency_ratio']:.3f}, "
                  f"GFLOPs {c['gflops']:.3f}, {score}{mark}")
        rows = {"chosen": budget, "uniform": budget["uniform"]}
        errors, plain_errors = {}, {}
        for name, b in rows.items():
            errors[name] = b["measured_ratio"] / b["predicted_ratio"] - 1.0
            plain = (b["predicted_ratio"] - f) / (1.0 - f)  # the table's sums alone, uncalibrated
            plain_errors[name] = b["measured_ratio"] / plain - 1.0
            print(f"  {name}: predicted ratio {b['predicted_ratio']:.3f}, measured {b['measured_ratio']:.3f} "
                  f"(error {100 * errors[name]:+.1f}%), GFLOPs ratio {b['gflops_ratio']:.3f}; uncalibrated "
                  f"prediction {plain:.3f} (error {100 * plain_errors[name]:+.1f}%)")
        print(f"  original {budget['original_ms']:.1f} ms, chosen {budget['measured_ms']:.1f} ms (predicted "
              f"{budget['predicted_ms']:.1f} ms); prediction error <= 10%: "
              f"{'yes' if all(abs(e) <= 0.10 for e in errors.values()) else 'no'} (chosen and uniform); "
              f"measured <= target {target} +5%: "
              f"{'yes' if budget['measured_ratio'] <= 1.05 * target else 'no'}; prune {prune_s:.0f} s",
              flush=True)
        runs.append({"target": target, "prune_s": prune_s, "budget": budget, "errors": errors,
                     "uncalibrated_errors": plain_errors, "calibration": calibration,
                     "candidates": d["candidates"], "chosen": d["chosen"], "timing_s": d["timing_s"]})
    return {"cpu": cpu_name(), "flags": cpu_flags(), "threads": args.threads, "imgsz": args.imgsz,
            "model": args.model, "table_s": table_s, "table_measured": table.measured, "runs": runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--target-latency", type=float, nargs="+", default=[0.5], help="one search per target")
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped baseline)")
    p.add_argument("--round-to", type=int, default=None,
                   help="default: a latency budget's (the CPU's channel block: 16 with AVX-512, else 8)")
    p.add_argument("--candidates", type=int, default=6)
    p.add_argument("--guided", type=int, default=0)
    p.add_argument("--eval-images", type=int, default=64,
                   help="held-out images per candidate (the score only picks among candidates; the latencies "
                        "do not depend on it)")
    p.add_argument("--calib-batches", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="data.yaml (default: the demo data)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args()
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
