"""What the grader receives: PDF reports, a checked bundle, one zip.

    python -m common.tools.submit report              # build/Qn/Qn.pdf and Qn_report.pdf
    python -m common.tools.submit check               # is everything there? lists what is not
    python -m common.tools.submit zip --id 21123456D  # check, PDFs, then 21123456D.zip

`make report`, `make check` and `make zip ID=...` call these.

Where a question's work is found: the executed copy `build/Qn/Qn.ipynb` with
`build/Qn/results/` (what `make all` writes), or `Qn/Qn.ipynb` itself when it
carries outputs, with `Qn/results/` (a notebook run by hand in Jupyter or Colab
and saved in place). When both exist, the one executed last is taken, and the
other is named in a warning (a local `make smoke` copied to Drive with the
bundle, then Q1 run on Colab: the Colab run is packed).

The contract with each notebook, read from `results_dir/summary.json`
(written by `common.config.write_summary`):

- `smoke` is false: smoke runs are refused unless `allow_smoke` is set.
- `results["parts"]` lists the sub-questions the notebook completed; every part
  in REQUIRED_PARTS must be there.
- `results["figures"]` maps each part to the PNG files it drew, as names relative
  to `results_dir`: `{"a": ["a_vgg_curves.png", ...], "b": [...]}`. Each part in
  FIGURE_PARTS needs at least one, and every listed file must be a PNG on disk.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import zipfile
from datetime import datetime
from pathlib import Path

import nbformat

from ..config import ROOT
from .pack import SubmitError, Work, pack as pack_entries, validate_id, zip_entries  # noqa: F401
from .report import ReportError, find_mathjax, render_reports

QUESTIONS = ("Q1", "Q2", "Q3")
# The assignment's sub-questions, and those whose answers include figures
# (Q1 is a derivation; Q2 and Q3 plot training curves and results).
REQUIRED_PARTS = {"Q1": ("a", "b"), "Q2": ("a", "b", "c"), "Q3": ("a", "b", "c")}
FIGURE_PARTS = {"Q1": (), "Q2": ("a", "b", "c"), "Q3": ("a", "b", "c")}

NEEDED = ("readme.txt", "requirements.txt", "common")
PLACEHOLDER = "[FILL IN"
# How to (re)run a question, both ways: the advice in every message that needs one.
RERUN = ("run `make all` (or `make all NOTEBOOKS={q}/{q}.ipynb`); on Colab, open {q}/{q}.ipynb "
         "from the bundle in My Drive and choose Runtime > Run all")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def executed_at(path: Path) -> float | None:
    """When a notebook was last executed: papermill's end time, or the newest of the
    execution times Colab stores in each cell, or else the file's modification time.
    None when no cell of it ran (the committed notebook)."""
    nb = nbformat.read(str(path), as_version=4)
    if not any(c.cell_type == "code" and c.get("execution_count") for c in nb.cells):
        return None
    papermill = nb.metadata.get("papermill") or {}
    stamps = [datetime.fromisoformat(str(papermill[k])).timestamp()
              for k in ("end_time", "start_time") if papermill.get(k)][:1]
    stamps += [float(c.metadata["executionInfo"]["timestamp"]) / 1000 for c in nb.cells
               if isinstance((c.metadata.get("executionInfo") or {}).get("timestamp"), (int, float))]
    return max(stamps) if stamps else path.stat().st_mtime


def locate(question: str, root: Path = ROOT) -> Work | None:
    """The question's work executed last: build/Qn/ (make all) or Qn/ (saved in place)."""
    found = []
    for folder in (root / "build" / question, root / question):
        notebook = folder / f"{question}.ipynb"
        when = executed_at(notebook) if notebook.is_file() else None
        if when is not None:
            found.append(Work(question, notebook, folder / "results", when))
    if not found:
        return None
    found.sort(key=lambda w: w.ran_at, reverse=True)
    found[0].older = [(w.notebook, w.ran_at) for w in found[1:]]
    return found[0]


def when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def work_warnings(work: Work, root: Path = ROOT) -> list[str]:
    """The executed copies of a question that are not packed, and a failed run newer
    than the packed one (the runner keeps it beside the good one: run.py)."""
    notes = [f"{_rel(path, root)} (executed {when(stamp)}) is older: it is NOT packed; delete it "
             "if it is a stale copy" for path, stamp in work.older]
    failed = root / "build" / work.question / f"{work.question}.failed.ipynb"
    if failed.is_file() and failed.stat().st_mtime > work.ran_at:
        notes.append(f"{_rel(failed, root)} ({when(failed.stat().st_mtime)}) is a newer run that "
                     "FAILED; the packed notebook is the earlier one above")
    return notes


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# --- checks ------------------------------------------------------------------

