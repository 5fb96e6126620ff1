"""Build evaluation and training loaders from a :class:`DataConfig` (or a ``data.yaml`` path).

Both yield ``(imgs uint8 [B, 3, H, W], targets [n, 6], paths, shapes)`` (docs/architecture.md).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from yolocompress.data.augment import AugmentConfig
from yolocompress.data.config import DataConfig, as_data_config
from yolocompress.data.dataset import EvalDataset, SampleKey, TrainDataset, check_imgsz, collate
from yolocompress.data.scan import load_split
from yolocompress.errors import InputError

logger = logging.getLogger(__name__)


def build_eval_loader(data_cfg: DataConfig | str | os.PathLike, split: str = "val", imgsz: int = 640,
                      batch: int = 32, stride: int = 32, pad: float = 0.5, rect: bool = True,
                      workers: int = 0, cache: bool = False, label_cache: bool = True) -> DataLoader:
    """Evaluation loader as YOLOv5 ``val.py`` (``create_dataloader(..., rect, pad)``).

    Args:
        data_cfg: a :class:`DataConfig` or the path of a ``data.yaml``.
        split: ``val``, ``test`` or ``train``.
        imgsz: long side of the resized images in pixels (rounded up to a multiple of ``stride``).
        batch: images per batch (a rect batch shares one letterboxed shape).
        stride: the model's largest stride; rect batch shapes are multiples of it.
        pad: extra border of rect batches in strides (val.py: 0.5).
        rect: rectangular batches sorted by aspect ratio; ``False`` letterboxes to ``imgsz x imgsz``.
        workers: loader worker processes (0: load in the calling process).
        cache: keep every resized image in RAM after the first decode (filled at once here).
        label_cache: read/write the ``*.yolocompress.cache`` file of the label scan.
    Returns:
        A DataLoader over an :class:`EvalDataset` (``loader.dataset``), in a fixed order.
    """
    data = as_data_config(data_cfg)
    _check_counts(batch=batch, workers=workers)
    imgsz = _imgsz(imgsz, stride)
    index = load_split(data, split, cache=label_cache)
    dataset = EvalDataset(index, imgsz=imgsz, batch=batch, stride=stride, pad=pad, rect=rect)
    if cache:
        nbytes = dataset.cache_images(workers)
        logger.info("cached %d %s images in RAM (%.2f GB)", len(dataset), split, nbytes / 1e9)
    return DataLoader(dataset, batch_size=min(batch, len(dataset)), shuffle=False, num_workers=workers,
                      collate_fn=collate, persistent_workers=workers > 0, worker_init_fn=_worker_init)


class EpochSampler(Sampler[SampleKey]):
    """Seeded shuffling (``DistributedSampler``: the permutation depends only on seed + epoch) that
    yields :class:`SampleKey` so each sample knows its epoch and the mosaic switch in any worker."""

    def __init__(self, dataset: TrainDataset, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.inner = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.epoch = 0
        self.mosaic = dataset.mosaic

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.inner.set_epoch(self.epoch)

    def __iter__(self) -> Iterator[SampleKey]:
        for i in self.inner:
            yield SampleKey(int(i), self.epoch, self.mosaic)

    def __len__(self) -> int:
        return len(self.inner)


class TrainLoader:
    """Iterable of training batches with per-epoch control.

    ``set_epoch(e)`` must be called before each epoch (a different shuffle and augmentation per epoch,
    identical for the same seed and epoch, whatever the number of workers). ``mosaic = False`` switches
    mosaic off from the next batch produced (e.g. for the last epochs; YOLOv8's ``close_mosaic``).
    """

    def __init__(self, dataset: TrainDataset, sampler: EpochSampler, loader: DataLoader) -> None:
        self.dataset, self.sampler, self.loader = dataset, sampler, loader
        self.batch_size = loader.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.dataset.epoch = int(epoch)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    @property
    def mosaic(self) -> bool:
        return self.sampler.mosaic

    @mosaic.setter
    def mosaic(self, on: bool) -> None:
        self.sampler.mosaic = bool(on)
        self.dataset.mosaic = bool(on)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def build_train_loader(data_cfg: DataConfig | str | os.PathLike, imgsz: int = 640, batch: int = 16,
                       stride: int = 32, hyp: AugmentConfig | Any | None = None, seed: int = 0,
                       workers: int = 0, rank: int = 0, world_size: int = 1, cache: bool = False,
                       split: str = "train", label_cache: bool = True) -> TrainLoader:
    """Training loader with YOLOv5 augmentation, shuffled and augmented deterministically from ``seed``.

    Args:
        imgsz: training image size in pixels (square; rounded up to a multiple of ``stride``).
        batch: *total* batch size over all ranks (each rank loads ``batch // world_size``, as YOLOv5's
            ``--batch-size``).
        hyp: an :class:`AugmentConfig`, or any hyp object/mapping with the same field names
            (e.g. ``engine.loss.Hyp``); ``None`` = hyp.scratch-low defaults.
        seed: shuffle and augmentation seed; the same seed and epoch give identical batches.
        workers: loader worker processes per rank.
        rank, world_size: this process's place in distributed training (a ``DistributedSampler``
            shards each epoch's permutation).
        cache: keep the resized images in RAM.
    """
    data = as_data_config(data_cfg)
    _check_counts(batch=batch, workers=workers, world_size=world_size)
    if batch % world_size:
        raise InputError(f"batch {batch} is not divisible by world_size {world_size}")
    if not 0 <= rank < world_size:
        raise InputError(f"rank {rank} outside 0..{world_size - 1}")
    imgsz = _imgsz(imgsz, stride)
    index = load_split(data, split, cache=label_cache)
    dataset = TrainDataset(index, imgsz=imgsz, hyp=hyp, seed=seed)
    if cache:
        nbytes = dataset.cache_images(workers)
        logger.info("cached %d %s images in RAM (%.2f GB)", len(dataset), split, nbytes / 1e9)
    sampler = EpochSampler(dataset, seed=seed, rank=rank, world_size=world_size)
    per_rank = batch // world_size
    loader = DataLoader(dataset, batch_size=min(per_rank, len(dataset)), sampler=sampler, num_workers=workers,
                        collate_fn=collate, persistent_workers=workers > 0, worker_init_fn=_worker_init,
                        drop_last=False)
    return TrainLoader(dataset, sampler, loader)


def _worker_init(worker_id: int) -> None:
    # one intra-op thread per worker process: the workers already run in parallel
    torch.set_num_threads(1)


def _imgsz(imgsz: int, stride: int) -> int:
    new = check_imgsz(imgsz, stride)
    if new != int(imgsz):
        logger.warning("imgsz %d is not a multiple of stride %d; using %d", imgsz, stride, new)
    return new


def _check_counts(batch: int, workers: int, world_size: int = 1) -> None:
    if batch < 1 or world_size < 1:
        raise InputError(f"batch and world_size must be positive, got batch={batch}, world_size={world_size}")
    if workers < 0:
        raise InputError(f"workers must be >= 0, got {workers}")
