"""int8 PTQ on ONNX Runtime: latency vs fp32 next to naive ``quantize_static``, integer-kernel share, size, mAP.

    python benchmarks/bench_quant.py [--models yolov5n yolov5s] [--imgsz 640 256] [--threads 2] [--runs 30]
                                     [--calib-images 16] [--prune-ratio 0.5] [--openvino openvino ...]
                                     [--baseline/--no-baseline] [--qat-epochs 3]

For each model (freshly built, 80 classes, random weights: latency does not depend on the values) at batch 1:
the fp32 export, two naive ``quantize_static`` runs on the same pre-processed graph (QDQ, per-channel, default
op types, MinMax; ORT's default int8 activations, and uint8 activations as ORT's docs advise for x86), and
ours (``quantize_ptq``: the default plan, then one setting changed at a time: Detect convs in fp32, SiLU in
float, an int8 stem), and with ``--prune-ratio`` the uniform strategy at that ratio in fp32 and int8 (the
pruned rows' mAP after a fine-tune is the ``prune-int8`` recipe's; see RESULTS). With ``--openvino`` the same
files are timed on OpenVINO too (each runtime against its own fp32 row) and the baseline's files evaluated on
it. The first line names the CPU and its ISA flags (vnni, amx): ratios differ between CPUs.
All sessions of one model are timed in
interleaved rounds (a block of 5 consecutive calls of each per round, see ``interleaved_latency``) so that
load changes on a shared machine hit them alike;
medians and p90 in ms, ratios of medians to fp32. Integer-kernel share: the share of all conv
multiply-adds that the ORT-optimized graph runs as integer kernels (QLinearConv, ConvInteger,
MatMulIntegerToFloat; ``verify.integer_kernel_report``).

With the shipped baseline (``yolocompress/assets/baseline.pt``, yolov5n, 6 classes, 256 px) it also
quantizes the baseline with calibration images from the demo train split and evaluates the fp32 and int8
ONNX files on the demo val split (val.py settings): the mAP50-95 drop of PTQ (several calibration methods)
and of QAT (``--qat-epochs`` of fine-tuning on the demo train split).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from yolocompress.compress.quant.plan import build_plan
from yolocompress.compress.quant.calibrate import calibration_images, ort_reader
from yolocompress.compress.quant.ptq import QuantConfig, quantize_ptq
from yolocompress.compress.quant.verify import integer_kernel_report
from yolocompress.export.onnx import export_onnx
from yolocompress.export.openvino import openvino_version
from yolocompress.models import build_model
from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name
from yolocompress.profile.latency import time_onnx_files


def naive_quantize(fp32: Path, out: Path, images: np.ndarray, activations: str) -> Path:
    """``quant_pre_process`` + ``quantize_static`` with its defaults except QDQ, per-channel and the
    activation type: what a user gets from the ONNX Runtime docs' first example."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), ort_reader(images, "images"), quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    return out


