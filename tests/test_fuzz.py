"""Property tests ("fuzzing") of the parsers that read user files: the label parser, the data.yaml loader, the
recipe loader and the checkpoint loader. Whatever the input (random bytes, random or hostile YAML,
truncated or byte-flipped checkpoints, malformed pickles), the outcome is a valid result or one of our
one-line errors (``yolocompress.errors.YoloCompressError``), never another exception.

Each target is ``(strategy, check)``; ``check(value, workdir)`` returns ``"result"`` or ``"error"`` and raises
anything else. ``benchmarks/fuzz_counts.py`` runs the same targets with many more examples and counts crashes.
The examples here are derandomized (the same every run) and few enough for the file to take well under a
minute.
"""
from __future__ import annotations

import functools
import io
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yolocompress.data.config import DataConfig, load_data_config
from yolocompress.data.labels import parse_label_text
from yolocompress.errors import YoloCompressError
from yolocompress.io.checkpoint import load_model_with_info, model_to_dict
from yolocompress.models import DetectionModel, load_config
from yolocompress.recipe.schema import TOP_LEVEL_KEYS, RecipeDocument, parse_recipe

# random pickles of protocols 3-5: torch warns that its weights-only unpickler defaults to protocol 2
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """``("result", value)`` or ``("error", exc)`` for one of our errors, whose message must be one line;
    any other exception propagates (a crash)."""
    try:
        return "result", call()
    except YoloCompressError as exc:
        message = str(exc)
        assert message.strip() and len(message.splitlines()) == 1, repr(message)
        return "error", exc


# --- label parser -------------------------------------------------------------------------------------------

TOKENS = st.one_of(
    st.integers(-3, 12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(0, 1).map(lambda v: f"{v:.6f}"),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "-0", "0x10", "1_0", "1.", ".5", "1e-7", "1.000001",
                     "\u0661", "", "#", "a", "\x00", "\ufeff0"]),
    st.text(max_size=4),
)
LINE = st.lists(TOKENS, max_size=11).map(" ".join)
LABEL_TEXT = st.one_of(st.text(max_size=200), st.lists(LINE, max_size=8).map("\n".join),
                       st.lists(LINE, max_size=8).map("\r\n".join))


def check_labels(value: tuple[str, int], workdir: Path) -> str:
    text, nc = value
    kind, result = outcome(lambda: parse_label_text(text, nc))
    if kind == "result":
        labels, duplicates = result
        assert isinstance(labels, np.ndarray) and labels.dtype == np.float32 and labels.ndim == 2
        assert labels.shape[1] == 5 and duplicates >= 0
        classes = labels[:, 0]
        assert np.all(classes == np.round(classes)) and np.all((classes >= 0) & (classes < nc))
        assert np.all((labels[:, 1:] >= 0) & (labels[:, 1:] <= 1))
        assert len(np.unique(labels, axis=0)) == len(labels)
    return kind


# --- YAML documents (data.yaml, recipe) ---------------------------------------------------------------------

DATA_KEYS = ["path", "train", "val", "test", "names", "nc", "download"]
RECIPE_KEYS = [*TOP_LEVEL_KEYS, "prune", "finetune", "fuse", "quantize", "distill", "ratio", "epochs",
               "method", "latency", "runs", "max_map_drop", "backend"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=12),
                    st.sampled_from([".", "..", "images/train", "images/val", "images", "missing",
                                     "data.yaml", "/", "~", "list.txt", 0, 1, 2, 32, 64, 0.5, "onnxruntime",
                                     "torch"]))
YAML_TOKENS = st.sampled_from([
    "&a ", "*a", "&b ", "*b", ": ", "- ", "[", "]", "{", "}", ", ", "\n", "  ", "? ", "<<: ",
    "!!python/object:os.system ", "!!binary ", "!!set ", "!!str ", "!!int ", "'", '"', "#", "|\n", ">\n",
    "---\n", "...\n", "%YAML 1.1\n", "\t", "\\", "1e3", "0o17", "~", "null", "yes", "2001-12-14", "train",
    "val", "names", "stages"])


def yaml_documents(keys: list[str], valid: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """A ``valid`` document with random keys replaced, dropped or added; random structures (keys mostly from
    ``keys``) dumped as YAML; token soups; random text and bytes."""
    tree = st.recursive(SCALARS, lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=6), st.integers(0, 3)), inner,
                        max_size=5)),
        max_leaves=20)
    top = st.dictionaries(st.sampled_from(keys), tree, max_size=len(keys))
    near = st.tuples(top, st.sets(st.sampled_from(sorted(valid)))).map(
        lambda t: {**{k: v for k, v in valid.items() if k not in t[1]}, **t[0]})
    return st.one_of(
        near.map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode("utf-8")),
        top.map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode("utf-8")),
        tree.map(lambda d: yaml.safe_dump(d).encode("utf-8")),
        st.lists(YAML_TOKENS, max_size=40).map(lambda t: "".join(t).encode("utf-8")),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", errors="surrogatepass")),
        st.binary(max_size=200),
    )


