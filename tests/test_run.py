"""The papermill runner (common.tools.run) on small notebooks made in the test."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from common.tools import run
from common.config import ROOT
from conftest import bundle_kernel, bundle_tmpdir

BOOTSTRAP = (ROOT / "common" / "bootstrap_cell.py").read_text()


def make_notebook(path: Path, body: str) -> Path:
    """A notebook in the bundle's shape: bootstrap, parameters, then `body`."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        'results_dir = "results"  # where summary.json goes\n'
        'smoke = False            # tiny run\n'
        'scale = 1                # multiplies the answer\n')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Mini"), nbformat.v4.new_code_cell(BOOTSTRAP),
                params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


GOOD = """import time
from common.config import make_config, write_summary
config = make_config(dict(results_dir=results_dir, smoke=smoke, scale=scale), notebook="Mini")
write_summary(config, {"answer": 42 * scale}, started=time.time())
"""


@pytest.fixture
def bundle_tmp():
    path = bundle_tmpdir("test-run-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_profile(tmp_path, text):
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path


def test_runner_executes_notebook_with_profile_and_overrides(bundle_tmp):
    tmp_path = bundle_tmp
    nb = make_notebook(tmp_path / "Mini" / "Mini.ipynb", GOOD)
    profile = write_profile(tmp_path, "defaults: {smoke: true, device: cpu}\nnotebooks: {}\n")
    build = tmp_path / "build"
    args = ["--profile", str(profile), "--build-dir", str(build), "--runs-dir", str(tmp_path / "runs"),
            "--set", "scale=3", str(nb)]
    if bundle_kernel():
        args += ["--kernel", bundle_kernel()]
    assert run.main(args) == 0
    out = build / run.notebook_id(nb)  # mirrors the notebook's place in the bundle
    executed = nbformat.read(out, as_version=4)
    # papermill injected only the declared parameters (device is not declared).
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert "scale = 3" in injected.source and "smoke = True" in injected.source
    assert "device" not in injected.source
    summary = json.loads((out.parent / "results" / "summary.json").read_text())
    assert summary["results"] == {"answer": 126}
    assert summary["smoke"] is True
    assert summary["config"]["results_dir"] == str(out.parent / "results")
    assert summary["environment"]["torch"]
    # The source notebook is never written.
    assert not nbformat.read(nb, as_version=4).cells[1].get("outputs")


def test_runner_names_the_failing_notebook_and_cell(bundle_tmp, capsys):
    tmp_path = bundle_tmp
    nb = make_notebook(tmp_path / "Bad" / "Bad.ipynb", "raise ValueError('broken on purpose')")
    profile = write_profile(tmp_path, "defaults: {}\n")
    code = run.main(["--profile", str(profile), "--build-dir", str(tmp_path / "build"), str(nb)]
                    + (["--kernel", bundle_kernel()] if bundle_kernel() else []))
    assert code == 1
    err = capsys.readouterr().err
    assert "Bad/Bad.ipynb failed in cell" in err and "ValueError: broken on purpose" in err
    assert (tmp_path / "build" / run.notebook_id(nb)).is_file()  # kept for inspection


def test_parameter_priority(tmp_path):
    profile = {"name": "smoke", "defaults": {"smoke": True, "epochs": 40},
               "notebooks": {"Q2/Q2.ipynb": {"epochs": 2}}}
    params = run.notebook_parameters(profile, ROOT / "Q2" / "Q2.ipynb", "data", {"seed": 5},
                                     build_dir=tmp_path / "b", runs_root=tmp_path / "r")
    assert params["epochs"] == 2 and params["seed"] == 5 and params["smoke"] is True
    assert params["results_dir"] == str(tmp_path / "b" / "Q2" / "results")
    assert params["runs_dir"] == str(tmp_path / "r" / "smoke" / "Q2")


def test_notebooks_sharing_a_folder_get_their_own_outputs(tmp_path):
    profile = {"name": "full", "defaults": {}, "notebooks": {}}
    a, b = (run.notebook_parameters(profile, ROOT / "extras" / f"{n}.ipynb", "data", {},
                                    build_dir=tmp_path, runs_root=tmp_path / "r")
            for n in ("numpy_mlp", "fashion_mnist"))
    assert a["results_dir"] == str(tmp_path / "extras" / "numpy_mlp" / "results")
    assert b["runs_dir"] == str(tmp_path / "r" / "full" / "extras" / "fashion_mnist")


def test_mistyped_set_key_is_an_error(bundle_tmp, capsys):
    nb = make_notebook(bundle_tmp / "Mini" / "Mini.ipynb", GOOD)
    profile = write_profile(bundle_tmp, "defaults: {}\n")
    assert run.main(["--profile", str(profile), "--build-dir", str(bundle_tmp / "build"),
                     "--set", "scael=3", str(nb)]) == 1
    err = capsys.readouterr().err
    assert "--set scael: no selected notebook declares it" in err and "scale" in err
    assert not (bundle_tmp / "build").exists()  # refused before anything ran


def test_set_values_keep_their_types():
    assert run.parse_sets(["epochs=5", "fractions=[0.1, 0.5]", "amp=false", "device=cuda"]) == {
        "epochs": 5, "fractions": [0.1, 0.5], "amp": False, "device": "cuda"}
    with pytest.raises(run.RunError, match="expected key=value"):
        run.parse_sets(["epochs"])


def test_bad_profile_and_kernel_errors(tmp_path):
    with pytest.raises(run.RunError, match="known profiles: profiles/full.yaml"):
        run.load_profile(tmp_path / "nope.yaml")
    with pytest.raises(run.RunError, match="unknown top-level keys"):
        run.load_profile(write_profile(tmp_path, "default: {}\n"))
    with pytest.raises(run.RunError, match="no Jupyter kernel named 'no-such-kernel'"):
        run.check_kernel("no-such-kernel")


def test_shipped_profiles_load():
    for path in (ROOT / "profiles").glob("*.yaml"):
        profile = run.load_profile(path)
        assert isinstance(profile["defaults"], dict)
