"""EagleEye pruning benchmarks (issue 5). Three parts, each printing a table and writing JSON:

``structure``   yolov5n / yolov5s at 640, ``--ratio 0.5``: GFLOPs and ONNX Runtime latency (batch 1) of the
                original, the uniform strategy and a random EagleEye strategy at the same budget (random
                weights: cost does not depend on them).
``accuracy``    the shipped baseline on the synthetic demo data: EagleEye (N candidates) vs uniform pruning at
                the same budget, each fine-tuned for the same epochs; mAP after search and after fine-tuning;
                search speed (candidates per minute and the per-phase breakdown).
``speed``       search speed alone (no fine-tuning): candidates per minute and the per-phase breakdown.
``search-speed`` the default search against other search settings (``--variants``; ``old``: the probe
                settings before the faster default), interleaved in one process: wall time, probes, the
                candidates' rate and whether the pick is the same (issue 18).
``rounding``    channel counts rounded to 16 vs 8 at equal GFLOPs (ratio 0.5 with 8; the same GFLOPs as
                the budget with 16): ORT latency of the uniform strategy and of the default EagleEye pick of
                each, on the shipped baseline, at 256 and 640 px, interleaved (issue 18).
``equal-latency`` a latency budget against FLOPs budgets (issue 18): the default search at
                ``--target-latency`` and at each of ``--flops-ratios``, all of them timed side by side on ONNX
                Runtime at ``--sizes``; the FLOPs pick whose measured latency at ``--imgsz`` is nearest the
                latency pick's is fine-tuned beside it (same epochs, seed, data) and both are evaluated.
``stability``   how reproducible the search's ranking is: the same candidates scored with calibration and scored
                images drawn with different seeds, for several numbers of scored images; Spearman rank
                correlation between the draws and the winner of each draw.
``correlation`` the paper's central claim: over C candidates, Spearman rank correlation between post-fine-tune
                mAP50-95 and (a) the adaptive-BN score, (b) the score without BN recalibration.

Run from the repository root: ``PYTHONPATH=. python3 benchmarks/bench_prune.py PART [options]``.
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    def ranks(x):
        x = np.asarray(x, dtype=float)
        order = x.argsort(kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):
            r[x == v] = r[x == v].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _guided(args) -> dict:
    """``PruneConfig`` keywords for ``--guided``: none when not given (the library's default applies)."""
    return {} if args.guided is None else {"guided": args.guided}


def part_structure(args) -> dict:
    from yolocompress.compress.prune import PruneConfig, prune_channels
    from yolocompress.compress.prune.pruner import ort_latency
    from yolocompress.compress.prune.search import plan_search
    from yolocompress.models import build_model
    from yolocompress.profile import gflops
    from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name

    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name).eval()
        cfg = PruneConfig.from_flat(ratio=args.ratio, imgsz=args.imgsz, candidates=2, seed=args.seed,
                                    guided=0)
        plan = plan_search(model, cfg)
        variants = {"original": model}
        for s in plan.strategies:
            variants[s.kind] = prune_channels(model, plan.graph, plan.space.keep(s.counts))
        base = None
        for kind, net in variants.items():
            g = gflops(net, args.imgsz)
            lat = ort_latency(net, args.imgsz, args.threads, warmup=10, runs=50).median_ms
            base = base or (g, lat)
            rows.append({"model": name, "variant": kind, "gflops": g, "ort_ms": lat,
                         "params": sum(p.numel() for p in net.parameters()),
                         "gflops_ratio": g / base[0], "latency_ratio": lat / base[1]})
    print(f"{cpu_line(cpu_name(), cpu_flags())}; ONNX Runtime, {args.threads} threads, batch 1, 10 warm-up + "
          f"50 timed runs (median), {args.imgsz} px, ratio {args.ratio}")
    print(f"{'model':9} {'variant':9} {'params':>10} {'GFLOPs':>7} {'x orig':>7} | "
          f"{'ORT ms':>7} {'x orig':>7}")
    for r in rows:
        print(f"{r['model']:9} {r['variant']:9} {r['params']:>10,} {r['gflops']:7.2f} "
              f"{r['gflops_ratio']:7.3f} | {r['ort_ms']:7.1f} {r['latency_ratio']:7.3f}")
    return {"rows": rows}


