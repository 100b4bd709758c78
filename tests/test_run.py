"""The papermill runner (common.tools.run) on small notebooks made in the test."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
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
    out = tmp_path / "build" / run.notebook_id(nb)
    assert out.with_name("Bad.failed.ipynb").is_file() and not out.exists()  # kept for inspection


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


def test_set_values_read_as_the_parameters_cell_reads_them():
    """YAML 1.1 reads 1e-4 as a string; the notebook's own Python reads a float."""
    assert run.parse_sets(["lr_sgd=1e-4", "lr_adam=1e6", "device='cuda'", "amp=True",
                           "models_a=[vgg16, resnet18]", "fractions=[1e-1, 0.5]"]) == {
        "lr_sgd": 1e-4, "lr_adam": 1e6, "device": "cuda", "amp": True,
        "models_a": ["vgg16", "resnet18"], "fractions": [0.1, 0.5]}
    assert isinstance(run.parse_sets(["lr_sgd=1e-4"])["lr_sgd"], float)


def test_an_unclosed_list_is_one_line_naming_the_parameter_and_the_fix():
    with pytest.raises(run.RunError) as err:
        run.parse_sets(run.split_sets("models_a=[vgg16"))
    text = str(err.value)
    assert "\n" not in text and text.startswith("--set models_a=[vgg16: not a value (line 1")
    assert "each bracket closed" in text
    with pytest.raises(run.RunError, match="expected key=value .*SET=\"models_b=\\[") as err:
        run.parse_sets(["resnet18]"])  # what make's old word splitting passed on


