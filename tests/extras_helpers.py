"""Running an extras notebook in smoke mode from a test (not a test module itself)."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import nbformat
import papermill as pm

from common.runtime import ROOT
from conftest import TEST_DATA, bundle_kernel


def bundle_tmpdir(prefix: str) -> Path:
    """A scratch folder inside build/: the notebook's bootstrap cell finds the bundle
    from its working directory."""
    (ROOT / "build").mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=ROOT / "build"))


def run_extra(name: str, tmp: Path, **params):
    """Execute extras/<name>.ipynb with papermill (cwd inside the bundle); return the
    executed notebook and its summary.json. Results and runs stay inside `tmp`."""
    params.setdefault("results_dir", str(tmp / "results"))
    out = tmp / f"{name}.ipynb"
    pm.execute_notebook(str(ROOT / "extras" / f"{name}.ipynb"), str(out), parameters=params,
                        kernel_name=bundle_kernel(), cwd=str(tmp), progress_bar=False)
    summary = json.loads((Path(params["results_dir"]) / "summary.json").read_text())
    return nbformat.read(out, as_version=4), summary


def data_dir_for(fashion_system_dir) -> str:
    """A writable data_dir: load_dataset finds Debian's copy and caches it here."""
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
