"""`make check` / `make zip`: what is refused, and what the zip holds, read back
with `zipfile`. Each test builds a fabricated, submittable bundle in a temporary
folder (tests/fake_bundle.py), then breaks one thing."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_output

from common.tools import report, submit
from conftest import ROOT, need
from fake_bundle import FIGURES, QUESTIONS, executed_notebook, make_bundle, write_results

STUDENT = "21123456D"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("template") / "bundle")


@pytest.fixture
def bundle(template, tmp_path) -> Path:
    """A fresh copy of the complete bundle (copy2 keeps the PDFs newer than the notebooks)."""
    return Path(shutil.copytree(template, tmp_path / "bundle", symlinks=True))


def problems_of(root: Path, **kw) -> list[str]:
    return submit.check_bundle(root, **kw)[1]


def refused(root: Path, **kw) -> str:
    """Packing fails; return the message. No zip may be left behind."""
    with pytest.raises(submit.SubmitError) as err:
        submit.build_zip(STUDENT, root, **kw)
    assert not list(root.glob("*.zip")) and not list(root.glob("*.zip.tmp"))
    return str(err.value)


def edit_notebook(root: Path, q: str, change) -> None:
    path = root / "build" / q / f"{q}.ipynb"
    nb = nbformat.read(path, as_version=4)
    change(nb)
    nbformat.write(nb, path)


def edit_summary(root: Path, q: str, change) -> None:
    path = root / "build" / q / "results" / "summary.json"
    summary = json.loads(path.read_text())
    change(summary)
    path.write_text(json.dumps(summary))


# --- a complete bundle -------------------------------------------------------------

def test_complete_bundle_passes_the_check(bundle):
    found, problems = submit.check_bundle(bundle)
    assert problems == []
    assert set(found) == set(QUESTIONS)


def test_zip_layout_read_back(bundle):
    out = submit.build_zip(STUDENT, bundle)
    assert out == bundle / f"{STUDENT}.zip"
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        for name in names:
            assert not name.startswith("/") and ".." not in Path(name).parts and "\\" not in name
        assert {n.split("/")[0] for n in names} == {
            "Q1", "Q2", "Q3", "common", "profiles", "readme.txt", "requirements.txt", "Makefile"}
        # (the fabricated bundle has no tests/, benchmarks/ or extras/ to pack)
        for q in QUESTIONS:
            for name in (f"{q}.ipynb", f"{q}.pdf", f"{q}_report.pdf", "results/summary.json"):
                assert f"{q}/{name}" in names
            for pngs in FIGURES[q].values():
                for png in pngs:
                    assert zf.read(f"{q}/results/{png}")[:8] == submit.PNG_MAGIC
            # The packed notebook is the executed one, outputs and all.
            packed = nbformat.reads(zf.read(f"{q}/{q}.ipynb").decode(), as_version=4)
            built = nbformat.read(bundle / "build" / q / f"{q}.ipynb", as_version=4)
            assert packed == built
            assert any(c.get("outputs") for c in packed.cells)
        assert "common/tools/submit.py" in names and "common/config.py" in names
        assert zf.read("readme.txt") == (bundle / "readme.txt").read_bytes()


def test_unzipping_gives_the_question_folders_at_the_top(bundle, tmp_path):
    out = submit.build_zip(STUDENT, bundle, out_dir=tmp_path / "out")
    assert out.parent == tmp_path / "out"
    target = tmp_path / "unzipped"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(target)
    for folder in ("Q1", "Q2", "Q3", "common"):
        assert (target / folder).is_dir()
    assert (target / "readme.txt").is_file() and (target / "requirements.txt").is_file()
    # The unzipped bundle passes the same check: it is found as notebooks saved in place.
    assert problems_of(target) == []


def test_no_data_checkpoints_or_caches_leak(bundle):
    planted = {
        "data/cifar10.uint8.pt": b"x", "data/cifar-10-python.tar.gz": b"x",
        "runs/full/Q2/vgg/last.pt": b"x", "runs/full/Q2/vgg/history.json": b"{}",
        "common/__pycache__/runtime.cpython-311.pyc": b"x", "common/stray.pyc": b"x",
        "build/Q2/results/model.pt": b"x", "build/Q2/results/data_batch_1": b"x",
        "build/Q2/results/.ipynb_checkpoints/x.png": b"x",
        "build/Q3/results/train-images-idx3-ubyte": b"x",
        ".venv/bin/python": b"x", "build/extras/E1/E1.ipynb": b"{}",
    }
    for name, data in planted.items():
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / name).write_bytes(data)
    with zipfile.ZipFile(submit.build_zip(STUDENT, bundle)) as zf:
        names = zf.namelist()
    leaked = [n for n in names if re.search(
        r"\.pt$|\.pyc$|\.tar\.gz$|__pycache__|\.ipynb_checkpoints|data_batch|ubyte|^runs/|^data/|"
        r"\.venv|^extras/executed/|^build/", n)]
    assert leaked == []
    # The executed extras notebooks are packed only when asked for.
    with zipfile.ZipFile(submit.build_zip(STUDENT, bundle, with_extras=True)) as zf:
        assert "extras/executed/E1/E1.ipynb" in zf.namelist()


def test_subpackages_are_packed_even_when_named_like_data(bundle):
    """common/tools/ and a package called data/ are code; a plain data/ folder is not."""
    planted = {"common/data/__init__.py": b"", "common/data/batches.py": b"X = 1\n",
               "common/tools/data/cifar10.bin": b"x", "common/tools/data/labels.txt": b"x"}
    for name, data in planted.items():
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / name).write_bytes(data)
    with zipfile.ZipFile(submit.build_zip(STUDENT, bundle)) as zf:
        names = set(zf.namelist())
    assert {"common/tools/__init__.py", "common/tools/submit.py", "common/data/__init__.py",
            "common/data/batches.py"} <= names
    assert not [n for n in names if n.startswith("common/tools/data/")]


# --- refusals ----------------------------------------------------------------------

def test_refuses_an_error_cell(bundle):
    def add_error(nb):
        nb.cells.append(new_code_cell("1 / 0", execution_count=9, outputs=[new_output(
            "error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])]))
    edit_notebook(bundle, "Q2", add_error)
    message = refused(bundle)
    assert "Q2" in message and "ZeroDivisionError: division by zero" in message
    assert "Q1" not in message and "Q3" not in message


def test_refuses_a_papermill_failure(bundle):
    def papermill_failed(nb):
        nb.metadata["papermill"]["exception"] = True
        banner = new_markdown_cell('<span style="color:red">An Exception was encountered</span>')
        banner.metadata["tags"] = ["papermill-error-cell-tag"]
        nb.cells.insert(0, banner)
        nb.cells.append(new_code_cell("plot_everything()"))  # never ran
    edit_notebook(bundle, "Q3", papermill_failed)
    message = refused(bundle)
    assert "papermill recorded an exception" in message
    assert "banner" in message
    assert "1 code cell(s) never ran" in message


def test_refuses_a_missing_figure(bundle):
    (bundle / "build" / "Q2" / "results" / "b_optimisers.png").unlink()
    message = refused(bundle)
    assert "build/Q2/results/b_optimisers.png of part (b) is missing" in message


def test_refuses_a_part_without_figures_and_a_fake_png(bundle):
    edit_summary(bundle, "Q3", lambda s: s["results"]["figures"].pop("c"))
    (bundle / "build" / "Q2" / "results" / "c_improvements.png").write_text("not an image")
    message = refused(bundle)
    assert "Q3: part (c) lists no figure" in message
    assert "c_improvements.png of part (c) is not a PNG" in message


def test_refuses_figure_names_outside_results_dir(bundle):
    edit_summary(bundle, "Q2", lambda s: s["results"]["figures"]["a"].append("../../readme.txt"))
    assert "must be a name inside results_dir" in refused(bundle)


def test_refuses_missing_parts_and_missing_summary(bundle):
    edit_summary(bundle, "Q2", lambda s: s["results"].update(parts=["a", "b"]))
    (bundle / "build" / "Q3" / "results" / "summary.json").unlink()
    message = refused(bundle)
    assert "Q2: parts missing from results['parts']: c" in message
    assert "Q3: no build/Q3/results/summary.json" in message


def test_refuses_a_missing_notebook(bundle):
    shutil.rmtree(bundle / "build" / "Q1")
    assert "Q1: no executed notebook" in refused(bundle)


def test_smoke_run_is_refused_unless_allowed_then_labelled(bundle):
    write_results(bundle / "build" / "Q2" / "results", "Q2", smoke=True)
    message = refused(bundle)
    assert "Q2: this is a SMOKE run" in message and "ALLOW_SMOKE=1" in message
    out = submit.build_zip(STUDENT, bundle, allow_smoke=True)
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert "Q2/SMOKE_RUN.txt" in names
        assert "Q1/SMOKE_RUN.txt" not in names and "Q3/SMOKE_RUN.txt" not in names


def test_a_smoke_run_is_never_called_a_full_one(bundle, capsys):
    write_results(bundle / "build" / "Q2" / "results", "Q2", smoke=True)
    assert submit.main(["--root", str(bundle), "check"]) == 1
    err = capsys.readouterr().err
    assert "make all" in err and "on Colab, open Q2/Q2.ipynb" in err and "Runtime > Run all" in err
    assert submit.main(["--root", str(bundle), "check", "--allow-smoke"]) == 0
    out = capsys.readouterr().out
    assert "Q2: SMOKE RUN" in out and "check passed for a smoke run (Q2" in out
    assert "ran in full" not in out


def test_the_zip_ships_what_its_tests_and_makefile_need():
    """Every bundle-local module a shipped test imports, and every notebook the
    Makefile runs, is in the zip (read from the real bundle's layout)."""
    import ast

    names = set(submit.zip_entries({}, ROOT))
    local = {p.name for p in ROOT.iterdir() if p.is_dir()} | {
        p.stem for p in (ROOT / "tests").glob("*.py")}
    missing = []
    for test in sorted(n for n in names if n.startswith("tests/") and n.endswith(".py")):
        for node in ast.walk(ast.parse((ROOT / test).read_text())):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for module in modules:
                top = module.split(".")[0]
                if top in local and not ({f"tests/{top}.py", f"{top}/__init__.py"} & names
                                         or any(n.startswith(top + "/") for n in names)):
                    missing.append(f"{test} imports {module}")
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    listed = next(l for l in makefile.splitlines() if l.startswith("NOTEBOOKS")).split("=", 1)[1]
    # Q1-Q3 come from the checked work, which the zip always holds; the rest from the bundle.
    missing += [f"the Makefile runs {nb}" for nb in listed.split()
                if nb not in names and nb.split("/")[0] not in submit.QUESTIONS]
    assert missing == []
    assert {"benchmarks/gpu_check.py", "extras/numpy_mlp.ipynb", "pytest.ini"} <= names


def test_quick_run_is_accepted_and_labelled(bundle, capsys):
    write_results(bundle / "build" / "Q2" / "results", "Q2", quick=True)
    assert submit.main(["--root", str(bundle), "check"]) == 0
    out = capsys.readouterr().out
    assert "Q2: QUICK RUN" in out and "ran to the end" in out and "ran in full" not in out
    with zipfile.ZipFile(submit.build_zip(STUDENT, bundle)) as zf:
        names = zf.namelist()
        assert "Q2/QUICK_RUN.txt" in names and "Q1/QUICK_RUN.txt" not in names
        assert "at that budget" in zf.read("Q2/QUICK_RUN.txt").decode()


def test_untouched_declaration_is_refused(tmp_path):
    root = make_bundle(tmp_path / "bundle", declaration=False)
    text = (root / "readme.txt").read_text()
    assert text == (ROOT / "readme.txt").read_text()  # the readme as shipped
    message = refused(root)
    assert "readme.txt: fill in the Declaration and Survey" in message
    unfilled = [str(n) for n, line in enumerate(text.splitlines(), 1) if "[FILL IN" in line]
    assert len(unfilled) >= 4  # name/ID, others' help, generative AI, hours
    assert ", ".join(unfilled) in message


def test_one_unfilled_placeholder_is_enough_to_refuse(bundle):
    readme = bundle / "readme.txt"
    readme.write_text(readme.read_text().replace("Hours spent on this assignment: 30",
                                                 "Hours spent on this assignment: [FILL IN: hours]"))
    assert "fill in the Declaration" in refused(bundle)


def test_readme_without_a_declaration_is_refused(bundle):
    readme = bundle / "readme.txt"
    readme.write_text(re.sub(r"(?m)^Declaration$", "Notes", readme.read_text()))
    assert "no 'Declaration' section" in refused(bundle)


@pytest.mark.parametrize("bad", ["", "../21123456D", "21123456D/../../x", "/tmp/x",
                                 "2112 3456D", "21123456D.zip", "..", "a" * 40])
def test_bad_id_is_refused(bundle, bad):
    with pytest.raises(submit.SubmitError, match="letters and digits only"):
        submit.build_zip(bad, bundle)
    assert not list(bundle.rglob("*.zip")) and not list(bundle.parent.rglob("*.zip"))


def test_problems_are_all_listed_at_once(bundle):
    edit_summary(bundle, "Q2", lambda s: s.update(smoke=True))
    (bundle / "build" / "Q3" / "results" / "a_fractions.png").unlink()
    readme = bundle / "readme.txt"
    readme.write_text(readme.read_text().replace("Hours spent on this assignment: 30",
                                                 "Hours spent on this assignment: [FILL IN: hours]"))
    problems = problems_of(bundle)
    assert len(problems) == 3
    assert [p.split(":")[0] for p in problems] == ["Q2", "Q3", "readme.txt"]


# --- where the work is found ------------------------------------------------------------

def test_notebook_saved_in_place_is_used_without_build(tmp_path):
    """Run by hand in Jupyter or on Colab: Qn/Qn.ipynb with outputs and Qn/results."""
    root = make_bundle(tmp_path / "bundle", questions=())
    for q in QUESTIONS:
        (root / q).mkdir()
        nbformat.write(executed_notebook(q), root / q / f"{q}.ipynb")
        write_results(root / q / "results", q)
    found, problems = submit.check_bundle(root)
    assert problems == []
    assert found["Q2"].notebook == root / "Q2" / "Q2.ipynb"
    assert found["Q2"].results_dir == root / "Q2" / "results"


def test_committed_notebook_without_outputs_is_not_taken_for_a_run(tmp_path):
    root = make_bundle(tmp_path / "bundle", questions=())
    (root / "Q1").mkdir()
    nb = executed_notebook("Q1")
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, root / "Q1" / "Q1.ipynb")
    assert submit.locate("Q1", root) is None