def test_make_passes_a_set_with_spaces_whole_and_the_runner_splits_it(capsys):
    assert run.split_sets(" models_a=[vgg16, resnet18]  lr_sgd=1e-4 device='c u' ") == [
        "models_a=[vgg16, resnet18]", "lr_sgd=1e-4", "device='c u'"]
    made = subprocess.run(["make", "-n", "smoke", "SET=models_a=[vgg16, resnet18] epochs=3",
                           "DATA_DIR=my data"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "--sets 'models_a=[vgg16, resnet18] epochs=3'" in made and "--data-dir 'my data'" in made
    assert run.main(["--check", "--profile", str(ROOT / "profiles" / "smoke.yaml"),
                     "--sets", "models_a=[vgg16, resnet18] lr_sgd=1e-4"]) == 0


def test_a_profile_with_an_empty_notebooks_key_works(tmp_path):
    path = write_profile(tmp_path, "defaults:\n  smoke: true\n  lr_sgd: 1e-4\nnotebooks:\n")
    profile = run.load_profile(path)
    assert profile["notebooks"] == {} and profile["defaults"] == {"smoke": True, "lr_sgd": 1e-4}
    params = run.notebook_parameters(profile, ROOT / "Q2" / "Q2.ipynb", "data", {},
                                     build_dir=tmp_path, runs_root=tmp_path)
    assert params["smoke"] is True
    assert run.notebook_defaults(ROOT / "Q2" / "Q2.ipynb", path)["lr_sgd"] == 1e-4
    path.write_text("defaults:\nnotebooks:\n  Q2/Q2.ipynb:\n")  # empty entries too
    assert run.load_profile(path)["notebooks"] == {"Q2/Q2.ipynb": {}}


@pytest.mark.parametrize("text, says", [
    ("defaults: {smoke: true\n", "is not valid YAML (line 2, column 1: expected ',' or '}'"),
    ("- smoke\n", "expected the keys 'defaults' and 'notebooks', found list"),
    ("defaults: [smoke]\n", "'defaults' must hold 'name: value' lines"),
    ("notebooks:\n  Q2/Q2.ipynb: 5\n", "notebooks: Q2/Q2.ipynb must hold 'parameter: value'"),
])
def test_a_malformed_profile_is_one_line(tmp_path, capsys, text, says):
    path = write_profile(tmp_path, text)
    assert run.main(["--check", "--profile", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ERROR: profile {path}") and says in err and "\n" not in err


def test_make_plan_with_a_missing_or_malformed_profile_is_one_line(tmp_path):
    bad = write_profile(tmp_path, "defaults: {smoke: true\n")
    for profile, says in ((bad, "is not valid YAML"), (tmp_path / "nope.yaml", "not found")):
        done = subprocess.run(["make", "-o", ".venv/.requirements-stamp", "plan",
                               f"PROFILE={profile}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert f"ERROR: profile {profile}" in done.stderr and says in done.stderr
        assert "common.tools.plan" not in done.stdout  # stopped before planning


def test_a_data_dir_that_is_a_file_says_so(tmp_path, capsys):
    (tmp_path / "data").write_text("not a folder")
    assert run.main(["--check", "--profile", str(ROOT / "profiles" / "smoke.yaml"),
                     "--data-dir", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"ERROR: DATA_DIR={tmp_path / 'data'} is a file, not a folder: set DATA_DIR "
                   "(--data-dir) to the folder that holds the datasets or will receive them, e.g. "
                   "DATA_DIR=data")


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


# --- a failed run keeps the good one; the terminal shows the notebook, once ---------------

def run_mini(tmp, nb, scale: int) -> int:
    return run.main(["--profile", str(write_profile(tmp, "defaults: {}\n")), "--build-dir",
                     str(tmp / "build"), "--sets", f"scale={scale}", str(nb)]
                    + (["--kernel", bundle_kernel()] if bundle_kernel() else []))


def test_a_failed_run_never_replaces_a_good_executed_notebook(bundle_tmp, capfd):
    body = GOOD + "import warnings\nwarnings.warn('careful')\nassert scale < 100, 'too big'\n"
    nb = make_notebook(bundle_tmp / "Mini" / "Mini.ipynb", body)
    out = bundle_tmp / "build" / run.notebook_id(nb)
    summary = out.parent / "results" / "summary.json"
    assert run_mini(bundle_tmp, nb, 2) == 0
    first = capfd.readouterr()
    assert (first.out + first.err).count("UserWarning: careful") == 1  # once, not twice
    assert "without encryption" not in first.out + first.err  # the kernel's own log: quiet
    good, good_summary = out.read_bytes(), summary.read_bytes()
    assert run_mini(bundle_tmp, nb, 200) == 1  # one typo later
    err = capfd.readouterr().err
    assert "failed in cell" in err and "AssertionError: too big" in err
    assert f"The failed copy is {out.with_name('Mini.failed.ipynb')}; the last good run, {out}, " \
           "and its results are kept" in err
    assert out.read_bytes() == good and summary.read_bytes() == good_summary
    assert json.loads((out.parent / "results.failed" / "summary.json").read_text())[
        "results"] == {"answer": 8400}
    assert run_mini(bundle_tmp, nb, 3) == 0  # a good run again: the failed copies go
    assert not out.with_name("Mini.failed.ipynb").exists()
    assert not (out.parent / "results.failed").exists()
    assert not (out.parent / "results.previous").exists()


def test_ctrl_c_is_one_line_and_keeps_what_was_done(bundle_tmp):
    nb = make_notebook(bundle_tmp / "Slow" / "Slow.ipynb",
                       "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    args = [sys.executable, "-m", "common.tools.run", "--profile",
            str(write_profile(bundle_tmp, "defaults: {}\n")), "--build-dir",
            str(bundle_tmp / "build"), str(nb)] + (["--kernel", bundle_kernel()] if bundle_kernel() else [])
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,  # Ctrl-C reaches its group
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if "started" in line:
            break
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in err and "ZMQ" not in err and "Error" not in err
    assert [l for l in err.splitlines() if l.strip()] == [next(
        l for l in err.splitlines() if l.startswith("INTERRUPTED: "))]
    assert "interrupted (Ctrl-C)" in err and "the same command resumes" in err
    assert (bundle_tmp / "build" / run.notebook_id(nb)).with_name("Slow.failed.ipynb").is_file()
