"""Optimizer groups, schedules, EMA, feature capture, and short real training runs of a tiny model."""
from __future__ import annotations

import copy
import csv
import math

import pytest
import torch
from torch import nn

from yolocompress.data.augment import AugmentConfig
from yolocompress.engine.callbacks import Callback, FeatureCapture
from yolocompress.engine.ema import ModelEMA
from yolocompress.engine.loss import DetectionLoss, Hyp
from yolocompress.engine.optim import Schedule, accumulate_steps, build_optimizer, lr_factor, parameter_groups
from yolocompress.engine.rng import seed_everything
from yolocompress.engine.trainer import TrainConfig, Trainer
from yolocompress.errors import InputError
from yolocompress.models import build_model, load_config


def tiny_model(nc: int) -> nn.Module:
    """YOLOv5n at 1/16 width (~0.1 M parameters): the real layer graph, fast on a CPU at 64 px."""
    cfg = load_config("yolov5n")
    cfg["width_multiple"] = 0.0625
    return build_model(cfg, nc=nc)


def train_config(tmp_path, **overrides) -> TrainConfig:
    settings = dict(epochs=2, imgsz=64, batch=4, workers=0, seed=0, out_dir=str(tmp_path / "run"),
                    close_mosaic=0)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_thread):
    """Every test here uses the shared ``one_thread`` fixture."""


@pytest.fixture(scope="module")
def data_cfg(make_synthetic_data):
    """8 training and 8 validation images of 64 px from the synthetic generator."""
    return make_synthetic_data("synthetic", n_train=8, n_val=8)


# ---------------------------------------------------------------- optimizer and schedule
def test_parameter_groups_and_weight_decay():
    model = tiny_model(nc=3)
    biases, weights, norm_weights = parameter_groups(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(norm_weights) == n_bn
    assert all(p.ndim == 1 for p in biases) and all(p.ndim == 4 for p in weights)
    assert len(biases) + len(weights) + len(norm_weights) == len(list(model.parameters()))
    hyp = Hyp()
    opt = build_optimizer(model, hyp, batch=16)  # accumulate 4: 64 images per step, decay unchanged
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, pytest.approx(5e-4), 0.0]
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.937
    assert accumulate_steps(24) == 3
    opt = build_optimizer(model, hyp, batch=24)  # 3 x 24 = 72 images per step
    assert opt.param_groups[1]["weight_decay"] == pytest.approx(5e-4 * 72 / 64)


def test_lr_factor_linear_and_cosine():
    for cosine in (False, True):
        f = lr_factor(10, 0.01, cosine)
        assert f(0) == pytest.approx(1.0) and f(10) == pytest.approx(0.01)
        assert all(f(e) > f(e + 1) for e in range(10))
    assert lr_factor(10, 0.01)(5) == pytest.approx(0.505)
    assert lr_factor(10, 0.01, True)(5) == pytest.approx(0.505)
    assert lr_factor(10, 0.01, True)(2) > lr_factor(10, 0.01)(2)  # cosine stays high longer


def test_warmup_schedule():
    model = tiny_model(nc=3)
    hyp = Hyp()
    opt = build_optimizer(model, hyp, batch=8)
    sched = Schedule(hyp, epochs=10, iters_per_epoch=20, batch=8)
    assert sched.warmup_iters == 100  # max(3 epochs x 20, 100)
    sched.warmup(opt, 0, 0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.0, 0.0]
    assert all(g["momentum"] == 0.8 for g in opt.param_groups)
    assert sched.accumulate_at(0) == 1
    sched.warmup(opt, 50, 2)
    target = 0.01 * lr_factor(10, 0.01)(2)
    assert opt.param_groups[0]["lr"] == pytest.approx((0.1 + target) / 2)
    assert opt.param_groups[1]["lr"] == pytest.approx(target / 2)
    assert opt.param_groups[1]["momentum"] == pytest.approx((0.8 + 0.937) / 2)
    assert sched.accumulate_at(50) == round((1 + 8) / 2)
    sched.warmup(opt, 100, 4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01 * lr_factor(10, 0.01)(4)] * 3)
    assert sched.accumulate_at(100) == sched.accumulate_at(5000) == 8
    sched.start_epoch(opt, 9)  # after warm-up: the plain schedule
    assert opt.param_groups[2]["lr"] == pytest.approx(0.01 * lr_factor(10, 0.01)(9))
    assert Schedule(Hyp(warmup_epochs=0), 10, 20, 8).warmup_iters == 0  # 0 disables warm-up