def _baseline_and_data(args):
    from yolocompress.data import load_data_config
    from yolocompress.demo import baseline_path, demo_data
    from yolocompress.io.checkpoint import load_model

    model_path = Path(args.model) if args.model else baseline_path()
    data = load_data_config(args.data or demo_data())
    return load_model(model_path), data


def _printer(args):
    """Progress lines (bars in a terminal) with ``--progress``, else none."""
    from yolocompress.cli.common import ProgressPrinter

    return ProgressPrinter() if args.progress else None


def part_accuracy(args) -> dict:
    from yolocompress.compress.prune import PruneConfig, prune_model

    model, data = _baseline_and_data(args)
    common = dict(ratio=args.ratio, imgsz=args.imgsz, calib_batches=args.calib_batches,
                  eval_images=args.eval_images, finetune_epochs=args.epochs, seed=args.seed, bf16=args.bf16,
                  channels_last=args.bf16, finetune_nominal_batch=args.nominal_batch,
                  distill=args.distill)
    out = {}
    eagleeye = dict(candidates=args.candidates, include_uniform=not args.no_uniform, spread=args.spread,
                    **_guided(args))
    runs = (("eagleeye", eagleeye), ("uniform", dict(candidates=1)))
    for label, extra in runs[:1] if args.eagleeye_only else runs:
        t0 = time.perf_counter()
        config = PruneConfig.from_flat(**common, **extra, eval_baseline=label == "eagleeye")
        _, report = prune_model(model, data, config, on_progress=_printer(args))
        out[label] = report.to_dict()
        out[label]["wall_s"] = time.perf_counter() - t0
        print(f"[{label}] done in {out[label]['wall_s']:.0f} s", flush=True)
    e, ed = out["eagleeye"], out["eagleeye"]["details"]
    base = e["before"]
    print(f"baseline {args.model or 'shipped baseline'}: mAP50 {base['map50']:.4f} "
          f"mAP50-95 {base['map50_95']:.4f}, {base['gflops']:.3f} GFLOPs@{args.imgsz}")
    print(f"{'strategy':9} {'GFLOPs':>7} {'x base':>7} | {'search mAP50-95':>15} | {'fine-tuned mAP50':>16} "
          f"{'mAP50-95':>8} {'delta':>7}")
    for label, r in out.items():
        ft = r["details"]["after_finetune"] or {"map50": float("nan"), "map50_95": float("nan")}
        ratio = r['after']['gflops'] / base['gflops']
        print(f"{label:9} {r['after']['gflops']:7.3f} {ratio:7.3f} | "
              f"{r['details']['after_search']['map50_95']:15.4f} | {ft['map50']:16.4f} {ft['map50_95']:8.4f} "
              f"{ft['map50_95'] - base['map50_95']:+7.4f}")
    t = ed["timing_s"]
    n = len(ed["candidates"])
    print(f"search: {n} candidates in {t['search']:.1f} s = {ed['candidates_per_minute']:.1f} "
          f"candidates/min; "
          f"per candidate: build {t['build'] / n:.2f} s, BN recalibration {t['bn_recalibration'] / n:.2f} s, "
          f"inference {t['inference'] / n:.2f} s, NMS+mAP {t['nms_map'] / n:.2f} s "
          f"({args.calib_batches}x16 calibration images, {args.eval_images} scored images)")
    if ed["probes"]:
        print(f"probes: {ed['probes']} sub-nets in {t['probes']:.1f} s (sensitivity of each group, for the "
              f"guided candidates)")
    marks = [("*" if c["chosen"] else "") + ("g" if c["kind"].startswith("guided") else "")
             for c in ed["candidates"]]
    print("candidate scores: " + ", ".join(("rejected" if c["score"] is None else f"{c['score']:.4f}") + m
                                           for c, m in zip(ed["candidates"], marks)))
    print("(* chosen, g guided; rejected: dropped early on the probes' data)")
    return out


def part_speed(args) -> dict:
    from yolocompress.compress.prune import PruneConfig, prune_model

    model, data = _baseline_and_data(args)
    cfg = PruneConfig.from_flat(ratio=args.ratio, imgsz=args.imgsz, candidates=args.candidates,
                                seed=args.seed, calib_batches=args.calib_batches,
                                eval_images=args.eval_images, finetune_epochs=0,
                                eval_baseline=False, **_guided(args))
    _, report = prune_model(model, data, cfg, on_progress=_printer(args))
    d = report.details
    t, n, probes = d["timing_s"], len(d["candidates"]), d["probes"]
    if probes:
        print(f"probe phase: {probes} sub-nets in {t['probes']:.1f} s "
              f"({60 * probes / t['probes']:.1f}/min); the candidates below are timed apart from it")
    print(f"{n} candidates, {args.calib_batches}x{cfg.search.calib_batch} calibration images, "
          f"{args.eval_images} scored images, {args.imgsz} px, {torch.get_num_threads()} threads: "
          f"{d['candidates_per_minute']:.1f} candidates/min")
    print("seconds per candidate: " + ", ".join(f"{k} {t[k] / n:.2f}" for k in
                                                ("build", "bn_recalibration", "inference", "nms_map")))
    return report.to_dict()


