"""Compression recipes: YAML pipelines of stages, checked in full before any work, run resumably.

``load_recipe(recipe, overrides, model=None, data=None)`` parses a recipe file (or shipped recipe name),
applies ``--set``-style overrides and checks it against the real model and data (:mod:`.schema`,
:mod:`.plan`); ``run_recipe(loaded, out_dir)`` runs it (:mod:`.runner`) and writes the before/after report;
``dry_run(loaded)`` shows the resolved plan. The stage types a recipe can name live in :mod:`.stages`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from yolocompress.recipe.plan import LoadedRecipe, RecipePlan, StagePlan, plan_recipe
from yolocompress.recipe.runner import RecipeProgress, RecipeResult, dry_run, run_recipe
from yolocompress.recipe.schema import MeasureConfig, parse_recipe, shipped_recipes
from yolocompress.recipe.stages import STAGE_TYPES, StageType, register_stage


def load_recipe(recipe: str | Path, overrides: Sequence[str] = (), model: str | Path | None = None,
                data: str | Path | None = None) -> LoadedRecipe:
    """Parse and check a recipe (a YAML file or the name of a shipped one) against its model and data."""
    return plan_recipe(parse_recipe(recipe, overrides), model=model, data=data)


__all__ = ["LoadedRecipe", "MeasureConfig", "RecipePlan", "RecipeProgress", "RecipeResult", "STAGE_TYPES",
           "StagePlan", "StageType", "dry_run", "load_recipe", "parse_recipe", "plan_recipe", "register_stage",
           "run_recipe", "shipped_recipes"]
