"""Image decoding, resizing and letterboxing, pixel-compatible with YOLOv5's OpenCV pipeline.

Images are uint8 tensors ``[3, H, W]`` in RGB. Decoding uses ``torchvision.io`` (libjpeg-turbo gives
the same pixels as ``cv2.imread``) and applies the EXIF orientation, as ``cv2.imread`` does.

Resizing follows YOLOv5's ``load_image``: the long side becomes ``imgsz`` (``ceil`` of the scaled
sides); shrinking for evaluation uses OpenCV's ``INTER_AREA`` (reproduced by :func:`resize_area`: equal
to OpenCV 4.14 except for a rare 1-grey-level rounding difference), anything else bilinear without
antialiasing (torchvision's uint8 bilinear is within 1 grey level of ``cv2.INTER_LINEAR``). torchvision's antialiased bilinear is *not* a
substitute for ``INTER_AREA``: it differs by 2-4 grey levels on average and up to ~50 at edges.
"""
from __future__ import annotations

import contextlib
import functools
import io
import math
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

# Extensions YOLOv5 lists as images, minus the two we cannot decode (dng, pfm).
IMG_FORMATS = frozenset({"bmp", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp"})
PAD_VALUE = 114  # YOLOv5's grey letterbox / mosaic fill
_TORCHVISION_FORMATS = frozenset({"jpeg", "jpg", "mpo", "png", "webp"})


class ImageDecodeError(Exception):
    """An image file is missing, truncated or not an image (internal; callers turn it into a report entry)."""


def decode_rgb(path: str | Path) -> tuple[Tensor, str]:
    """Decode an image file to ``uint8 Tensor[3, H, W]`` RGB, EXIF orientation applied (usually a
    channels-last view: the letterbox copy makes it contiguous).

    Returns ``(image, note)``; ``note`` is ``""`` or a warning such as a JPEG whose end-of-image marker
    was missing (decoded after restoring the marker in memory; YOLOv5 rewrites such files on disk, we
    never modify user files). Raises :class:`ImageDecodeError` for anything that cannot be decoded.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read image: {exc.strerror or exc}") from exc
    if not data:
        raise ImageDecodeError("empty file")
    ext = path.suffix[1:].lower()
    note = ""
    if ext in _TORCHVISION_FORMATS:
        try:
            img = _decode_tv(data)
        except RuntimeError as exc:
            if data[:2] == b"\xff\xd8" and data[-2:] != b"\xff\xd9":
                try:  # a JPEG without its end marker: everything else may be intact
                    img = _decode_tv(data + b"\xff\xd9")
                    note = "JPEG end-of-image marker missing (restored in memory)"
                except RuntimeError:
                    raise ImageDecodeError(f"corrupt image: {_first_line(exc)}") from exc
            else:
                raise ImageDecodeError(f"corrupt image: {_first_line(exc)}") from exc
    else:
        img = _decode_pil(data)
    if img.dtype != torch.uint8:  # 16-bit PNG: scale like cv2.imread(IMREAD_COLOR)
        img = TF.to_dtype(img, torch.uint8, scale=True)
    if img.shape[1] < 2 or img.shape[2] < 2:
        raise ImageDecodeError(f"image too small ({img.shape[2]}x{img.shape[1]} pixels)")
    return img, note


def _decode_tv(data: bytes) -> Tensor:
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    with quiet_torchvision_io():
        return decode_image(buf, mode=ImageReadMode.RGB, apply_exif_orientation=True)


@contextlib.contextmanager
def quiet_torchvision_io() -> Iterator[None]:
    """Silence torchvision 0.29's DeprecationWarning on every image decode/encode call.

    ``torchvision.io`` codecs are deprecated in favour of TorchCodec (not a dependency yet); they still
    work and are what the data package uses. Scoped, so the rest of the process keeps its filters.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                                category=DeprecationWarning)
        yield


def _decode_pil(data: bytes) -> Tensor:
    """Formats torchvision cannot read (bmp, tiff) through Pillow."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # Pillow raises many types for bad files
        raise ImageDecodeError(f"corrupt image: {_first_line(exc)}") from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # torchvision prefixes C++ source locations ("decode_jpeg, /path/file.cpp:171, Image is incomplete")
    line = text.splitlines()[-1] if text else type(exc).__name__
    return line.split(".cpp:")[-1].split(", ", 1)[-1].strip() or line


def load_resized(img: Tensor, imgsz: int, augment: bool) -> Tensor:
    """Resize so the long side is ``imgsz``, as YOLOv5 ``load_image`` (sides ``ceil(side * r)``).

    ``augment=False`` (evaluation) shrinks with ``INTER_AREA`` and enlarges bilinearly; ``augment=True``
    (training) is always bilinear. Returns ``uint8 Tensor[3, h, w]`` (the input itself if no resize).
    """
    h0, w0 = img.shape[-2:]
    r = imgsz / max(h0, w0)
    if r == 1:
        return img
    size = (math.ceil(h0 * r), math.ceil(w0 * r))
    if not augment and r < 1:
        return resize_area(img, size)
    return resize_linear(img, size)


def resize_linear(img: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of ``uint8 Tensor[3, H, W]`` to ``size=(h, w)``, like ``cv2.INTER_LINEAR``."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return TF.resize(img, list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=False)


def resize_area(img: Tensor, size: tuple[int, int]) -> Tensor:
    """Shrink ``uint8 Tensor[3, H, W]`` to ``size=(h, w)`` as ``cv2.resize(..., INTER_AREA)`` does.

    Each output pixel is the mean of the input area it covers, partial pixels weighted by their
    covered fraction (OpenCV's weight table, including its 1e-3 cut-off); separable, rows then columns.
    Computed with numpy on the channels-last view: single-threaded, so it does not stall like torch's
    intra-op threads do on a busy machine (measured 30 ms vs 270 ms for 1000x750 -> 640x480 under load).
    """
    h0, w0 = img.shape[-2:]
    h, w = size
    if h > h0 or w > w0:
        raise ValueError(f"resize_area only shrinks: {(h0, w0)} -> {size}")
    if (h, w) == (h0, w0):
        return img
    x = img.permute(1, 2, 0).numpy()
    if h0 % h == 0 and w0 % w == 0:
        # OpenCV's integer-factor fast path: exact block sums, then (sum + 2) >> 2 for 2x2 blocks and
        # round-half-even(sum * float32(1 / area)) otherwise
        fy, fx = h0 // h, w0 // w
        total = x.astype(np.int32).reshape(h, fy, w, fx, -1).sum(axis=(1, 3))
        if (fy, fx) == (2, 2):
            out = (total + 2) >> 2
        else:
            out = np.rint(total.astype(np.float32) * np.float32(1.0 / (fy * fx)))
    else:
        rows = _weighted_taps(x.astype(np.float32), 0, *_area_taps(h0, h))
        out = np.rint(_weighted_taps(rows, 1, *_area_taps(w0, w)))
    out = np.clip(out, 0, 255).astype(np.uint8)
    return torch.from_numpy(out).permute(2, 0, 1)


def _weighted_taps(x: np.ndarray, axis: int, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``out[i] = sum_k weight[i, k] * x[index[i, k]]`` along ``axis`` (0 or 1) of ``x [H, W, C]``."""
    shape = (-1, 1, 1) if axis == 0 else (1, -1, 1)
    out = np.take(x, index[:, 0], axis=axis) * weight[:, 0].reshape(shape)
    for k in range(1, index.shape[1]):
        out += np.take(x, index[:, k], axis=axis) * weight[:, k].reshape(shape)
    return out


@functools.lru_cache(maxsize=256)
def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA weight table for one axis: ``index, weight (ndarray[n_out, K])``."""
    scale = n_in / n_out
    rows = []
    for d in range(n_out):
        f1 = d * scale
        f2 = f1 + scale
        s1, s2 = math.ceil(f1), math.floor(f2)
        cell = min(scale, n_in - f1)
        taps = []
        if s1 - f1 > 1e-3:
            taps.append((s1 - 1, (s1 - f1) / cell))
        taps.extend((s, 1.0 / cell) for s in range(s1, min(s2, n_in)))
        if f2 - s2 > 1e-3 and s2 < n_in:
            taps.append((s2, min(f2 - s2, 1.0, cell) / cell))
        rows.append(taps)
    k = max(len(t) for t in rows)
    index = np.zeros((n_out, k), dtype=np.int64)
    weight = np.zeros((n_out, k), dtype=np.float32)
    for d, taps in enumerate(rows):
        for j, (s, wt) in enumerate(taps):
            index[d, j], weight[d, j] = s, wt
    index.flags.writeable = weight.flags.writeable = False  # shared through the lru_cache
    return index, weight


def letterbox(img: Tensor, new_shape: tuple[int, int], scaleup: bool = True,
              value: int = PAD_VALUE) -> tuple[Tensor, float, tuple[float, float]]:
    """Fit ``img (uint8 Tensor[3, h, w])`` into ``new_shape=(H, W)``, keeping aspect ratio, centred.

    As YOLOv5 ``letterbox(auto=False)``: scale ``r = min(H/h, W/w)`` (capped at 1 unless ``scaleup``),
    bilinear resize to ``round(side * r)``, pad with grey ``value``; when the padding is odd the extra
    pixel goes right/bottom. Returns ``(image Tensor[3, H, W], r, (pad_w, pad_h))`` where the pads are
    the *half* paddings as floats (what YOLOv5 stores in ``shapes``; they can be x.5).
    """
    h, w = img.shape[-2:]
    H, W = int(new_shape[0]), int(new_shape[1])
    r = min(H / h, W / w)
    if not scaleup:
        r = min(r, 1.0)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    dw, dh = (W - new_w) / 2, (H - new_h) / 2
    if (new_h, new_w) != (h, w):
        img = resize_linear(img, (new_h, new_w))
    top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
    # numpy: a single-threaded memset + strided copy beats torch's intra-op threads on small images
    out = np.full((img.shape[0], H, W), value, dtype=np.uint8)
    out[:, top:top + new_h, left:left + new_w] = img.numpy()
    return torch.from_numpy(out), r, (dw, dh)


def rect_batches(image_hw: np.ndarray, batch: int, imgsz: int, stride: int,
                 pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Rectangular evaluation batches, as YOLOv5 ``LoadImagesAndLabels(rect=True)``.

    Args:
        image_hw (ndarray[N, 2]): original ``(h, w)`` of every image.
    Returns:
        ``order (ndarray[N])``: image indices sorted by aspect ratio h/w (stable, so ties keep file
        order; YOLOv5's unstable sort may order ties differently), and ``batch_shapes (ndarray[nb, 2])``:
        the letterboxed ``(H, W)`` of each batch of ``batch`` consecutive sorted images,
        ``ceil(shape * imgsz / stride + pad) * stride`` where ``shape`` is the batch's relative (h, w).
    """
    hw = np.asarray(image_hw, dtype=np.float64).reshape(-1, 2)
    ar = hw[:, 0] / hw[:, 1]
    order = np.argsort(ar, kind="stable")
    ar = ar[order]
    nb = max(1, math.ceil(len(ar) / batch))
    shapes = np.ones((nb, 2), dtype=np.float64)
    for i in range(nb):
        ari = ar[i * batch:(i + 1) * batch]
        lo, hi = ari.min(), ari.max()
        if hi < 1:
            shapes[i] = [hi, 1]
        elif lo > 1:
            shapes[i] = [1, 1 / lo]
    batch_shapes = np.ceil(shapes * imgsz / stride + pad).astype(np.int64) * stride
    return order, batch_shapes
