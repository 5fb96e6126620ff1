"""The per-layer latency table (``profile.latency_table``): built from a deterministic stub timer, cached per
CPU model, image size and architecture, and a model's predicted latency is the sum of its layers' parts."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from yolocompress.errors import InputError
from yolocompress.models import build_model
from yolocompress.profile.latency_table import (LayerShape, OrtLayerTimer, channel_block, conv_shapes,
                                                effective_width, latency_table, width_grid)


class StubTimer:
    """Milliseconds from the layer's multiply-accumulates plus a fixed cost per call; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, s: LayerShape) -> float:
        self.calls += 1
        return 0.01 + s.c_in * s.c_out * s.kernel[0] * s.kernel[1] * s.height * s.width / (
            s.stride[0] * s.stride[1] * s.groups * 1e6)


def config(width: float) -> dict:
    cfg = build_model("yolov5n", nc=3).yaml
    return {**cfg, "width_multiple": width}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOCOMPRESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return build_model(config(0.25), nc=3), build_model(config(0.125), nc=3)  # the second: every width halved


def test_width_grid_rounds_up_and_keeps_the_full_width():
    assert width_grid(64, (0.25, 0.5, 0.75, 1.0), 8) == (16, 32, 48, 64)
    assert width_grid(33, (0.25, 0.5), 8) == (16, 24, 33)
    assert width_grid(3, (0.25, 1.0), 8) == (3,)


def test_conv_shapes_follow_the_strides(models):
    shapes = conv_shapes(models[0], 64)
    assert shapes["model.0.conv"] == LayerShape(3, 16, (6, 6), (2, 2), (2, 2), 1, 64, 64)
    assert shapes["model.1.conv"].height == 32 and shapes["model.1.conv"].stride == (2, 2)
    assert {s.height for name, s in shapes.items() if name.startswith("model.24.")} == {8, 4, 2}


def test_prediction_is_the_sum_of_the_parts_and_exact_on_grid_widths(models):
    full, half = models
    stub = StubTimer()
    table = latency_table(full, 64, grid=(0.5, 1.0), round_to=4, timer=stub, cpu="stub", block=1)
    for model in (full, half):
        parts = table.parts(model)
        expected = {name: stub(s) for name, s in conv_shapes(model, 64).items()}  # every width is on the grid
        assert parts.keys() == expected.keys()
        assert all(parts[k] == pytest.approx(expected[k], rel=1e-12) for k in parts)
        assert table.predict(model) == pytest.approx(sum(parts.values()), rel=1e-12)
    assert 0.2 < table.ratio(half, full) < 0.5


def test_widths_between_grid_points_interpolate(models):
    full, _ = models
    table = latency_table(full, 64, grid=(0.5, 1.0), round_to=8, timer=StubTimer(), cpu="stub", block=1)
    conv = full.model[1].conv  # 16 -> 32 channels
    narrow = build_model(config(0.25), nc=3)
    narrow.model[1].conv = nn.Conv2d(16, 24, 3, 2, 1, bias=False)  # halfway between 16 and 32 outputs
    narrow.model[1].bn = nn.BatchNorm2d(24)
    for c3_input in (narrow.model[2].cv1, narrow.model[2].cv2):
        c3_input.conv = nn.Conv2d(24, c3_input.conv.out_channels, 1, bias=False)
    lo, hi = (table.parts(full)["model.1.conv"] * f for f in (0.5, 1.0))  # stub ms are ~linear in c_out
    got = table.parts(narrow)["model.1.conv"]
    assert conv.out_channels == 32 and lo < got < hi


def test_the_cache_is_read_back_for_the_same_key_and_rebuilt_for_another(models, cache):
    full, _ = models
    first = StubTimer()
    table = latency_table(full, 64, timer=first, cpu="CPU A")
    assert first.calls == table.measured > 0 and table.path.is_file() and table.path.parent.parent == cache
    again = StubTimer()
    reread = latency_table(full, 64, timer=again, cpu="CPU A")
    assert again.calls == 0 and reread.measured == 0 and reread.predict(full) == table.predict(full)
    for other in ({"cpu": "CPU B", "imgsz": 64}, {"cpu": "CPU A", "imgsz": 96}):
        stub = StubTimer()
        rebuilt = latency_table(full, other["imgsz"], timer=stub, cpu=other["cpu"])
        assert stub.calls > 0 and rebuilt.path != table.path
        assert json.loads(rebuilt.path.read_text())["key"]["cpu"] == other["cpu"]
    assert latency_table(full, 64, timer=StubTimer(), cpu="CPU A").measured == 0  # the others left it alone


def test_a_corrupt_or_foreign_cache_file_is_measured_again(models):
    full, _ = models
    table = latency_table(full, 64, timer=StubTimer(), cpu="CPU A")
    table.path.write_text("{not json")
    stub = StubTimer()
    assert latency_table(full, 64, timer=stub, cpu="CPU A").measured == stub.calls > 0
    raw = json.loads(table.path.read_text())
    raw["key"]["imgsz"] = 128  # a file whose key differs from its name
    table.path.write_text(json.dumps(raw))
    assert latency_table(full, 64, timer=StubTimer(), cpu="CPU A").measured > 0


