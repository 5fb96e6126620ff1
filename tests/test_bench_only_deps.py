"""Packages that only the benchmarks use (pyproject's ``bench`` extra) stay out of the package: no module
under ``yolocompress/`` imports them, at the top or inside a function, so ``pip install yolocompress`` never
needs them."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_ONLY = {"torch_pruning"}


def imported_packages(source: str) -> set[str]:
    """Top-level package names of every absolute import in ``source``."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imported_packages_sees_nested_imports():
    src = ("def f():\n    import torch_pruning as tp\n    from torch_pruning.pruner import x\n"
           "from . import y\n")
    assert imported_packages(src) == {"torch_pruning"}


def test_no_module_of_the_package_imports_a_bench_only_package():
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p.read_text("utf-8")) & BENCH_ONLY)
                 for p in sorted((ROOT / "yolocompress").rglob("*.py"))}
    assert not {k: v for k, v in offenders.items() if v}


def test_bench_extra_pins_torch_pruning_and_runtime_deps_do_not_name_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "torch-pruning==1.6.1" in project["optional-dependencies"]["bench"]
    assert not any(d.lower().startswith(("torch-pruning", "torch_pruning")) for d in project["dependencies"])
