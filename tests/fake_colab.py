"""A simulated Colab on this machine, for tests/test_colab.py and test_colab_journey.py.

- `content/` stands in for /content (COMP5541_COLAB_ROOT), the runtime's disk.
- `drive-store/MyDrive` is Google Drive. A fake `google.colab` package's
  `drive.mount` links it to `content/drive`, as Colab mounts Drive there.
- Every notebook in Drive gets a Drive file id as the extended attribute
  `user.drive.id`, as Colab's Drive mount shows it. As in Drive, a file saved in
  place keeps its id, and a copy (`save_copy`: File > Save a copy in Drive; an
  upload; a copied folder) gets a new one.
- `open(notebook)` plays the user opening a notebook: Colab's session API
  (COMP5541_COLAB_SESSIONS, a JSON file here) then names it by its file id.
- `colab_cell(text)` runs a cell typed into a Colab notebook (Python, `!` shell
  lines, `%cd`), with /content standing for the fake's content/: the readme's
  cells are run as written.
- `disconnect()` wipes content/ and keeps Drive, as a runtime reset does.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FAKE_DRIVE = '''
import os

def mount(mountpoint, force_remount=False, **kwargs):
    if os.path.islink(mountpoint):
        print("Drive already mounted at " + mountpoint)
        return
    with open(os.environ["FAKE_DRIVE_LOG"], "a") as log:
        log.write(mountpoint + "\\n")
    os.symlink(os.environ["FAKE_DRIVE_STORE"], mountpoint)
'''

# Runs a cell's text as a notebook would, with google.colab imported first (Colab
# imports it before any cell runs), then reports what the cell chose.
RUNNER = '''
import sys
if sys.argv[1] == "colab":
    import google.colab
scope = {"__name__": "__main__"}
exec(compile(open(sys.argv[2]).read(), "bootstrap_cell", "exec"), scope)
import common.config
print("BUNDLE=" + str(scope["BUNDLE"]))
print("COMMON=" + common.config.__file__)
'''


def bundle_files() -> list[str]:
    """The bundle as shipped: what git tracks, plus new files not yet committed."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return sorted(p for p in out if (ROOT / p).is_file())