def interleaved_latency(paths: dict[str, Path], threads: int, warmup: int, runs: int, imgsz: int,
                        backend: str = "onnxruntime", block: int = 5) -> dict[str, np.ndarray]:
    """Milliseconds per call of each model on ``backend``, timed side by side in interleaved blocks of
    ``block`` calls (:func:`yolocompress.profile.latency.interleaved_times`: a pause and a discarded call
    before each block, so one session's spinning worker threads do not compete with the next one's)."""
    return time_onnx_files(paths, imgsz, backend, threads, warmup=warmup, runs=runs,
                           rounds=max(1, runs // block))


def integer_share(path: Path, plan_source: Path) -> float:
    """Share of all conv MACs run by integer kernels, using the conv list of the fp32 graph."""
    return integer_kernel_report(path, build_plan(plan_source)).integer_mac_share


def pruned_uniform(model, ratio: float, imgsz: int, round_to: int = 8):
    """``model`` pruned with the uniform strategy at ``ratio`` (the GFLOPs budget of ``--ratio``, widths a
    multiple of ``round_to``; weights as they are: latency does not depend on them)."""
    from yolocompress.compress.prune import PruneConfig, prune_channels
    from yolocompress.compress.prune.pruner import plan_search

    plan = plan_search(model, PruneConfig.from_flat(ratio=ratio, imgsz=imgsz, candidates=1, guided=0,
                                                    round_to=round_to))
    uniform = next(s for s in plan.strategies if s.kind == "uniform")
    return prune_channels(model, plan.graph, plan.space.keep(uniform.counts)).eval()


def _print_rows(name: str, imgsz: int, backend: str, times: dict[str, np.ndarray], ref: str,
                shares: dict[str, float], sizes: dict[str, float]) -> None:
    base, base_min = float(np.median(times[ref])), float(np.min(times[ref]))
    for label, t in times.items():
        med, low = float(np.median(t)), float(np.min(t))
        share = f"{100 * shares[label]:5.1f}%" if label in shares else "    - "
        size = f"{sizes[label]:.3f}" if label in sizes else "  -  "
        print(f"{name:<8} {imgsz:>5} {backend:<13} {label:<28} {med:>8.1f} {np.percentile(t, 90):>8.1f} "
              f"{med / base:>7.2f} {low:>8.1f} {low / base_min:>7.2f} {share:>9} {size:>6}")
    sys.stdout.flush()


def bench_model(name: str, imgsz: int, data: Path, args, tmp: Path) -> None:
    folder = tmp / f"{name}-{imgsz}"
    folder.mkdir()
    model = build_model(name, nc=80).eval()
    fp32 = export_onnx(model, folder / "fp32.onnx", imgsz=imgsz)
    images = calibration_images(data, imgsz, args.calib_images)
    files = {"fp32": fp32,
             "naive s8 (ORT defaults)": naive_quantize(fp32, folder / "naive-s8.onnx", images, "s8"),
             "naive u8": naive_quantize(fp32, folder / "naive-u8.onnx", images, "u8")}
    shares, sizes = {}, {}
    variants = [("ours (defaults)", {}), ("ours, Detect convs fp32", {"head": "float"}),
                ("ours, SiLU float", {"silu": "float"}), ("ours, stem int8", {"stem": "int8"})]
    for k, (label, options) in enumerate(variants):
        cfg = QuantConfig(calib_images=args.calib_images, **options)
        path, report = quantize_ptq(fp32, data, cfg, output=folder / f"ours-{k}.onnx")
        files[label] = path
        shares[label] = report.details["kernels"]["integer_mac_share"]
        sizes[label] = report.details["size_ratio"]
    if args.prune_ratio:
        pruned = export_onnx(pruned_uniform(model, args.prune_ratio, imgsz, args.prune_round_to),
                             folder / "pruned.onnx", imgsz=imgsz)
        label = f"pruned {args.prune_ratio:g} fp32"
        files[label] = pruned
        sizes[label] = pruned.stat().st_size / fp32.stat().st_size
        for silu in ("int8", "float"):
            label = f"pruned {args.prune_ratio:g} + ours" + (", SiLU float" if silu == "float" else "")
            path, report = quantize_ptq(pruned, data, QuantConfig(calib_images=args.calib_images, silu=silu),
                                        output=folder / f"pruned-int8-{silu}.onnx")
            files[label] = path
            shares[label] = report.details["kernels"]["integer_mac_share"]
            sizes[label] = path.stat().st_size / fp32.stat().st_size
    for label in ("naive s8 (ORT defaults)", "naive u8"):
        shares[label] = integer_share(files[label], fp32)
        sizes[label] = files[label].stat().st_size / fp32.stat().st_size
    times = interleaved_latency(files, args.threads, args.warmup, args.runs, imgsz)
    _print_rows(name, imgsz, "onnxruntime", times, "fp32", shares, sizes)
    for backend in args.openvino:
        # OpenVINO runs QDQ files as it reads them; naive s8/u8 left out (no new information)
        ov_files = {k: v for k, v in files.items() if not k.startswith("naive")}
        ov_times = interleaved_latency(ov_files, args.threads, args.warmup, args.runs, imgsz, backend=backend)
        _print_rows(name, imgsz, backend, ov_times, "fp32", {}, sizes)


def bench_baseline(args, tmp: Path) -> None:
    from yolocompress.demo import BASELINE_PATH, DEMO_DATA, demo_data
    from yolocompress.engine.evaluator import evaluate_model
    from yolocompress.io.checkpoint import load_model_with_info

    checkpoint = Path(args.baseline_model) if args.baseline_model else BASELINE_PATH
    if not checkpoint.is_file():
        print(f"\nbaseline: {checkpoint} not found; mAP drop not measured")
        return
    data = demo_data(n_val=args.val_images)
    model, info = load_model_with_info(checkpoint)
    imgsz = info.imgsz or 256
    fp32 = export_onnx(model, tmp / "baseline-fp32.onnx", imgsz=imgsz)
    print(f"\nbaseline {checkpoint} at {imgsz} px, demo data {data.parent.name}; "
          f"calibration: {args.baseline_calib} train images; eval: val split "
          f"({args.val_images or DEMO_DATA['n_val']} images), val.py settings")
    ref = evaluate_model(fp32, data, batch=32, threads=args.threads)
    print(f"{'model':<34} {'mAP50':>7} {'mAP50-95':>9} {'drop':>6} {'SQNR dB':>8} {'int8 share':>10}")
    print(f"{'fp32 ONNX':<34} {ref.map50:>7.4f} {ref.map50_95:>9.4f} {'':>6}")
    for backend in args.openvino:
        o = evaluate_model(fp32, data, batch=32, threads=args.threads, backend=backend)
        print(f"{'  same file on ' + backend:<34} {o.map50:>7.4f} {o.map50_95:>9.4f} "
              f"{100 * (ref.map50_95 - o.map50_95):>6.2f}")
    naive = naive_quantize(fp32, tmp / "baseline-naive-u8.onnx",
                           calibration_images(data, imgsz, args.baseline_calib), "u8")
    r = evaluate_model(naive, data, batch=32, threads=args.threads)
    print(f"{'naive quantize_static u8':<34} {r.map50:>7.4f} {r.map50_95:>9.4f} "
          f"{100 * (ref.map50_95 - r.map50_95):>6.2f} {'':>8} {100 * integer_share(naive, fp32):>9.1f}%")
    runs = [(method, "int8", "int8") for method in args.baseline_methods]
    runs += [("mse", "float", "int8")] if "mse" in args.baseline_methods and args.openvino else []
    runs += [("minmax", "float", "int8")] if "minmax" in args.baseline_methods else []
    runs += [("mse", "int8", "float")] if "mse" in args.baseline_methods else []
    for method, silu, head in runs:
        cfg = QuantConfig(calib_images=args.baseline_calib, calibration=method, silu=silu, head=head)
        path, report = quantize_ptq(fp32, data, cfg, output=tmp / f"baseline-{method}-{silu}-{head}.onnx")
        label = f"PTQ {method}, SiLU {silu}" + (", Detect fp32" if head == "float" else "")
        _eval_row(label, path, report, ref, data, args)
    if args.qat_epochs:
        from yolocompress.compress.quant.qat import QatConfig, quantize_qat

        cfg = QuantConfig(calib_images=args.baseline_calib, imgsz=imgsz)  # the baseline's training size
        for momentum in args.qat_range_momentum:
            qat = QatConfig(epochs=args.qat_epochs, lr=args.qat_lr, batch=16, distill=args.qat_distill,
                            labels=args.qat_labels, range_momentum=momentum)
            path, report = quantize_qat(model, data, cfg, qat, output=tmp / f"baseline-qat-{momentum:g}.onnx")
            loss = "+".join((["kd"] if args.qat_distill else []) + (["labels"] if args.qat_labels else []))
            _eval_row(f"QAT {args.qat_epochs} ep lr {args.qat_lr:g} {loss} m {momentum:g}", path, report, ref, data,
                      args)
            parity = _db(report.details["qat"]["parity_sqnr_db"])
            print(f"QAT parity (ORT int8 vs torch fake-quant): {parity:.1f} dB")
    print("drop = fp32 - int8 mAP50-95 in points; SQNR = int8 vs fp32 decoded output on calibration images")


def _db(value: float | None) -> float:
    """An SQNR of a stage report (``None``: noiseless, JSON null) as printable dB."""
    return float("inf") if value is None else float(value)


def _eval_row(label: str, path: Path, report, ref, data: Path, args) -> None:
    from yolocompress.engine.evaluator import evaluate_model

    r = evaluate_model(path, data, batch=32, threads=args.threads)
    drop = 100 * (ref.map50_95 - r.map50_95)
    sqnr = _db(report.details["sqnr_db"])
    print(f"{label:<34} {r.map50:>7.4f} {r.map50_95:>9.4f} {drop:>6.2f} {sqnr:>8.1f} "
          f"{100 * report.details['kernels']['integer_mac_share']:>9.1f}%")
    for backend in args.openvino:  # the same file on OpenVINO: measured, not assumed
        o = evaluate_model(path, data, batch=32, threads=args.threads, backend=backend)
        print(f"{'  same file on ' + backend:<34} {o.map50:>7.4f} {o.map50_95:>9.4f} "
              f"{100 * (ref.map50_95 - o.map50_95):>6.2f}   (vs ONNX Runtime {100 * (o.map50_95 - r.map50_95):+.2f})")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["yolov5n", "yolov5s"], help="none: baseline only")
    parser.add_argument("--imgsz", type=int, nargs="+", default=[640])
    parser.add_argument("--prune-ratio", type=float, default=0.5,
                        help="also time the uniform strategy at this ratio, fp32 and int8 (0: skip)")
    parser.add_argument("--prune-round-to", type=int, default=8,
                        help="the pruned rows' channel rounding (prune --round-to; 16 suits AVX-512 kernels)")
    parser.add_argument("--openvino", nargs="*", default=[], choices=("openvino", "openvino-bf16"),
                        help="also time the files on these OpenVINO backends (each against its own fp32 row)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--calib-images", type=int, default=16, help="calibration images for the latency models")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--baseline-model", default=None,
                        help="checkpoint to measure the mAP drop on (default: the shipped baseline)")
    parser.add_argument("--baseline-calib", type=int, default=256)
    parser.add_argument("--val-images", type=int, default=None,
                        help="evaluate on a longer demo val split (same generator; its first 128 images "
                             "are the demo's): differences of ~0.3 mAP50-95 points are noise on 128 images")
    parser.add_argument("--baseline-methods", nargs="+", default=["minmax", "percentile", "mse"])
    parser.add_argument("--qat-epochs", type=int, default=3, help="QAT epochs on the baseline (0: skip QAT)")
    parser.add_argument("--qat-lr", type=float, default=1e-4)
    parser.add_argument("--qat-distill", type=float, default=1.0, help="distillation weight (0: off)")
    parser.add_argument("--qat-labels", action="store_true", help="add the detection loss on the labels")
    parser.add_argument("--qat-range-momentum", type=float, nargs="+", default=[0.01],
                        help="QAT activation-range EMA momentum (0: fixed at the PTQ ranges); one QAT run each")
    args = parser.parse_args(argv)

    import onnxruntime

    print(f"{cpu_line(cpu_name(), cpu_flags())}; onnxruntime "
          f"{onnxruntime.__version__}; openvino {openvino_version() or 'not installed'}; {args.threads} threads, "
          f"batch 1, {args.warmup} warm-up + {args.runs} timed calls per model in interleaved blocks of 5")
    header = (f"{'model':<8} {'imgsz':>5} {'runtime':<13} {'variant':<28} {'med ms':>8} {'p90 ms':>8} {'/fp32':>7} "
              f"{'min ms':>8} {'/fp32':>7} {'int8 MACs':>9} {'size':>6}")
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp_name:
        tmp = Path(tmp_name)
        if args.models:
            from yolocompress.data.synthetic import synthesize_dataset

            data = synthesize_dataset(tmp / "calib", n_train=args.calib_images, n_val=1, imgsz=256)
            print(header)
            print("-" * len(header))
            for name in args.models:
                for imgsz in args.imgsz:
                    bench_model(name, imgsz, data, args, tmp)
            print("/fp32 = ratio of medians (then of minimums, the least disturbed rounds) to the same runtime's "
                  "fp32 row; int8 MACs = share of conv multiply-adds in integer kernels after ORT optimization; "
                  "size = file bytes / fp32; pruned = the uniform strategy at the ratio's GFLOPs, widths a "
                  f"multiple of {args.prune_round_to}")
        if args.baseline:
            bench_baseline(args, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
