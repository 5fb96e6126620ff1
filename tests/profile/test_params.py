import torch
from torch import nn

from yolocompress.models import build_model
from yolocompress.profile import ParamCount, count_params


def _toy() -> nn.Sequential:
    # 3*8*3*3 = 216 conv weights, BN 8 + 8, 1x1 conv 8*4 + 4 bias = 36: 268 in all
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.SiLU(),
                         nn.Conv2d(8, 4, 1))


def test_counts_toy_net_by_hand():
    model = _toy()
    with torch.no_grad():
        model[1].bias.zero_()  # 8 zeros
        model[0].weight[0].zero_()  # 27 zeros
    model[3].requires_grad_(False)  # 36 frozen
    assert count_params(model) == ParamCount(total=268, trainable=232, nonzero=268 - 8 - 27)


def test_shared_parameters_count_once():
    conv = nn.Conv2d(3, 3, 1)
    assert count_params(nn.Sequential(conv, conv)).total == 12


def test_yolov5s_matches_ultralytics(reference):
    count = count_params(build_model("yolov5s"))
    assert count.total == reference["yolov5s-random-coco80.pt"]["params"]
    assert count.to_dict()["trainable"] == count.total
