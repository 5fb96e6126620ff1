"""An interrupted run resumed from last.pt ends bit-identical to an uninterrupted run (CPU, same seed)."""
from __future__ import annotations

import pytest
import torch

from yolocompress.engine.callbacks import Callback
from yolocompress.engine.loss import Hyp
from yolocompress.engine.rng import seed_everything
from yolocompress.engine.train_checkpoint import load_checkpoint
from yolocompress.engine.trainer import Trainer
from yolocompress.errors import InputError

from .test_trainer import data_cfg, tiny_model, train_config  # noqa: F401  (fixtures)


class Interrupt(Exception):
    pass


class KillAfterEpoch(Callback):
    """Simulate a kill right after epoch ``epoch``'s checkpoint was written."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, trainer, metrics):
        if metrics["epoch"] == self.epoch:
            raise Interrupt


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _fresh(data_cfg):
    # a resumed run must not depend on the model it is handed: use other random weights on purpose
    return tiny_model(nc=data_cfg.nc)


def test_resume_is_exact(data_cfg, tmp_path):  # noqa: F811
    # batch 2 on 8 images: 4 batches per epoch, accumulation ramping up during warm-up, so gradients are
    # pending at the epoch boundary and must survive the checkpoint too.
    hyp = Hyp()
    seed_everything(0)
    full = Trainer(_fresh(data_cfg), data_cfg, train_config(tmp_path / "full", epochs=3, batch=2, close_mosaic=1),
                   hyp).train()

    seed_everything(0)
    with pytest.raises(Interrupt):
        Trainer(_fresh(data_cfg), data_cfg, train_config(tmp_path / "cut", epochs=3, batch=2, close_mosaic=1),
                hyp, callbacks=[KillAfterEpoch(0)]).train()
    last = tmp_path / "cut" / "run" / "weights" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 0
    seed_everything(123)  # whatever the global RNG state, resuming restores the saved one
    resumed = Trainer(_fresh(data_cfg), data_cfg,
                      train_config(tmp_path / "cut", epochs=3, batch=2, close_mosaic=1, resume=str(last)),
                      hyp).train()

    a, b = load_checkpoint(full.last_path), load_checkpoint(resumed.last_path)
    _assert_same_state(a["model"], b["model"])
    _assert_same_state(a["ema"]["state_dict"], b["ema"]["state_dict"])
    assert a["ema_updates"] == b["ema_updates"] and a["last_opt_step"] == b["last_opt_step"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    keys = ("epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/mAP_0.5:0.95", "x/lr1")
    assert [[r[k] for k in keys] for r in full.history] == [[r[k] for k in keys] for r in resumed.history]
    _assert_same_state(full.model.state_dict(), resumed.model.state_dict())
    assert (tmp_path / "cut" / "run" / "results.csv").read_text().count("\n") == 4  # header + 3 epochs


def test_cli_resume_matches(data_cfg, tmp_path):  # noqa: F811
    from yolocompress.cli import main

    seed_everything(0)
    full = Trainer(_fresh(data_cfg), data_cfg, train_config(tmp_path / "full", epochs=2, batch=4), Hyp()).train()
    seed_everything(0)
    with pytest.raises(Interrupt):
        Trainer(_fresh(data_cfg), data_cfg, train_config(tmp_path / "cut", epochs=2, batch=4), Hyp(),
                callbacks=[KillAfterEpoch(0)]).train()
    last = tmp_path / "cut" / "run" / "weights" / "last.pt"
    assert main(["train", "--resume", str(last), "--workers", "0"]) == 0
    _assert_same_state(load_checkpoint(full.last_path)["model"], load_checkpoint(last)["model"])
    # a finished run has nothing left to resume
    assert main(["train", "--resume", str(last), "--workers", "0"]) == 2


def test_resume_rejects_foreign_files(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(InputError, match="training checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
