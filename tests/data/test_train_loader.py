"""The training loader: batch contract, seeded determinism (also across workers), mosaic switch, DDP shards."""
from __future__ import annotations

import pytest
import torch

from yolocompress.data import AugmentConfig, SampleKey, build_train_loader
from yolocompress.data.images import decode_rgb, letterbox, load_resized
from yolocompress.errors import InputError


@pytest.fixture
def data_yaml(make_dataset):
    images = {f"{i}.{'jpg' if i % 2 else 'png'}": ((48, 64) if i % 3 else (64, 40)) for i in range(10)}
    labels = {str(i): f"{i % 3} 0.5 0.5 0.5 0.4\n{(i + 1) % 3} 0.25 0.3 0.2 0.2\n" for i in range(9)}
    labels["9"] = ""  # one background image
    return make_dataset(images, labels)


def _batches(loader, epoch: int, n: int = 2):
    loader.set_epoch(epoch)
    out = []
    for k, batch in enumerate(loader):
        out.append(batch)
        if k + 1 == n:
            break
    return out


def _same(a, b) -> bool:
    return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2] for x, y in zip(a, b))


def test_batch_contract(data_yaml):
    loader = build_train_loader(data_yaml, imgsz=64, batch=4, seed=0, label_cache=False)
    assert len(loader) == 3 and loader.batch_size == 4
    for imgs, targets, paths, shapes in _batches(loader, 0, 3):
        assert imgs.dtype == torch.uint8 and imgs.shape[1:] == (3, 64, 64)
        assert targets.dtype == torch.float32 and targets.shape[1] == 6
        assert targets[:, 0].max() < imgs.shape[0] and targets[:, 1].max() <= 2
        assert (targets[:, 2:] >= 0).all() and (targets[:, 2:] <= 1).all()
        assert len(paths) == imgs.shape[0] and shapes == [None] * imgs.shape[0]


def test_same_seed_same_batches_other_seed_or_epoch_differs(data_yaml):
    a = build_train_loader(data_yaml, imgsz=64, batch=4, seed=3, label_cache=False)
    b = build_train_loader(data_yaml, imgsz=64, batch=4, seed=3, label_cache=False)
    c = build_train_loader(data_yaml, imgsz=64, batch=4, seed=4, label_cache=False)
    first = _batches(a, 0)
    assert _same(first, _batches(b, 0))
    assert _same(first, _batches(a, 0))  # re-iterating an epoch replays it
    assert not _same(first, _batches(c, 0))
    assert not _same(first, _batches(a, 1))


def test_workers_agree_with_main_process(data_yaml):
    main = build_train_loader(data_yaml, imgsz=64, batch=4, seed=1, workers=0, label_cache=False)
    pool = build_train_loader(data_yaml, imgsz=64, batch=4, seed=1, workers=2, label_cache=False)
    for epoch in (0, 1):
        assert _same(_batches(main, epoch, 3), _batches(pool, epoch, 3))
    pool.mosaic = main.mosaic = False  # reaches persistent workers through the sample keys
    assert _same(_batches(main, 2, 3), _batches(pool, 2, 3))


def test_mosaic_switch_gives_letterboxed_images(data_yaml):
    plain = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0, fliplr=0)
    loader = build_train_loader(data_yaml, imgsz=64, batch=10, seed=0, hyp=plain, label_cache=False)
    assert loader.mosaic
    loader.mosaic = False
    assert not loader.mosaic and not loader.dataset.mosaic
    imgs, targets, paths, _ = _batches(loader, 0, 1)[0]
    for i, path in enumerate(paths):
        expect = letterbox(load_resized(decode_rgb(path)[0], 64, augment=True), (64, 64))[0]
        assert torch.equal(imgs[i], expect)
    # the 0.5 x 0.4 box centred in a 64x48 image letterboxed into 64x64: w 0.5, h 0.3
    boxes = targets[(targets[:, 3] - 0.5).abs() < 1e-3]
    assert len(boxes) > 0 and torch.allclose(boxes[:, 2], torch.full((len(boxes),), 0.5), atol=1e-3)
    # with mosaic on, images are 4-image mosaics: their content differs
    loader.mosaic = True
    assert not _same(_batches(loader, 0, 1), [(imgs, targets, paths)])


def test_hyp_object_is_accepted(data_yaml):
    class Hyp:  # what engine.loss.Hyp looks like to the data package
        hsv_h, hsv_s, hsv_v, degrees, translate, scale, shear = 0.0, 0.0, 0.0, 5.0, 0.1, 0.5, 2.0
        perspective, flipud, fliplr, mosaic, mixup, copy_paste, lr0 = 0.0, 0.5, 0.5, 1.0, 0.5, 0.0, 0.01

    loader = build_train_loader(data_yaml, imgsz=64, batch=4, hyp=Hyp(), label_cache=False)
    assert loader.dataset.hyp == AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, degrees=5, shear=2, flipud=0.5, mixup=0.5)
    imgs, targets, _, _ = _batches(loader, 0, 1)[0]
    assert imgs.shape == (4, 3, 64, 64) and (targets[:, 2:] <= 1).all()


def test_distributed_shards_are_disjoint(data_yaml):
    ranks = [build_train_loader(data_yaml, imgsz=64, batch=4, seed=0, rank=r, world_size=2, label_cache=False)
             for r in (0, 1)]
    for loader in ranks:
        loader.set_epoch(0)
        assert loader.batch_size == 2 and len(loader) == 3
    keys = [[k.index for k in loader.sampler] for loader in ranks]
    assert len(keys[0]) == len(keys[1]) == 5 and not set(keys[0]) & set(keys[1])
    assert all(isinstance(k, SampleKey) for k in ranks[0].sampler)


@pytest.mark.parametrize("kw, message", [({"batch": 3, "world_size": 2}, "not divisible"),
                                         ({"rank": 2, "world_size": 2}, "rank 2 outside"),
                                         ({"workers": -1}, "workers must be"),
                                         ({"seed": -1}, "seed must be")])
def test_bad_arguments(data_yaml, kw, message):
    with pytest.raises(InputError, match=message):
        build_train_loader(data_yaml, imgsz=64, label_cache=False, **{"batch": 4, **kw})


def test_augment_config_from_hyp_forms(caplog):
    cfg = AugmentConfig(degrees=3)

    class Nested:  # engine.loss.Hyp holds an AugmentConfig
        augment = cfg

    assert AugmentConfig.from_hyp(cfg) is cfg and AugmentConfig.from_hyp(Nested()) is cfg
    flat = AugmentConfig.from_hyp({"lr0": 0.01, "hsv_h": 0.02, "mosaic": 0.5, "copy_paste": 0.1})
    assert flat == AugmentConfig(hsv_h=0.02, mosaic=0.5) and "copy_paste" in caplog.text
    with pytest.raises(InputError, match="no augmentation fields"):
        AugmentConfig.from_hyp(object())


@pytest.mark.parametrize("kw, message", [({"scale": 1.0}, "scale must be < 1"), ({"fliplr": 1.5}, "fliplr"),
                                         ({"degrees": -1}, "degrees"), ({"mosaic": "yes"}, "mosaic")])
def test_bad_augment_config(kw, message):
    with pytest.raises(InputError, match=message):
        AugmentConfig(**kw)


def test_no_labels_cannot_train(make_dataset):
    data_yaml = make_dataset({"a.jpg": (32, 32)}, {"a": ""})
    with pytest.raises(InputError, match="train split has no labels"):
        build_train_loader(data_yaml, imgsz=64, batch=1, label_cache=False)
