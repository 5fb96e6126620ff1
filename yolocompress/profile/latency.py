"""CPU inference latency of a PyTorch model (eager) or an ONNX file (ONNX Runtime, or OpenVINO when installed).

Every measurement uses a fixed thread count, discards ``warmup`` runs, then times ``runs`` single calls
with ``time.perf_counter`` and reports the median and 90th percentile in milliseconds, so figures from
different runs and machines are comparable (the CPU model is recorded with them).
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from yolocompress.errors import InputError
from yolocompress.export.ort import create_session
from yolocompress.progress import ProgressCallback, report
from yolocompress.models.inputs import check_image_size, image_hw, input_channels
from yolocompress.profile.cpu import cpu_flags, cpu_name


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one forward pass.

    Attributes:
        median_ms, p90_ms, mean_ms: over the timed runs, milliseconds per call (one call = one batch).
        runs: number of timed calls (warm-up excluded).
        threads: intra-op threads used.
        backend: ``"torch"``, ``"torch-dnn"`` (fused, oneDNN conv+activation kernels), ``"onnxruntime"``,
            ``"openvino"`` (fp32 inference precision) or ``"openvino-bf16"``.
        cpu: CPU model name.
        imgsz: ``(H, W)`` of the input in pixels.
        batch: images per call.
        cpu_flags: the ISA flags of interest this CPU has (:func:`cpu_flags`): what a latency depends on.
    """

    median_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    threads: int
    backend: str
    cpu: str
    imgsz: tuple[int, int]
    batch: int = 1
    cpu_flags: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["imgsz"], d["cpu_flags"] = list(self.imgsz), list(self.cpu_flags)
        return d


def _check_counts(threads: int, warmup: int, runs: int) -> None:
    if threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    if warmup < 0:
        raise InputError(f"warmup must be >= 0, got {warmup}")
    if runs < 1:
        raise InputError(f"runs must be >= 1, got {runs}")


