"""Data: ``data.yaml`` loading, label checking, evaluation and training loaders, synthetic data sets.

Loaders yield ``(imgs uint8 [B, 3, H, W], targets [n, 6], paths, shapes)`` (docs/architecture.md).
"""
from yolocompress.data.config import DataConfig, load_data_config
from yolocompress.data.labels import LabelIssue, LabelReport
from yolocompress.data.scan import SplitIndex, load_split, scan_split

__all__ = ["DataConfig", "LabelIssue", "LabelReport", "SplitIndex", "load_data_config", "load_split", "scan_split"]