class Colab:
    """A fake Colab file area (`content/`), a Drive store and the fake package."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.content = tmp / "content"
        self.store = tmp / "drive-store"  # what drive.mount links to content/drive
        self.my_drive = self.store / "MyDrive"
        self.log = tmp / "mounts.log"
        self.sessions = tmp / "sessions.json"
        self.ids: dict[Path, str] = {}  # notebook in Drive -> its file id
        (self.content / "sample_data").mkdir(parents=True)
        self.my_drive.mkdir(parents=True)
        package = tmp / "fake-packages" / "google" / "colab"
        package.mkdir(parents=True)
        (package.parent / "__init__.py").write_text("")
        (package / "__init__.py").write_text("")
        (package / "drive.py").write_text(FAKE_DRIVE)
        # An IPython kernel imports google.colab at start, as Colab's does.
        startup = tmp / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-colab.py").write_text("import google.colab\n")
        self.cell = tmp / "bootstrap_cell.py"
        self.cell.write_text((ROOT / "common" / "bootstrap_cell.py").read_text())

    # --- what the user does -------------------------------------------------------

    def add_bundle(self, where: Path, *, full: bool = False) -> Path:
        """A bundle at `where`: common/ and the Q1 notebook, or (full) every shipped file."""
        names = bundle_files() if full else [p for p in bundle_files()
                                             if p.startswith("common/") or p == "Q1/Q1.ipynb"]
        for name in names:
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, where / name)
        self.assign_drive_ids()
        return where

    def assign_drive_ids(self) -> None:
        """Drive's file ids: a notebook new at its path (uploaded, copied, unzipped) gets
        a new one, even when the copy carries the original's attribute; a notebook saved
        in place keeps its own, even when the writer dropped the attribute."""
        for nb in self.store.rglob("*.ipynb"):
            self.ids.setdefault(nb, uuid.uuid4().hex)
            os.setxattr(nb, "user.drive.id", self.ids[nb].encode())

    def save_copy(self, notebook: Path, folder: str = "Colab Notebooks") -> Path:
        """File > Save a copy in Drive: My Drive/Colab Notebooks/Copy of <name>, a new id."""
        copy = self.my_drive / folder / f"Copy of {notebook.name}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(notebook, copy)
        self.assign_drive_ids()
        return copy

    def hide_ids(self) -> None:
        """A Drive mount that shows no file ids (no extended attributes)."""
        for nb in self.store.rglob("*.ipynb"):
            os.removexattr(nb, "user.drive.id")
        self.ids.clear()

    def drive_path(self, path: Path) -> Path:
        """`path` in the Drive store as the runtime sees it, under content/drive."""
        return self.content / "drive" / path.relative_to(self.store)

    def open(self, notebook: Path | None, name: str | None = None, path: str | None = None) -> None:
        """Open a notebook in Colab: the session API then names it. None: the API is down."""
        if notebook is None and path is None:
            self.sessions.unlink(missing_ok=True)
            return
        if path is None:
            path = "fileId=" + self.ids[notebook]
        self.sessions.write_text(json.dumps([{"name": name or notebook.name, "path": path,
                                              "type": "notebook"}]))

    def disconnect(self) -> None:
        """A runtime reset: /content is wiped (the Drive mount with it); Drive stays."""
        shutil.rmtree(self.content)
        (self.content / "sample_data").mkdir(parents=True)

    # --- running code as Colab would ----------------------------------------------

    def env(self) -> dict:
        # Colab sets neither PYTHONDONTWRITEBYTECODE nor a bundle: a test's own must not leak in.
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "COMP5541_BUNDLE", "PYTHONDONTWRITEBYTECODE")}
        env.update(COMP5541_COLAB_ROOT=str(self.content), FAKE_DRIVE_STORE=str(self.store),
                   FAKE_DRIVE_LOG=str(self.log), COMP5541_COLAB_SESSIONS=self.sessions.as_uri(),
                   PYTHONPATH=str(self.tmp / "fake-packages"), IPYTHONDIR=str(self.tmp / "ipython"))
        return env

    def run_cell(self, *, cwd: Path | None = None, colab: bool = True, check: bool = True,
                 **extra_env):
        """The first cell alone, in a fresh Python process."""
        env = self.env()
        if not colab:
            del env["PYTHONPATH"]
        env.update(extra_env)
        done = subprocess.run([sys.executable, "-c", RUNNER, "colab" if colab else "local",
                               str(self.cell)], cwd=cwd or self.content, env=env,
                              capture_output=True, text=True, timeout=120)
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def colab_cell(self, text: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """A cell typed into a Colab notebook, run in a fresh Python process: Python
        lines, `!` shell lines and `%cd`, with /content meaning this fake's content/."""
        script = ["import os, subprocess, sys"]
        for line in text.replace("/content", str(self.content)).splitlines():
            line = line.strip()
            if line.startswith("!"):
                script.append(f"subprocess.run({line[1:]!r}, shell=True, check=True)")
            elif line.startswith("%cd"):
                script.append(f"os.chdir({line[3:].strip()!r})")
            elif line.startswith("%env"):
                key, value = line[4:].strip().split("=", 1)
                script.append(f"os.environ[{key!r}] = {value!r}")
            elif line:
                script.append(line)
        self.content.mkdir(exist_ok=True)
        return subprocess.run([sys.executable, "-c", "\n".join(script)], cwd=cwd or self.content,
                              env=self.env(), capture_output=True, text=True, timeout=300)

    def pycache(self) -> list[Path]:
        """Compiled Python files written into Drive."""
        return sorted(self.store.rglob("*.pyc"))

    def mounts(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []


def line_of(done, key: str) -> Path:
    line = next(l for l in done.stdout.splitlines() if l.startswith(key + "="))
    return Path(line.split("=", 1)[1])
