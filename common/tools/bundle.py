"""What a student uploads to Google Drive: comp5541-bundle.zip (`make bundle`).

    python3 -m common.tools.bundle       # writes comp5541-bundle.zip in the bundle's folder

The zip holds the bundle's code, notebooks, tests and readme inside one folder,
comp5541/, so that unzipping it into My Drive gives My Drive/comp5541 and nothing
else (readme.txt, 'Running on Google Colab'). It never holds what is made or
fetched here: .git, .venv, build/, runs/, data/, caches, zips. The same rules
keep data and checkpoints out of the submission zip (pack.py). Standard library
only, so it runs before `make venv`.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import zipfile
from pathlib import Path

from ..config import ROOT  # config and files import only the standard library at import
from ..files import atomic_write

NAME = "comp5541"
ZIP_NAME = f"{NAME}-bundle.zip"
TOP_FILES = ("readme.txt", "requirements.txt", "Makefile", "pytest.ini")
TOP_DIRS = ("Q1", "Q2", "Q3", "common", "extras", "profiles", "tests", "benchmarks")

# Never shipped: caches, and anything that looks like data or a checkpoint (those belong
# in data/ and runs/, which are never walked, but a stray copy elsewhere must not leak).
SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache", ".git", ".venv",
             "data", "runs", "build"}
# ...except a Python package that happens to be named so (common/data/): that is code.
DATA_LIKE_DIRS = {"data", "runs", "build"}
SKIP_SUFFIXES = {".pyc", ".pt", ".pth", ".ckpt", ".safetensors", ".npy", ".npz", ".pkl",
                 ".pickle", ".bin", ".h5", ".tar", ".gz", ".xz", ".bz2", ".zip", ".rar",
                 ".7z", ".partial", ".tmp"}
# Raw MNIST-style idx files and CIFAR-10's python batches, by name; run folders' locks.
SKIP_NAMES = re.compile(r".*-idx\d-ubyte|data_batch_\d+|test_batch|batches\.meta|lock\.json")


def packable(path: Path) -> bool:
    name = path.name
    return (path.suffix.lower() not in SKIP_SUFFIXES and not SKIP_NAMES.fullmatch(name)
            and not name.startswith("."))


def walk(folder: Path):
    """Files under `folder`, skipping caches, data, checkpoints and hidden files."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (
            d not in SKIP_DIRS
            or d in DATA_LIKE_DIRS and (Path(dirpath) / d / "__init__.py").is_file()))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if packable(path) and path.is_file():
                yield path


def bundle_files(root: Path = ROOT) -> list[Path]:
    """What the student uploads: the top-level files and folders that rerun everything."""
    files = [root / name for name in TOP_FILES if (root / name).is_file()]
    for folder in TOP_DIRS:
        if (root / folder).is_dir():
            files += walk(root / folder)
    return files


def write_bundle(root: Path = ROOT, out: Path | None = None) -> Path:
    """Write `out` (default ROOT/comp5541-bundle.zip): every bundle file under comp5541/."""
    out = out or root / ZIP_NAME
    files = bundle_files(root)
    missing = [name for name in ("common", "Q1", "readme.txt") if not (root / name).exists()]
    if missing:
        raise FileNotFoundError(f"{root} is not a bundle: it has no {', '.join(missing)}")

    def write(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for path in files:
                zf.write(path, arcname=f"{NAME}/{path.relative_to(root).as_posix()}")

    return atomic_write(out, write)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m common.tools.bundle",
                                 description="Write comp5541-bundle.zip, the folder to upload "
                                             "to Google Drive (readme.txt)")
    ap.add_argument("--out", type=Path, default=None, help=f"default: ./{ZIP_NAME}")
    ap.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        out = write_bundle(args.root.resolve(), args.out)
    except (FileNotFoundError, OSError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(out) as zf:
        count = len(zf.namelist())
    print(f"wrote {out} ({count} files, {out.stat().st_size / 1e6:.1f} MB), all inside {NAME}/. "
          "Upload it to My Drive, then follow readme.txt, 'Running on Google Colab'.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
