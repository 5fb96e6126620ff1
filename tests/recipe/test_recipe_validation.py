"""Recipe validation: every shipped recipe resolves against the baseline, and bad recipes are refused before
any work with one line naming the key path (exit 2, no traceback, nothing written)."""
from __future__ import annotations

import json
import textwrap

import pytest

from yolocompress.cli import main
from yolocompress.demo import baseline_path
from yolocompress.recipe import load_recipe, shipped_recipes

GOOD_STAGES = """\
stages:
  - prune: {ratio: 0.5, search: {candidates: 2, guided: 0}}
  - finetune: {epochs: 1}
  - fuse: {}
  - quantize: {method: ptq}
"""

BOMB = "version: 1\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '1, 2, 3, 4, 5, 6, 7, 8, 9'}]\n" for i in range(9)
) + "name: *l8\n" + GOOD_STAGES

# (case, recipe text or None for GOOD_STAGES, extra CLI args, text the one error line must contain)
BAD_RECIPES = [
    ("unknown top-level key", "version: 1\nstage:\n  - fuse: {}\n", [], "recipe.stage: unknown key; did you mean 'stages'?"),
    ("unknown stage key", "stages:\n  - prune: {ratio: 0.5}\n  - finetune: {epoch: 3}\n", [],
     "stages[1].finetune.epoch: unknown key; did you mean 'epochs'?"),
    ("unknown stage type", "stages:\n  - prun: {ratio: 0.5}\n", [], "stages[0]: unknown stage type; did you mean 'prune'?"),
    ("runner-set key", "stages:\n  - prune: {imgsz: 320}\n", [], "stages[0].prune.imgsz: unknown key"),
    ("string for a number", "stages:\n  - prune: {ratio: half}\n", [], "stages[0].prune.ratio: expected"),
    ("float for an integer", "stages:\n  - finetune: {epochs: 1.5}\n", [], "stages[0].finetune.epochs: expected an integer"),
    ("bool for an integer", "stages:\n  - finetune: {epochs: true}\n", [], "stages[0].finetune.epochs: expected an integer"),
    ("out-of-range ratio", "stages:\n  - prune: {ratio: 1.5}\n", [], "stages[0].prune: ratio must be strictly between 0 and 1"),
    ("two budgets", "stages:\n  - prune: {ratio: 0.3, target_latency: 0.5}\n", [],
     "stages[0].prune: give one budget: a ratio, a target GFLOPs or a target latency (got ratio and "
     "target_latency)"),
    ("out-of-range latency budget", "stages:\n  - prune: {target_latency: 1.5}\n", [],
     "stages[0].prune: target latency must be strictly between 0 and 1"),
    ("unknown probe metric", "stages:\n  - prune: {search: {probe_metric: mAP}}\n", [],
     "probe_metric must be one of map, box_loss, distortion, got 'mAP'"),
    ("negative epochs", "stages:\n  - finetune: {epochs: 0}\n", [], "stages[0].finetune: epochs must be >= 1"),
    ("bad calibration choice", "stages:\n  - quantize: {calibration: magic}\n", [], "stages[0].quantize: calibration must be one of"),
    ("YAML syntax error", "stages:\n  - prune: {ratio: 0.5\n", [], "not valid YAML at line"),
    ("duplicate key", "seed: 1\nseed: 2\n" + GOOD_STAGES, [], "duplicate key 'seed' (line 2)"),
    ("duplicate stage key", "stages:\n  - finetune: {epochs: 1, epochs: 2}\n", [], "duplicate key 'epochs'"),
    ("non-mapping document", "- prune: {ratio: 0.5}\n", [], "a recipe is a mapping of keys"),
    ("empty document", "", [], "a recipe is a mapping of keys"),
    ("alias bomb", BOMB, [], "YAML aliases"),
    ("PyTorch stage after quantize", "stages:\n  - quantize: {method: ptq}\n  - finetune: {epochs: 1}\n", [],
     "stages[1].finetune: finetune needs a PyTorch model"),
    ("prune after export", "stages:\n  - export: {}\n  - prune: {ratio: 0.5}\n", [], "stages[1].prune: prune needs a PyTorch model"),
    ("prune after fuse", "stages:\n  - fuse: {}\n  - prune: {ratio: 0.5}\n", [], "stages[1].prune: prune needs the BatchNorm layers"),
    ("QAT after export", "stages:\n  - export: {}\n  - quantize: {method: qat}\n", [], "stages[1].quantize: quantize needs a PyTorch"),
    ("two quantize stages", "stages:\n  - quantize: {}\n  - quantize: {name: again}\n", [], "stages[1].quantize: a recipe quantizes once"),
    ("QAT key with PTQ", "stages:\n  - quantize: {method: ptq, epochs: 3}\n", [], "stages[0].quantize.epochs: only with method: qat"),
    ("unknown method", "stages:\n  - quantize: {method: gptq}\n", [], "stages[0].quantize.method: expected one of ptq, qat"),
    ("prune exclude matches nothing", "stages:\n  - prune: {ratio: 0.5, exclude: ['model.99']}\n", [],
     "stages[0].prune.exclude: 'model.99' matches no prunable layer"),
    ("quantize exclude matches nothing", "stages:\n  - quantize: {exclude: [model.7.nope]}\n", [],
     "stages[0].quantize.exclude: 'model.7.nope' matches no layer of the model"),
    ("exclude not a list", "stages:\n  - prune: {exclude: 9}\n", [], "stages[0].prune.exclude: expected a list of strings"),
    ("missing model", "model: nowhere.pt\n" + GOOD_STAGES, ["--model", None], "model file not found"),
    ("missing data", "data: nowhere.yaml\n" + GOOD_STAGES, ["--data", None], "data.yaml not found"),
    ("recipe version", "version: 2\n" + GOOD_STAGES, [], "recipe.version: this yolocompress reads recipe version 1"),
    ("imgsz not a multiple of 32", "imgsz: 100\n" + GOOD_STAGES, [], "recipe.imgsz: must be a positive multiple of 32"),
    ("unknown latency backend", "measure: {latency: [tensorrt]}\n" + GOOD_STAGES, [], "recipe.measure: latency backend 'tensorrt'"),
    ("unknown measure key", "measure: {run: 5}\n" + GOOD_STAGES, [], "recipe.measure.run: unknown key; did you mean 'runs'?"),
    ("gate latency not measured", "measure: {latency: [torch]}\ngate: {max_latency_ratio: 0.5}\n" + GOOD_STAGES, [],
     "recipe.gate.max_latency_ratio: needs the onnxruntime latency"),
    ("unknown gate key", "gate: {max_drop: 1}\n" + GOOD_STAGES, [], "recipe.gate.max_drop: unknown key"),
    ("empty stage list", "stages: []\n", [], "recipe.stages: expected a non-empty list"),
    ("stage entry with two keys", "stages:\n  - {prune: {}, fuse: {}}\n", [], "stages[0]: each stage is a mapping with one key"),
    ("two stages with one name", "stages:\n  - finetune: {epochs: 1}\n  - finetune: {epochs: 2}\n", [],
     "stages[1].finetune: two stages are named 'finetune'"),
    ("--set past the list", None, ["--set", "stages.9.prune.ratio=0.3"], "no list entry '9'"),
    ("--set an unknown key", None, ["--set", "stages.0.prune.ratoi=0.3"], "stages[0].prune.ratoi: unknown key; did you mean 'ratio'?"),
    ("--set out of range", None, ["--set", "stages.0.prune.ratio=2"], "ratio must be strictly between 0 and 1"),
    ("--set without =", None, ["--set", "stages.0.prune.ratio"], "expected KEY=VALUE"),
    ("fused input for prune", None, ["--model", "FUSED"], "stages[0].prune: the input model is fused"),
    ("unknown distill method", "stages:\n  - finetune: {epochs: 1, distill: {method: logits}}\n", [],
     "stages[0].finetune.distill: method must be one of output, feature, both"),
    ("unknown distill key", "stages:\n  - finetune: {distill: {feature_weigth: 1}}\n", [],
     "stages[0].finetune.distill.feature_weigth: unknown key; did you mean 'feature_weight'?"),
    ("distill method as a string", "stages:\n  - quantize: {method: qat, distill: feature}\n", [],
     "stages[0].quantize.distill: expected a number or a mapping of method, feature_layers"),
    ("negative distill weight", "stages:\n  - prune: {ratio: 0.5, finetune: {distill: -1}}\n", [],
     "stages[0].prune.finetune: distill must be a weight >= 0"),
    ("distill layers not integers",
     "stages:\n  - finetune: {distill: {method: feature, feature_layers: [a]}}\n", [],
     "stages[0].finetune.distill.feature_layers: expected a list of integers or null"),
    ("distill layers not in the model (finetune)",
     "stages:\n  - finetune: {distill: {method: feature, feature_layers: [17, 99]}}\n", [],
     "feature layers [99] are not layers of the model (stages[0].finetune.feature_layers)"),
    ("distill layers not in the model (distill stage)",
     "stages:\n  - distill: {method: both, feature_layers: [-1]}\n", [],
     "feature layers [-1] are not layers of the model (stages[0].distill.feature_layers)"),
    ("distill layers not in the model (prune)",
     "stages:\n  - prune: {ratio: 0.5, finetune: {distill: {method: feature, feature_layers: [17, 30]}}}\n", [],
     "feature layers [30] are not layers of the model (stages[0].prune.feature_layers)"),
    ("distill layers not in the model (qat)",
     "stages:\n  - quantize: {method: qat, distill: {method: feature, feature_layers: [40]}}\n", [],
     "feature layers [40] are not layers of the model (stages[0].quantize.feature_layers)"),
]


