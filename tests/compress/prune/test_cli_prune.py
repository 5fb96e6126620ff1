"""``yolocompress prune``: a tiny real run, and bad inputs (one error line, exit 2)."""
from __future__ import annotations

import json

import pytest
import torch

from yolocompress.cli import main
from yolocompress.compress.fuse import fuse
from yolocompress.compress.stage import StageReport
from yolocompress.io.checkpoint import load_model_with_info, save_model

from .conftest import tiny_model

FAST = ["--imgsz", "64", "--candidates", "3", "--calib-batches", "2", "--eval-images", "8", "--batch", "4",
        "--min-channels", "1", "--round-to", "1", "--quiet"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("prune-cli")
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    save_model(model, root / "tiny.pt", imgsz=64)
    save_model(fuse(model), root / "fused.pt", imgsz=64)
    return root


def test_prune_writes_model_and_report(checkpoints, tiny_data, tmp_path, capsys):
    out, report = tmp_path / "pruned.pt", tmp_path / "report.json"
    no_imgsz = FAST[2:]  # the checkpoint's own size (64) is the default
    code = main(["prune", str(checkpoints / "tiny.pt"), "--data", str(tiny_data.yaml_path), "--ratio", "0.5",
                 "--finetune-epochs", "1", "--guided", "1", *no_imgsz, "-o", str(out), "--json", str(report),
                 "--max-map-drop", "100", "--exclude", "0,1,2,3,4,5,6,7,8"])   # neck probes only: faster
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "pruned" in printed and "probes" in printed
    model, info = load_model_with_info(out)
    r = json.loads(report.read_text())
    assert r["stage"] == "prune" and StageReport.from_dict(r).to_dict() == r
    d = r["details"]
    assert r["after"]["params"] == sum(p.numel() for p in model.parameters()) < r["before"]["params"]
    assert d["after_finetune"] is not None and len(d["candidates"]) == 3
    assert [c["kind"] for c in d["candidates"]] == ["uniform", "random", "guided"] and d["probes"] > 0
    assert d["imgsz"] == 64 and r["before"]["imgsz"] == r["after"]["imgsz"] == 64 and info.imgsz == 64
    acc = d["accuracy"]  # the verdict of compress.accuracy.check_accuracy on the before/after val mAP50-95
    assert acc["max_drop_points"] == 100 and acc["failed"] is False
    assert acc["drop_points"] == pytest.approx(100 * (r["before"]["map50_95"] - r["after"]["map50_95"]))
    entry = info.history[-1]
    assert entry["step"] == "prune" and entry["config"]["ratio"] == 0.5
    assert {"budget_gflops", "chosen", "after_search", "after_finetune", "baseline", "pruned"} <= set(entry)
    assert entry["pruned"]["params"] == r["after"]["params"]
    assert entry["baseline"]["gflops"] == r["before"]["gflops"]
    assert entry["after_finetune"] == d["after_finetune"] and entry["chosen"] == d["chosen"]
    raw = torch.load(out, weights_only=True)  # plain data: no pickled modules
    assert raw["format"] == "yolocompress" and raw["config"]["shapes"]


@pytest.mark.parametrize("args, message", [
    (["--ratio", "1.5"], "ratio must be strictly between 0 and 1"),
    (["--ratio", "0"], "ratio must be strictly between 0 and 1"),
    (["--ratio", "-0.2"], "ratio must be strictly between 0 and 1"),
    (["--target-gflops", "0.000001"], "impossible budget"),
    (["--target-gflops", "1000"], "impossible budget"),
    (["--ratio", "0.5", "--target-gflops", "1"], "not both"),
    (["--ratio", "0.5", "--exclude", "77"], "matches no prunable layer"),
    (["--ratio", "0.5", "--guided", "-1"], "guided must be >= 0"),
])
def test_bad_budgets_exit_2(checkpoints, tiny_data, tmp_path, capsys, args, message):
    out = tmp_path / "o.pt"
    code = main(["prune", str(checkpoints / "tiny.pt"), "--data", str(tiny_data.yaml_path), *FAST, *args,
                 "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_fused_model_missing_data_missing_model_exit_2(checkpoints, tiny_data, tmp_path, capsys):
    cases = [
        ([str(checkpoints / "fused.pt"), "--data", str(tiny_data.yaml_path)], "fused"),
        ([str(checkpoints / "tiny.pt"), "--data", str(tmp_path / "none.yaml")], "data.yaml not found"),
        ([str(tmp_path / "none.pt"), "--data", str(tiny_data.yaml_path)], "model file not found"),
    ]
    for args, message in cases:
        code = main(["prune", *args, "--ratio", "0.5", *FAST, "-o", str(tmp_path / "o.pt")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_fine_tune_takes_the_distill_method_of_distill(checkpoints, tiny_data, tmp_path, capsys):
    """``--distill-method feature``: CWD from the unpruned model, with connectors for the pruned channel
    counts, its term logged per epoch in the report (the fine-tune's history)."""
    out, report = tmp_path / "pruned.pt", tmp_path / "report.json"
    code = main(["prune", str(checkpoints / "tiny.pt"), "--data", str(tiny_data.yaml_path), "--ratio", "0.5",
                 "--finetune-epochs", "1", "--guided", "0", *FAST, "--distill-method", "feature",
                 "--feature-weight", "0.5", "--temperature", "2", "-o", str(out), "--json", str(report)])
    assert code == 0, capsys.readouterr().err
    r = json.loads(report.read_text())
    distill = r["config"]["finetune"]["distill"]  # the report's config nests like PruneConfig
    assert distill["method"] == "feature" and distill["temperature"] == 2.0
    tuned = r["details"]["finetune"]
    assert tuned["method"] == "feature" and tuned["feature_layers"] == [17, 20, 23]
    assert tuned["connectors"] and all(s < t for s, t in tuned["connectors"].values())  # pruned -> unpruned
    (row,) = tuned["history"]
    assert row["train/kd_feature"] > 0 and "train/kd_output" not in row
    assert tuned["teacher_forward_s_per_epoch"] > 0 and 0 < tuned["teacher_forward_share"] < 1
    state = torch.load(out, weights_only=True)["state_dict"]
    assert state and all(k.startswith("model.") for k in state)  # the student only, no connector tensors
    assert load_model_with_info(out)[1].history[-1]["config"]["finetune"]["distill"]["method"] == "feature"


@pytest.mark.parametrize("args, message", [
    (["--feature-weight", "2"], "--feature-weight set feature distillation: add --distill-method feature"),
    (["--distill-method", "output", "--temperature", "2"], "add --distill-method feature or both"),
    (["--distill-method", "feature", "--feature-layers", "99"], "feature layers [99] are not layers of the"),
    (["--distill-method", "both", "--temperature", "0"], "temperature must be > 0"),
    (["--distill-method", "logits"], "method must be one of output, feature, both, got 'logits'"),
    (["--distill-method", "feature", "--feature-layers", "x"], "expected 'auto' or layer indices"),
])
def test_bad_distill_settings_exit_2_before_the_search(checkpoints, tiny_data, tmp_path, capsys, args,
                                                       message):
    out = tmp_path / "o.pt"
    argv = ["prune", str(checkpoints / "tiny.pt"), "--data", str(tiny_data.yaml_path), "--ratio", "0.5",
            *FAST, "--finetune-epochs", "1", *args, "-o", str(out)]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