# ---------------------------------------------------------------- EMA
def test_ema_ramp_and_buffers():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    ema = ModelEMA(model, decay=0.9, tau=1)
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(2.0)
        model[1].num_batches_tracked.fill_(7)
    before = ema.ema[0].weight.clone()
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1))
    assert ema.current_decay() == pytest.approx(d)
    torch.testing.assert_close(ema.ema[0].weight, d * before + (1 - d) * model[0].weight)
    torch.testing.assert_close(ema.ema[1].running_mean, torch.full((2,), (1 - d) * 2.0))
    assert int(ema.ema[1].num_batches_tracked) == 7
    assert not any(p.requires_grad for p in ema.ema.parameters())
    state = ema.state_dict()
    other = ModelEMA(model)
    other.load_state_dict(state)
    assert other.updates == 1 and torch.equal(other.ema[0].weight, ema.ema[0].weight)


def test_feature_capture():
    model = tiny_model(nc=3).train()
    with FeatureCapture(model, [4, 17]) as capture:
        model(torch.zeros(1, 3, 64, 64))
        assert sorted(capture.features) == [4, 17]
        assert capture.features[17].shape[-1] == 8  # P3, stride 8
    model(torch.zeros(1, 3, 64, 64))
    assert capture.features == {}  # hooks removed on exit
    with pytest.raises(IndexError):
        FeatureCapture(model, [99])


# ---------------------------------------------------------------- training runs
class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_start(self, trainer):
        self.events.append("train_start")

    def on_epoch_start(self, trainer, epoch):
        self.events.append(f"epoch_start{epoch}")

    def on_batch_end(self, trainer, step):
        self.events.append(f"batch{step}")

    def on_after_optimizer_step(self, trainer):
        self.events.append("opt")

    def on_epoch_end(self, trainer, metrics):
        self.events.append(f"epoch_end{metrics['epoch']}")

    def on_train_end(self, trainer):
        self.events.append("train_end")


class FeatureNorm:
    """An extra loss on a captured feature map (what distillation does), tiny weight."""

    feature_layers = (17,)

    def __init__(self):
        self.shapes = []

    def __call__(self, batch, student_outputs, features):
        self.shapes.append(tuple(features[17].shape))
        assert len(student_outputs) == 3 and batch.imgs.dtype == torch.float32
        value = features[17].pow(2).mean() * 1e-3
        return value, {"feat": value.item()}


def test_short_run_lowers_loss(data_cfg, tmp_path):
    from yolocompress.data import build_eval_loader

    seed_everything(0)
    model = tiny_model(nc=data_cfg.nc)
    # no augmentation, no warm-up and a step after every batch: 100 steps fitting 8 fixed images
    hyp = Hyp(warmup_epochs=0, lr0=0.05, augment=AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0,
                                                             fliplr=0, mosaic=0))
    loss_fn = DetectionLoss(model, hyp, imgsz=64)

    def train_set_loss(net: nn.Module) -> torch.Tensor:
        net = copy.deepcopy(net).train()  # train-mode outputs; the copy keeps BN statistics untouched
        total = torch.zeros(3)
        with torch.no_grad():
            for imgs, targets, _, _ in build_eval_loader(data_cfg, "train", imgsz=64, batch=8, stride=32,
                                                         rect=False):
                total += loss_fn(net(imgs.float() / 255), targets)[1]
        return total

    before = train_set_loss(model)
    config = train_config(tmp_path, epochs=50, batch=4, nominal_batch=4, val=False)
    result = Trainer(model, data_cfg, config, hyp).train()
    after = train_set_loss(result.model)
    # (objectness loss rises at first: its targets are the IoUs, which grow as the boxes improve)
    assert after.sum() < 0.92 * before.sum()
    assert after[0] < 0.85 * before[0] and after[2] < 0.95 * before[2]
    assert result.epochs_completed == 50 and len(result.history) == 50


