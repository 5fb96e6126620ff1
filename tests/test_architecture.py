"""The package's imports run one way: no import cycles between modules, no ``_private`` name imported from
another module, and no import against the layer order of docs/architecture.md. The imports are read from the
source with ``ast`` (those inside functions too); imports under ``if TYPE_CHECKING:`` are annotations only
and count for the layer order but not as cycles."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "yolocompress"

# Lowest first: a module may import from its own layer or a lower one, never a higher one.
LAYERS = ("errors", "progress", "yamlfile", "models", "io", "data", "export", "profile", "engine", "compress",
          "report", "recipe", "demo", "cli", "__main__")


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return inside


def _imports(modules: dict[str, Path]) -> list[tuple[str, str, str, bool]]:
    """``(importer, imported module, imported name or "", type-checking only)`` for every import."""
    out = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != "yolocompress":
                    continue
                for alias in node.names:
                    target = f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    out.append((name, target, "" if target != source else alias.name, id(node) in typing_only))
            elif isinstance(node, ast.Import):
                out += [(name, a.name, "", id(node) in typing_only) for a in node.names
                        if a.name.split(".")[0] == "yolocompress"]
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = _imports(MODULES)


def test_every_module_is_in_a_layer():
    unknown = {_layer(m) for m in MODULES if _layer(m) and _layer(m) not in LAYERS}
    assert not unknown, f"add these packages to LAYERS and docs/architecture.md: {sorted(unknown)}"


def layer_violations(imports: list[tuple[str, str, str, bool]]) -> list[str]:
    """Imports against ``LAYERS`` (or of anything but ``__version__`` from the package root)."""
    wrong = []
    for importer, target, name, _ in imports:
        low, high = _layer(target), _layer(importer)
        if not low:  # the package root: only its version string, not the lazy exports of every layer
            if name != "__version__":
                wrong.append(f"{importer} imports {name or target} from the package root")
            continue
        if high and LAYERS.index(low) > LAYERS.index(high):
            wrong.append(f"{importer} ({high}) imports {target} ({low})")
    return sorted(set(wrong))


def private_imports(imports: list[tuple[str, str, str, bool]]) -> list[str]:
    """``_private`` names imported from another module."""
    return [f"{importer} imports {name} from {target}" for importer, target, name, _ in imports
            if name.startswith("_") and not name.startswith("__") and target != importer]


def import_cycles(modules: dict[str, Path], imports: list[tuple[str, str, str, bool]]) -> list[list[str]]:
    """Strongly connected components of more than one module in the import graph."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for importer, target, _, typing_only in imports:
        if not typing_only and target in modules and target != importer:
            graph[importer].add(target)
    # a cycle through a package's __init__ re-exporting its own modules is not one: skip init -> child edges
    for module in modules:
        graph[module] = {t for t in graph[module] if not t.startswith(module + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return cycles


def test_no_import_against_the_layer_order():
    wrong = layer_violations(IMPORTS)
    assert not wrong, "\n".join(wrong)


def test_no_private_name_imported_from_another_module():
    wrong = private_imports(IMPORTS)
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    cycles = import_cycles(MODULES, IMPORTS)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_catch_a_cycle_an_upward_import_and_a_private_import(tmp_path):
    pkg = tmp_path / "yolocompress"
    for rel, text in {"__init__.py": "", "models/__init__.py": "", "compress/__init__.py": "",
                      "models/a.py": "from yolocompress.compress.b import thing\n",
                      "compress/b.py": "def f():\n    from yolocompress.models.a import _hidden\n"}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    modules = {_module_name(p, pkg): p for p in sorted(pkg.rglob("*.py"))}
    imports = _imports(modules)
    assert layer_violations(imports) == ["yolocompress.models.a (models) imports yolocompress.compress.b (compress)"]
    assert private_imports(imports) == ["yolocompress.compress.b imports _hidden from yolocompress.models.a"]
    assert import_cycles(modules, imports) == [["yolocompress.compress.b", "yolocompress.models.a"]]


def test_the_checks_see_the_imports():
    """The walk finds real imports (a check that reads nothing would pass vacuously)."""
    assert len(MODULES) > 80 and len(IMPORTS) > 300
    assert ("yolocompress.recipe.runner", "yolocompress.report.pipeline", "pipeline_markdown", False) in IMPORTS
    assert ("yolocompress.engine.callbacks", "yolocompress.engine.trainer", "Trainer", True) in IMPORTS


def test_every_top_level_export_resolves_to_its_module():
    import importlib

    import yolocompress

    for name in yolocompress.__all__:
        value = getattr(yolocompress, name)
        if name != "__version__":
            assert getattr(importlib.import_module(yolocompress._EXPORTS[name]), name) is value
    assert {"prune_model", "quantize_ptq", "quantize_qat", "run_recipe", "StageReport"} <= set(yolocompress.__all__)


def test_the_compression_entry_points_and_their_configs_are_exported_at_the_top_level():
    import yolocompress

    for name in ("prune_model", "quantize_ptq", "quantize_qat", "distill_model", "finetune", "fuse_stage",
                 "run_recipe", "PruneConfig", "QuantConfig", "QatConfig", "DistillConfig", "FinetuneConfig"):
        assert name in yolocompress.__all__, name
        assert callable(getattr(yolocompress, name)), name
