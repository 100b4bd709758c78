"""The notebooks' first cell (common/bootstrap_cell.py) under a simulated Colab
(tests/fake_colab.py): which bundle it chooses, why, and when it refuses.

Each test runs the cell's exact text in a fresh Python process, away from the
real bundle. The whole journey, notebooks included, is test_colab_journey.py.
"""
from __future__ import annotations

import ast

import pytest

from conftest import ROOT
from fake_colab import Colab, line_of

CELL = (ROOT / "common" / "bootstrap_cell.py").read_text()


@pytest.fixture
def colab(tmp_path) -> Colab:
    return Colab(tmp_path)


def test_the_opened_notebook_picks_its_bundle_not_the_copy_beside_it(colab):
    bundle = colab.add_bundle(colab.my_drive / "comp5541")
    decoy = colab.add_bundle(colab.my_drive / "Copy of comp5541")  # sorts first
    for chosen in (bundle, decoy):
        colab.open(chosen / "Q1" / "Q1.ipynb")
        done = colab.run_cell()
        assert line_of(done, "BUNDLE") == colab.drive_path(chosen)
        # `import common` loads the chosen copy, even after the cell imported the first one found.
        assert line_of(done, "COMMON") == colab.drive_path(chosen) / "common" / "config.py"
        assert "because it holds this notebook" in done.stdout and "Drive file id" in done.stdout
    assert colab.mounts() == [str(colab.content / "drive")]  # mounted once, then found mounted


def test_two_bundles_and_no_word_from_colab_is_refused_with_the_fix(colab):
    bundle = colab.add_bundle(colab.my_drive / "comp5541")
    colab.add_bundle(colab.my_drive / "Copy of comp5541")
    colab.open(None)  # the session API does not answer
    done = colab.run_cell(check=False)
    assert done.returncode != 0 and "BundleError" in done.stderr
    for needed in ("More than one bundle", "MyDrive/comp5541", "MyDrive/Copy of comp5541",
                   "delete or rename", "%env COMP5541_BUNDLE="):
        assert needed in done.stderr
    done = colab.run_cell(COMP5541_BUNDLE=str(colab.drive_path(bundle)))
    assert line_of(done, "BUNDLE") == colab.drive_path(bundle)
    assert "COMP5541_BUNDLE names it" in done.stdout


def test_one_bundle_and_no_word_from_colab_is_used_and_says_so(colab):
    bundle = colab.add_bundle(colab.my_drive / "comp5541")
    colab.open(None)
    done = colab.run_cell()
    assert line_of(done, "BUNDLE") == colab.drive_path(bundle)
    assert "the only bundle in My Drive" in done.stdout and "not confirmed" in done.stdout


def test_a_notebook_from_outside_the_bundle_is_sent_to_the_bundles_copy(colab):
    bundle = colab.add_bundle(colab.my_drive / "comp5541")
    elsewhere = colab.my_drive / "Colab Notebooks" / "Q1.ipynb"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes((bundle / "Q1" / "Q1.ipynb").read_bytes())
    colab.assign_drive_ids()
    colab.open(elsewhere)
    done = colab.run_cell(check=False)
    assert done.returncode != 0
    assert "not a bundle's own copy" in done.stderr
    assert str(colab.drive_path(bundle) / "Q1" / "Q1.ipynb") in done.stderr
    # Opened from GitHub: no Drive file id at all.
    colab.open(None, name="Q1.ipynb", path="github/someone/comp5541/blob/main/Q1/Q1.ipynb")
    done = colab.run_cell(check=False)
    assert done.returncode != 0 and "not a bundle's own copy" in done.stderr


def test_a_bundle_in_content_is_refused_and_drive_is_named(colab):
    colab.add_bundle(colab.content / "comp5541")
    colab.open(None)
    done = colab.run_cell(check=False)
    assert done.returncode != 0
    for needed in ("is not supported", "disconnect wipes it", "MyDrive/comp5541", "readme.txt"):
        assert needed in done.stderr
    assert not (colab.content / "comp5541" / "runs").exists()


def test_a_bundle_in_content_beside_one_in_drive_is_ignored(colab):
    bundle = colab.add_bundle(colab.my_drive / "comp5541")
    colab.add_bundle(colab.content)  # unzipped straight into /content
    colab.open(bundle / "Q1" / "Q1.ipynb")
    done = colab.run_cell()
    assert line_of(done, "BUNDLE") == colab.drive_path(bundle)
    assert f"ignored, as not in Google Drive: {colab.content}" in done.stdout


def test_no_bundle_anywhere_says_how_to_get_it(colab):
    done = colab.run_cell(check=False)
    assert done.returncode != 0 and "FileNotFoundError" in done.stderr
    for hint in ("My Drive", "unzip", "readme.txt"):
        assert hint in done.stderr
    assert colab.mounts() == [str(colab.content / "drive")]  # it looked in Drive first


def test_outside_colab_the_nearest_bundle_holds_the_notebook(colab, tmp_path):
    outer = colab.add_bundle(tmp_path / "work")
    inner = colab.add_bundle(outer / "build" / "copy")  # e.g. a test's scratch bundle
    done = colab.run_cell(cwd=inner / "Q1", colab=False)
    assert line_of(done, "BUNDLE") == inner
    assert "it holds the working directory" in done.stdout
    assert colab.mounts() == [] and not (inner / "runs").exists()
    assert line_of(colab.run_cell(cwd=outer / "Q1", colab=False), "BUNDLE") == outer


def test_real_bundle_found_from_a_subfolder(colab):
    assert line_of(colab.run_cell(cwd=ROOT / "common", colab=False), "BUNDLE") == ROOT


def test_outside_colab_a_notebook_outside_any_bundle_is_refused(colab, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    done = colab.run_cell(cwd=tmp_path / "elsewhere", colab=False, check=False)
    assert done.returncode != 0 and "Open Qn/Qn.ipynb from the bundle's own folder" in done.stderr


def test_cell_installs_nothing_and_imports_only_the_standard_library():
    tree = ast.parse(CELL)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= {"os", "sys", "pathlib", "google.colab", "common.tools.colab"}
    for install in ("pip install", "%pip", "apt-get", "subprocess", "get_ipython", "os.system"):
        assert install not in CELL, f"the first cell must not run {install!r}"


def test_on_colab_data_goes_to_the_runtime_disk_and_results_stay_in_the_bundle(monkeypatch, tmp_path):
    import sys
    import types

    from common import config

    monkeypatch.setenv("COMP5541_COLAB_ROOT", str(tmp_path))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    made = config.make_config({"data_dir": "data", "results_dir": "Q2/results",
                               "runs_dir": "runs/Q2"}, notebook="Q2")
    assert made["data_dir"] == str(tmp_path / "data")
    assert made["results_dir"] == str(config.ROOT / "Q2" / "results")
    assert made["runs_dir"] == str(config.ROOT / "runs" / "Q2")
    monkeypatch.delitem(sys.modules, "google.colab")
    assert config.make_config({"data_dir": "data"}, notebook="Q2")["data_dir"] == str(config.ROOT / "data")
