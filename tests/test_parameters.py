"""The notebooks' parameters are gathered by name (common.config.notebook_parameters,
as nanoGPT's config_keys), never retyped, and each setup cell stays short."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from common.config import notebook_parameters
from common.tools.run import notebook_defaults
from conftest import ROOT

NOTEBOOKS = ["Q2/Q2.ipynb", "Q3/Q3.ipynb"]


def cells(notebook: str) -> list[dict]:
    return json.loads((ROOT / notebook).read_text())["cells"]


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_gathered_parameters_are_exactly_the_parameters_cells(notebook):
    params = next(c for c in cells(notebook) if "parameters" in c["metadata"].get("tags", []))
    # What the first cell and IPython bind before it: paths, modules, functions, its history.
    namespace = {"__name__": "__main__", "In": ["", "x = 1"], "Out": {}, "_": None, "os": os,
                 "sys": sys, "Path": Path, "COLAB": Path("/content"), "places": [Path("/")],
                 "found": [ROOT], "BUNDLE": ROOT, "get_ipython": lambda: None}
    exec("".join(params["source"]), namespace)  # noqa: S102 (the notebook's own constants)
    namespace["device"] = "cuda"  # papermill's injected cell overrides a value: it is kept
    gathered = notebook_parameters(namespace)
    defaults = notebook_defaults(ROOT / notebook)
    assert list(gathered) == list(defaults)
    assert gathered == {**defaults, "device": "cuda"}


def test_only_plain_constants_are_parameters():
    namespace = {"lr": 0.1, "models": ["vgg16"], "options": {"a": [1, None]}, "flag": True,
                 "path": Path("x"), "paths": [Path("x")], "mixed": {"a": Path("x")},
                 "_private": 1, "In": ["a"], "Out": {}, "module": os, "function": len}
    assert notebook_parameters(namespace) == {"lr": 0.1, "models": ["vgg16"],
                                              "options": {"a": [1, None]}, "flag": True}


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_one_short_setup_cell_gathers_them(notebook):
    code = [c for c in cells(notebook) if c["cell_type"] == "code"]
    setup = code[2]  # after the first cell (the bundle) and the parameters cell
    source = "".join(setup["source"])
    assert "notebook_parameters(globals())" in source
    assert len(source.splitlines()) < 40 and max(map(len, source.splitlines())) <= 110
    others = "".join("".join(c["source"]) for c in code[3:])
    assert "make_config(" not in others and "common.tools" not in source + others