def test_another_architecture_is_refused(models):
    full, _ = models
    table = latency_table(full, 64, timer=StubTimer(), cpu="stub", cache=False)
    assert table.path is None
    with pytest.raises(InputError, match="another model"):
        table.predict(build_model("yolov5m", nc=3))  # more bottlenecks: layers the table lacks
    with pytest.raises(InputError, match="wider"):
        table.predict(build_model("yolov5s", nc=3))  # the same layers, twice as wide: not a sub-net
    with pytest.raises(InputError, match="fractions"):
        latency_table(full, 64, grid=(0.0, 1.0), timer=StubTimer())


def test_the_default_timer_measures_a_layer_with_onnx_runtime():
    ms = OrtLayerTimer(threads=1, warmup=1, runs=3)(LayerShape(8, 16, (3, 3), (1, 1), (1, 1), 1, 16, 16))
    assert 0 < ms < 1000


def test_layer_ms_prices_a_layer_by_its_widths_without_building_the_model(models):
    full, half = models
    table = latency_table(full, 64, grid=(0.5, 1.0), round_to=4, timer=StubTimer(), cpu="stub", cache=False,
                          block=1)
    parts = table.parts(half)
    for name, s in conv_shapes(half, 64).items():
        assert table.layer_ms(name, s.c_in, s.c_out) == parts[name]
    with pytest.raises(InputError, match="another model"):
        table.layer_ms("model.99.conv", 8, 8)
    with pytest.raises(InputError, match="wider"):
        table.layer_ms("model.1.conv", 16, 4096)


def test_widths_are_priced_at_the_kernels_channel_block():
    assert channel_block(["avx2", "fma", "avx512f"]) == 16 and channel_block(["avx2", "fma"]) == 8
    assert [effective_width(c, 16, 64) for c in (1, 16, 17, 24, 40, 48, 60)] == [16, 16, 32, 32, 48, 48, 64]
    assert effective_width(40, 16, 36) == 36  # never past the full width
    net = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1), nn.SiLU(), nn.Conv2d(64, 64, 3, 1, 1))
    table = latency_table(net, 32, grid=(0.25, 0.5, 0.75, 1.0), round_to=8, timer=StubTimer(), cpu="stub",
                          cache=False, block=16)
    assert table.key["block"] == 16
    # the grid's widths are multiples of the block (lcm with round_to), and 24 channels cost what 32 do
    assert {s.name: s.out_grid for s in table.sites}["2"] == (16, 32, 48, 64)
    assert table.layer_ms("2", 64, 24) == table.layer_ms("2", 64, 32) > table.layer_ms("2", 64, 16)
    assert table.layer_ms("2", 40, 64) == table.layer_ms("2", 48, 64)
    plain = latency_table(net, 32, grid=(0.25, 0.5, 0.75, 1.0), round_to=8, timer=StubTimer(), cpu="stub",
                          cache=False, block=1)
    assert plain.layer_ms("2", 64, 24) < plain.layer_ms("2", 64, 32)


def test_the_calibration_is_the_least_squares_fit_over_the_subnets_and_a_one_subnet_one_is_redone(models):
    full, _ = models
    table = latency_table(full, 64, timer=StubTimer(), cpu="CPU A")
    # one sub-net: f = (m - p) / (1 - p), exact
    assert table.calibrated(0.6, 0.55).fixed_fraction == pytest.approx((0.55 - 0.6) / 0.4, rel=1e-12)
    # several that no single f fits: the least-squares one, and each sub-net's error under it
    p, m = [0.6, 0.65, 0.5], [0.55, 0.64, 0.51]
    cal = table.calibrated(p, m, subnets=["a", "b", "c"]).calibration
    f = sum((mi - pi) * (1 - pi) for pi, mi in zip(p, m)) / sum((1 - pi) ** 2 for pi in p)
    assert cal["fixed_fraction"] == pytest.approx(f, rel=1e-12) and cal["subnets"] == ["a", "b", "c"]
    assert cal["errors"] == pytest.approx([(f + (1 - f) * pi) / mi - 1 for pi, mi in zip(p, m)], rel=1e-9)
    assert table.ratio(full, full) == pytest.approx(1.0)
    reread = latency_table(full, 64, timer=StubTimer(), cpu="CPU A")
    assert reread.measured == 0 and reread.calibration == cal   # cached with the table
    with pytest.raises(ValueError, match="below the original"):
        table.calibrated([0.5, 1.2], [0.5, 0.9])
    # a calibration cached before several sub-nets were measured (one number each) is measured again
    raw = json.loads(table.path.read_text())
    raw["calibration"] = {"fixed_fraction": -0.1, "predicted": 0.6, "measured": 0.55, "subnet": "uniform 0.5"}
    table.path.write_text(json.dumps(raw))
    old = latency_table(full, 64, timer=StubTimer(), cpu="CPU A")
    assert old.measured == 0 and old.calibration is None
