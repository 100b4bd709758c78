"""The package's shape: imports flow one way, modules and functions stay readable.

Data flows parameters -> config -> data -> model -> fit -> history on disk ->
figures, tables and text; the imports follow the same direction. These tests read
the source (ast), so they check every module without importing any.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "common"
MAX_MODULE_LINES = 360  # "about 350": a module read at one sitting
MAX_FUNCTION_LINES = 60
MAX_BOOTSTRAP_LINES = 12


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
           if "__pycache__" not in p.parts and p.name != "bootstrap_cell.py"}
CORE = {m for m in MODULES if not m.startswith(("common.tools", "common.extras")) and m != "common"}


def imported_modules(name: str) -> set[str]:
    """The common.* modules that `name` imports, anywhere in its source."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    # Imports for type hints count too: a cycle through them is still two modules that
    # cannot be read apart.
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from . import models`
    return {m for m in found if m in MODULES and m != name and m != "common"}


GRAPH = {m: imported_modules(m) for m in MODULES}


def test_there_is_no_import_cycle():
    state: dict[str, str] = {}

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(GRAPH[m]):
            if state.get(n) == "open":
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])


def test_the_core_never_imports_the_tools_or_the_extras():
    bad = {m: sorted(n for n in GRAPH[m] if n.startswith(("common.tools", "common.extras")))
           for m in CORE}
    assert not {m: v for m, v in bad.items() if v}


@pytest.mark.parametrize("builder", ["common.models", "common.transfer", "common.weights"])
def test_what_builds_a_model_imports_no_training_code(builder):
    training = {"common.train", "common.optim", "common.checkpoints", "common.experiments",
                "common.plan"}
    assert not GRAPH[builder] & training


@pytest.mark.parametrize("text", ["common.plots", "common.observations"])
def test_figures_and_text_take_histories_not_models(text):
    assert not GRAPH[text] & {"common.models", "common.transfer", "common.train",
                              "common.experiments", "common.checkpoints"}


@pytest.mark.parametrize("name", sorted(CORE))
def test_core_modules_and_functions_stay_readable(name):
    source = MODULES[name].read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{name} has grown past ~350 lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{name}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_the_bootstrap_cell_is_short():
    lines = (PACKAGE / "bootstrap_cell.py").read_text().strip().splitlines()
    assert len(lines) <= MAX_BOOTSTRAP_LINES


def test_the_graph_sees_real_imports():
    # A parser that found nothing would pass every test above.
    assert "common.train" in GRAPH["common.experiments"]
    assert "common.models" in GRAPH["common.transfer"]


def test_q2s_networks_never_depend_on_q3s_module():
    # Q3 registers its torchvision models in the one registry itself.
    assert "common.transfer" not in GRAPH["common.models"]
    assert not GRAPH["common.recipes"] & {"common.transfer", "common.transfer_runs",
                                          "common.transfer_data"}


def test_no_module_imports_anothers_private_names():
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] != "__future__":
                found += [f"{name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert not found, found
    assert "common.files" in GRAPH["common.checkpoints"]