def test_run_outputs_callbacks_and_extra_loss(data_cfg, tmp_path):
    from yolocompress.io.checkpoint import load_model

    seed_everything(0)
    model = tiny_model(nc=data_cfg.nc)
    recorder, extra = Recorder(), FeatureNorm()
    wrapped = []

    def wrap(m):
        wrapped.append(m)
        m.register_parameter("probe", nn.Parameter(torch.zeros(1)))  # what a QAT wrapper might add
        return m

    trainer = Trainer(model, data_cfg, train_config(tmp_path, epochs=2, batch=4), Hyp(), callbacks=[recorder],
                      extra_losses=[extra], wrap_model=wrap)
    result = trainer.train()
    assert wrapped == [model]
    assert any(p is model.probe for g in trainer.optimizer.param_groups for p in g["params"])
    nb = len(trainer.train_loader)
    ev = recorder.events
    assert ev[0] == "train_start" and ev[1] == "epoch_start0" and ev[-1] == "train_end"
    assert ev.count("epoch_end0") == ev.count("epoch_end1") == 1 and ev.count("opt") >= 1
    assert [e for e in ev if e.startswith("batch")] == [f"batch{i}" for i in range(2 * nb)]
    assert ev.index("opt") < ev.index("batch0")  # first batch: step (accumulate 1 in early warm-up), then hook
    assert extra.shapes and all(s[-2:] == (8, 8) for s in extra.shapes)

    rows = list(csv.DictReader((tmp_path / "run" / "results.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert {"train/box_loss", "train/obj_loss", "train/cls_loss", "train/feat", "metrics/mAP_0.5",
            "metrics/mAP_0.5:0.95", "metrics/precision", "metrics/recall", "x/lr0", "time_s"} <= set(rows[0])
    last = torch.load(result.last_path, map_location="cpu", weights_only=True)
    assert last["epoch"] == 1 and last["format"] == "yolocompress-train" and last["wrapped"]
    assert {"model", "ema", "optimizer", "scaler", "rng", "train_config", "hyp", "model_config"} <= set(last)
    best = torch.load(result.best_path, map_location="cpu", weights_only=True)
    assert "state_dict" in best and result.best_epoch in (0, 1)
    assert isinstance(result.model, nn.Module) and not result.model.training
    # an unwrapped run's checkpoints load as models
    seed_everything(0)
    plain = Trainer(tiny_model(nc=data_cfg.nc), data_cfg, train_config(tmp_path / "plain", epochs=1, batch=4)).train()
    assert load_model(plain.best_path).nc == data_cfg.nc
    ema_model = load_model(plain.last_path)  # the EMA inside last.pt
    torch.testing.assert_close(ema_model.state_dict(), plain.model.state_dict())


def test_early_stop_with_patience(data_cfg, tmp_path, monkeypatch):
    seed_everything(0)
    fitness = iter([0.5, 0.4, 0.3, 0.2, 0.1])
    monkeypatch.setattr(Trainer, "_validate", lambda self: {"fitness": next(fitness)})
    result = Trainer(tiny_model(nc=data_cfg.nc), data_cfg, train_config(tmp_path, epochs=5, batch=8, patience=2),
                     Hyp()).train()
    assert result.stopped_early and result.epochs_completed == 3 and result.best_epoch == 0
    assert result.best_fitness == 0.5


def test_close_mosaic_switch(data_cfg, tmp_path):
    calls = []

    class Spy(Callback):
        def on_epoch_start(self, trainer, epoch):
            calls.append((epoch, trainer.train_loader.mosaic))

    seed_everything(0)
    Trainer(tiny_model(nc=data_cfg.nc), data_cfg, train_config(tmp_path, epochs=3, batch=8, close_mosaic=1, val=False),
            Hyp(), callbacks=[Spy()]).train()
    assert calls == [(0, True), (1, True), (2, False)]


def test_config_validation(data_cfg, tmp_path):
    with pytest.raises(InputError):
        TrainConfig(epochs=0)
    with pytest.raises(InputError, match="classes"):
        Trainer(tiny_model(nc=data_cfg.nc + 1), data_cfg, train_config(tmp_path, epochs=1)).train()
    with pytest.raises(InputError, match="stride"):
        Trainer(tiny_model(nc=data_cfg.nc), data_cfg, train_config(tmp_path, epochs=1, imgsz=48)).train()
    with pytest.raises(InputError, match="nothing to train"):
        Trainer(tiny_model(nc=data_cfg.nc), data_cfg, train_config(tmp_path, epochs=1), Hyp(box=0, obj=0, cls=0))


def test_the_data_may_be_given_as_its_yaml_path(data_cfg, tmp_path):
    if data_cfg.yaml_path is None:
        pytest.skip("this data config was not loaded from a file")
    trainer = Trainer(tiny_model(nc=data_cfg.nc), str(data_cfg.yaml_path), train_config(tmp_path, epochs=1))
    assert trainer.data_cfg == data_cfg


# ---------------------------------------------------------------- command line
def test_cli_train_config_and_checkpoint(data_cfg, tmp_path):
    import yaml

    from yolocompress.cli import main
    from yolocompress.io.checkpoint import load_model, save_model

    cfg = load_config("yolov5n")
    cfg["width_multiple"] = 0.0625
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    data_yaml = str(data_cfg.yaml_path)
    common = ["--data", data_yaml, "--epochs", "1", "--imgsz", "64", "--batch", "4", "--workers", "0"]
    out = tmp_path / "from_cfg"
    assert main(["train", str(cfg_path), *common, "--out", str(out)]) == 0
    trained = load_model(out / "weights" / "best.pt")
    assert trained.nc == data_cfg.nc and trained.names == data_cfg.names
    assert main(["train", str(cfg_path), *common, "--out", str(out)]) == 2  # would overwrite the run
    assert main(["train", str(cfg_path), *common, "--out", str(out), "--exist-ok"]) == 0

    # a checkpoint with another class count gets a new head; everything else is transferred
    seed_everything(1)
    source = tiny_model(nc=2)
    save_model(source, tmp_path / "two_classes.pt", imgsz=96)
    out = tmp_path / "from_pt"
    no_imgsz = [a for a in common if a not in ("--imgsz", "64")]  # the checkpoint's recorded 96 px (issue 19)
    assert main(["train", str(tmp_path / "two_classes.pt"), *no_imgsz, "--out", str(out)]) == 0
    last = torch.load(out / "weights" / "last.pt", weights_only=True)
    assert last["ema"]["config"]["nc"] == data_cfg.nc and last["train_config"]["imgsz"] == 96

    assert main(["train", str(cfg_path), "--data", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x")]) == 2
    bad_hyp = tmp_path / "hyp.yaml"
    bad_hyp.write_text("lr0: 0.01\nlr_zero: 0.02\n")
    assert main(["train", str(cfg_path), *common, "--out", str(tmp_path / "y"), "--hyp", str(bad_hyp)]) == 2


def test_transfer_keeps_backbone_weights(data_cfg):
    from yolocompress.cli.train import _transfer
    from yolocompress.io.checkpoint import model_to_dict
    from yolocompress.models import DetectionModel

    seed_everything(2)
    source = tiny_model(nc=2)
    ours = DetectionModel(model_to_dict(source)["config"])  # a resolved config, as loaded from our format
    ours.load_state_dict(source.state_dict())
    for src in (source, ours):
        moved = _transfer(src, nc=5)
        assert moved.nc == 5
        torch.testing.assert_close(moved.model[0].conv.weight, source.model[0].conv.weight)
        assert moved.model[-1].m[0].weight.shape[0] == 3 * (5 + 5)


def test_cli_fine_tunes_ultralytics_checkpoint(data_cfg, tmp_path, ultra_dir):
    from yolocompress.cli import main
    from yolocompress.io.checkpoint import load_model

    out = tmp_path / "ultra"
    args = ["train", str(ultra_dir / "yolov5n-shapes-e12.pt"), "--data", str(data_cfg.yaml_path), "--epochs", "1",
            "--imgsz", "64", "--batch", "8", "--workers", "0", "--out", str(out), "--noval"]
    assert main(args) == 0
    model = load_model(out / "weights" / "best.pt")
    assert model.nc == data_cfg.nc  # 3 classes re-headed to the data set's
    assert sum(p.numel() for p in model.parameters()) > 1_000_000


def test_cpu_bf16_channels_last_training_runs(tmp_path):
    """The fast CPU path (bf16 autocast + channels-last) trains and keeps fp32 weights."""
    import torch

    from yolocompress.data import load_data_config
    from yolocompress.data.synthetic import synthesize_dataset
    from yolocompress.engine.trainer import TrainConfig, Trainer
    from yolocompress.models import build_model

    data = load_data_config(synthesize_dataset(tmp_path / "d", n_train=4, n_val=2, imgsz=64, seed=3))
    torch.manual_seed(0)
    model = build_model("yolov5n", nc=data.nc)
    cfg = TrainConfig(epochs=1, imgsz=64, batch=2, workers=0, out_dir=str(tmp_path / "run"), bf16=True,
                      channels_last=True, nominal_batch=2)
    result = Trainer(model, data, cfg).train()
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


# ---------------------------------------------------------------- non-finite guard
class NaNLossAt:
    """An extra loss term that is 0 except at one global step, where it is NaN."""

    def __init__(self, step: int) -> None:
        self.step, self.calls = step, 0

    def __call__(self, batch, preds, features):
        step, self.calls = self.calls, self.calls + 1
        zero = preds[0].sum() * 0
        return (zero + float("nan") if step == self.step else zero), {}


class InfWeightAt(Callback):
    """Sets one weight of the model to inf after the given global step (the loss of that step was finite)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, trainer, step):
        if step == self.step:
            with torch.no_grad():
                trainer.model.model[0].conv.weight[0, 0, 0, 0] = float("inf")


def test_a_nan_loss_stops_training_naming_epoch_and_step_keeping_the_last_good_checkpoint(data_cfg, tmp_path):
    from yolocompress.errors import TrainingDivergedError
    from yolocompress.io.checkpoint import load_model

    seed_everything(0)
    config = train_config(tmp_path, epochs=3, batch=4, val=False)  # 8 images: 2 batches per epoch
    trainer = Trainer(tiny_model(nc=data_cfg.nc), data_cfg, config, Hyp(), extra_losses=[NaNLossAt(step=3)])
    with pytest.raises(TrainingDivergedError, match=r"non-finite loss in epoch 2/3, batch 2/2, step 4 "
                                                    r"\(loss nan; detection terms: box .*the last good "
                                                    r"checkpoint, .*last.pt \(end of epoch 1\), was kept"):
        trainer.train()
    last = torch.load(trainer.last_path, weights_only=True)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert all(torch.isfinite(p).all() for p in load_model(trainer.last_path).parameters())
    assert len(list(csv.DictReader(open(trainer.out_dir / "results.csv")))) == 1


def test_a_non_finite_weight_is_never_saved(data_cfg, tmp_path):
    from yolocompress.errors import TrainingDivergedError

    seed_everything(0)
    config = train_config(tmp_path, epochs=2, batch=4, val=False)
    trainer = Trainer(tiny_model(nc=data_cfg.nc), data_cfg, config, Hyp(),
                      callbacks=[InfWeightAt(step=1)])  # the last batch of epoch 1
    with pytest.raises(TrainingDivergedError, match=r"non-finite weights in epoch 1/2, at its end "
                                                    r"\(model.0.conv.weight\); no checkpoint of this run was "
                                                    r"written"):
        trainer.train()
    assert not trainer.last_path.exists() and not trainer.best_path.exists()


def test_a_non_finite_gradient_stops_before_the_optimizer_step(data_cfg, tmp_path):
    from yolocompress.errors import TrainingDivergedError

    def sqrt_of_zero(batch, preds, features):  # value 0, gradient 0 * inf = NaN
        return torch.sqrt(preds[0].sum() * 0), {}

    seed_everything(0)
    model = tiny_model(nc=data_cfg.nc)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer = Trainer(model, data_cfg, train_config(tmp_path, epochs=1, batch=4, val=False), Hyp(),
                      extra_losses=[sqrt_of_zero])
    with pytest.raises(TrainingDivergedError, match=r"non-finite gradient in epoch 1/1, batch 1/2, step 1;"):
        trainer.train()
    assert all(torch.equal(v, before[k]) for k, v in model.named_parameters())  # not stepped
    assert not trainer.last_path.exists()