# the search before issue 18: probes on both sides on the candidates' images and BN batches, no early reject
OLD_PROBES = {"probe_metric": "map", "probe_sides": "both", "probe_images": 256, "probe_calib_batches": 8,
              "reject_below": 0.0}


def _variant(spec: str) -> dict:
    """Search settings of a ``--variants`` entry: ``default`` (the library's), ``old`` (``OLD_PROBES``) or
    ``key=value,key=value`` (``SearchConfig`` fields over the library's defaults)."""
    if spec in ("default", "old"):
        return {} if spec == "default" else dict(OLD_PROBES)
    pairs = (kv.split("=", 1) for kv in spec.split(","))
    def value(v: str):
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        try:
            return int(v) if v.lstrip("-").isdigit() else float(v)
        except ValueError:
            return v

    return {k: value(v) for k, v in pairs}


def part_search_speed(args) -> dict:
    from yolocompress.compress.prune import PruneConfig, prune_model
    from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name

    model, data = _baseline_and_data(args)
    print(f"{cpu_line(cpu_name(), cpu_flags())}; {torch.get_num_threads()} threads; {args.imgsz} px, "
          f"ratio {args.ratio}, seed {args.seed}, {args.calib_batches}x16 calibration images, "
          f"{args.eval_images} scored images; variants interleaved, {args.repeats} round(s)", flush=True)
    extra = {"candidates": args.candidates} if args.candidates else {}
    rows = []
    for r in range(args.repeats):
        for spec in args.variants:
            cfg = PruneConfig.from_flat(ratio=args.ratio, imgsz=args.imgsz, seed=args.seed,
                                        calib_batches=args.calib_batches, eval_images=args.eval_images,
                                        finetune_epochs=0, eval_baseline=False, **extra, **_guided(args),
                                        **_variant(spec))
            t0 = time.perf_counter()
            _, report = prune_model(model, data, cfg, on_progress=_printer(args))
            wall = time.perf_counter() - t0
            d = report.details
            t = d["timing_s"]
            chosen = d["candidates"][d["chosen"]]
            row = {"variant": spec, "round": r, "wall_s": wall,
                   "search_s": t["analysis"] + t["data"] + t.get("probes", 0.0) + t["search"],
                   "probes": d["probes"], "probes_s": t.get("probes", 0.0), "candidates_s": t["search"],
                   "candidates_per_minute": d["candidates_per_minute"], "chosen": d["chosen"],
                   "chosen_kind": chosen["kind"], "score": chosen["score"],
                   "val_map50_95": d["after_search"]["map50_95"],
                   "pick": [g["kept"] for g in d["groups"]],
                   "sensitivity": [g.get("score_per_gflop") for g in d["sensitivity"]],
                   "scores": [c["score"] for c in d["candidates"]],
                   "kinds": [c["kind"] for c in d["candidates"]]}
            rows.append(row)
            print(f"[{spec} #{r}] search {row['search_s']:.1f} s ({row['probes']} probes "
                  f"{row['probes_s']:.1f} s, {len(row['scores'])} candidates {row['candidates_s']:.1f} s = "
                  f"{row['candidates_per_minute']:.1f}/min), prune_model {wall:.1f} s; "
                  f"chosen #{row['chosen']} ({row['chosen_kind']}) score {row['score']:.4f}, "
                  f"val mAP50-95 after BN {row['val_map50_95']:.4f}", flush=True)
    ref = rows[0]
    print(f"\n{'variant':44} {'search s':>9} {'x ref':>6} {'probes':>6} {'cand/min':>8} {'chosen':>6} "
          f"{'score':>7} {'same pick':>9} {'rho(sens)':>9}")
    for spec in args.variants:
        mine = [x for x in rows if x["variant"] == spec]
        med = float(np.median([x["search_s"] for x in mine]))
        ref_s = float(np.median([x["search_s"] for x in rows if x["variant"] == ref["variant"]]))
        last = mine[-1]
        sens, ref_sens = (np.array([np.nan if v is None else v for v in x["sensitivity"]], dtype=float)
                          for x in (last, ref))
        both = np.isfinite(sens) & np.isfinite(ref_sens) if len(sens) == len(ref_sens) else np.zeros(0, bool)
        rho = spearman(sens[both], ref_sens[both]) if both.sum() > 2 else float("nan")
        same = all(x["pick"] == ref["pick"] for x in mine)
        print(f"{spec:44} {med:9.1f} {med / ref_s:6.3f} {last['probes']:6d} "
              f"{np.median([x['candidates_per_minute'] for x in mine]):8.1f} {last['chosen']:6d} "
              f"{last['score']:7.4f} {str(same):>9} {rho:9.2f}")
    print(f"(x ref, same pick, rho: against {ref['variant']!r}; search s: median over rounds of analysis + "
          "data + probes + candidates; rho: Spearman of the groups' sensitivities)")
    for spec in args.variants:  # uniform and random candidates are the same strategies in every variant
        last = [x for x in rows if x["variant"] == spec][-1]
        dropped = [i for i, v in enumerate(last["scores"]) if v is None]
        if dropped:
            full = [ref["scores"][i] for i in dropped
                    if not last["kinds"][i].startswith("guided") and ref["scores"][i]]
            print(f"{spec}: {len(dropped)} candidates rejected early ({', '.join(map(str, dropped))}); "
                  f"full scores of the non-guided ones in the {ref['variant']!r} run: "
                  + (f"max {max(full):.4f}" if full else "none") + f" (its pick: {ref['score']:.4f})")
    return {"rows": rows}


