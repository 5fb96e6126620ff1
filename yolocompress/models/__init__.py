"""The YOLOv5 model family built from configs."""
from yolocompress.models.detect import Detect
from yolocompress.models.yolo import DetectionModel, build_model, list_configs, load_config

__all__ = ["Detect", "DetectionModel", "build_model", "list_configs", "load_config"]