def _time_calls(call: Callable[[], object], warmup: int, runs: int,
                on_progress: ProgressCallback | None = None) -> np.ndarray:
    """Milliseconds of each of ``runs`` calls after ``warmup`` untimed ones (progress: about 20 events, sent
    between timed calls, never inside one)."""
    for _ in range(warmup):
        call()
    times = np.empty(runs)
    every = max(1, runs // 20)
    for k in range(runs):
        t0 = time.perf_counter()
        call()
        times[k] = (time.perf_counter() - t0) * 1e3
        if on_progress is not None and ((k + 1) % every == 0 or k + 1 == runs):
            report(on_progress, "timing", k + 1, runs, "runs", {"median ms": float(np.median(times[:k + 1]))})
    return times


def _result(times: np.ndarray, threads: int, backend: str, imgsz: tuple[int, int],
            batch: int) -> LatencyResult:
    return LatencyResult(
        median_ms=float(np.median(times)),
        p90_ms=float(np.percentile(times, 90)),
        mean_ms=float(times.mean()),
        runs=int(times.size),
        threads=threads,
        backend=backend,
        cpu=cpu_name(),
        imgsz=imgsz,
        batch=batch,
        cpu_flags=tuple(cpu_flags()),
    )


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the ``with`` block; the previous count is restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure_torch_latency(model: nn.Module, imgsz: int | Sequence[int] = 640, threads: int = 2,
                          warmup: int = 10, runs: int = 50, batch: int = 1,
                          on_progress: ProgressCallback | None = None) -> LatencyResult:
    """Eager PyTorch CPU latency of ``model`` in eval mode on a ``Tensor[batch, ch, H, W]`` input.

    ``torch.set_num_threads(threads)`` holds only for the measurement; the previous count and the model's
    train/eval mode are restored afterwards. The model's own dtype and device are used as they are.
    """
    _check_counts(threads, warmup, runs)
    h, w = image_hw(imgsz)
    check_image_size(model, (h, w))
    param = next(model.parameters(), None)
    x = torch.rand(batch, input_channels(model), h, w,
                   dtype=param.dtype if param is not None else torch.float32,
                   device=param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch_threads(threads), torch.inference_mode():
            times = _time_calls(lambda: model(x), warmup, runs, on_progress)
    finally:
        model.train(was_training)
    return _result(times, threads, "torch", (h, w), batch)


def measure_ort_latency(onnx_path: str | os.PathLike, threads: int = 2, warmup: int = 10, runs: int = 50,
                        batch: int = 1, on_progress: ProgressCallback | None = None) -> LatencyResult:
    """ONNX Runtime CPU latency of an ONNX file (full graph optimizations, ``threads`` intra-op threads).

    The input shape is the model's own; a symbolic batch dimension takes ``batch``. Symbolic height or
    width cannot be guessed and raise ``InputError``.
    """
    _check_counts(threads, warmup, runs)
    session = create_session(onnx_path, threads=threads)
    inp = session.get_inputs()[0]
    shape = list(inp.shape)
    if len(shape) != 4:
        raise InputError(f"{onnx_path}: expected a 4-D image input, got shape {shape}")
    if not isinstance(shape[0], int):
        shape[0] = batch
    elif shape[0] != batch:
        raise InputError(f"{onnx_path}: the input batch is fixed at {shape[0]}, cannot measure batch {batch}")
    if not all(isinstance(d, int) for d in shape[1:]):
        raise InputError(f"{onnx_path}: input {inp.name} has symbolic image dimensions {shape}; "
                         "export with a fixed image size")
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    feed = {inp.name: np.random.default_rng(0).random(shape, dtype=np.float32).astype(dtype)}
    times = _time_calls(lambda: session.run(None, feed), warmup, runs, on_progress)
    return _result(times, threads, "onnxruntime", (shape[2], shape[3]), shape[0])


def measure_openvino_latency(onnx_path: str | os.PathLike, threads: int = 2, warmup: int = 10, runs: int = 50,
                             backend: str = "openvino", batch: int = 1,
                             on_progress: ProgressCallback | None = None) -> LatencyResult:
    """OpenVINO CPU latency of an ONNX file (its own fixed input size; a dynamic batch takes ``batch``),
    ``threads`` inference threads, one stream; ``backend`` ``"openvino"`` pins fp32 inference precision,
    ``"openvino-bf16"`` asks for bf16 (:mod:`yolocompress.export.openvino`). The result's ``backend`` is that
    name."""
    from yolocompress.export.openvino import compile_openvino

    _check_counts(threads, warmup, runs)
    model = compile_openvino(onnx_path, threads=threads, backend=backend)
    shape = list(model.input_shape)
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise InputError(f"{onnx_path}: input {model.input_name} has dynamic image dimensions {shape}; "
                         "export with a fixed image size")
    if shape[0] is not None and shape[0] != batch:
        raise InputError(f"{onnx_path}: the input batch is fixed at {shape[0]}, cannot measure batch {batch}")
    shape[0] = batch
    x = np.random.default_rng(0).random(shape, dtype=np.float32).astype(model.input_dtype)
    times = _time_calls(lambda: model.run(x), warmup, runs, on_progress)
    return _result(times, threads, backend, (shape[2], shape[3]), shape[0])


def onnx_call(onnx_path: str | os.PathLike, backend: str, threads: int, x: np.ndarray) -> Callable[[], object]:
    """A no-argument call that runs ``onnx_path`` on ``x`` with ``backend`` (``onnxruntime``, ``openvino``,
    ``openvino-bf16``) and ``threads`` threads: what :func:`interleaved_times` times side by side."""
    if backend == "onnxruntime":
        session = create_session(onnx_path, threads=threads)
        feed = {session.get_inputs()[0].name: x}
        return lambda: session.run(None, feed)
    from yolocompress.export.openvino import compile_openvino

    model = compile_openvino(onnx_path, threads=threads, backend=backend)
    return lambda: model.run(x)


def time_onnx_files(files: Mapping[str, str | os.PathLike], imgsz: int, backend: str = "onnxruntime",
                    threads: int = 2, warmup: int = 3, runs: int = 20,
                    rounds: int = 5) -> dict[str, np.ndarray]:
    """Milliseconds of ``runs`` batch-1 calls of each ONNX file (fixed ``imgsz`` square input) on
    ``backend``, timed side by side (:func:`interleaved_times`, the same random input for every file)."""
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    calls = {name: onnx_call(path, backend, threads, x) for name, path in files.items()}
    return interleaved_times(calls, warmup=warmup, runs=runs, rounds=rounds)


def interleaved_times(calls: Mapping[str, Callable[[], object]], warmup: int = 10, runs: int = 50,
                      rounds: int = 5, pause_s: float = 0.05) -> dict[str, np.ndarray]:
    """Milliseconds of ``runs`` calls of each entry of ``calls``, timed side by side.

    Every entry gets ``warmup`` untimed calls first; then ``rounds`` rounds each give every entry, in
    turn, one block: a pause of ``pause_s`` (the previous entry's worker threads stop spinning: ONNX Runtime
    and OpenMP threads busy-wait for a while after a call and would compete for the cores), one discarded
    call, then ``runs / rounds`` timed calls in a row. Rounds make a busy moment of a shared machine slow all
    entries alike, so their ratios stay meaningful. Returns name -> array of ``runs`` times.
    """
    _check_counts(1, warmup, runs)
    if rounds < 1:
        raise InputError(f"rounds must be >= 1, got {rounds}")
    for call in calls.values():
        for _ in range(warmup):
            call()
    rounds = min(rounds, runs)
    times: dict[str, list[np.ndarray]] = {name: [] for name in calls}
    for r in range(rounds):
        n = runs // rounds + (1 if r < runs % rounds else 0)
        for name, call in calls.items():
            time.sleep(pause_s)
            times[name].append(_time_calls(call, 1, n))
    return {name: np.concatenate(parts) for name, parts in times.items()}


def latency_from_times(times: np.ndarray, threads: int, backend: str, imgsz: int | Sequence[int],
                       batch: int = 1) -> LatencyResult:
    """A :class:`LatencyResult` from measured milliseconds (e.g. one entry of :func:`interleaved_times`)."""
    return _result(np.asarray(times, dtype=float), threads, backend, image_hw(imgsz), batch)
