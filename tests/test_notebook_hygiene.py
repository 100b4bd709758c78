"""Static checks of the committed notebooks: stripped outputs, the shared first
cell, a tagged parameters cell with commented constants."""
from __future__ import annotations

import ast
import subprocess

import nbformat
import pytest

from common.config import ROOT

BOOTSTRAP = (ROOT / "common" / "bootstrap_cell.py").read_text()


def committed_notebooks() -> tuple[list, bool]:
    """Notebooks git tracks (plus untracked ones outside build/, while developing),
    and whether this is a git checkout at all."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                              "*.ipynb"], cwd=ROOT, capture_output=True, text=True, check=True)
        paths, in_git = [ROOT / p for p in out.stdout.split()], True
    except (OSError, subprocess.CalledProcessError):
        paths, in_git = list(ROOT.glob("*/*.ipynb")), False
    return sorted(p for p in paths if p.is_file() and "build" not in p.parts), in_git


NOTEBOOKS, IN_GIT = committed_notebooks()


def test_every_notebook_make_runs_is_committed():
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")  # join continued lines
    line = next(l for l in makefile.splitlines() if l.startswith("NOTEBOOKS"))
    listed = line.split("=", 1)[1].split()
    assert listed, "the Makefile's NOTEBOOKS list is empty"
    assert {ROOT / p for p in listed} <= set(NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_notebook_has_no_outputs(path):
    if not IN_GIT:
        pytest.skip("not a git checkout: an unzipped submission ships the executed notebooks")
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; strip them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_first_code_cell_is_the_shared_bootstrap(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.source.strip() == BOOTSTRAP.strip(), (
        f"{path.name}: the first code cell must be common/bootstrap_cell.py verbatim")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_parameters_cell_is_plain_commented_constants(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    for node in ast.parse(tagged[0].source).body:
        assert isinstance(node, ast.Assign), f"{path.name}: parameters cell holds only assignments"
        ast.literal_eval(node.value)  # constants only: papermill overrides them textually
    for line in tagged[0].source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, f"{path.name}: parameter line without a comment: {line!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_papermill_sees_every_parameter(path):
    """papermill's parser silently drops a line it cannot read (e.g. a comment
    holding '='), and that parameter can then never be overridden."""
    import papermill as pm

    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = {t.id for node in ast.parse(cell.source).body for t in node.targets}
    assert assigned == set(pm.inspect_notebook(str(path)))
