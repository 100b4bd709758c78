"""Running an extras notebook in smoke mode from a test (not a test module itself)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import papermill as pm

from common.config import ROOT
from conftest import TEST_DATA, bundle_kernel


def run_extra(name: str, tmp: Path, **params):
    """Execute extras/<name>.ipynb with papermill (cwd inside the bundle); return the
    executed notebook and its summary.json. Results and runs stay inside `tmp`."""
    params.setdefault("results_dir", str(tmp / "results"))
    out = tmp / f"{name}.ipynb"
    pm.execute_notebook(str(ROOT / "extras" / f"{name}.ipynb"), str(out), parameters=params,
                        kernel_name=bundle_kernel(), cwd=str(tmp), progress_bar=False)
    summary = json.loads((Path(params["results_dir"]) / "summary.json").read_text())
    return nbformat.read(out, as_version=4), summary


def fashion_data_dir(fashion_system_dir: Path) -> str:
    """A writable data_dir (build/test-data) for a notebook that loads Fashion-MNIST.

    The notebook's load_dataset finds Debian's copy in its system folder by itself
    and caches the decoded arrays in this data_dir; nothing is copied here. The
    argument is the `fashion_system_dir` fixture, taken so that a test calling this
    must request the fixture: without Debian's dataset-fashion-mnist package the
    test then skips (or, under CI=true, fails) before a notebook starts."""
    if not Path(fashion_system_dir).is_dir():
        raise FileNotFoundError(f"{fashion_system_dir} is missing: pass the fashion_system_dir fixture")
    TEST_DATA.mkdir(parents=True, exist_ok=True)
    return str(TEST_DATA)


def outputs_text(nb) -> str:
    """Everything the executed notebook showed: streams and Markdown outputs."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "text/markdown" in out.get("data", {}):
                parts.append(out["data"]["text/markdown"])
    return "\n".join(parts)


def cleanup(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
