"""Predictors: one calling convention for a PyTorch model and an ONNX Runtime session.

A predictor is a callable ``predict(imgs) -> Tensor[B, N, 5 + nc]``: ``imgs`` is a float
``Tensor[B, 3, H, W]`` in 0..1 (RGB), the result the decoded head output (``cx, cy, w, h`` in input
pixels, objectness, class scores) on the CPU or the predictor's device. The evaluator needs nothing else.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from yolocompress.errors import InputError


@runtime_checkable
class Predictor(Protocol):
    """Anything that maps a float image batch in 0..1 to decoded detections ``Tensor[B, N, 5 + nc]``."""

    def __call__(self, imgs: Tensor) -> Tensor: ...


class TorchPredictor:
    """Run a PyTorch detection model in eval mode under ``torch.inference_mode``.

    Args:
        model: a module whose eval-mode forward returns the decoded ``Tensor[B, N, 5 + nc]`` or a
            ``(decoded, raw)`` tuple (``DetectionModel``). It is moved to ``device`` (and converted to
            float16 with ``half``) in place, as val.py does; each call runs it in eval mode and restores the
            train/eval mode it had.
        device: where to run.
        half: run in float16 (GPU only).
        input_dtype: the floating type the images are given to the model in (float32; float16 with
            ``half``); e.g. bfloat16 for a model that runs under bfloat16 autocast, whose first layer would
            cast them anyway. :func:`~yolocompress.engine.evaluator.evaluate` converts the images to it.
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", half: bool = False,
                 input_dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        if half and self.device.type == "cpu":
            raise InputError("half precision evaluation needs a GPU device")
        self.half = half
        self.input_dtype = torch.float16 if half else input_dtype
        self.model = model.to(self.device)
        if half:
            self.model.half()

    def __call__(self, imgs: Tensor) -> Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                out = self.model(imgs.to(self.device, self.input_dtype, non_blocking=True))
        finally:
            self.model.train(was_training)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.float()


@dataclass(frozen=True)
class OnnxInputShape:
    """An ONNX model's image input: each dimension an int when fixed, ``None`` when dynamic."""

    name: str
    batch: int | None
    height: int | None
    width: int | None

    @property
    def static_size(self) -> bool:
        """Whether height and width are fixed (the data must then be letterboxed square at that size)."""
        return self.height is not None and self.width is not None


def _dim(value) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def onnx_input_shape(session_or_path) -> OnnxInputShape:
    """Read the image input of an ONNX model (a path or an ``onnxruntime.InferenceSession``)."""
    if isinstance(session_or_path, (str, os.PathLike)):
        from yolocompress.export.ort import create_session

        session_or_path = create_session(session_or_path)
    inputs = session_or_path.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise InputError(f"expected one image input [B, 3, H, W], got {[(i.name, i.shape) for i in inputs]}")
    first = inputs[0]
    batch, _, height, width = (_dim(d) for d in first.shape)
    return OnnxInputShape(first.name, batch, height, width)


class _ArrayPredictor:
    """Shared by the ONNX Runtime and OpenVINO predictors: batching against a fixed input batch, the image
    size check, numpy in and out. Subclasses set ``input_shape`` and ``_dtype`` and implement ``_run``."""

    input_shape: OnnxInputShape
    _dtype: type = np.float32

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, imgs: Tensor) -> Tensor:
        shape = self.input_shape
        if shape.static_size and tuple(imgs.shape[2:]) != (shape.height, shape.width):
            raise InputError(f"ONNX model takes {shape.height}x{shape.width} images, got "
                             f"{imgs.shape[2]}x{imgs.shape[3]}: build the loader square (rect=False) at "
                             "that size")
        array = imgs.detach().cpu().numpy().astype(self._dtype, copy=False)
        step = shape.batch if shape.batch is not None else len(array)
        outputs = []
        for start in range(0, len(array), step):
            chunk = array[start:start + step]
            n = len(chunk)
            if n < step:  # a fixed batch larger than what is left: pad with blank images, drop their rows
                chunk = np.concatenate((chunk, np.zeros((step - n, *chunk.shape[1:]), chunk.dtype)))
            outputs.append(self._run(chunk)[:n])
        out = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, 0)
        return torch.from_numpy(np.ascontiguousarray(out)).float()


class OnnxPredictor(_ArrayPredictor):
    """Run an exported ONNX detector with ONNX Runtime (CPU).

    With a fixed batch dimension the batch is run in chunks of that size (one image at a time for the
    usual batch of 1; a short last chunk is padded); with a dynamic one the whole batch goes in one call.
    A model with a fixed image size needs the data letterboxed square at that size (``rect=False``);
    :attr:`input_shape` tells the caller which size. The first output is taken as the decoded predictions.

    Args:
        path: the ``.onnx`` file.
        threads: ONNX Runtime intra-op threads (``None``: its default).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        from yolocompress.export.ort import create_session

        self.session = create_session(path, threads=threads)
        self.input_shape = onnx_input_shape(self.session)
        self.output_name = self.session.get_outputs()[0].name
        input_type = self.session.get_inputs()[0].type
        self._dtype = np.float16 if "float16" in input_type else np.float32

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_shape.name: chunk})[0]


class OpenVinoPredictor(_ArrayPredictor):
    """Run an exported ONNX detector (fp32 or int8 QDQ) with OpenVINO's CPU plugin; batching and image size
    rules as :class:`OnnxPredictor`.

    Args:
        path: the ``.onnx`` file.
        threads: inference threads (``None``: OpenVINO's default).
        backend: ``"openvino"`` (fp32 inference precision) or ``"openvino-bf16"``
            (:mod:`yolocompress.export.openvino`).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None, backend: str = "openvino"):
        from yolocompress.export.openvino import compile_openvino

        self.model = compile_openvino(path, threads=threads, backend=backend)
        dims = self.model.input_shape
        if len(dims) != 4:
            raise InputError(f"expected one image input [B, 3, H, W], got {self.model.input_name} "
                             f"{list(dims)}")
        self.input_shape = OnnxInputShape(self.model.input_name, dims[0], dims[2], dims[3])
        self._dtype = self.model.input_dtype

    @property
    def precision(self) -> str:
        """The inference precision OpenVINO chose (``"f32"``, ``"bf16"``)."""
        return self.model.precision

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        return self.model.run(chunk)
