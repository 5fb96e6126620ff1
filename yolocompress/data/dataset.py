"""Datasets that yield samples of the batch contract (docs/architecture.md).

A sample is ``(image uint8 Tensor[3, H, W] RGB, targets float Tensor[n, 6], path str, shapes)``;
:func:`collate` stacks samples into a batch and writes each target's image index in column 0.
Targets are ``(batch_index, class, cx, cy, w, h)`` normalised to the image the sample yields.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from yolocompress.data.augment import (AugmentConfig, augment_hsv, mixup, mosaic4, random_affine,
                                       xywhn_to_xyxy, xyxy_to_xywhn)
from yolocompress.data.images import ImageDecodeError, decode_rgb, letterbox, load_resized, rect_batches
from yolocompress.data.scan import SplitIndex
from yolocompress.errors import InputError

# ((h0, w0), ((ratio_h, ratio_w), (pad_w, pad_h))): letterboxed image -> original image
Shapes = tuple[tuple[int, int], tuple[tuple[float, float], tuple[float, float]]]


class _ImageDataset(Dataset):
    """Images of a split resized so the long side is ``imgsz``, optionally held in RAM."""

    augment = False

    def __init__(self, index: SplitIndex, imgsz: int) -> None:
        if not index.images:
            raise InputError(f"no usable images in the {index.split} split ({index.report.summary()})")
        self.split = index.split
        self.images: list[Path] = list(index.images)
        self.labels: list[np.ndarray] = list(index.labels)
        self.image_hw: np.ndarray = index.image_hw.copy()
        self.report = index.report
        self.nc, self.names = index.nc, list(index.names)
        self.imgsz = int(imgsz)
        self._ram: list[Tensor | None] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, i: int) -> Tensor:
        """Image ``i`` as ``uint8 Tensor[3, h, w]`` with ``max(h, w) == imgsz`` (see ``images.load_resized``)."""
        if self._ram is not None and self._ram[i] is not None:
            return self._ram[i]
        try:
            img, _ = decode_rgb(self.images[i])
        except ImageDecodeError as exc:
            raise InputError(f"{self.images[i]}: {exc} (it decoded when the split was scanned; "
                             "was the file changed?)") from None
        return load_resized(img, self.imgsz, self.augment)

    def cache_images(self, workers: int = 0) -> int:
        """Decode and resize every image once into RAM (``workers`` processes help); returns bytes held."""
        loader = DataLoader(_Resized(self), batch_size=None, num_workers=workers, collate_fn=_identity)
        # clone: a tensor received from a worker pins a shared-memory file descriptor until it is freed
        self._ram = [t.clone() if workers else t for t in loader]
        return sum(t.numel() for t in self._ram)


class _Resized(Dataset):
    def __init__(self, ds: _ImageDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Tensor:
        return self.ds.load_image(i)


def _identity(x):
    return x


class EvalDataset(_ImageDataset):
    """Evaluation samples exactly as YOLOv5 ``val.py`` builds them.

    With ``rect=True`` the images are sorted by aspect ratio (h/w) and every run of ``batch`` images
    is letterboxed to one shape (``images.rect_batches``); iterate in order with that batch size.
    With ``rect=False`` every image is letterboxed to ``imgsz x imgsz`` (static-shape models).
    ``shapes`` map the letterboxed image back to the original (see module doc of ``dataset``).
    """

    def __init__(self, index: SplitIndex, imgsz: int = 640, batch: int = 32, stride: int = 32,
                 pad: float = 0.5, rect: bool = True) -> None:
        super().__init__(index, imgsz)
        self.rect, self.batch = bool(rect), int(batch)
        if self.rect:
            order, self.batch_shapes = rect_batches(self.image_hw, self.batch, self.imgsz, stride, pad)
            self.images = [self.images[i] for i in order]
            self.labels = [self.labels[i] for i in order]
            self.image_hw = self.image_hw[order]
        else:
            self.batch_shapes = np.array([[self.imgsz, self.imgsz]], dtype=np.int64)

    def target_shape(self, i: int) -> tuple[int, int]:
        """Letterboxed ``(H, W)`` of sample ``i``."""
        H, W = self.batch_shapes[i // self.batch] if self.rect else self.batch_shapes[0]
        return int(H), int(W)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, str, Shapes]:
        img = self.load_image(i)
        h0, w0 = (int(v) for v in self.image_hw[i])
        img, _, (pad_w, pad_h) = letterbox(img, self.target_shape(i), scaleup=False)
        # size of the image inside the letterbox (== the resized size unless letterbox had to shrink it)
        H, W = img.shape[-2:]
        h, w = H - int(round(2 * pad_h)), W - int(round(2 * pad_w))
        shapes = ((h0, w0), ((h / h0, w / w0), (pad_w, pad_h)))
        boxes = xywhn_to_xyxy(self.labels[i], w, h, pad_w, pad_h)
        return img, _targets(xyxy_to_xywhn(boxes, W, H)), str(self.images[i]), shapes


class SampleKey(NamedTuple):
    """What a training sample depends on besides the dataset: its index, the epoch, whether mosaic is on."""

    index: int
    epoch: int
    mosaic: bool


class TrainDataset(_ImageDataset):
    """Augmented training samples of YOLOv5 (mosaic, random affine, MixUp, HSV, flips), ``imgsz x imgsz``.

    A sample is a pure function of ``(seed, epoch, index)`` and the mosaic switch: index it with a
    :class:`SampleKey` (what the loaders do, so worker processes need no shared state) or with an int,
    which uses the ``epoch`` and ``mosaic`` attributes. Targets are normalised to the ``imgsz`` square;
    ``shapes`` is ``None`` (no inverse mapping exists after augmentation).
    """

    augment = True

    def __init__(self, index: SplitIndex, imgsz: int = 640, hyp: AugmentConfig | None = None,
                 seed: int = 0) -> None:
        super().__init__(index, imgsz)
        if seed < 0:
            raise InputError(f"seed must be >= 0, got {seed}")
        self.hyp = AugmentConfig() if hyp is None else AugmentConfig.from_hyp(hyp)
        self.seed = int(seed)
        self.epoch = 0
        self.mosaic = self.hyp.mosaic > 0

    def rng(self, index: int, epoch: int) -> np.random.Generator:
        """The generator of sample ``index`` in ``epoch``: independent of process, worker and order."""
        return np.random.default_rng([self.seed, int(epoch), int(index)])

    def __getitem__(self, key: int | SampleKey) -> tuple[Tensor, Tensor, str, None]:
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), self.epoch, self.mosaic)
        rng = self.rng(key.index, key.epoch)
        hyp, s = self.hyp, self.imgsz
        if key.mosaic and rng.random() < hyp.mosaic:
            img, boxes = self._mosaic(key.index, rng)
            if rng.random() < hyp.mixup:
                img2, boxes2 = self._mosaic(int(rng.integers(len(self))), rng)
                img, boxes = mixup(img, boxes, img2, boxes2, rng)
        else:
            img = self.load_image(key.index)
            h, w = img.shape[-2:]
            img, r, (pad_w, pad_h) = letterbox(img, (s, s), scaleup=True)
            boxes = xywhn_to_xyxy(self.labels[key.index], r * w, r * h, pad_w, pad_h)
            img, boxes = random_affine(img, boxes, hyp, rng)
        H, W = img.shape[-2:]
        labels = xyxy_to_xywhn(boxes, W, H)
        gains = rng.uniform(-1, 1, 3) * [hyp.hsv_h, hyp.hsv_s, hyp.hsv_v] + 1
        img = augment_hsv(img, gains)
        if rng.random() < hyp.flipud:
            img = img.flip(-2)
            labels[:, 2] = 1 - labels[:, 2]
        if rng.random() < hyp.fliplr:
            img = img.flip(-1)
            labels[:, 1] = 1 - labels[:, 1]
        return img.contiguous(), _targets(labels), str(self.images[key.index]), None

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[Tensor, np.ndarray]:
        """4-image mosaic around a random centre in the middle half of a 2s canvas, then the affine warp
        that crops it back to s x s."""
        s = self.imgsz
        xc, yc = (int(v) for v in rng.uniform(s / 2, 1.5 * s, 2))
        picks = [index, *rng.integers(len(self), size=3).tolist()]
        picks = [picks[j] for j in rng.permutation(4)]
        canvas, boxes = mosaic4([self.load_image(j) for j in picks], [self.labels[j] for j in picks], s, (xc, yc))
        return random_affine(canvas, boxes, self.hyp, rng, border=-(s // 2))


def _targets(labels: np.ndarray) -> Tensor:
    """``[n, 5]`` class + box -> ``float Tensor[n, 6]`` with a zero batch-index column in front."""
    out = torch.zeros((len(labels), 6), dtype=torch.float32)
    if len(labels):
        out[:, 1:] = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))
    return out


def collate(batch: Sequence[tuple[Tensor, Tensor, str, Shapes | None]]
            ) -> tuple[Tensor, Tensor, list[str], list[Shapes | None]]:
    """Stack samples into ``(imgs uint8 [B, 3, H, W], targets [n, 6], paths, shapes)``."""
    imgs, targets, paths, shapes = zip(*batch)
    for i, t in enumerate(targets):
        t[:, 0] = i
    # numpy's single-threaded copy: torch.stack's intra-op threads stall when the cores are busy
    stacked = torch.from_numpy(np.stack([t.numpy() for t in imgs], 0))
    return stacked, torch.cat(targets, 0), list(paths), list(shapes)


def check_imgsz(imgsz: int, stride: int) -> int:
    """``imgsz`` rounded up to a multiple of ``stride`` (as YOLOv5 ``check_img_size``), InputError if < 1."""
    if int(imgsz) < 1 or int(stride) < 1:
        raise InputError(f"imgsz and stride must be positive, got imgsz={imgsz}, stride={stride}")
    return int(math.ceil(int(imgsz) / int(stride)) * int(stride))
