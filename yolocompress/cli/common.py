"""Helpers shared by the CLI command modules (argument types, model loading, output)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from yolocompress.errors import InputError

console = Console()
err_console = Console(stderr=True)


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def image_size(text: str) -> int:
    """argparse type: image size, a positive multiple of 32."""
    value = positive_int(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"image size must be a multiple of 32, got {value}")
    return value


def load_cli_model(path: str, cfg: str | None = None):
    """Load a model file for a command; returns (model, ModelInfo)."""
    from yolocompress.io.checkpoint import load_model_with_info

    p = Path(path)
    if p.suffix.lower() == ".onnx":
        raise InputError(f"{p.name} is an ONNX model; this command needs a .pt checkpoint")
    return load_model_with_info(p, cfg=cfg)


def write_json(obj: Any, path: str | None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically when a path was given."""
    if path:
        from yolocompress.io.atomic import atomic_write_json

        atomic_write_json(obj, path)
