"""The notebooks' first cell (common/bootstrap_cell.py) under a simulated Colab.

Each test runs the cell's exact text in a fresh Python process with a fake
`google.colab` package on sys.path. Its `drive.mount` links a prepared folder
into place, as Colab's mounts Google Drive. `COMP5541_COLAB_ROOT` stands in for
/content. The process runs in a temporary folder, away from the real bundle.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

CELL = (ROOT / "common" / "bootstrap_cell.py").read_text()

FAKE_DRIVE = '''
import os

def mount(mountpoint, force_remount=False, **kwargs):
    with open(os.environ["FAKE_DRIVE_LOG"], "a") as log:
        log.write(mountpoint + "\\n")
    os.symlink(os.environ["FAKE_DRIVE_STORE"], mountpoint)
'''

RUNNER = '''
import sys
if sys.argv[1] == "colab":
    sys.path.insert(0, sys.argv[2])
    import google.colab  # Colab imports it before the first cell runs
scope = {"__name__": "__main__"}
exec(compile(open(sys.argv[3]).read(), "bootstrap_cell", "exec"), scope)
print("BUNDLE=" + str(scope["BUNDLE"]))
'''


class Colab:
    """A fake Colab file area (`content/`), a Drive store and the fake package."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.content = tmp / "content"
        self.store = tmp / "drive-store"  # what drive.mount links to content/drive
        self.my_drive = self.store / "MyDrive"
        self.log = tmp / "mounts.log"
        (self.content / "sample_data").mkdir(parents=True)
        self.my_drive.mkdir(parents=True)
        package = tmp / "fake-packages" / "google" / "colab"
        package.mkdir(parents=True)
        (package.parent / "__init__.py").write_text("")
        (package / "__init__.py").write_text("")
        (package / "drive.py").write_text(FAKE_DRIVE)
        self.cell = tmp / "bootstrap_cell.py"
        self.cell.write_text(CELL)

    def add_bundle(self, where: Path) -> Path:
        shutil.copytree(ROOT / "common", where / "common",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return where

    def run(self, *, cwd: Path | None = None, colab: bool = True, check: bool = True):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(COMP5541_COLAB_ROOT=str(self.content), FAKE_DRIVE_STORE=str(self.store),
                   FAKE_DRIVE_LOG=str(self.log))
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, "colab" if colab else "local",
             str(self.tmp / "fake-packages"), str(self.cell)],
            cwd=cwd or self.content, env=env, capture_output=True, text=True, timeout=60)
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def mounts(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []


def bundle_of(done) -> Path:
    line = next(l for l in done.stdout.splitlines() if l.startswith("BUNDLE="))
    return Path(line.split("=", 1)[1])


@pytest.fixture
def colab(tmp_path) -> Colab:
    return Colab(tmp_path)


def test_bundle_unzipped_in_content_keeps_checkpoints_in_drive(colab):
    bundle = colab.add_bundle(colab.content / "comp5541")
    done = colab.run()
    assert bundle_of(done) == bundle
    assert colab.mounts() == [str(colab.content / "drive")]
    runs = bundle / "runs"
    assert runs.is_symlink()
    assert runs.resolve() == (colab.my_drive / "comp5541-runs").resolve()
    # A checkpoint written under runs_dir="runs/Q2" lands in Drive.
    (runs / "Q2").mkdir()
    (runs / "Q2" / "last.pt").write_bytes(b"weights")
    assert (colab.my_drive / "comp5541-runs" / "Q2" / "last.pt").read_bytes() == b"weights"
    # Next session, Drive already mounted: no second mount, the link stays.
    done = colab.run()
    assert colab.mounts() == [str(colab.content / "drive")]
    assert runs.is_symlink() and "Google Drive" in done.stdout


def test_bundle_unzipped_straight_into_content_is_found(colab):
    colab.add_bundle(colab.content)
    assert bundle_of(colab.run()) == colab.content


def test_bundle_in_drive_is_found_by_mounting(colab):
    colab.add_bundle(colab.my_drive / "comp5541")
    done = colab.run()
    assert colab.mounts() == [str(colab.content / "drive")]
    bundle = bundle_of(done)
    assert bundle == colab.content / "drive" / "MyDrive" / "comp5541"
    assert not (bundle / "runs").exists()  # already in Drive: nothing to link
    assert "(in Google Drive)" in done.stdout


def test_no_bundle_anywhere_says_how_to_get_it(colab):
    done = colab.run(check=False)
    assert done.returncode != 0
    assert "FileNotFoundError" in done.stderr
    for hint in ("Google Drive", "/content", "git clone", "unzip", "readme.txt"):
        assert hint in done.stderr
    assert colab.mounts() == [str(colab.content / "drive")]  # it looked in Drive first


def test_existing_checkpoints_in_content_are_left_in_place(colab):
    bundle = colab.add_bundle(colab.content / "comp5541")
    (bundle / "runs" / "Q2").mkdir(parents=True)
    (bundle / "runs" / "Q2" / "last.pt").write_bytes(b"weights")
    done = colab.run()
    assert not (bundle / "runs").is_symlink()
    assert (bundle / "runs" / "Q2" / "last.pt").read_bytes() == b"weights"
    assert "already holds runs" in done.stdout


def test_keep_runs_in_drive_can_be_switched_off(colab):
    bundle = colab.add_bundle(colab.content / "comp5541")
    assert "KEEP_RUNS_IN_DRIVE = True" in CELL
    colab.cell.write_text(CELL.replace("KEEP_RUNS_IN_DRIVE = True", "KEEP_RUNS_IN_DRIVE = False"))
    assert bundle_of(colab.run()) == bundle
    assert colab.mounts() == [] and not (bundle / "runs").exists()


def test_outside_colab_nothing_is_mounted(colab, tmp_path):
    bundle = colab.add_bundle(tmp_path / "work" / "bundle")
    (bundle / "Q2").mkdir()
    done = colab.run(cwd=bundle / "Q2", colab=False)
    assert bundle_of(done) == bundle
    assert colab.mounts() == [] and not (bundle / "runs").exists()


def test_real_bundle_found_from_a_subfolder(colab):
    assert bundle_of(colab.run(cwd=ROOT / "common", colab=False)) == ROOT


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
