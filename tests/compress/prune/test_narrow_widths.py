"""Widths of 8 or multiples of 16 under a FLOPs budget (issue 18, items 1 and 5): ``--ratio``'s budget is the
one in widths of 8 on every CPU, and every candidate keeps only allowed widths within it."""
from __future__ import annotations

import pytest

from yolocompress.compress.prune import PruneConfig
from yolocompress.compress.prune.search import plan_search

from .conftest import tiny_model

FLAT = dict(imgsz=64, candidates=6, guided=0, finetune_epochs=0, eval_baseline=False, seed=0)


@pytest.fixture(scope="module")
def yolov5n():
    return tiny_model("yolov5n", nc=6, width=1.0)   # yolov5n's own widths: 16 to 256 channels


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.6])
def test_a_ratio_budget_with_narrow_widths_is_the_budget_in_8s(yolov5n, ratio):
    narrow = plan_search(yolov5n, PruneConfig.from_flat(ratio=ratio, round_to=16, narrow=True, **FLAT))
    eights = plan_search(yolov5n, PruneConfig.from_flat(ratio=ratio, round_to=8, narrow=False, **FLAT))
    assert narrow.budget == eights.budget
    assert narrow.strategies[0].kind == "uniform"
    for s in narrow.strategies:
        assert s.flops <= narrow.budget * (1 + 1e-9)
        for g, k in s.counts.items():
            assert k == 8 or k % 16 == 0 or k == narrow.graph.groups[g].channels, (g, k)
    assert any(k == 8 for s in narrow.strategies for g, k in s.counts.items()
               if narrow.graph.groups[g].channels == 16)   # a 16-channel group can go to 8


def test_widths_in_16s_alone_would_change_the_budget(yolov5n):
    """What the narrow budget guards against: the uniform strategy in 16s at ratio 0.25 has other FLOPs."""
    blocks = plan_search(yolov5n, PruneConfig.from_flat(ratio=0.25, round_to=16, narrow=False, **FLAT))
    eights = plan_search(yolov5n, PruneConfig.from_flat(ratio=0.25, round_to=8, narrow=False, **FLAT))
    assert blocks.budget != eights.budget