@pytest.mark.parametrize("case,text,extra,message", BAD_RECIPES, ids=[c[0] for c in BAD_RECIPES])
def test_bad_recipe_is_one_line_exit_2_and_writes_nothing(case, text, extra, message, tmp_path, capsys,
                                                         tiny_checkpoint, recipe_data):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(GOOD_STAGES if text is None else text)
    model, data = str(tiny_checkpoint), str(recipe_data.yaml_path)
    if "FUSED" in extra:
        from yolocompress.compress.fuse import fuse
        from yolocompress.io.checkpoint import load_model, save_model

        model = str(save_model(fuse(load_model(tiny_checkpoint)), tmp_path / "fused.pt", imgsz=64))
        extra = []
    args = ["--model", model, "--data", data]
    if extra[:1] == ["--model"] and extra[1] is None:  # the recipe's own (missing) model path
        args, extra = ["--data", data], []
    if extra[:1] == ["--data"] and extra[1] is None:
        args, extra = ["--model", model], []
    out = tmp_path / "out"
    code = main(["run", str(recipe), *args, *extra, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_there_are_at_least_twenty_bad_recipe_cases():
    assert len(BAD_RECIPES) >= 20


@pytest.mark.parametrize("name", shipped_recipes())
def test_every_shipped_recipe_dry_runs_against_the_baseline(name, recipe_data, tmp_path, capsys):
    out = tmp_path / "plan.json"
    code = main(["run", name, "--model", str(baseline_path()), "--data", str(recipe_data.yaml_path),
                 "--dry-run", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    plan = json.loads(out.read_text())
    assert plan["recipe"]["name"] == name and plan["recipe"]["imgsz"] == 256  # the baseline's recorded size
    assert plan["model"]["params"] > 0 and plan["model"]["gflops"] > 0
    stages = [next(iter(s)) for s in plan["recipe"]["stages"]]
    assert bool(plan["prune_budget"]) == ("prune" in stages)
    for budget in plan["prune_budget"]:
        assert 0.1 < budget["budget_fraction"] < 0.8
    printed = capsys.readouterr().out
    assert f"name: {name}" in printed and "GFLOPs at 256 px" in printed
    assert list(tmp_path.iterdir()) == [out]  # a dry run writes nothing but the --json asked for


def test_shipped_recipes_are_the_documented_ones():
    assert set(shipped_recipes()) >= {"prune", "ptq", "qat", "prune-int8", "full", "rep-fuse", "demo"}


def test_dry_run_fills_defaults_and_overrides_win(tiny_checkpoint, recipe_data, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent("""\
        version: 1
        seed: 3
        stages:
          - prune: {ratio: 0.5}
          - finetune: {epochs: 20}
          - quantize: {method: qat, epochs: 2}
    """))
    loaded = load_recipe(recipe, overrides=["stages.1.finetune.epochs=2", "stages.0.prune.ratio=0.3", "imgsz=96"],
                         model=tiny_checkpoint, data=recipe_data.yaml_path)
    resolved = loaded.plan.resolved()
    prune, finetune, quantize = (next(iter(s.values())) for s in resolved["stages"])
    assert resolved["imgsz"] == 96 and resolved["seed"] == 3
    assert prune["ratio"] == 0.3 and prune["search"]["candidates"] == 20 and prune["seed"] == 3
    assert prune["finetune"]["epochs"] == 0  # the recipe's default: a finetune stage follows
    assert finetune["epochs"] == 2  # the command line beats the recipe
    assert quantize["method"] == "qat" and quantize["epochs"] == 2 and quantize["calibration"] == "mse"
    configs = {s.name: s.configs for s in loaded.plan.stages}
    assert configs["prune"]["config"].imgsz == 96 and configs["quantize"]["quant"].imgsz == 96
    assert configs["quantize"]["qat"].seed == 3


def test_a_weight_or_the_distill_settings_in_finetune_prune_and_qat(tiny_checkpoint, recipe_data, tmp_path):
    from yolocompress.compress.distill import DistillConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text(textwrap.dedent("""\
        stages:
          - prune: {ratio: 0.5, finetune: {distill: 0.5}}
          - finetune: {epochs: 1, distill: {method: both, feature_layers: [17, 20], feature_weight: 0.5}}
          - quantize: {method: qat, distill: {method: feature, temperature: 2}}
    """))
    loaded = load_recipe(recipe, model=tiny_checkpoint, data=recipe_data.yaml_path)
    configs = {s.name: s.configs for s in loaded.plan.stages}
    assert configs["prune"]["config"].finetune.distill == 0.5  # the plain weight: output KD, as before
    assert configs["prune"]["config"].finetune.epochs == 0  # the recipe's default kept beside the key given
    assert configs["finetune"]["config"].distill == DistillConfig(method="both", feature_layers=(17, 20),
                                                                  feature_weight=0.5)
    assert configs["quantize"]["qat"].distill == DistillConfig(method="feature", temperature=2.0)
    finetune = next(iter(loaded.plan.resolved()["stages"][1].values()))
    assert finetune["distill"]["feature_layers"] == [17, 20]


def test_a_prune_stage_takes_a_latency_budget_and_a_preference(tiny_checkpoint, recipe_data, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - prune: {target_latency: 0.5, search: {prefer: latency}}\n")
    loaded = load_recipe(recipe, model=tiny_checkpoint, data=recipe_data.yaml_path)
    config = loaded.plan.stages[0].configs["config"]
    assert config.target_latency == 0.5 and config.ratio is None and config.search.prefer == "latency"
    assert config.search.near_tie == 0.005
