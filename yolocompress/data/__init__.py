"""Data: ``data.yaml`` loading, label checking, evaluation and training loaders, synthetic data sets.

Loaders yield ``(imgs uint8 [B, 3, H, W], targets [n, 6], paths, shapes)`` (docs/architecture.md).
"""
from yolocompress.data.augment import AugmentConfig
from yolocompress.data.config import DataConfig, load_data_config
from yolocompress.data.dataset import EvalDataset, SampleKey, TrainDataset, collate
from yolocompress.data.labels import LabelIssue, LabelScanResult
from yolocompress.data.loaders import TrainLoader, build_eval_loader, build_train_loader
from yolocompress.data.scan import SplitIndex, load_split, scan_split
from yolocompress.data.synthetic import SHAPES, synthesize_dataset

__all__ = [
    "SHAPES", "AugmentConfig", "DataConfig", "EvalDataset", "LabelIssue", "LabelScanResult", "SampleKey",
    "SplitIndex", "TrainDataset", "TrainLoader", "build_eval_loader", "build_train_loader", "collate",
    "load_data_config", "load_split", "scan_split", "synthesize_dataset",
]
