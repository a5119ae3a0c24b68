"""The library's architecture, read from its source (AST; nothing is imported): layers, no private reach-ins,
no import cycles, module and function sizes, no module named like the standard library's.

The layers, each importing only those before it: core < data < models < engine < stats < stages < book.
A stage imports no other stage; the book layer imports stage packages only by the names the configuration
gives (no static import).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from functools import cache
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib" / "rmvalues"
LAYERS = ("core", "data", "models", "engine", "stats", "stages", "book")
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 100
#: A function may exceed MAX_FUNCTION_LINES only with this comment in its first lines, saying why.
LONG_FUNCTION_MARK = "# long function:"


@dataclass
class Module:
    name: str  # rmvalues.core.paths
    path: Path
    tree: ast.Module
    imports: list[tuple[str, int]] = field(default_factory=list)  # (imported rmvalues module, line)
    private_uses: list[tuple[str, str, int]] = field(default_factory=list)  # (module, private name, line)

    @property
    def layer(self) -> str:
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "top"

    @property
    def stage(self) -> str | None:
        parts = self.name.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "stages" else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(LIB.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([target] if target else [])])


@cache
def modules() -> dict[str, Module]:
    out: dict[str, Module] = {}
    for path in sorted(LIB.rglob("*.py")):
        name = _module_name(path)
        out[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8")))
    for mod in out.values():
        _collect(mod, out)
    return out


def _collect(mod: Module, known: dict[str, Module]) -> None:
    is_package = mod.path.name == "__init__.py"
    aliases: dict[str, str] = {}  # local name -> rmvalues module it is bound to
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("rmvalues"):
                    mod.imports.append((a.name, node.lineno))
                    aliases[a.asname or a.name.split(".")[0]] = a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and not (node.module or "").startswith("rmvalues"):
                continue
            target = (
                node.module if node.level == 0 else _resolve(mod.name, is_package, node.level, node.module)
            )
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in known:  # `from . import figures`: a submodule
                    mod.imports.append((sub, node.lineno))
                    aliases[a.asname or a.name] = sub
                else:
                    mod.imports.append((target, node.lineno))
                    if a.name.startswith("_") and not a.name.startswith("__") and target != mod.name:
                        mod.private_uses.append((target, a.name, node.lineno))
    for node in ast.walk(mod.tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            mod.private_uses.append((aliases[node.value.id], node.attr, node.lineno))


def _layer_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "top"


def test_the_library_has_the_layered_packages():
    names = set(modules())
    for layer in LAYERS:
        assert f"rmvalues.{layer}" in names, f"missing package rmvalues.{layer}"
    stages = {m.stage for m in modules().values() if m.stage}
    assert {"corpora", "scoring", "implicit", "training", "rm_statistics"} <= stages


def test_layers_import_only_the_layers_below_them():
    problems = []
    for mod in modules().values():
        if mod.layer == "top":
            continue
        allowed = set(LAYERS[: LAYERS.index(mod.layer) + 1])
        for target, line in mod.imports:
            layer = _layer_of(target)
            if layer == "top" and target == "rmvalues":
                continue
            if layer not in allowed:
                problems.append(f"{mod.name}:{line} ({mod.layer}) imports {target} ({layer})")
    assert problems == []


def test_a_stage_never_imports_another_stage_and_the_book_imports_none():
    problems = []
    for mod in modules().values():
        for target, line in mod.imports:
            parts = target.split(".")
            if len(parts) > 2 and parts[1] == "stages":
                if mod.layer == "book":
                    problems.append(f"{mod.name}:{line} imports the stage {target} (use the configuration)")
                elif mod.stage is not None and parts[2] != mod.stage:
                    problems.append(f"{mod.name}:{line} (stage {mod.stage}) imports {target}")
    assert problems == []


def test_no_module_touches_another_modules_private_names():
    problems = [
        f"{mod.name}:{line} uses {target}.{name}"
        for mod in modules().values()
        for target, name, line in mod.private_uses
        if target != mod.name
    ]
    assert problems == []


def test_there_are_no_import_cycles():
    graph = {
        name: {t for t, _ in mod.imports if t in modules() and t != name} for name, mod in modules().items()
    }
    # a package's __init__ re-exporting its own submodules is not a cycle of the code's logic
    for name in graph:
        graph[name] = {t for t in graph[name] if not (name.startswith(t + ".") and t in graph)}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_modules_and_functions_stay_small():
    problems = []
    for mod in modules().values():
        lines = mod.path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_MODULE_LINES:
            problems.append(f"{mod.name}: {len(lines)} lines (max {MAX_MODULE_LINES})")
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                head = "\n".join(lines[node.lineno - 1 : node.lineno + 15])
                if n > MAX_FUNCTION_LINES and LONG_FUNCTION_MARK not in head:
                    problems.append(f"{mod.name}.{node.name}: {n} lines (max {MAX_FUNCTION_LINES})")
    assert problems == []


def test_no_module_is_named_like_a_standard_library_module():
    clashes = sorted(
        f"{mod.name} ({mod.path.relative_to(LIB.parent)})"
        for mod in modules().values()
        if mod.name.split(".")[-1] in sys.stdlib_module_names
    )
    assert clashes == []


def test_the_checks_catch_what_they_should(tmp_path, monkeypatch):
    """The graph reader sees relative imports, private names and submodule imports."""
    pkg = tmp_path / "rmvalues"
    (pkg / "stages" / "a").mkdir(parents=True)
    (pkg / "core").mkdir()
    for f in ("__init__.py", "stages/__init__.py", "stages/a/__init__.py", "core/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "core" / "paths.py").write_text("def _hidden():\n    pass\n")
    (pkg / "stages" / "a" / "run.py").write_text(
        "from ...core.paths import _hidden\nfrom ...core import paths\nfrom ...stages.b import x\n"
        "paths._hidden()\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "LIB", pkg)
    modules.cache_clear()
    try:
        mod = modules()["rmvalues.stages.a.run"]
        assert ("rmvalues.core.paths", "_hidden", 1) in mod.private_uses
        assert ("rmvalues.core.paths", "_hidden", 4) in mod.private_uses
        assert ("rmvalues.stages.b", 3) in mod.imports
    finally:
        modules.cache_clear()


_ROOT = Path(__file__).resolve().parents[1]


def test_no_merge_conflict_markers():
    """No file the project tracks keeps a merge's conflict markers (Python would accept them in a docstring)."""
    import subprocess

    files = subprocess.run(
        ["git", "ls-files"], cwd=_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    marked = [
        f
        for f in files
        if f.endswith((".py", ".md", ".yaml", ".yml", ".ipynb", ".txt", ".toml", ".cfg", ".cff"))
        and (_ROOT / f).is_file()
        and any(
            line.startswith(("<<<<<<< ", ">>>>>>> "))
            for line in (_ROOT / f).read_text(errors="replace").splitlines()
        )
    ]
    assert marked == []


#: Objects of other libraries that a stage may probe with ``getattr(obj, name, default)``: attributes that
#: differ between tokenizer and model classes of ``transformers``, not the library's own objects.
FOREIGN_GETATTR = {"tokenizer", "model.config.get_text_config()"}


def silent_getattrs(source: str) -> list[str]:
    """``getattr(obj, name, default)`` calls on anything but :data:`FOREIGN_GETATTR`, as ``line: call``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) == 3
            and ast.unparse(node.args[0]) not in FOREIGN_GETATTR
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_stages_read_no_attribute_with_a_silent_default():
    """Issues 16 and 17: a finding or a table that reads an attribute the result does not have must fail,
    not print a blank (``getattr(res.spec, "method", "")`` hid that the grid has no such field)."""
    assert silent_getattrs('x = getattr(res, "spec", None)\ny = getattr(tokenizer, "a", {})') == [
        "1: getattr(res, 'spec', None)"
    ]
    found = {
        str(path.relative_to(LIB)): hits
        for path in sorted((LIB / "stages").rglob("*.py"))
        if (hits := silent_getattrs(path.read_text(encoding="utf-8")))
    }
    assert found == {}, f"getattr with a default on the library's own objects: {found}"
