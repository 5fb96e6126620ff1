"""``prune --resume``: a search killed part-way continues from its search log without scoring again what was
scored, and ends with the result of an uninterrupted run with the same seed."""
from __future__ import annotations

import json

import pytest
import torch

from yolocompress.cli import main
from yolocompress.compress.prune import PruneConfig, prune_model
from yolocompress.compress.prune.scoring import SubnetScorer
from yolocompress.errors import InputError
from yolocompress.io.checkpoint import save_model

from .conftest import tiny_model

# the backbone excluded: fewer searchable groups, fewer probes, a faster test
SETTINGS = dict(ratio=0.5, imgsz=64, candidates=5, guided=2, calib_batches=1, calib_batch=4, eval_images=4,
                eval_batch=4, finetune_epochs=1, finetune_batch=4, min_channels=1, round_to=1,
                eval_baseline=False, exclude=tuple(str(i) for i in range(9)), probe_sides="less",
                reject_below=0.0)   # one scorer call per sub-net; early rejection: test_search_speed.py


@pytest.fixture
def counted_scores(monkeypatch):
    """Untrained sub-nets all score 0: give each a distinct score (its parameter count) and count the calls."""
    real_call = SubnetScorer.__call__
    calls = []

    def scored(self, sub, recalibrate=True):
        calls.append(1)
        s = real_call(self, sub, recalibrate)
        s.map50_95 = float(sum(p.numel() for p in sub.parameters())) / 1e6
        return s

    monkeypatch.setattr(SubnetScorer, "__call__", scored)
    return calls


class Killed(BaseException):
    """Stands for the kill: not an Exception, so nothing on the way up handles it."""


def test_a_killed_search_resumes_without_rescoring_and_matches_an_uninterrupted_run(tiny_data, tmp_path,
                                                                                   counted_scores):
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    full_model, full = prune_model(model, tiny_data, PruneConfig.from_flat(**SETTINGS))
    scored_in_full = len(counted_scores)
    assert full.details["probes"] > 4 and scored_in_full == full.details["probes"] + 5
    assert full.details["chosen"] < 3  # scored before the kill below: the resumed run rebuilds the winner

    for task, done in (("probes", 4), ("eagleeye", 3)):  # killed during the probes, then during the candidates
        log = tmp_path / f"{task}.search.jsonl"

        def kill(event):
            if event.task == task and event.done == done:
                raise Killed

        counted_scores.clear()
        with pytest.raises(Killed):
            prune_model(model, tiny_data, PruneConfig.from_flat(**SETTINGS, search_log=str(log)),
                        on_progress=kill)
        recorded = len(log.read_text().splitlines()) - 1  # the header, then one row per scored sub-net
        assert recorded == len(counted_scores) == (4 if task == "probes" else full.details["probes"] + 3)

        counted_scores.clear()
        again = PruneConfig.from_flat(**SETTINGS, search_log=str(log), resume=True)
        resumed_model, resumed = prune_model(model, tiny_data, again)
        # a winner scored before the kill is rebuilt with its BN statistics only, not scored again
        assert len(counted_scores) == scored_in_full - recorded
        for key in ("candidates", "chosen", "sensitivity", "probes", "after_search", "after_finetune", "groups"):
            assert resumed.details[key] == full.details[key], key
        full_state, resumed_state = full_model.state_dict(), resumed_model.state_dict()
        assert full_state.keys() == resumed_state.keys()
        assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)
        assert not log.exists()  # finished: nothing left to resume


def test_resume_refuses_the_log_of_another_search(tiny_data, tmp_path):
    model = tiny_model("yolov5n", nc=tiny_data.nc, width=0.125)
    log = tmp_path / "other.search.jsonl"
    log.write_text(json.dumps({"fingerprint": "0" * 64}) + "\n")
    with pytest.raises(InputError, match="records a search of another model"):
        prune_model(model, tiny_data, PruneConfig.from_flat(**SETTINGS, search_log=str(log), resume=True))


def test_cli_resume_flag_continues_the_log_beside_the_output(tiny_data, tmp_path, capsys):
    model = tmp_path / "tiny.pt"
    save_model(tiny_model("yolov5n", nc=tiny_data.nc, width=0.125), model, imgsz=64)
    out = tmp_path / "pruned.pt"
    log = tmp_path / "pruned.pt.search.jsonl"
    log.write_text(json.dumps({"fingerprint": "0" * 64}) + "\n")  # a stale log of another search
    args = ["prune", str(model), "--data", str(tiny_data.yaml_path), "-o", str(out), "--ratio", "0.5",
            "--candidates", "2", "--guided", "0", "--calib-batches", "1", "--eval-images", "4", "--batch", "4",
            "--finetune-epochs", "0", "--min-channels", "1", "--round-to", "1", "--quiet"]
    assert main([*args, "--resume"]) == 2
    assert "records a search of another model" in capsys.readouterr().err and not out.exists()
    assert main(args) == 0  # without --resume: a new search (the stale log is replaced, then removed)
    assert out.is_file() and not log.exists()