def part_rounding(args) -> dict:
    from yolocompress.compress.prune import PruneConfig, prune_channels, prune_model
    from yolocompress.compress.prune.search import plan_search
    from yolocompress.export.onnx import export_onnx
    from yolocompress.io.workdir import work_dir
    from yolocompress.profile import gflops
    from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name
    from yolocompress.profile.latency import time_onnx_files

    model, data = _baseline_and_data(args)
    base = copy.deepcopy(model).float().eval()
    nets, budget = {"original": base}, {"ratio": args.ratio}
    for r in (8, 16):
        common = dict(imgsz=args.imgsz, seed=args.seed, round_to=r, **budget)
        plan = plan_search(base, PruneConfig.from_flat(candidates=1, guided=0, **common))
        nets[f"uniform r{r}"] = prune_channels(base, plan.graph, plan.space.keep(plan.uniform.counts))
        t0 = time.perf_counter()
        nets[f"eagleeye r{r}"], _ = prune_model(model, data, PruneConfig.from_flat(
            calib_batches=args.calib_batches, eval_images=args.eval_images, finetune_epochs=0,
            eval_baseline=False, **common, **_variant(args.search)))
        print(f"round_to {r}: budget {plan.budget / 1e9:.4f} GFLOPs@{args.imgsz}, "
              f"search {time.perf_counter() - t0:.0f} s", flush=True)
        budget = {"ratio": None, "target_gflops": plan.budget / 1e9}   # 16: the same GFLOPs as 8
    print(f"{cpu_line(cpu_name(), cpu_flags())}; ONNX Runtime, {args.threads} threads, batch 1, "
          f"interleaved: 10 warm-up + {args.runs} timed runs in 5 rounds (median)")
    out = {"rows": []}
    with work_dir("yc-bench-round-") as tmp:
        for size in args.sizes:
            files = {name: export_onnx(net, Path(tmp) / f"{name.replace(' ', '_')}_{size}.onnx", imgsz=size)
                     for name, net in nets.items()}
            times = time_onnx_files(files, size, threads=args.threads, warmup=10, runs=args.runs, rounds=5)
            med = {name: float(np.median(t)) for name, t in times.items()}
            print(f"\n{size} px: {'net':14} {'params':>9} {'GFLOPs':>7} {'ORT ms':>7} {'x orig':>7} "
                  f"{'r16/r8':>7}")
            for name, net in nets.items():
                other = name.replace("r16", "r8")
                vs = f"{med[name] / med[other]:7.3f}" if other != name else ""
                row = {"imgsz": size, "net": name, "params": sum(p.numel() for p in net.parameters()),
                       "gflops": gflops(net, size), "ort_ms": med[name], "times": times[name].tolist()}
                out["rows"].append(row)
                print(f"{'':8}{name:14} {row['params']:9,} {row['gflops']:7.3f} {med[name]:7.2f} "
                      f"{med[name] / med['original']:7.3f} {vs}", flush=True)
    return out


