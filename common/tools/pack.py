"""The zip a grader receives: which files go in, under which names, and the zip itself.

`submit` checks the bundle and then calls `pack`. What is packed: each question's
executed notebook, its PDFs and results; the code and files that rerun it
(common/, profiles/, tests/, benchmarks/, extras/'s notebooks, the Makefile...),
so the tests shipped find everything they import and the Makefile finds every
notebook it runs; never data, checkpoints or caches.
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_write
from .bundle import TOP_FILES, walk
from .report import render_reports, report_paths


# Bundle files a grader needs to read or re-run the code; readme.txt explains them.
# benchmarks/ and extras/ are small code and committed notebooks: tests/ imports the
# first (test_bench, test_gpu_check) and runs the second, and `make all` runs extras/.
# Data, checkpoints, caches and hidden files in them are never packed (bundle.walk).
BUNDLE_FILES = TOP_FILES
BUNDLE_DIRS = ("common", "profiles", "tests", "benchmarks", "extras")

STUDENT_ID = re.compile(r"[A-Za-z0-9]{1,32}")


@dataclass
class Work:
    """One question's executed notebook and results folder; `ran_at` is when the
    notebook was executed (seconds since the epoch), `older` the other executed
    copies found, which are not packed."""
    question: str
    notebook: Path
    results_dir: Path
    ran_at: float = 0.0
    older: list[tuple[Path, float]] = field(default_factory=list)


class SubmitError(RuntimeError):
    """The bundle is not ready to submit; the message says what to do."""


def validate_id(student_id: str) -> str:
    if not student_id or not STUDENT_ID.fullmatch(student_id):
        raise SubmitError(f"ID={student_id!r}: a student ID is letters and digits only, "
                          "e.g. make zip ID=21123456D")
    return student_id


def zip_entries(found: dict[str, Work], root: Path, *, with_extras: bool = False,
                smoke: tuple = (), quick: tuple = ()) -> dict[str, Path | bytes]:
    """Archive name -> source file (or bytes). Names are relative, POSIX style."""
    entries: dict[str, Path | bytes] = {}
    for q, work in found.items():
        entries[f"{q}/{q}.ipynb"] = work.notebook
        for pdf in report_paths(work.notebook).values():
            entries[f"{q}/{pdf.name}"] = pdf
        if work.results_dir.is_dir():
            for path in walk(work.results_dir):
                entries[f"{q}/results/{path.relative_to(work.results_dir).as_posix()}"] = path
        if q in smoke:
            entries[f"{q}/SMOKE_RUN.txt"] = (
                f"{q} was packed from a smoke run (tiny data, few epochs; ALLOW_SMOKE=1).\n"
                "Its numbers do not answer the question. The full run: `make all`, or on Colab\n"
                f"{q}/{q}.ipynb with smoke = False and Runtime > Run all.\n").encode()
        if q in quick:
            entries[f"{q}/QUICK_RUN.txt"] = (
                f"{q} was packed from a quick run (`make quick`): class-stratified subsets and few "
                "epochs on a CPU.\nIts numbers are real at that budget (the notebook states it) but "
                "below the full settings. The full run, on a GPU: `make all`, or on Colab\n"
                f"{q}/{q}.ipynb with quick = False and Runtime > Run all.\n").encode()
    for name in BUNDLE_FILES:
        if (root / name).is_file():
            entries[name] = root / name
    for folder in BUNDLE_DIRS:
        if (root / folder).is_dir():
            for path in walk(root / folder):
                entries[path.relative_to(root).as_posix()] = path
    if with_extras and (root / "build" / "extras").is_dir():
        for path in walk(root / "build" / "extras"):
            entries["extras/executed/" + path.relative_to(root / "build" / "extras").as_posix()] = path
    return entries


def write_zip(path: Path, entries: dict[str, Path | bytes]) -> Path:
    def write(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for name in sorted(entries):
                source = entries[name]
                if isinstance(source, bytes):
                    zf.writestr(name, source)
                else:
                    zf.write(source, arcname=name)

    return atomic_write(path, write)


def ensure_reports(found: dict[str, Work], *, renderer: str = "auto") -> None:
    """Render a notebook's PDFs when they are missing or older than the notebook."""
    for q, work in found.items():
        stamp = work.notebook.stat().st_mtime
        pdfs = report_paths(work.notebook).values()
        if all(p.is_file() and p.stat().st_mtime >= stamp for p in pdfs):
            continue
        print(f"{q}: rendering PDFs")
        render_reports(work.notebook, renderer=renderer)


def pack(found: dict[str, Work], student_id: str, root: Path, *, smoke: tuple = (),
         quick: tuple = (), out_dir: Path | None = None, with_extras: bool = False,
         renderer: str = "auto") -> Path:
    """Render missing PDFs and write the zip for work that passed the checks;
    `smoke` and `quick` name the questions to label as such."""
    validate_id(student_id)
    ensure_reports(found, renderer=renderer)
    entries = zip_entries(found, root, with_extras=with_extras, smoke=smoke, quick=quick)
    out = (out_dir or root) / f"{student_id}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_zip(out, entries)
