"""Write tiny YOLO data sets for the data package tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from torchvision.io import encode_jpeg, encode_png

from yolocompress.data.images import quiet_torchvision_io


def write_image(path: Path, h: int, w: int, seed: int = 0) -> Path:
    """A smooth random RGB image (JPEG or PNG by extension)."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 4, 4)).astype(np.float32))
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    img = img.round().clamp(0, 255).to(torch.uint8)
    with quiet_torchvision_io():
        data = encode_jpeg(img, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else encode_png(img)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.numpy().tobytes())
    return path


def write_dataset(root: Path, images: dict[str, tuple[int, int]], labels: dict[str, str | None],
                  names: list[str] | dict | None = None, extra: dict | None = None) -> Path:
    """``root/images/<name>`` of the given (h, w) and ``root/labels/<stem>.txt`` (None: no file).

    Returns the written ``root/data.yaml`` (train and val both ``images``).
    """
    for i, (name, (h, w)) in enumerate(images.items()):
        write_image(root / "images" / name, h, w, seed=i)
    for name, text in labels.items():
        if text is not None:
            p = root / "labels" / (Path(name).stem + ".txt")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
    cfg = {"path": ".", "train": "images", "val": "images", "names": names or ["a", "b", "c"]}
    cfg.update(extra or {})
    (root / "data.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root / "data.yaml"