def part_equal_latency(args) -> dict:
    from yolocompress.compress.finetune import FinetuneConfig, finetune
    from yolocompress.compress.prune import PruneConfig, prune_model
    from yolocompress.engine.evaluator import evaluate_model
    from yolocompress.export.onnx import export_onnx
    from yolocompress.io.workdir import work_dir
    from yolocompress.profile import gflops
    from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name
    from yolocompress.profile.latency import time_onnx_files

    model, data = _baseline_and_data(args)
    base = copy.deepcopy(model).float().eval()
    common = dict(imgsz=args.imgsz, seed=args.seed, finetune_epochs=0, eval_baseline=False,
                  latency_threads=args.threads)
    nets: dict[str, torch.nn.Module] = {"original": base}
    info: dict[str, dict] = {}
    lat_labels = [f"latency {args.target_latency:g}" + ("" if v == "default" else f" {v}")
                  for v in args.latency_variants]
    for label, budget in [(label, {"ratio": None, "target_latency": args.target_latency, **_variant(v)})
                          for label, v in zip(lat_labels, args.latency_variants)] + [
            (f"flops ratio {r:g}", {"ratio": r}) for r in args.flops_ratios]:
        t0 = time.perf_counter()
        nets[label], report = prune_model(model, data, PruneConfig.from_flat(**common, **budget))
        b = report.details["budget"]
        info[label] = {"search_s": time.perf_counter() - t0, "predicted_ratio": b["predicted_ratio"],
                       "measured_ratio@imgsz(prune_model)": b["measured_ratio"],
                       "score": report.details["candidates"][report.details["chosen"]]["score"],
                       "kind": report.details["candidates"][report.details["chosen"]]["kind"]}
        print(f"[{label}] searched in {info[label]['search_s']:.0f} s; pick #{report.details['chosen']} "
              f"({info[label]['kind']}) score {info[label]['score']:.4f}, "
              f"{gflops(nets[label], args.imgsz):.3f} GFLOPs@{args.imgsz}", flush=True)
    print(f"{cpu_line(cpu_name(), cpu_flags())}; ONNX Runtime, {args.threads} threads, batch 1, "
          f"interleaved: 10 warm-up + {args.runs} timed runs in 5 rounds (median)")
    ratios: dict[int, dict[str, float]] = {}
    with work_dir("yc-bench-eqlat-") as tmp:
        for size in args.sizes:
            files = {name: export_onnx(net, Path(tmp) / f"{i}_{size}.onnx", imgsz=size)
                     for i, (name, net) in enumerate(nets.items())}
            times = time_onnx_files(files, size, threads=args.threads, warmup=10, runs=args.runs, rounds=5)
            med = {name: float(np.median(t)) for name, t in times.items()}
            ratios[size] = {name: med[name] / med["original"] for name in nets}
            for name in nets:
                print(f"{size} px: {name:18} {med[name]:7.2f} ms  x orig {ratios[size][name]:.3f}",
                      flush=True)
    at = ratios[args.imgsz]
    nearest = {lat: min((n for n in nets if n.startswith("flops")), key=lambda n: abs(at[n] - at[lat]))
               for lat in lat_labels}
    for lat_label, flops_label in nearest.items():
        print(f"nearest FLOPs pick at {args.imgsz} px to {lat_label}: {flops_label} "
              f"({at[flops_label]:.3f} vs {at[lat_label]:.3f})")
    tuned = {}
    for label in dict.fromkeys(lat_labels + list(nearest.values())):
        cfg = FinetuneConfig(epochs=args.epochs, imgsz=args.imgsz, batch=16, nominal_batch=args.nominal_batch,
                             seed=args.seed, val=False)
        net = finetune(nets[label], data, cfg)[0]
        tuned[label] = float(evaluate_model(net, data, split="val", imgsz=args.imgsz, batch=32).map50_95)
        print(f"[{label}] mAP50-95 after {args.epochs} epochs: {tuned[label]:.4f}", flush=True)
    for lat_label, flops_label in nearest.items():
        print(f"{lat_label} - FLOPs pick of (nearly) equal measured latency: "
              f"{100 * (tuned[lat_label] - tuned[flops_label]):+.2f} points; measured latency ratio at "
              f"{args.imgsz} px {at[lat_label]:.3f} vs {at[flops_label]:.3f}")
    return {"cpu": cpu_name(), "flags": cpu_flags(), "info": info, "ratios": ratios, "finetuned": tuned,
            "flops_picks": nearest}


