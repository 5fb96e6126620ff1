"""Checkpoint loading: Ultralytics parity, safety against hostile pickles, our format round trip."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from yolocompress.errors import InputError, UnsafeCheckpointError
from yolocompress.io.checkpoint import load_model, load_model_with_info, save_model
from yolocompress.models import build_model

FIXTURE_MODELS = ["yolov5n-shapes-e12", "yolov5s-random-coco80"]


def _relative_max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the error measure the issue's 1e-3 bound uses."""
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("stem", FIXTURE_MODELS)
def test_ultralytics_fixture_parity(ultra_dir, reference, stem):
    model, info = load_model_with_info(ultra_dir / f"{stem}.pt")
    assert info.source == "ultralytics"
    ref = reference[f"{stem}.pt"]
    assert sum(p.numel() for p in model.parameters()) == ref["params"]
    x = torch.from_numpy(np.load(ultra_dir / f"{stem}.input.npy"))
    expected = torch.from_numpy(np.load(ultra_dir / f"{stem}.output.npy"))
    with torch.no_grad():
        out = model(x)[0]
    assert list(out.shape) == ref["reference_io"]["output_shape"]
    assert _relative_max_error(out, expected) < 1e-3


def test_ultralytics_names_and_eps(ultra_dir):
    model = load_model(ultra_dir / "yolov5n-shapes-e12.pt")
    assert model.names == ["circle", "rectangle", "triangle"]
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}


class _Payload:
    """Unpickling this calls ``open(target, 'w')``: creates a file if the loader runs pickled code."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _write_hostile(path, target, disguise: bool) -> None:
    obj = {"epoch": 3, "model": _Payload(str(target))} if disguise else _Payload(str(target))
    torch.save(obj, path)


@pytest.mark.parametrize("disguise", [False, True])
def test_hostile_pickle_is_refused_and_never_runs(tmp_path, disguise):
    target = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    _write_hostile(evil, target, disguise)
    # the payload really is live: an unrestricted unpickle of the same kind of file creates its target
    control_target, control = tmp_path / "control.txt", tmp_path / "control.pt"
    _write_hostile(control, control_target, disguise)
    torch.load(control, weights_only=False)
    assert control_target.exists()
    with pytest.raises(UnsafeCheckpointError, match="outside the checkpoint allowlist"):
        load_model(evil)
    assert not target.exists()


def test_hostile_os_system_payload(tmp_path):
    target = tmp_path / "created-by-system"

    class SystemPayload:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {target}",))

    evil = tmp_path / "evil2.pt"
    torch.save({"model": SystemPayload()}, evil)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_model(evil)
    assert "system" in str(err.value)
    assert not target.exists()


def test_plain_pickle_and_garbage_are_input_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError):
        load_model(garbage)
    truncated = tmp_path / "truncated.pt"
    data = (tmp_path / "ok.pt")
    save_model(build_model("yolov5n", nc=1), data)
    truncated.write_bytes(data.read_bytes()[:5000])
    with pytest.raises(InputError):
        load_model(truncated)
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.pt")
    pickled = tmp_path / "pickled.pkl"
    pickled.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(InputError):
        load_model(pickled)


def test_our_format_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = build_model("yolov5n", nc=3).eval()
    model.names = ["a", "b", "c"]
    path = save_model(model, tmp_path / "m.pt", imgsz=256, history=[{"step": "test"}], metrics={"map50": 0.5})
    raw = torch.load(path, weights_only=True)  # plain data: no allowlist needed
    assert raw["format"] == "yolocompress" and raw["imgsz"] == 256
    loaded, info = load_model_with_info(path)
    assert loaded.names == ["a", "b", "c"]
    assert info.imgsz == 256 and info.history == [{"step": "test"}] and info.metrics == {"map50": 0.5}
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])
    assert not list(tmp_path.glob("*.tmp"))


def test_fixture_converts_to_our_format(ultra_dir, tmp_path):
    model = load_model(ultra_dir / "yolov5n-shapes-e12.pt")
    path = save_model(model, tmp_path / "ours.pt")
    again = load_model(path)
    x = torch.from_numpy(np.load(ultra_dir / "yolov5n-shapes-e12.input.npy"))
    with torch.no_grad():
        assert torch.equal(model(x)[0], again(x)[0])


def test_bare_state_dict_needs_cfg(tmp_path):
    torch.manual_seed(0)
    model = build_model("yolov5n", nc=5).eval()
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(InputError, match="--cfg"):
        load_model(path)
    loaded = load_model(path, cfg="yolov5n")
    assert loaded.nc == 5
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])


def test_state_dict_for_wrong_config_is_refused(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(build_model("yolov5n", nc=2).state_dict(), path)
    with pytest.raises(InputError, match="do not fit"):
        load_model(path, cfg="yolov5s")


def test_half_save_is_smaller_and_loads_as_float(tmp_path):
    model = build_model("yolov5n", nc=2)
    full = save_model(model, tmp_path / "f.pt")
    half = save_model(model, tmp_path / "h.pt", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    model = build_model("yolov5n", nc=1)
    target = tmp_path / "out.pt"

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError):
        save_model(model, target)
    assert not target.exists() and not list(tmp_path.iterdir())