def executed(q: str, **stamps) -> nbformat.NotebookNode:
    """An executed notebook stamped as papermill (end_time) or Colab (executionInfo) does."""
    nb = executed_notebook(q)
    if "papermill" in stamps:
        nb.metadata["papermill"]["end_time"] = stamps["papermill"]
    if "colab" in stamps:
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.metadata["executionInfo"] = {"status": "ok", "timestamp": stamps["colab"]}
    return nb


def test_the_notebook_executed_last_is_packed_and_the_other_named(bundle, capsys):
    """A local build copied to Drive with the bundle, then the notebook run on Colab."""
    nbformat.write(executed("Q2", papermill="2025-06-01T10:00:00.000000"),
                   bundle / "build" / "Q2" / "Q2.ipynb")
    (bundle / "Q2").mkdir()
    nbformat.write(executed("Q2", colab=1750000000000), bundle / "Q2" / "Q2.ipynb")  # 2025-06-15
    write_results(bundle / "Q2" / "results", "Q2")
    for name in ("Q2.pdf", "Q2_report.pdf"):  # stand-ins, newer than the notebook
        (bundle / "Q2" / name).write_bytes(b"%PDF-1.4\n% stand-in\n")
    found, problems = submit.check_bundle(bundle)
    assert problems == [] and found["Q2"].notebook == bundle / "Q2" / "Q2.ipynb"
    assert found["Q2"].results_dir == bundle / "Q2" / "results"
    assert submit.main(["--root", str(bundle), "check"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^Q2: Q2/Q2\.ipynb \(executed 2025-06-1[45] \d\d:\d\d\)$", out, re.M)
    assert "  warning: build/Q2/Q2.ipynb (executed 2025-06-01 " in out and "NOT packed" in out
    with zipfile.ZipFile(submit.build_zip(STUDENT, bundle)) as zf:
        assert zf.read("Q2/Q2.ipynb") == (bundle / "Q2" / "Q2.ipynb").read_bytes()
    # The other way round: the build is the newer run.
    nbformat.write(executed("Q2", papermill="2025-07-01T10:00:00.000000"),
                   bundle / "build" / "Q2" / "Q2.ipynb")
    assert submit.locate("Q2", bundle).notebook == bundle / "build" / "Q2" / "Q2.ipynb"


def test_a_newer_failed_run_is_named_beside_the_good_one(bundle, capsys):
    failed = bundle / "build" / "Q3" / "Q3.failed.ipynb"
    nbformat.write(executed_notebook("Q3"), failed)
    os.utime(failed, (4102444800, 4102444800))  # newer than the good run
    assert submit.main(["--root", str(bundle), "check"]) == 0
    out = capsys.readouterr().out
    assert "  warning: build/Q3/Q3.failed.ipynb (" in out and "is a newer run that FAILED" in out


def test_make_zip_with_a_quote_in_the_id_is_a_clean_error():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-o", ".venv/.requirements-stamp", "zip", 'ID=21"23'], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "ERROR: ID='21\"23': a student ID is letters and digits only" in done.stderr
    assert "unexpected EOF" not in done.stderr and "syntax error" not in done.stderr


# --- the command line and the Makefile ----------------------------------------------------

def test_cli_check_and_zip(bundle, capsys):
    assert submit.main(["--root", str(bundle), "check"]) == 0
    assert "check passed" in capsys.readouterr().out
    assert submit.main(["--root", str(bundle), "zip", "--id", STUDENT]) == 0
    assert f"wrote {STUDENT}.zip" in capsys.readouterr().out
    (bundle / "build" / "Q2" / "results" / "a_vgg_curves.png").unlink()
    assert submit.main(["--root", str(bundle), "check"]) == 1
    err = capsys.readouterr().err
    assert "Not ready to submit (1 problem(s))" in err and "a_vgg_curves.png" in err
    assert submit.main(["--root", str(bundle), "zip", "--id", "../x"]) == 1
    assert "letters and digits only" in capsys.readouterr().err


def test_makefile_targets_pass_the_id_and_the_smoke_flag():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "zip", f"ID={STUDENT}",
                          "ALLOW_SMOKE=1"], cwd=ROOT, capture_output=True, text=True).stdout
    assert f"-m common.tools.submit zip --id '{STUDENT}' --allow-smoke" in out
    out = subprocess.run(["make", "-n", "check"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "-m common.tools.submit check" in out and "--allow-smoke" not in out


def test_readme_gives_the_commands_first_and_documents_the_rest():
    text = (ROOT / "readme.txt").read_text()
    first = "\n".join(text.splitlines()[:8])
    assert "make all" in first and "make test" in first and "ESTIMATE" in first
    for needed in ("make smoke", "make help", "make report", "make check", "make zip ID=",
                   "DATA_DIR=", 'SET="epochs=5 device=cuda"', "runs/<profile>/Qn",
                   "build/Qn/", "/content/drive/MyDrive/comp5541-bundle.zip", "make bundle",
                   "make clean-smoke", "runs/Q2/smoke/<run>", "TORCH_HOME", "800 MB",
                   "training_time_s", "libjs-mathjax",
                   "dataset-fashion-mnist", "<data_dir>/cifar10/{train,test}/<class>/*.jpg"):
        assert needed in text, f"readme.txt does not mention {needed!r}"
    for placeholder in ("OWNER/REPO", "comp5541.zip", "git clone", "smoke_<run>"):
        assert placeholder not in text, f"readme.txt still says {placeholder!r}"
    # Every `make <target>` the readme names exists in the Makefile.
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"(?m)^([a-z][a-z-]*):", makefile))
    named = set(re.findall(r"(?m)^\s+make ([a-z][a-z-]*)", text))
    assert named <= targets, f"readme names missing targets: {sorted(named - targets)}"


# --- the real thing: PDFs rendered by Chromium while packing -----------------------------

def test_zip_renders_missing_pdfs_with_chromium(tmp_path):
    need(report.find_browser(), "Chromium is not installed (apt-get install chromium)")
    root = make_bundle(tmp_path / "bundle")
    for name in ("Q1.pdf", "Q1_report.pdf"):
        (root / "build" / "Q1" / name).unlink()
    out = submit.build_zip(STUDENT, root, renderer="chromium")
    assert (root / "build" / "Q1" / "Q1.pdf").is_file()
    with zipfile.ZipFile(out) as zf:
        for name in ("Q1/Q1.pdf", "Q1/Q1_report.pdf"):
            data = zf.read(name)
            assert data.startswith(b"%PDF-") and len(data) > 10_000
