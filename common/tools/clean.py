"""Remove the checkpoints of smoke runs (`make clean-smoke`), which answer nothing.

    python3 -m common.tools.clean        # in the bundle's folder, here or on Colab

A smoke run's folders are found wherever they are: runs/smoke/ (what `make smoke`
writes), and on Colab, where the notebooks write runs/Qn/ themselves, runs/Q2/smoke/
and every run folder whose config.json says it was a smoke run (Q3 names its runs by
their settings, so its smoke runs sit beside the full ones). Full runs are never
touched, nor a run that a live process is training (its lock.json).
Standard library only, so it runs before `make venv`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ..config import ROOT
from ..files import LOCK_NAME, FolderLockedError, lock_folder


def _is_smoke_run(folder: Path) -> bool:
    try:
        settings = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and (settings.get("config") or {}).get("smoke") is True


def smoke_folders(runs: Path) -> list[Path]:
    """The folders holding only smoke runs: whole smoke trees, then single smoke runs."""
    trees = [p for p in (runs / "smoke", *runs.glob("*/smoke")) if p.is_dir()]
    single = [c.parent for c in sorted(runs.rglob("config.json"))
              if _is_smoke_run(c.parent) and not any(c.is_relative_to(t) for t in trees)]
    return trees + single


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def clean_smoke(runs: Path, log=print) -> int:
    """Delete every smoke run under `runs`; return the bytes freed."""
    freed = 0
    for folder in smoke_folders(runs):
        busy = [lock.parent for lock in folder.rglob(LOCK_NAME)]
        try:
            for run in busy:  # taken over if its holder is gone, refused if it is alive
                lock_folder(run, log=lambda _: None)
        except FolderLockedError as err:
            log(f"kept {folder}: {err}")
            continue
        size = _size(folder)
        shutil.rmtree(folder)
        freed += size
        log(f"removed {folder} ({size / 1e6:.0f} MB)")
    return freed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m common.tools.clean",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs",
                    help="the runs folder (default: runs/)")
    args = ap.parse_args(argv)
    if not args.runs.is_dir():
        print(f"no smoke runs: {args.runs} does not exist")
        return 0
    freed = clean_smoke(args.runs)
    print(f"smoke runs removed: {freed / 1e6:.0f} MB freed" if freed else
          f"no smoke runs under {args.runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