def notebook_problems(path: Path) -> list[str]:
    """Error outputs, papermill's error banner and cells that never ran."""
    nb = nbformat.read(str(path), as_version=4)
    problems = []
    if (nb.metadata.get("papermill") or {}).get("exception"):
        problems.append("papermill recorded an exception: the run did not finish")
    for i, cell in enumerate(nb.cells):
        if "papermill-error-cell-tag" in cell.metadata.get("tags", []):
            problems.append(f"cell {i} is papermill's 'An Exception was encountered' banner")
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"cell {i} (In [{cell.get('execution_count')}]) raised "
                                f"{out.get('ename')}: {str(out.get('evalue'))[:200]}")
    never_ran = [i for i, c in enumerate(nb.cells)
                 if c.cell_type == "code" and c.source.strip() and c.get("execution_count") is None]
    if never_ran:
        problems.append(f"{len(never_ran)} code cell(s) never ran (first: cell {never_ran[0]})")
    return problems


def summary_problems(work: Work, allow_smoke: bool = False, root: Path = ROOT) -> list[str]:
    """The summary.json contract: full run, all parts, every figure on disk."""
    path = work.results_dir / "summary.json"
    if not path.is_file():
        return [f"no {_rel(path, root)}: the notebook's last cell (write_summary) did not run"]
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return [f"{_rel(path, root)} is not valid JSON ({err})"]
    problems = []
    if summary.get("notebook") not in (None, work.question):
        problems.append(f"{_rel(path, root)} belongs to notebook {summary.get('notebook')!r}")
    if summary.get("smoke") and not allow_smoke:
        problems.append(f"this is a SMOKE run (tiny data, few epochs). For the full results "
                        f"{RERUN.format(q=work.question)}, with smoke = False in the parameters "
                        "cell; or pack it anyway with ALLOW_SMOKE=1 (make) or --allow-smoke")
    results = summary.get("results") or {}
    done = results.get("parts") or []
    missing = [p for p in REQUIRED_PARTS[work.question] if p not in done]
    if missing:
        problems.append(f"parts missing from results['parts']: {', '.join(missing)} "
                        f"(found {done or 'none'})")
    problems += figure_problems(work, results.get("figures"), root)
    return problems


def figure_problems(work: Work, figures, root: Path = ROOT) -> list[str]:
    needed = FIGURE_PARTS[work.question]
    if figures is None:
        figures = {}
    if not isinstance(figures, dict):
        return ["results['figures'] must map each part to its PNG names, e.g. "
                "{'a': ['a_vgg_curves.png'], 'b': [...]}"]
    problems = [f"part ({part}) lists no figure in results['figures']"
                for part in needed if not figures.get(part)]
    for part, names in figures.items():
        for name in ([names] if isinstance(names, str) else names or []):
            relative = Path(name)
            if relative.is_absolute() or ".." in relative.parts:
                problems.append(f"figure {name!r} of part ({part}) must be a name inside results_dir")
                continue
            png = work.results_dir / relative
            if not png.is_file():
                problems.append(f"figure {_rel(png, root)} of part ({part}) is missing")
            elif png.read_bytes()[:8] != PNG_MAGIC:
                problems.append(f"figure {_rel(png, root)} of part ({part}) is not a PNG")
    return problems


def readme_problems(root: Path = ROOT) -> list[str]:
    readme = root / "readme.txt"
    if not readme.is_file():
        return ["readme.txt is missing"]
    text = readme.read_text(encoding="utf-8")
    for section, what in (("Declaration", "help received, use of generative AI tools"),
                          ("Survey", "hours spent")):
        if not re.search(rf"^\s*{section}\b", text, flags=re.MULTILINE):
            return [f"readme.txt has no '{section}' section ({what})"]
    unfilled = [n for n, line in enumerate(text.splitlines(), 1) if PLACEHOLDER in line]
    if unfilled:
        return [f"readme.txt: fill in the Declaration and Survey (lines "
                f"{', '.join(map(str, unfilled))} still say '{PLACEHOLDER} ...]'; "
                "'None' is a valid answer)"]
    return []


def check_bundle(root: Path = ROOT, *, allow_smoke: bool = False,
                 questions=QUESTIONS) -> tuple[dict[str, Work], list[str]]:
    """Everything `make check` verifies. Returns the located work per question
    and a list of problems, each prefixed with what it concerns; empty means ready."""
    found, problems = {}, []
    for q in questions:
        work = locate(q, root)
        if work is None:
            problems.append(f"{q}: no executed notebook (build/{q}/{q}.ipynb, or {q}/{q}.ipynb "
                            f"saved with its outputs): {RERUN.format(q=q)}")
            continue
        found[q] = work
        problems += [f"{q}: {_rel(work.notebook, root)}: {p}" for p in notebook_problems(work.notebook)]
        problems += [f"{q}: {p}" for p in summary_problems(work, allow_smoke, root)]
    problems += readme_problems(root)
    for name in NEEDED:
        if not (root / name).exists():
            problems.append(f"{name} is missing from the bundle")
    return found, problems


