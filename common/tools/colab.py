"""Colab support for the notebooks' first cell: checkpoints that survive a disconnect.

Colab wipes its disk (/content) when the runtime disconnects. Every notebook's
`runs_dir` defaults to `runs/Qn` inside the bundle. So when the bundle sits in
/content, `runs/` becomes a link to a folder in Google Drive, and a rerun after
a disconnect finds the checkpoints there. The parameters cell keeps its plain
constants, and nothing changes outside Colab.
"""
from __future__ import annotations

import sys
from pathlib import Path

DRIVE_RUNS = "comp5541-runs"  # folder in My Drive holding runs/ for a bundle kept in /content


def mount_drive(colab_root: str | Path = "/content") -> Path:
    """Mount Google Drive (Colab asks the user once) and return My Drive's path."""
    colab_root = Path(colab_root)
    my_drive = colab_root / "drive" / "MyDrive"
    if not my_drive.is_dir():
        from google.colab import drive
        drive.mount(str(colab_root / "drive"))
    return my_drive


def _inside(path: Path, folder: Path) -> bool:
    return (path.absolute().is_relative_to(folder.absolute())
            or path.resolve().is_relative_to(folder.resolve()))


def keep_runs_in_drive(bundle: str | Path, colab_root: str | Path = "/content") -> Path:
    """Make `bundle/runs` live in Google Drive; return the folder checkpoints go to.

    A bundle already in Drive needs nothing. Otherwise `runs/` becomes a link to
    `My Drive/comp5541-runs`. A `runs/` that already holds checkpoints is left
    alone and a note says so, because moving gigabytes silently would surprise.
    """
    bundle, colab_root = Path(bundle), Path(colab_root)
    runs = bundle / "runs"
    if _inside(bundle, colab_root / "drive"):
        print(f"checkpoints: {runs} (in Google Drive)")
        return runs
    target = mount_drive(colab_root) / DRIVE_RUNS
    target.mkdir(parents=True, exist_ok=True)
    if runs.is_symlink():
        if runs.resolve() == target.resolve():
            print(f"checkpoints: {runs} -> {target} (Google Drive)")
            return target
        runs.unlink()
    elif runs.is_dir():
        if any(runs.iterdir()):
            print(f"checkpoints: {runs} already holds runs, so they stay on this runtime's disk "
                  f"and are lost on a disconnect. Move them into {target} and run this cell "
                  "again to keep them in Google Drive.")
            return runs
        runs.rmdir()
    runs.symlink_to(target, target_is_directory=True)
    print(f"checkpoints: {runs} -> {target} (Google Drive)")
    return target


def setup_bundle(bundle: str | Path, colab_root: str | Path = "/content",
                 keep_runs: bool = True) -> None:
    """What the notebooks' first cell does once it has found the bundle: say which
    bundle is used and, on Colab, keep its runs in Google Drive."""
    print(f"bundle: {bundle}")
    if "google.colab" in sys.modules and keep_runs:
        keep_runs_in_drive(bundle, colab_root)