def part_stability(args) -> dict:
    from yolocompress.compress.prune import PruneConfig, prune_channels
    from yolocompress.compress.prune.scoring import SubnetScorer, cache_data
    from yolocompress.compress.prune.search import plan_search

    model, data = _baseline_and_data(args)
    base = copy.deepcopy(model).float().eval()
    cfg = PruneConfig.from_flat(ratio=args.ratio, imgsz=args.imgsz, candidates=args.candidates,
                                seed=args.seed, calib_batches=args.calib_batches, spread=args.spread,
                                include_uniform=not args.no_uniform, guided=0)
    plan = plan_search(base, cfg)
    subnets = [prune_channels(base, plan.graph, plan.space.keep(s.counts)) for s in plan.strategies]
    out = {"kinds": [s.kind for s in plan.strategies], "sizes": {}}
    print(f"{len(subnets)} candidates (ratio {args.ratio}, spread {args.spread}, seed {args.seed}); "
          f"draws of {cfg.search.calib_batches}x{cfg.search.calib_batch} calibration + N scored training "
          "images "
          f"with seeds {args.draws}")
    for n_images in args.eval_sizes:
        scores = []
        for draw in args.draws:
            cache = cache_data(data, args.imgsz, int(max(base.stride)), cfg.search.calib_batches,
                               cfg.search.calib_batch, n_images, cfg.search.eval_batch, draw)
            scorer = SubnetScorer(cache, data.nc, list(data.names))  # adaptive BN resets the statistics first
            scores.append([scorer(sub).map50_95 for sub in subnets])
        pairs = [(a, b) for a in range(len(scores)) for b in range(a + 1, len(scores))]
        rho = [spearman(scores[a], scores[b]) for a, b in pairs]
        winners = [int(np.argmax(s)) for s in scores]
        out["sizes"][n_images] = {"scores": scores, "spearman": rho, "winners": winners}
        print(f"{n_images:4d} scored images: Spearman between draws " + ", ".join(f"{r:.2f}" for r in rho)
              + f" (mean {np.mean(rho):.2f}); winner per draw {winners}", flush=True)
    return out


