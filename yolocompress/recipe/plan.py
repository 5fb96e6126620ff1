"""A recipe resolved against its real model and data: every stage's full config, checked before any work.

:func:`plan_recipe` turns a :class:`~yolocompress.recipe.schema.RecipeDocument` into a :class:`RecipePlan`:
the model and data paths exist and load, the image size is known (the recipe's, else the model's recorded
size), every stage's keys are fields of its config (types checked, ranges checked by the config itself),
the order is possible (nothing that needs a PyTorch model after ``quantize``/``export``, no ``prune`` after
``fuse``, one ``quantize``), and ``exclude`` selectors match layers of the actual model. Any failure is one
``InputError`` line naming the key path; nothing has been written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from yolocompress.compress.distill.config import DistillConfig
from yolocompress.compress.distill.feature import check_feature_layers
from yolocompress.compress.stage import config_dict
from yolocompress.errors import InputError
from yolocompress.models.inputs import max_stride
from yolocompress.models.selectors import LayerSelector, select_layers
from yolocompress.recipe.schema import RecipeDocument, build_config, check_keys
from yolocompress.recipe.stages import StageType, stage_type


@dataclass(frozen=True)
class StagePlan:
    """One stage of a resolved recipe: ``index`` (0-based), registered ``type``, unique ``name``, its output
    folder name (``01-prune``) and its configs (part -> frozen config; ``quantize`` has ``quant`` and, for
    QAT, ``qat``)."""

    index: int
    type: StageType
    name: str
    folder: str
    configs: Mapping[str, Any]
    method: str | None = None

    def resolved(self) -> dict[str, Any]:
        """The recipe-visible settings with defaults filled in (runner-set fields left out)."""
        out: dict[str, Any] = {"method": self.method} if self.method else {}
        for cfg in self.configs.values():
            out.update({k: v for k, v in config_dict(cfg).items() if k not in self.type.runner_fields})
        return out

    def config_sha256(self, imgsz: int) -> str:
        """Hash of everything that decides this stage's output besides its input artifact."""
        text = json.dumps({"type": self.type.name, "imgsz": imgsz, "config": self.resolved()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class RecipePlan:
    """A recipe ready to run (see the module docstring)."""

    document: RecipeDocument
    model_path: Path
    data_path: Path
    imgsz: int
    stages: tuple[StagePlan, ...]

    @property
    def name(self) -> str:
        return self.document.name

    def resolved(self) -> dict[str, Any]:
        """The whole recipe with defaults filled in (what ``recipe.resolved.yaml`` holds)."""
        d = self.document
        return {"version": 1, "name": d.name, "model": str(self.model_path), "data": str(self.data_path),
                "imgsz": self.imgsz, "seed": d.seed, "measure": d.measure.to_dict(),
                "stages": [{s.type.name: {"name": s.name, **s.resolved()}} for s in self.stages],
                "gate": dict(d.gate)}


def _stage_configs(kind: StageType, keys: Mapping[str, Any], where: str, imgsz: int, seed: int
                   ) -> tuple[dict[str, Any], str | None]:
    method = None
    if kind.method_parts:
        method = keys.get("method", "ptq")
        if method not in kind.method_parts:
            raise InputError(f"{where}.method: expected one of {', '.join(kind.method_parts)}, got {method!r}")
        allowed = kind.keys(method)
        for key in keys:
            if key not in allowed and any(key in kind.keys(m) for m in kind.method_parts):
                raise InputError(f"{where}.{key}: only with method: "
                                 f"{', '.join(m for m in kind.method_parts if key in kind.keys(m))}")
    allowed = kind.keys(method)
    check_keys(keys, list(allowed), where)
    configs = {}
    parts = kind.method_parts.get(method, tuple(kind.parts)) if method else tuple(kind.parts)
    for part in parts:
        config_type = kind.parts[part]
        names = {f.name for f in dataclasses.fields(config_type)}
        values = {k: v for k, v in kind.defaults.items() if k in names}
        values.update({k: v for k, v in (("imgsz", imgsz), ("seed", seed)) if k in names})
        for k, v in keys.items():
            if k == "method" or allowed[k][0] != part:
                continue
            default = values.get(k)  # a nested mapping adds to the stage's default one
            values[k] = {**default, **v} if isinstance(v, Mapping) and isinstance(default, Mapping) else v
        configs[part] = build_config(config_type, values, where)
    return configs, method


def _check_order(stages: list[StagePlan], wheres: list[str]) -> None:
    artifact = "torch"
    fused_by: str | None = None
    quantized_by: str | None = None
    for plan, where in zip(stages, wheres):
        kind = plan.type
        if kind.name == "quantize" and quantized_by:
            raise InputError(f"{where}: a recipe quantizes once; {quantized_by} already does")
        needs_torch = kind.takes == "torch" or plan.method == "qat"
        if needs_torch and artifact == "onnx":
            raise InputError(f"{where}: {kind.name} needs a PyTorch model, but an earlier stage "
                             f"({quantized_by or 'export'}) made an ONNX file")
        if kind.needs_unfused and fused_by:
            raise InputError(f"{where}: {kind.name} needs the BatchNorm layers, but {fused_by} fused them; "
                             f"prune before fusing")
        if kind.fuses:
            fused_by = f"stage {plan.name!r}"
        if kind.name == "quantize":
            quantized_by = f"stage {plan.name!r}"
        if kind.gives != "same":
            artifact = kind.gives


def _distill_configs(configs: Any) -> list[DistillConfig]:
    """The distillation settings a stage's configs hold: a ``DistillConfig`` itself (``distill``), one in a
    ``distill`` field (finetune, QAT) or in a nested fine-tune's (prune's ``finetune.distill``); a plain
    output-KD weight is not one."""
    found = []
    for c in configs:
        found += [c, getattr(c, "distill", None), getattr(getattr(c, "finetune", None), "distill", None)]
    return [kd for kd in found if isinstance(kd, DistillConfig)]


def _check_model(stages: tuple[StagePlan, ...], model: Any, imgsz: int, data: Any) -> None:
    """Checks against the real model: classes, stride, ``exclude`` selectors."""
    stride = max_stride(model)
    if imgsz % stride:
        raise InputError(f"recipe.imgsz: {imgsz} is not a multiple of the model's stride {stride}")
    if int(model.nc) != int(data.nc):
        raise InputError(f"the model predicts {model.nc} classes but the data set has {data.nc}")
    modules = {name: name for name, _ in model.named_modules() if name}
    for plan in stages:
        where = f"stages[{plan.index}].{plan.type.name}.exclude:"
        if plan.type.name == "prune" and plan.configs["config"].exclude:
            from yolocompress.compress.prune.graph import channel_graph
            from yolocompress.compress.prune.search import resolve_exclusions

            resolve_exclusions(channel_graph(model), plan.configs["config"].exclude, context=where)
        for kd in _distill_configs(plan.configs.values()):
            if kd.feature_layers and kd.method in ("feature", "both"):
                # the teacher is the input model; the student keeps its layers (pruning removes channels only)
                check_feature_layers(model, kd.feature_layers,
                                     f"model (stages[{plan.index}].{plan.type.name}.feature_layers)")
        if plan.type.name == "quantize":
            # ONNX node names are checked against the exported graph, when the stage builds its plan
            selectors = [s for s in plan.configs["quant"].exclude if not LayerSelector.parse(s).is_node_name]
            select_layers(selectors, modules, "layer of the model",
                          "module paths look like model.9.cv1, model.17.cv3.conv", context=where)


@dataclass(frozen=True)
class LoadedRecipe:
    """A :class:`RecipePlan` with what checking it loaded: the input model, its ``ModelInfo`` and the
    ``DataConfig`` (handed on so that the runner does not load them again)."""

    plan: RecipePlan
    model: Any
    info: Any
    data: Any


def plan_recipe(document: RecipeDocument, model: str | Path | None = None, data: str | Path | None = None
                ) -> LoadedRecipe:
    """Resolve ``document`` against its model and data (``model``/``data`` override the recipe's)."""
    from yolocompress.data.config import load_data_config
    from yolocompress.io.checkpoint import load_model_with_info

    model_path = Path(model) if model is not None else document.model
    data_path = Path(data) if data is not None else document.data
    if model_path is None:
        raise InputError("recipe.model: no model given (set model: in the recipe or pass --model)")
    if data_path is None:
        raise InputError("recipe.data: no data set given (set data: in the recipe or pass --data)")
    if not model_path.is_file():
        raise InputError(f"model file not found: {model_path}")
    if not data_path.is_file():
        raise InputError(f"data.yaml not found: {data_path}")
    if model_path.suffix.lower() == ".onnx":
        raise InputError(f"{model_path.name} is an ONNX model; a recipe starts from a .pt checkpoint")
    data_cfg = load_data_config(data_path)
    net, info = load_model_with_info(model_path)
    imgsz = document.imgsz or int(info.imgsz)
    stages: list[StagePlan] = []
    wheres: list[str] = []
    names: dict[str, str] = {}
    for index, (type_name, name, keys, where) in enumerate(document.stages):
        kind = stage_type(type_name, f"stages[{index}]")
        configs, method = _stage_configs(kind, keys, where, imgsz, document.seed)
        name = name or type_name
        if name in names:
            raise InputError(f"{where}: two stages are named {name!r} ({names[name]} and this one); give one a "
                             f"name: key")
        names[name] = where
        stages.append(StagePlan(index, kind, name, f"{index + 1:02d}-{name}", configs, method))
        wheres.append(where)
    _check_order(stages, wheres)
    plan = RecipePlan(document, model_path.resolve(), data_path.resolve(), imgsz, tuple(stages))
    _check_model(plan.stages, net, imgsz, data_cfg)
    if any(s.type.needs_unfused for s in stages):
        from yolocompress.compress.fuse import is_fused

        if is_fused(net):
            first = next(s for s in stages if s.type.needs_unfused)
            raise InputError(f"stages[{first.index}].{first.type.name}: the input model is fused (no BatchNorm "
                             f"left); start from the unfused checkpoint")
    return LoadedRecipe(plan, net, info, data_cfg)


__all__ = ["LoadedRecipe", "RecipePlan", "StagePlan", "plan_recipe"]
