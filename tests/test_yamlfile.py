"""Every user YAML file (data.yaml, recipe, hyp file, model config) goes through the bounded loader: an alias
bomb, a duplicate key, a huge file, a non-mapping document or a syntax error is one ``InputError`` line
(exit 2 from the CLI), raised in well under a second."""
from __future__ import annotations

import time

import pytest
import yaml

from yolocompress.cli import main
from yolocompress.data.config import load_data_config
from yolocompress.engine.loss import Hyp
from yolocompress.errors import InputError
from yolocompress.models import DetectionModel, load_config
from yolocompress.recipe.schema import parse_recipe
from yolocompress.yamlfile import MAX_BYTES

# 9 levels of 9 aliases each: 9**9 (387 million) leaves when expanded, a few hundred bytes as text
BOMB = ("l0: &l0 [a, a, a, a, a, a, a, a, a]\n"
        + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)) + "names: *l8\n")

BAD = {
    "alias bomb": (BOMB, "YAML aliases"),
    "duplicate key": ("lr0: 0.01\nmomentum: 0.9\nlr0: 0.02\n", r"duplicate key 'lr0' \(line 3\)"),
    "huge file": ("a: 1\n" + "#" * (MAX_BYTES + 10) + "\n", "larger than 2 MB"),
    "list document": ("- a\n- b\n", "mapping"),
    "scalar document": ("just a string\n", "mapping"),
    "syntax error": ("a: [1, 2\nb: 3\n", "not valid YAML at line"),
    "not UTF-8": (b"a: \xff\xfe\n", "not a UTF-8 text file"),
}

LOADERS = {
    "data.yaml": load_data_config,
    "recipe": parse_recipe,
    "hyp file": Hyp.from_yaml,
    "model config": load_config,
}


@pytest.mark.parametrize("kind", sorted(LOADERS))
@pytest.mark.parametrize("case", sorted(BAD))
def test_every_yaml_loader_refuses_bad_documents_fast(kind, case, tmp_path):
    text, message = BAD[case]
    path = tmp_path / "file.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    start = time.perf_counter()
    with pytest.raises(InputError, match=message) as info:
        LOADERS[kind](path)
    assert time.perf_counter() - start < 1.0
    assert "\n" not in str(info.value)


def test_model_config_with_few_aliases_still_loads(tmp_path):
    """Aliases themselves are fine: a config that reuses its anchors once builds."""
    config = load_config("yolov5n")
    path = tmp_path / "aliased.yaml"
    raw = yaml.safe_dump({k: v for k, v in config.items() if k != "anchors"}, sort_keys=False)
    path.write_text("anchors: &a\n  - [10, 13, 16, 30, 33, 23]\n  - [30, 61, 62, 45, 59, 119]\n"
                    "  - [116, 90, 156, 198, 373, 326]\nanchors_copy: *a\n" + raw)
    assert load_config(path)["anchors_copy"] == load_config(path)["anchors"]
    assert DetectionModel(path, nc=2).nc == 2


def test_cli_refuses_a_bomb_as_hyp_file_or_model_config(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    for split in ("train", "val"):
        (tmp_path / "ds" / "images" / split).mkdir(parents=True)
    data = tmp_path / "ds" / "data.yaml"
    data.write_text("train: images/train\nval: images/val\nnames: [a]\n")
    for args in (["yolov5n", "--hyp", str(bomb)], [str(bomb)]):
        start = time.perf_counter()
        code = main(["train", *args, "--data", str(data), "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert code == 2, args
        assert time.perf_counter() - start < 5.0
        assert err.count("\n") == 1 and "Traceback" not in err and "YAML aliases" in err, err
    assert not (tmp_path / "run").exists()