def check_data_yaml(document: bytes, workdir: Path) -> str:
    path = workdir / "data.yaml"
    path.write_bytes(document)
    kind, result = outcome(lambda: load_data_config(path))
    if kind == "result":
        assert isinstance(result, DataConfig) and result.nc == len(result.names) >= 1 and result.val
    return kind


def check_recipe(document: bytes, workdir: Path) -> str:
    path = workdir / "recipe.yaml"
    path.write_bytes(document)
    kind, result = outcome(lambda: parse_recipe(path))
    if kind == "result":
        assert isinstance(result, RecipeDocument) and result.stages
    return kind


# --- checkpoints --------------------------------------------------------------------------------------------

@functools.cache
def checkpoint_bytes() -> dict[str, bytes]:
    """A tiny model in our format (zip), the same in torch's legacy pickle format, and hostile pickles."""
    cfg = load_config("yolov5n")
    cfg.update(width_multiple=0.0625, depth_multiple=0.33, nc=2)
    torch.manual_seed(0)
    model = DetectionModel(cfg)
    out: dict[str, bytes] = {}
    buffer = io.BytesIO()
    torch.save(model_to_dict(model, imgsz=64), buffer)
    out["zip"] = buffer.getvalue()
    buffer = io.BytesIO()
    torch.save(model_to_dict(model, imgsz=64), buffer, _use_new_zipfile_serialization=False)
    out["legacy"] = buffer.getvalue()
    out["reduce"] = b"cos\nsystem\n(S'echo pwned'\ntR."  # would run a shell command under a plain pickle.load
    out["plain"] = pickle.dumps({"model": [1, 2.5, "x", None], "ema": {"a": (1,)}}, protocol=4)
    return out


def _truncate(data: bytes, fraction: float) -> bytes:
    return data[:int(len(data) * fraction)]


def _flip(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    buf = bytearray(data)
    for where, byte in edits:
        buf[where % len(buf)] = byte
    return bytes(buf)


SOURCES = st.sampled_from(["zip", "legacy", "reduce", "plain"])
CHECKPOINTS = st.one_of(
    st.binary(max_size=300),
    st.tuples(SOURCES, st.floats(0, 1)).map(lambda t: _truncate(checkpoint_bytes()[t[0]], t[1])),
    st.tuples(SOURCES, st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), min_size=1,
                                max_size=6)).map(lambda t: _flip(checkpoint_bytes()[t[0]], t[1])),
    st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                 max_leaves=10).flatmap(lambda obj: st.integers(0, 5).map(
                     lambda p: pickle.dumps(obj, protocol=p))),
)


def check_checkpoint(data: bytes, workdir: Path) -> str:
    path = workdir / "model.pt"
    path.write_bytes(data)
    kind, result = outcome(lambda: load_model_with_info(path))
    if kind == "result":
        model, info = result
        assert isinstance(model, DetectionModel) and not model.training
    return kind


# --- the targets --------------------------------------------------------------------------------------------

VALID_DATA = {"train": "images/train", "val": "images/val", "names": ["a", "b"]}
VALID_RECIPE = {"version": 1, "stages": [{"prune": {"ratio": 0.5}}, {"fuse": None}]}
TARGETS: dict[str, tuple[st.SearchStrategy, Callable[[Any, Path], str]]] = {
    "labels": (st.tuples(LABEL_TEXT, st.integers(1, 90)), check_labels),
    "data.yaml": (yaml_documents(DATA_KEYS, VALID_DATA), check_data_yaml),
    "recipe": (yaml_documents(RECIPE_KEYS, VALID_RECIPE), check_recipe),
    "checkpoint": (CHECKPOINTS, check_checkpoint),
}
EXAMPLES = {"labels": 600, "data.yaml": 300, "recipe": 300, "checkpoint": 200}


def make_workdir(root: Path) -> Path:
    """A folder with the image folders a random data.yaml may name (``images/train``, ``images/val``)."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "list.txt").write_text("images/train\n")
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_outcome_is_a_result_or_our_one_line_error(name, workdir):
    strategy, check = TARGETS[name]
    kinds: set[str] = set()

    @settings(max_examples=EXAMPLES[name], deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(strategy)
    def run(value):
        kinds.add(check(value, workdir))

    run()
    assert kinds == {"result", "error"}, kinds  # the strategies reach both valid inputs and refusals


def test_the_fixture_checkpoints_load_and_the_hostile_pickle_is_refused(workdir):
    """The seeds the mutations start from: both formats load; the shell-command pickle is refused unrun."""
    for name in ("zip", "legacy"):
        assert check_checkpoint(checkpoint_bytes()[name], workdir) == "result"
    evil = _write(workdir / "evil.pt", checkpoint_bytes()["reduce"])
    kind, exc = outcome(lambda: load_model_with_info(evil))
    assert kind == "error" and "allowlist" in str(exc)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_message_with_a_line_break_stays_one_line(workdir):
    (workdir / "images" / "a\nb").mkdir(exist_ok=True)
    path = _write(workdir / "data.yaml", b'train: "images/a\\nb/missing"\nval: x\nnames: [a]\n')
    kind, exc = outcome(lambda: load_data_config(path))
    assert kind == "error" and "a\\nb" in str(exc)