def flagged_runs(found: dict[str, Work], flag: str) -> list[str]:
    """The questions whose summary.json sets `flag` ("smoke" or "quick")."""
    flagged = []
    for q, work in found.items():
        try:
            if json.loads((work.results_dir / "summary.json").read_text()).get(flag):
                flagged.append(q)
        except (OSError, json.JSONDecodeError):
            pass
    return flagged


def smoke_runs(found: dict[str, Work]) -> list[str]:
    return flagged_runs(found, "smoke")


def build_zip(student_id: str, root: Path = ROOT, *, out_dir: Path | None = None,
              allow_smoke: bool = False, with_extras: bool = False,
              renderer: str = "auto") -> Path:
    """Check, render missing PDFs, and write `<out_dir>/<ID>.zip` (default: the
    bundle root). Raises SubmitError listing every problem if a check fails."""
    validate_id(student_id)
    found, problems = check_bundle(root, allow_smoke=allow_smoke)
    if problems:
        raise SubmitError("not packing: fix these first\n" + "\n".join(f"  - {p}" for p in problems))
    return pack(found, student_id, root, out_dir=out_dir, with_extras=with_extras,
                renderer=renderer)


def pack(found: dict[str, Work], student_id: str, root: Path = ROOT, **options) -> Path:
    """Write the zip for work that passed the checks, smoke and quick runs labelled."""
    return pack_entries(found, student_id, root, smoke=tuple(smoke_runs(found)),
                        quick=tuple(flagged_runs(found, "quick")), **options)


# --- command line ----------------------------------------------------------------

def _print_check(found, problems, allow_smoke, root) -> None:
    for q, work in found.items():
        print(f"{q}: {_rel(work.notebook, root)} (executed {when(work.ran_at)})")
        for note in work_warnings(work, root):
            print(f"  warning: {note}")
    smoke = smoke_runs(found)
    for q in smoke if allow_smoke else ():
        print(f"{q}: SMOKE RUN (tiny data: its numbers answer nothing), accepted because of "
              "ALLOW_SMOKE=1 / --allow-smoke; the zip says so")
    for q in flagged_runs(found, "quick"):
        print(f"{q}: QUICK RUN (make quick: subsets and few epochs on a CPU); its numbers hold at "
              "that budget only, and the zip says so")
    if problems:
        print(f"\nNot ready to submit ({len(problems)} problem(s)):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
    elif smoke:
        print(f"check passed for a smoke run ({', '.join(smoke)} on tiny data): every notebook "
              "ran to the end, figures and declaration are in place")
    else:
        quick = flagged_runs(found, "quick")
        ran = f"ran to the end ({', '.join(quick)} at the quick budget)" if quick else "ran in full"
        print(f"check passed: every notebook {ran}, figures and declaration are in place")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.tools.submit", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="PDFs of the executed notebooks")
    rep.add_argument("notebooks", nargs="*", help="executed notebooks (default: every question's)")
    chk = sub.add_parser("check", help="is the bundle ready to submit?")
    zp = sub.add_parser("zip", help="check, then write <ID>.zip in the bundle root")
    zp.add_argument("--id", required=True, help="your student ID, e.g. 21123456D")
    zp.add_argument("--with-extras", action="store_true",
                    help="also pack the executed extras notebooks (build/extras/)")
    for p in (chk, zp):
        p.add_argument("--allow-smoke", action="store_true",
                       help="accept smoke runs (labelled as such in the zip)")
    for p in (rep, zp):
        p.add_argument("--renderer", default="auto", help="auto, chromium, webpdf or latex")
    # Another bundle folder than this one; the tests use it.
    ap.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    root = args.root.resolve()
    try:
        if args.command == "report":
            notebooks = [Path(n) for n in args.notebooks] or [
                w.notebook for w in (locate(q, root) for q in QUESTIONS) if w is not None]
            if not notebooks:
                raise SubmitError("no executed notebooks yet: " + RERUN.format(q="Qn"))
            mathjax = find_mathjax()
            print(f"MathJax: {mathjax.split('?')[0]}" + (
                "" if mathjax.startswith("file:")
                else "  (needs internet; offline: apt-get install libjs-mathjax)"))
            for nb in notebooks:
                render_reports(nb, renderer=args.renderer)
        elif args.command == "check":
            found, problems = check_bundle(root, allow_smoke=args.allow_smoke)
            _print_check(found, problems, args.allow_smoke, root)
            return 1 if problems else 0
        else:
            validate_id(args.id)
            found, problems = check_bundle(root, allow_smoke=args.allow_smoke)
            _print_check(found, problems, args.allow_smoke, root)
            if problems:
                return 1
            out = pack(found, args.id, root, with_extras=args.with_extras, renderer=args.renderer)
            with zipfile.ZipFile(out) as zf:
                count = len(zf.namelist())
            print(f"wrote {_rel(out, root)} ({count} files, {out.stat().st_size / 1e6:.1f} MB)")
    except (SubmitError, ReportError) as err:
        print(f"\nERROR: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
