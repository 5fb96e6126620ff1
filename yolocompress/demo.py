"""The embedded default: the shipped baseline model and the synthetic demo data set.

``yolocompress demo`` (and the README's main command) runs on these with no arguments and no downloads:
the data set is generated deterministically on first use into a cache folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from yolocompress.errors import CompressionError
from yolocompress.io.workdir import cache_dir

if TYPE_CHECKING:
    from yolocompress.recipe import RecipeResult

ASSETS = Path(__file__).parent / "assets"
BASELINE_PATH = ASSETS / "baseline.pt"
BASELINE_RECORD = ASSETS / "baseline.json"

# The generator settings of the demo set; the baseline's recorded metrics are on exactly this val split.
DEMO_DATA = {"n_train": 512, "n_val": 128, "imgsz": 256, "seed": 0}


def demo_data(root: str | os.PathLike | None = None, n_val: int | None = None) -> Path:
    """The demo data set's ``data.yaml``, generating it (about a minute on 2 cores) if it is not there yet.

    ``n_val``: a longer val split than the demo's 128 images (benchmarks that must resolve differences smaller
    than its rounding noise); every image is seeded by its own index, so the train split and the first 128 val
    images are the demo's own.
    """
    from yolocompress.data.synthetic import synthesize_dataset

    d = DEMO_DATA if n_val is None else {**DEMO_DATA, "n_val": n_val}
    folder = Path(root) if root else cache_dir() / f"synthetic-seed{d['seed']}-{d['n_train']}x{d['n_val']}-{d['imgsz']}px"
    data_yaml = folder / "data.yaml"
    if not data_yaml.is_file():
        synthesize_dataset(folder, n_train=d["n_train"], n_val=d["n_val"], imgsz=d["imgsz"], seed=d["seed"],
                           overwrite=True)
    return data_yaml


def baseline_path() -> Path:
    """The shipped baseline checkpoint (our format)."""
    if not BASELINE_PATH.is_file():
        raise CompressionError(f"the shipped baseline is missing ({BASELINE_PATH}); reinstall yolocompress")
    return BASELINE_PATH


def baseline_record() -> dict[str, Any]:
    """The metrics and training record saved with the baseline (``baseline.json``)."""
    return json.loads(BASELINE_RECORD.read_text()) if BASELINE_RECORD.is_file() else {}


def run_demo(data_root: str | os.PathLike | None = None, out_dir: str | os.PathLike = "runs/demo",
             overrides: Sequence[str] = (), on_progress: Callable[[Any], None] | None = None,
             on_inner_progress: Callable[[Any], None] | None = None) -> RecipeResult:
    """Run the shipped ``demo`` recipe (prune, short fine-tune, fuse, int8 PTQ) on the shipped baseline and the
    demo data into ``out_dir``. A second run in the same folder resumes: finished stages are skipped and only
    the latency is measured again."""
    from yolocompress.recipe import load_recipe, run_recipe

    data_yaml = demo_data(data_root)
    loaded = load_recipe("demo", overrides=overrides, model=baseline_path(), data=data_yaml)
    return run_recipe(loaded, out_dir, resume=True, on_progress=on_progress, on_inner_progress=on_inner_progress)
