"""The Colab journey of readme.txt, simulated end to end (tests/fake_colab.py):
`make bundle`, upload, the readme's unzip cell as written, open a notebook and
Run all (papermill saves it in place, as Colab does), open one from outside the
bundle, disconnect, Run all again, then check and zip from the Drive bundle.

Q1 walks the whole journey (seconds per run). Q2 in smoke mode shows where data,
results and checkpoints land and that a rerun after a disconnect reuses every
finished run; it needs ../shared/data (skipped without it, failed under CI=true).
Then the places students actually go (issue 22, cases 1-8): a saved copy, a stale
local build, the bundle zip, the unzip cell run twice, two bundles and an override,
a bundle one folder down, a nested duplicate, a full Drive.
Run with -s to see the paths printed, the Drive footprint and the zip listing.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from common.tools import run
from common.tools.bundle import ZIP_NAME, write_bundle
from conftest import CIFAR_ARCHIVE, ROOT, bundle_kernel, need_data
from fake_bundle import executed_notebook, fill_declaration, write_results
from fake_colab import Colab, line_of

STUDENT = "21123456D"


def readme_cell(step: str) -> str:
    """The cell under step `step` of the readme's 'Running on Google Colab', as written."""
    text = (ROOT / "readme.txt").read_text()
    lines = text[text.index("Running on Google Colab"):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{step}. "))
    cell = []
    for line in lines[start + 1:]:
        if line.startswith(" " * 7):
            cell.append(line.strip())
        elif cell or re.match(r"\d+\. ", line):
            break
    return "\n".join(cell)


def upload_and_unzip(colab: Colab) -> Path:
    """readme.txt's steps 1-2: `make bundle`'s zip uploaded to My Drive, then step 2's
    cell run as written."""
    write_bundle(ROOT, colab.my_drive / ZIP_NAME)  # what `make bundle` writes, uploaded
    done = colab.colab_cell(readme_cell("2"))
    assert done.returncode == 0, done.stderr
    for name in ("common", "Q1", "Q2", "Q3", "readme.txt"):
        assert name in done.stdout.split()  # the cell's listing
    colab.assign_drive_ids()
    return colab.my_drive / "comp5541"


def run_all(colab: Colab, notebook: Path, **params) -> subprocess.CompletedProcess:
    """Runtime > Run all on the opened notebook; Colab saves it in place."""
    colab.open(notebook)
    args = [sys.executable, "-m", "papermill", str(notebook), str(notebook), "--cwd",
            str(colab.content), "--no-progress-bar", "--log-output"]
    if params:
        args += ["-y", json.dumps(params)]
    if bundle_kernel():
        args += ["-k", bundle_kernel()]
    return subprocess.run(args, env=colab.env(), cwd=colab.content, capture_output=True,
                          text=True, timeout=900)


def outputs(notebook: Path) -> str:
    nb = nbformat.read(notebook, as_version=4)
    return "\n".join(str(o.get("text", "")) + str(o.get("evalue", ""))
                     for c in nb.cells for o in c.get("outputs", []))


def footprint(folder: Path) -> str:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB"


@pytest.fixture
def colab(tmp_path) -> Colab:
    return Colab(tmp_path)


def test_q1_journey_bundle_in_drive_beside_decoys_to_the_zip(colab, tmp_path):
    bundle = upload_and_unzip(colab)
    decoy = Path(shutil.copytree(bundle, colab.my_drive / "Copy of comp5541"))
    local = Path(shutil.copytree(bundle, colab.content / "comp5541"))  # cloned into /content
    colab.assign_drive_ids()
    seen = colab.drive_path(bundle)

    # Open My Drive/comp5541/Q1/Q1.ipynb, Run all: the notebook's own bundle is used.
    done = run_all(colab, bundle / "Q1" / "Q1.ipynb")
    assert done.returncode == 0, done.stderr[-3000:]
    text = outputs(bundle / "Q1" / "Q1.ipynb")
    assert f"bundle: {seen}\n  because it holds this notebook ({seen}/Q1/Q1.ipynb)" in text
    assert f"ignored, as not in Google Drive: {local}" in text
    assert (bundle / "Q1" / "results" / "summary.json").is_file()
    assert colab.pycache() == []  # nothing compiled is written into Drive
    for other in (decoy, local):
        assert not (other / "Q1" / "results").exists() and not (other / "runs").exists()
    print("\n" + text.split("Q1 configuration")[0].strip())

    # A copy opened from elsewhere in Drive is refused, naming the files to open.
    stray = colab.my_drive / "Colab Notebooks" / "Q1.ipynb"
    stray.parent.mkdir()
    shutil.copy(ROOT / "Q1" / "Q1.ipynb", stray)
    colab.assign_drive_ids()
    done = run_all(colab, stray)
    assert done.returncode != 0
    assert "not a bundle's own copy" in outputs(stray)
    assert f"{seen}/Q1/Q1.ipynb" in outputs(stray)

    # Disconnect: /content is wiped, Drive stays. Run all again: mounted again, same bundle.
    first = json.loads((bundle / "Q1" / "results" / "summary.json").read_text())
    colab.disconnect()
    done = run_all(colab, bundle / "Q1" / "Q1.ipynb")
    assert done.returncode == 0, done.stderr[-3000:]
    assert colab.mounts() == [str(colab.content / "drive")] * 2
    assert colab.pycache() == []  # the first cell imported from Drive this time: still none
    again = json.loads((bundle / "Q1" / "results" / "summary.json").read_text())
    assert again["finished_at"] >= first["finished_at"] and again["results"]["loss"] == first["results"]["loss"]

    # Check and zip from the Drive bundle (readme step 8). Q2 and Q3 are stand-ins here
    # (test_q2_smoke... runs Q2 for real), saved in place as Colab saves them.
    for q in ("Q2", "Q3"):
        nbformat.write(executed_notebook(q), bundle / q / f"{q}.ipynb")
        write_results(bundle / q / "results", q, smoke=True)
    for q in ("Q1", "Q2", "Q3"):  # stand-in PDFs, newer than the notebooks: no browser needed
        for name in (f"{q}.pdf", f"{q}_report.pdf"):
            (bundle / q / name).write_bytes(b"%PDF-1.4\n% stand-in\n")
    fill_declaration(bundle / "readme.txt")
    submit = [sys.executable, "-m", "common.tools.submit"]
    done = subprocess.run(submit + ["zip", "--id", STUDENT, "--allow-smoke"], cwd=bundle,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "check passed for a smoke run" in done.stdout and "ran in full" not in done.stdout
    with zipfile.ZipFile(bundle / f"{STUDENT}.zip") as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "unzipped")
    for needed in ("Q1/Q1.ipynb", "Q1/Q1.pdf", "Q1/Q1_report.pdf", "Q1/results/summary.json",
                   "Q2/SMOKE_RUN.txt", "common/tools/colab.py", "tests/test_bench.py",
                   "benchmarks/bench.py", "extras/numpy_mlp.ipynb", "Makefile", "readme.txt"):
        assert needed in names
    assert not [n for n in names if n.startswith(("runs/", "data/", "build/")) or n.endswith(".zip")]
    # The unzipped submission passes the same check.
    done = subprocess.run(submit + ["check", "--allow-smoke"], cwd=tmp_path / "unzipped",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    tops = {}
    for n in names:
        tops[n.split("/")[0]] = tops.get(n.split("/")[0], 0) + 1
    print(f"zip: {len(names)} files: " + ", ".join(f"{k} ({v})" for k, v in sorted(tops.items())))
    print("   ", ", ".join(n for n in sorted(names) if n.startswith("Q1/")))


def test_q2_smoke_data_on_local_disk_runs_in_drive_reused_after_a_disconnect(colab):
    need_data(CIFAR_ARCHIVE, "the CIFAR-10 JPEG copy (../shared/data/cifar10-jpeg.tar.xz)")
    from conftest import TEST_DATA
    import tarfile
    if not (TEST_DATA / "cifar10-jpeg" / "test").is_dir():
        TEST_DATA.mkdir(parents=True, exist_ok=True)
        with tarfile.open(CIFAR_ARCHIVE) as tar:
            tar.extractall(TEST_DATA, filter="data")
    bundle = upload_and_unzip(colab)

    def download() -> None:
        """What torchvision's download does on Colab, offline: CIFAR-10 into /content/data."""
        (colab.content / "data").mkdir(exist_ok=True)
        os.symlink(TEST_DATA / "cifar10-jpeg", colab.content / "data" / "cifar10-jpeg")

    download()
    # A smoke run on Colab: smoke = True, with the sizes profiles/smoke.yaml gives make smoke.
    smoke = {"smoke": True, **run.load_profile(ROOT / "profiles" / "smoke.yaml")["notebooks"].get(
        "Q2/Q2.ipynb", {})}
    done = run_all(colab, bundle / "Q2" / "Q2.ipynb", **smoke)
    assert done.returncode == 0, done.stderr[-3000:]
    first = json.loads((bundle / "Q2" / "results" / "summary.json").read_text())
    assert first["config"]["data_dir"] == str(colab.content / "data")
    assert (colab.content / "data" / "cifar10.uint8.pt").is_file()  # the decoded cache: local disk
    runs = sorted(p.parent.name for p in (bundle / "runs" / "Q2" / "smoke").glob("*/history.json"))
    assert runs and first["training_runs"] == len(runs) and first["training_time_s"] > 0
    assert not list(colab.store.rglob("*.uint8.pt")) and not list(colab.store.rglob("cifar10-jpeg"))
    print(f"\nDrive after a Q2 smoke run: {footprint(colab.store)} "
          f"(runs/Q2/smoke: {footprint(bundle / 'runs' / 'Q2' / 'smoke')}; {len(runs)} runs)")

    colab.disconnect()
    download()
    done = run_all(colab, bundle / "Q2" / "Q2.ipynb", **smoke)
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads((bundle / "Q2" / "results" / "summary.json").read_text())
    text = outputs(bundle / "Q2" / "Q2.ipynb")
    assert text.count("finished earlier") >= len(runs)
    assert again["training_time_s"] == first["training_time_s"]
    print(f"wall time: {first['wall_time_s']:.1f} s first, {again['wall_time_s']:.1f} s after the "
          f"disconnect; training time kept: {again['training_time_s']:.1f} s")


# --- where students actually go (issue 22): each case failed before its fix --------

def refused(done) -> str:
    """The first cell's refusal: it must fail, and say so in one BundleError."""
    assert done.returncode != 0 and "BundleError" in done.stderr, done.stdout + done.stderr
    return done.stderr


def test_case1_a_copy_saved_in_drive_is_refused_by_name(colab):
    bundle = upload_and_unzip(colab)
    seen = colab.drive_path(bundle)
    copy = colab.save_copy(bundle / "Q2" / "Q2.ipynb")  # File > Save a copy in Drive
    colab.open(copy)
    err = refused(colab.run_cell(check=False))
    assert "This notebook (Copy of Q2.ipynb) is not a bundle's own copy" in err
    assert f"{seen}/Q2/Q2.ipynb" in err  # the file to open instead
    assert "did not say which file" not in err and "only bundle" not in err
    # Run all: refused in the first cell; nothing reaches the bundle.
    done = run_all(colab, copy, smoke=True)
    assert done.returncode != 0 and "not a bundle's own copy" in outputs(copy)
    assert not (bundle / "Q2" / "results").exists() and not (bundle / "runs").exists()
    # An upload to Colab Notebooks under the bundle's own name: another file, another id.
    upload = copy.with_name("Q2.ipynb")
    shutil.copy(ROOT / "Q2" / "Q2.ipynb", upload)
    colab.assign_drive_ids()
    colab.open(upload)
    assert f"{seen}/Q2/Q2.ipynb" in refused(colab.run_cell(check=False))
    # As in Drive, the copy saved in place by that Run all kept its id, and the copy made
    # of it got a new one; the bundle's own notebook is used.
    colab.assign_drive_ids()
    assert os.getxattr(copy, "user.drive.id").decode() == colab.ids[copy] != colab.ids[upload]
    colab.open(bundle / "Q2" / "Q2.ipynb")
    assert line_of(colab.run_cell(), "BUNDLE") == seen


def test_case2_the_notebook_run_last_is_packed_and_a_stale_build_is_named(colab, tmp_path):
    bundle = upload_and_unzip(colab)
    # `make smoke` on the computer a day before, then the whole folder copied to Drive.
    stale = executed_notebook("Q1")
    stale.metadata["papermill"]["end_time"] = "2020-01-01T10:00:00.000000"
    (bundle / "build" / "Q1").mkdir(parents=True)
    nbformat.write(stale, bundle / "build" / "Q1" / "Q1.ipynb")
    write_results(bundle / "build" / "Q1" / "results", "Q1", smoke=True)
    # Then Q1 on Colab with a changed parameter, saved in place.
    done = run_all(colab, bundle / "Q1" / "Q1.ipynb", sig_digits=4)
    assert done.returncode == 0, done.stderr[-3000:]
    for q in ("Q2", "Q3"):
        nbformat.write(executed_notebook(q), bundle / q / f"{q}.ipynb")
        write_results(bundle / q / "results", q, smoke=True)
        for name in (f"{q}.pdf", f"{q}_report.pdf"):
            (bundle / q / name).write_bytes(b"%PDF-1.4\n% stand-in\n")
    for name in ("Q1.pdf", "Q1_report.pdf"):
        (bundle / "Q1" / name).write_bytes(b"%PDF-1.4\n% stand-in\n")
    fill_declaration(bundle / "readme.txt")
    done = subprocess.run([sys.executable, "-m", "common.tools.submit", "zip", "--id", STUDENT,
                           "--allow-smoke"], cwd=bundle, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^Q1: Q1/Q1\.ipynb \(executed \d{4}-\d\d-\d\d \d\d:\d\d\)$", done.stdout, re.M)
    assert ("warning: build/Q1/Q1.ipynb (executed 2020-01-01 10:00) is older: it is NOT packed"
            in done.stdout)
    with zipfile.ZipFile(bundle / f"{STUDENT}.zip") as zf:
        assert zf.read("Q1/Q1.ipynb") == (bundle / "Q1" / "Q1.ipynb").read_bytes()
        assert "sig_digits = 4" in zf.read("Q1/Q1.ipynb").decode()
        summary = json.loads(zf.read("Q1/results/summary.json"))
    assert summary["config"]["results_dir"].endswith("/comp5541/Q1/results")  # not build/'s


def test_case3_make_bundle_zips_exactly_the_bundle_in_one_folder(tmp_path):
    from fake_colab import bundle_files

    shipped = [p for p in bundle_files() if not any(part.startswith(".") for part in p.split("/"))]
    src = tmp_path / "work"
    for name in shipped:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    # What a working folder also holds after make venv, make smoke and make zip.
    for junk in (".git/HEAD", ".venv/bin/python", "build/Q1/Q1.ipynb", "runs/Q2/smoke/a/last.pt",
                 "data/cifar10.uint8.pt", "common/__pycache__/config.cpython-311.pyc",
                 "Q2/.ipynb_checkpoints/Q2-checkpoint.ipynb", "21123456D.zip", ".gitignore"):
        (src / junk).parent.mkdir(parents=True, exist_ok=True)
        (src / junk).write_text("junk")
    done = subprocess.run([sys.executable, "-m", "common.tools.bundle", "--root", str(src)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(src / ZIP_NAME) as zf:
        names = zf.namelist()
    assert {n.split("/")[0] for n in names} == {"comp5541"}  # unzips to one folder
    assert sorted(n.split("/", 1)[1] for n in names) == sorted(shipped)
    make = subprocess.run(["make", "-n", "bundle"], cwd=ROOT, capture_output=True, text=True)
    assert "-m common.tools.bundle" in make.stdout


def test_case4_the_readme_unzip_cell_twice_changes_nothing_and_needs_no_mv(colab):
    text = (ROOT / "readme.txt").read_text()
    assert "!mv " not in text and "make bundle" in readme_cell_step(text, "1")
    bundle = upload_and_unzip(colab)
    assert sorted(p.name for p in colab.my_drive.iterdir()) == ["comp5541", ZIP_NAME]
    nbformat.write(executed_notebook("Q1"), bundle / "Q1" / "Q1.ipynb")  # Colab saved its outputs
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    done = colab.colab_cell(readme_cell("2"))  # the same cell again
    assert done.returncode == 0, done.stderr
    after = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    assert after == before  # nothing moved, nothing overwritten, no comp5541/comp5541
    assert sorted(p.name for p in colab.my_drive.iterdir()) == ["comp5541", ZIP_NAME]


def readme_cell_step(text: str, step: str) -> str:
    """The text of the readme's Colab step `step` (up to the next step)."""
    section = text[text.index("Running on Google Colab"):]
    return re.search(rf"(?ms)^{step}\. (.*?)(?=^\d+\. )", section).group(1)


def test_case5_two_bundles_each_named_and_a_wrong_override_refused(colab):
    first = colab.add_bundle(colab.my_drive / "comp5541")
    mine = colab.add_bundle(colab.my_drive / "comp5541 (1)")
    notebook = mine / "Q1" / "Q1.ipynb"
    colab.open(None)  # no file id from Colab: the refusal offers each bundle, not one of them
    err = refused(colab.run_cell(check=False))
    for bundle in (first, mine):
        assert f"%env COMP5541_BUNDLE={colab.drive_path(bundle)}\n" in err + "\n"
    assert "Locate in Drive" in err
    colab.open(notebook)  # with the id: an override naming the other bundle is refused
    err = refused(colab.run_cell(check=False, COMP5541_BUNDLE=str(colab.drive_path(first))))
    assert (f"COMP5541_BUNDLE={colab.drive_path(first)} does not hold this notebook: "
            f"{colab.drive_path(mine)} does") in err
    assert not (first / "runs").exists() and not (mine / "runs").exists()
    done = colab.run_cell(COMP5541_BUNDLE=str(colab.drive_path(mine)))
    assert line_of(done, "BUNDLE") == colab.drive_path(mine)
    assert "COMP5541_BUNDLE names it, and it holds this notebook" in done.stdout


@pytest.mark.parametrize("folder", ["COMP5541/comp5541", "Colab Notebooks/comp5541"])
def test_case6_a_bundle_one_folder_down_is_found(colab, folder):
    bundle = colab.add_bundle(colab.my_drive / folder)
    colab.open(bundle / "Q1" / "Q1.ipynb")
    done = colab.run_cell()
    assert line_of(done, "BUNDLE") == colab.drive_path(bundle)
    assert line_of(done, "COMMON") == colab.drive_path(bundle) / "common" / "config.py"
    assert colab.pycache() == []  # and no compiled files land in Drive


def test_case7_a_nested_duplicate_without_a_file_id_writes_into_neither(colab):
    outer = upload_and_unzip(colab)
    # The zip unzipped a second time into the bundle's own folder (the old readme's way).
    done = colab.colab_cell(f"!unzip -q -n /content/drive/MyDrive/{ZIP_NAME} "
                            "-d /content/drive/MyDrive/comp5541")
    assert done.returncode == 0, done.stderr
    colab.assign_drive_ids()
    nested = outer / "comp5541"
    colab.open(None)
    err = refused(colab.run_cell(check=False))
    assert f"  {colab.drive_path(outer)}\n" in err and f"  {colab.drive_path(nested)}\n" in err
    # Run all from the nested copy, no id: refused in the first cell.
    done = subprocess.run([sys.executable, "-m", "papermill", str(nested / "Q1" / "Q1.ipynb"),
                           str(nested / "Q1" / "Q1.ipynb"), "--cwd", str(colab.content)]
                          + (["-k", bundle_kernel()] if bundle_kernel() else []),
                          env=colab.env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    for bundle in (outer, nested):
        assert not (bundle / "Q1" / "results").exists() and not (bundle / "runs").exists()
    colab.open(nested / "Q1" / "Q1.ipynb")  # with the id, the nested copy is its own bundle
    assert line_of(colab.run_cell(), "BUNDLE") == colab.drive_path(nested)


def test_case8_a_full_drive_is_refused_before_training_and_a_failed_write_says_disk_full(
        colab, monkeypatch):
    import errno

    import torch
    from torch import nn

    from common import files
    from common.batches import DeviceBatches
    from common.checkpoints import RunDir
    from common.train import fit

    run_dir = colab.my_drive / "comp5541" / "runs" / "Q2" / "tiny"
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(32) % 10
    batches = DeviceBatches(images, labels, batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3)

    def train(epochs: int) -> dict:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10))
        return fit(model, batches, batches, run_dir=run_dir, epochs=epochs, lr=0.01,
                   device="cpu", checkpoint_overhead=None, log=lambda line: None)

    real_usage = shutil.disk_usage
    free = {"bytes": 10_000}  # Drive nearly full: 10 kB

    def drive_usage(path):
        usage = real_usage(path)
        if str(colab.store) in str(Path(path).resolve()):
            return usage._replace(free=free["bytes"])
        return usage

    monkeypatch.setattr(shutil, "disk_usage", drive_usage)
    with pytest.raises(files.DiskFullError) as err:
        train(2)
    assert re.fullmatch(r"Google Drive has 0 MB free; this run needs \d+ MB \(3 x \d+ MB: last\.pt, "
                        r"prev\.pt and the temporary file of the checkpoint being written\)\. "
                        r"Free some space .*make clean-smoke.*", str(err.value))
    assert not (run_dir / "last.pt").exists()  # refused before anything was written
    # Space reported, but the third checkpoint write fails part way, as a quota does:
    # torch.save's own error ("unexpected pos") becomes "disk full", no temporary file is
    # left, and the checkpoint before it stays readable.
    free["bytes"] = 10**12
    opened = []

    class Quota:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if len(opened) > 2 and self.written > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def quota_open(path, mode="r", **kw):
        if Path(path).name.startswith("last.") and mode == "wb":
            opened.append(path)
        return Quota(open(path, mode, **kw))

    monkeypatch.setattr(files, "open", quota_open, raising=False)
    with pytest.raises(files.DiskFullError, match=r"^disk full: writing .*last\.pt failed, and its "
                       r"temporary file was removed .*\(RuntimeError: .*unexpected pos"):
        train(3)
    assert len(opened) == 3 and not list(run_dir.glob("*.tmp"))
    assert RunDir(run_dir).read("last.pt")["epoch"] == 1
    monkeypatch.undo()  # space freed: the same call resumes and finishes
    history = train(3)
    assert len(history["epoch"]) == 3 and not list(run_dir.glob("*.tmp"))
    assert not (run_dir / "lock.json").exists()


# --- the small points: smoke checkpoints, the speed cache --------------------------------

def test_the_readme_cell_removes_smoke_checkpoints_from_drive_and_keeps_full_runs(colab):
    bundle = upload_and_unzip(colab)

    def run_folder(path: Path, smoke: bool) -> Path:
        path.mkdir(parents=True)
        (path / "config.json").write_text(json.dumps({"fit": {}, "config": {"smoke": smoke}}))
        (path / "last.pt").write_bytes(b"\0" * 3_000_000)
        return path

    q2_smoke = run_folder(bundle / "runs" / "Q2" / "smoke" / "vgg16_a1b2", True)
    q3_smoke = run_folder(bundle / "runs" / "Q3" / "tv_alexnet_pretrained_none_f0.1_c3d4", True)
    kept = [run_folder(bundle / "runs" / "Q2" / "vgg16_e5f6", False),
            run_folder(bundle / "runs" / "Q3" / "tv_alexnet_pretrained_none_f0.1_0a9b", False)]
    done = colab.colab_cell(readme_cell("9"))
    assert done.returncode == 0, done.stderr
    assert not q2_smoke.parent.exists() and not q3_smoke.exists()
    assert all((k / "last.pt").is_file() for k in kept)
    assert "smoke runs removed: 6 MB freed" in done.stdout
    assert colab.pycache() == []
    make = subprocess.run(["make", "-n", "clean-smoke"], cwd=ROOT, capture_output=True, text=True)
    assert "-m common.tools.clean" in make.stdout


def test_on_colab_the_speed_cache_is_kept_in_the_bundles_runs(colab):
    """After a disconnect the home folder is new; the bundle's runs/ in Drive is not."""
    probe = "import google.colab, common.speed as s; print(s.DEFAULT_CACHE)"
    env = {k: v for k, v in colab.env().items() if k != "COMP5541_CACHE"}
    env["PYTHONPATH"] += os.pathsep + str(ROOT)
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == ROOT / "runs" / "speeds.json"
    env["PYTHONPATH"] = str(ROOT)  # not on Colab: the home folder's cache
    done = subprocess.run([sys.executable, "-c", probe.replace("import google.colab, ", "import ")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert Path(done.stdout.strip()) == Path.home() / ".cache" / "comp5541" / "speeds.json"
