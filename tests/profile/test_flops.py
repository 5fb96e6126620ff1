import pytest
import torch
from torch import nn

from yolocompress.models import build_model
from yolocompress.profile import flops_by_layer, gflops

# Conv 3->8, 3x3, stride 2 at 64 px: 8*32*32 outputs x 27 MACs x 2 = 442368 FLOPs;
# 1x1 conv 8->4 on 32x32: 4*32*32 x 8 x 2 = 65536 (bias, BN, SiLU are not counted).
TOY_LAYER_FLOPS = [442368, 0, 0, 65536]


def _toy() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.SiLU(),
                         nn.Conv2d(8, 4, 1))


class _ReadsValues(nn.Module):
    """Reads a tensor value in forward, which a data-less meta tensor cannot give."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)

    def forward(self, x):
        y = self.conv(x)
        return y * float(y.abs().max() >= 0)


def test_toy_net_by_hand():
    assert gflops(_toy(), 64) * 1e9 == pytest.approx(sum(TOY_LAYER_FLOPS))
    assert [f * 1e9 for f in flops_by_layer(_toy(), 64)] == pytest.approx(TOY_LAYER_FLOPS)


def test_rectangular_size():
    assert gflops(_toy(), (64, 128)) == pytest.approx(2 * gflops(_toy(), 64))


def test_model_that_cannot_run_on_meta_is_counted_for_real():
    assert gflops(_ReadsValues(), 16) * 1e9 == pytest.approx(2 * 4 * 3 * 16 * 16)


def test_model_is_left_untouched():
    model = build_model("yolov5n").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gflops(model, 64)
    flops_by_layer(model, 64)
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    model.eval()(torch.zeros(1, 3, 64, 64))  # still a working CPU model


def test_by_layer_sums_to_total_and_scales_with_pixels():
    model = build_model("yolov5n")
    layers = flops_by_layer(model, 128)
    assert len(layers) == len(model.model)
    assert sum(layers) == pytest.approx(gflops(model, 128))
    assert layers[-1] > 0  # Detect's 1x1 convs
    assert gflops(model, 256) == pytest.approx(4 * gflops(model, 128))


@pytest.mark.parametrize("name, published", [("yolov5n", 4.5), ("yolov5s", 16.5), ("yolov5m", 49.0)])
def test_matches_ultralytics_table_at_640(name, published):
    assert gflops(build_model(name), 640) == pytest.approx(published, rel=0.03)


def test_rejects_model_without_layer_list():
    with pytest.raises(TypeError):
        flops_by_layer(_ReadsValues(), 16)


def test_image_size_must_fit_the_stride():
    from yolocompress.errors import InputError

    with pytest.raises(InputError, match="stride"):
        gflops(build_model("yolov5n"), (64, 80))
