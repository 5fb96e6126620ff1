"""data.yaml parsing: keys, names forms, path rules and the errors for bad files."""
from __future__ import annotations

import os

import pytest

from yolocompress.data import load_data_config
from yolocompress.errors import InputError

from .helpers import write_image


def _yaml(tmp_path, text: str, name: str = "data.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture
def tree(tmp_path):
    """tmp/ds/images/{train,val}/x.jpg and a yaml folder elsewhere."""
    for split in ("train", "val"):
        write_image(tmp_path / "ds" / "images" / split / "x.jpg", 16, 16)
    return tmp_path


def test_fixture_yaml(ultra_dir):
    cfg = load_data_config(ultra_dir / "shapes-val" / "data.yaml")
    assert cfg.root == (ultra_dir / "shapes-val").resolve()
    assert cfg.val == [cfg.root / "images"] and cfg.train == [cfg.root / "images"] and cfg.test == []
    assert cfg.nc == 3 and cfg.names == ["circle", "rectangle", "triangle"]


def test_names_dict_and_relative_path(tree, monkeypatch):
    p = _yaml(tree, "path: ds\ntrain: images/train\nval: [images/val]\nnames: {0: cat, 1: dog}\n")
    monkeypatch.chdir("/")  # relative to the yaml's folder, not the working directory
    cfg = load_data_config(p)
    assert cfg.root == (tree / "ds").resolve()
    assert cfg.train == [(tree / "ds/images/train").resolve()]
    assert cfg.val == [(tree / "ds/images/val").resolve()]
    assert cfg.names == ["cat", "dog"] and cfg.nc == 2


def test_missing_path_defaults_to_yaml_folder_and_absolute_sources(tree):
    absolute = (tree / "ds/images/val").resolve()
    p = _yaml(tree / "ds", f"train: images/train\nval: {absolute}\ntest: null\nnc: 1\nnames: [x]\n")
    cfg = load_data_config(p)
    assert cfg.root == (tree / "ds").resolve() and cfg.val == [absolute] and cfg.test == []
    with pytest.raises(InputError, match="no 'test' split"):
        cfg.split("test")


def test_txt_list_source(tree):
    lst = tree / "ds" / "val.txt"
    lst.write_text("./images/val/x.jpg\n")
    cfg = load_data_config(_yaml(tree / "ds", "train: images/train\nval: val.txt\nnames: [x]\n"))
    assert cfg.val == [lst.resolve()]


@pytest.mark.parametrize("text, message", [
    ("train: images/train\nnames: [x]\n", "missing key.*val"),
    ("train: images/train\nval: images/val\n", "missing key.*names"),
    ("train: images/train\nval: images/val\nnc: 3\nnames: [a, b]\n", "nc is 3 but names lists 2"),
    ("train: images/train\nval: images/val\nnames: {0: a, 2: b}\n", "keys must be 0..1"),
    ("train: images/train\nval: images/val\nnames: {a: 0}\n", "keys must be integers"),
    ("train: images/train\nval: images/nope\nnames: [a]\n", "val images not found: "),
    ("path: nowhere\ntrain: images/train\nval: images/val\nnames: [a]\n", "not a folder"),
    ("train: [images/train\nval: x\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
    ("train: images/train\ntrain: images/val\nval: images/val\nnames: [a]\n", "duplicate key 'train' \\(line 2\\)"),
    ("l0: &l0 [a, a, a, a, a, a, a, a, a]\n" + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n"
                                                         for i in range(1, 9)) + "names: *l8\n", "alias bomb"),
    ("train: images/train\nval: images/train/x.jpg\nnames: [a]\n", "image folder or a .txt list"),
])
def test_bad_yaml(tree, text, message):
    with pytest.raises(InputError, match=message):
        load_data_config(_yaml(tree / "ds", text))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_data_config(tmp_path / "nope.yaml")


def test_config_is_frozen(ultra_dir):
    cfg = load_data_config(ultra_dir / "shapes-val" / "data.yaml")
    with pytest.raises(AttributeError):
        cfg.nc = 4  # type: ignore[misc]
    assert os.fspath(cfg.yaml_path).endswith("data.yaml")