def part_correlation(args) -> dict:
    from yolocompress.compress.prune import PruneConfig, prune_channels
    from yolocompress.compress.prune.scoring import SubnetScorer, cache_data
    from yolocompress.compress.prune.search import plan_search
    from yolocompress.engine.evaluator import evaluate_model
    from yolocompress.engine.trainer import TrainConfig, Trainer

    model, data = _baseline_and_data(args)
    base = copy.deepcopy(model).float().eval()
    cfg = PruneConfig.from_flat(ratio=args.ratio, imgsz=args.imgsz, candidates=args.candidates,
                                seed=args.seed, calib_batches=args.calib_batches,
                                eval_images=args.eval_images, guided=0)
    plan = plan_search(base, cfg)
    cache = cache_data(data, args.imgsz, int(max(base.stride)), cfg.search.calib_batches,
                       cfg.search.calib_batch, cfg.search.eval_images, cfg.search.eval_batch, cfg.seed)
    scorer = SubnetScorer(cache, data.nc, list(data.names))
    rows = []
    for i, s in enumerate(plan.strategies):
        sub = prune_channels(base, plan.graph, plan.space.keep(s.counts))
        raw = scorer(copy.deepcopy(sub), recalibrate=False)
        abn = scorer(sub, recalibrate=True)
        with tempfile.TemporaryDirectory() as tmp:
            tc = TrainConfig(epochs=args.epochs, imgsz=args.imgsz, batch=16, nominal_batch=args.nominal_batch,
                             workers=0, seed=args.seed,
                             out_dir=tmp, close_mosaic=args.epochs // 2, patience=0, val=False,
                             bf16=args.bf16, channels_last=args.bf16)
            tuned = Trainer(sub, data, tc, on_progress=_printer(args)).train().model
        final = evaluate_model(tuned, data, imgsz=args.imgsz, batch=32)
        rows.append({"index": i, "kind": s.kind, "gflops": s.flops / 1e9, "score_raw": raw.map50_95,
                     "score_adaptive_bn": abn.map50_95, "finetuned_map50_95": final.map50_95})
        print(f"candidate {i}: raw {raw.map50_95:.4f}  adaptive-BN {abn.map50_95:.4f}  fine-tuned "
              f"{final.map50_95:.4f}", flush=True)
    ft = [r["finetuned_map50_95"] for r in rows]
    rho_abn = spearman([r["score_adaptive_bn"] for r in rows], ft)
    rho_raw = spearman([r["score_raw"] for r in rows], ft)
    print(f"Spearman(post-fine-tune mAP50-95, adaptive-BN score) = {rho_abn:.3f}")
    print(f"Spearman(post-fine-tune mAP50-95, score without BN recalibration) = {rho_raw:.3f}")
    return {"rows": rows, "spearman_adaptive_bn": rho_abn, "spearman_raw": rho_raw}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("structure", "accuracy", "speed", "search-speed", "rounding",
                                    "equal-latency", "stability", "correlation"))
    p.add_argument("--models", nargs="+", default=["yolov5n", "yolov5s"], help="structure: configs")
    p.add_argument("--model", default=None,
                   help="accuracy/correlation: checkpoint (default: the shipped baseline)")
    p.add_argument("--data", default=None, help="accuracy/correlation: data.yaml (default: the demo data)")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--imgsz", type=int, default=None, help="default 640 (structure) / 256 (others)")
    p.add_argument("--candidates", type=int, default=None, help="default 16 (accuracy) / 8 (correlation)")
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--eval-images", type=int, default=256)
    p.add_argument("--eval-sizes", type=int, nargs="+", default=[64, 256], help="stability: scored images")
    p.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2], help="stability: data-draw seeds")
    p.add_argument("--epochs", type=int, default=None, help="fine-tune epochs: default 10 (accuracy) / 3")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-uniform", action="store_true",
                   help="accuracy: EagleEye samples random strategies only (no uniform candidate)")
    p.add_argument("--bf16", action="store_true", help="fine-tune with bf16 autocast + channels-last")
    p.add_argument("--spread", type=float, default=1.0, help="strategy sampling spread (1: the paper's)")
    p.add_argument("--guided", type=int, default=None,
                   help="accuracy/speed: sensitivity-guided candidates (default: the library's; "
                        "0: random only)")
    p.add_argument("--eagleeye-only", action="store_true", help="accuracy: skip the uniform fine-tune")
    p.add_argument("--nominal-batch", type=int, default=64, help="fine-tune: images per optimizer step")
    p.add_argument("--distill", type=float, default=0.0, help="fine-tune: distillation weight (0: off)")
    p.add_argument("--variants", nargs="+", default=["old", "default"],
                   help="search-speed: search settings, each 'old', 'default' or 'key=value,...' "
                        "(SearchConfig fields); the first is the reference")
    p.add_argument("--repeats", type=int, default=1, help="search-speed: rounds of the interleaved variants")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 640], help="rounding, equal-latency: timed image sizes")
    p.add_argument("--latency-variants", nargs="+", default=["default"],
                   help="equal-latency: search settings of the latency picks, as --variants entries")
    p.add_argument("--search", default="default", help="rounding: search settings, as one --variants entry")
    p.add_argument("--runs", type=int, default=50, help="rounding, equal-latency: timed runs per net and size")
    p.add_argument("--target-latency", type=float, default=0.5, help="equal-latency: the latency budget")
    p.add_argument("--flops-ratios", type=float, nargs="+", default=[0.5, 0.6, 0.7],
                   help="equal-latency: FLOPs budgets (ratios) searched")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    args.imgsz = args.imgsz or (640 if args.part == "structure" else 256)
    if args.part != "search-speed":  # search-speed: the library's default unless given
        args.candidates = args.candidates or (16 if args.part == "accuracy" else 8)
    args.epochs = args.epochs if args.epochs is not None else (10 if args.part == "accuracy" else 3)
    torch.set_num_threads(args.threads)
    parts = {"structure": part_structure, "accuracy": part_accuracy, "speed": part_speed,
             "search-speed": part_search_speed, "rounding": part_rounding,
             "equal-latency": part_equal_latency,
             "stability": part_stability, "correlation": part_correlation}
    result = parts[args.part](args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **result}, indent=1, default=str))


if __name__ == "__main__":
    main()
