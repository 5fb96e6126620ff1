"""Feature distillation (CWD with connectors) and the distill stage / command."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from yolocompress.cli import main
from yolocompress.compress.distill import DistillConfig, FeatureDistillation, as_distill_config, cwd_loss
from yolocompress.compress.finetune import FinetuneConfig, finetune
from yolocompress.compress.prune import PruneFinetuneConfig
from yolocompress.compress.distill.config import check_output_compatible, output_gains
from yolocompress.engine.callbacks import Batch, FeatureCapture
from yolocompress.errors import InputError
from yolocompress.io.checkpoint import save_model
from yolocompress.models import build_model, load_config


def _model(name="yolov5n", width=0.5, nc=6, seed=0):
    """A shipped config at ``width`` of its own width multiple."""
    cfg = load_config(name)
    cfg["width_multiple"] = float(cfg.get("width_multiple", 1.0)) * width
    torch.manual_seed(seed)
    return build_model(cfg, nc=nc).eval()


def test_cwd_equals_the_direct_formula():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    tau = 2.0
    expected = 0.0
    for n in range(2):
        for c in range(3):
            ps = np.exp(s[n, c].ravel() / tau) / np.exp(s[n, c].ravel() / tau).sum()
            pt = np.exp(t[n, c].ravel() / tau) / np.exp(t[n, c].ravel() / tau).sum()
            expected += (pt * (np.log(pt) - np.log(ps))).sum()
    expected *= tau ** 2 / (2 * 3)
    got = float(cwd_loss(torch.tensor(s), torch.tensor(t), tau))
    assert got == pytest.approx(expected, rel=1e-6)
    assert float(cwd_loss(torch.tensor(t), torch.tensor(t), tau)) == pytest.approx(0.0, abs=1e-7)


def test_connectors_only_where_channels_differ():
    student, wide = _model(width=0.5), _model(width=1.0, seed=1)
    same = FeatureDistillation(_model(width=0.5, seed=1), student)
    assert same.feature_layers == (17, 20, 23) and len(same.trainable) == 0
    kd = FeatureDistillation(wide, student)
    assert sorted(kd.trainable) == ["17", "20", "23"]
    conv = kd.trainable["17"][0]
    assert (conv.in_channels, conv.out_channels) == (32, 64) and conv.kernel_size == (1, 1)
    torch.manual_seed(123)  # the process's generator does not decide the connectors' start, the seed does
    again = FeatureDistillation(wide, student).trainable.state_dict()
    assert all(torch.equal(v, kd.trainable.state_dict()[k]) for k, v in again.items())
    other = FeatureDistillation(wide, student, seed=1).trainable.state_dict()
    assert not torch.equal(other["17.0.weight"], again["17.0.weight"])


def test_gradients_reach_the_student_and_the_connectors_not_the_teacher():
    student, teacher = _model(width=0.5), _model(width=1.0, seed=1)
    kd = FeatureDistillation(teacher, student, weight=1.0)
    student.train()
    x = torch.rand(2, 3, 64, 64)
    with FeatureCapture(student, kd.feature_layers) as capture:
        preds = student(x)
        loss, items = kd(Batch(x, torch.zeros(0, 6), [], []), preds, capture.features)
    loss.backward()
    assert float(loss.detach()) > 0 and items["kd_feature"] == pytest.approx(float(loss.detach()))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in kd.trainable.parameters())
    assert student.model[17].cv3.conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in kd.teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())  # the caller's teacher is not touched either


def test_layers_of_another_stride_are_refused_naming_them():
    with pytest.raises(InputError, match="feature layer 17: .*same stride"):
        FeatureDistillation(_model("yolov5n6", width=0.5), _model(width=0.5))


def test_output_distillation_needs_the_same_head():
    with pytest.raises(InputError, match="same classes"):
        check_output_compatible(_model(nc=6), _model(nc=3))
    with pytest.raises(InputError, match="same anchors and strides"):
        check_output_compatible(_model(nc=6), _model("yolov5n6", nc=6))


def test_distill_config_is_validated():
    with pytest.raises(InputError, match="method must be one of"):
        DistillConfig(method="logits")
    with pytest.raises(InputError, match="temperature"):
        DistillConfig(temperature=0)


def test_a_weight_is_output_distillation_and_settings_are_checked_where_given():
    assert as_distill_config(0.0) is None and as_distill_config(None) is None
    assert as_distill_config(0.5) == DistillConfig(method="output", weight=0.5, check_teacher=False)
    kd = DistillConfig(method="both", feature_layers=[17])
    assert as_distill_config(kd) is kd
    for bad in (-1.0, "feature", True):
        with pytest.raises(InputError, match="weight >= 0 or distillation settings"):
            as_distill_config(bad)
    for config_type in (FinetuneConfig, PruneFinetuneConfig):
        assert config_type(distill=kd).to_dict()["distill"]["feature_layers"] == [17]
        with pytest.raises(InputError):
            config_type(distill=-0.5)


@pytest.fixture(scope="module")
def distill_data(make_synthetic_data):
    return make_synthetic_data("distill-synthetic", n_train=8, n_val=4)


def test_distill_command_trains_a_student_that_eval_reads(distill_data, tmp_path, capsys, one_thread):
    student = save_model(_model(width=0.5), tmp_path / "student.pt", imgsz=64)
    teacher = save_model(_model(width=1.0, seed=1), tmp_path / "teacher.pt", imgsz=64)
    out, runs, report = tmp_path / "distilled.pt", tmp_path / "runs", tmp_path / "report.json"
    code = main(["distill", str(student), "--teacher", str(teacher), "--data", str(distill_data.yaml_path),
                 "--method", "both", "--epochs", "1", "--batch", "4", "--out-dir", str(runs), "-o", str(out),
                 "--json", str(report)])
    err = capsys.readouterr()
    assert code == 0, err.err  # they differ in width, not in classes or anchors: output KD is allowed too
    assert "connectors" in err.out and "layer 17: 32 -> 64" in err.out
    state = torch.load(out, weights_only=True)["state_dict"]
    assert state.keys() == _model(width=0.5).state_dict().keys()  # no connector tensors
    with open(runs / "results.csv") as fh:
        row = next(csv.DictReader(fh))
    assert float(row["train/kd_feature"]) > 0 and float(row["train/kd_output"]) > 0
    assert "extra_modules" in torch.load(runs / "weights" / "last.pt", weights_only=True)
    r = json.loads(report.read_text())
    assert r["stage"] == "distill" and r["details"]["connectors"]["17"] == [32, 64]
    assert r["config"]["method"] == "both" and set(r["details"]["val_map50_95"]) == {"teacher", "student"}
    assert r["details"]["teacher_forward_s_per_epoch"] > 0 and "teacher forward" in err.out
    # the student's val score before (from the stage) and after (measured on the saved weights) are checked
    acc = r["details"]["accuracy"]
    assert acc["before_map50_95"] == r["details"]["val_map50_95"]["student"]
    assert acc["after_map50_95"] is not None
    assert main(["eval", str(out), "--data", str(distill_data.yaml_path), "--batch", "4"]) == 0


def test_distill_command_bad_input_is_exit_2(distill_data, tmp_path, capsys):
    teacher = save_model(_model(nc=3), tmp_path / "teacher.pt", imgsz=64)
    student = save_model(_model(nc=6), tmp_path / "student.pt", imgsz=64)
    base = ["distill", str(student), "--teacher", str(teacher), "--data", str(distill_data.yaml_path),
            "-o", str(tmp_path / "out.pt"), "--epochs", "1"]
    for extra, message in ((["--method", "output"], "same classes"), (["--feature-layers", "99"], "not layers of the student")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as usage:  # argparse's own usage error
        main([*base, "--feature-layers", "x"])
    assert usage.value.code == 2 and "layer indices" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()


def test_finetune_takes_the_same_settings_and_reports_the_connectors(distill_data, tmp_path, one_thread):
    student, teacher = _model(width=0.5), _model(width=1.0, seed=1)
    cfg = FinetuneConfig(epochs=1, imgsz=64, batch=4, val=False,
                         distill=DistillConfig(method="feature", feature_layers=(17, 20),
                                               check_teacher=False))
    _, report = finetune(student, distill_data.yaml_path, cfg, teacher=teacher, out_dir=tmp_path / "run")
    d = report.details
    assert d["method"] == "feature" and d["connectors"] == {"17": [32, 64], "20": [64, 128]}
    assert d["history"][0]["train/kd_feature"] > 0 and "train/kd_output" not in d["history"][0]
    assert report.config["distill"]["feature_layers"] == [17, 20]
    assert d["teacher_forward_s_per_epoch"] > 0 and 0 < d["teacher_forward_share"] < 1  # KD's overhead
    bad = FinetuneConfig(epochs=1, imgsz=64, batch=4, distill=DistillConfig(method="feature"))
    with pytest.raises(InputError, match="feature layer 17: .*same stride"):  # before any training
        finetune(student, distill_data.yaml_path, bad, teacher=_model("yolov5n6", width=0.5),
                 out_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_both_methods_share_one_teacher_forward_per_batch():
    """``both``: one teacher forward per batch feeds the output and the feature term, with the values that
    separate forwards give (to 1e-6), and the overhead counts it once."""
    from yolocompress.compress.distill import OutputDistillation
    from yolocompress.compress.distill.config import distill_terms, teacher_overhead

    teacher, student = _model(width=1.0, seed=1), _model(width=1.0, seed=2)
    terms, _ = distill_terms(DistillConfig(method="both"), teacher, student, imgsz=64)
    output, feature = terms
    assert output.forward is feature.forward
    calls = []
    output.teacher.register_forward_pre_hook(lambda *_: calls.append(1))
    torch.manual_seed(0)
    imgs = torch.rand(2, 3, 64, 64)
    batch = Batch(imgs=imgs, targets=torch.zeros(0, 6), paths=[], shapes=[])
    student.train()
    with FeatureCapture(student, feature.feature_layers) as capture:
        preds = student(imgs)
        feats = dict(capture.features)
    kd_out, _ = output(batch, preds, feats)
    kd_feat, _ = feature(batch, preds, feats)
    assert len(calls) == 1
    gains = output_gains(student, None, 64)
    alone_out, _ = OutputDistillation(teacher, box=gains.box, obj=gains.obj, cls=gains.cls,
                                      balance=gains.balance)(batch, preds, feats)
    alone_feat, _ = FeatureDistillation(teacher, student)(batch, preds, feats)
    assert kd_out.item() == pytest.approx(alone_out.item(), rel=1e-6)
    assert kd_feat.item() == pytest.approx(alone_feat.item(), rel=1e-6)
    imgs.add_(0.1)  # the same tensor changed in place is a new batch
    output(batch, preds, feats)
    assert len(calls) == 2
    overhead = teacher_overhead(terms, [{"time_s": 10.0}])
    assert overhead["teacher_forward_s_per_epoch"] == pytest.approx(output.forward.seconds)


def test_the_default_method_is_output_from_scratch_and_feature_otherwise():
    from yolocompress.compress.distill.config import FROM_SCRATCH_METHOD, default_method

    assert default_method(from_scratch=False) == DistillConfig().method == "feature"
    assert default_method(from_scratch=True) == FROM_SCRATCH_METHOD == "output"
    assert default_method(from_scratch=True, feature_settings=True) == "feature"  # --feature-weight etc. ask for it
