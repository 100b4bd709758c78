"""The Colab journey of readme.txt, simulated end to end (tests/fake_colab.py):
upload and unzip into My Drive beside a decoy copy, open a notebook and Run all
(papermill saves it in place, as Colab does), open one from outside the bundle,
disconnect, Run all again, then check and zip from the Drive bundle.

Q1 walks the whole journey (seconds per run). Q2 in smoke mode shows where data,
results and checkpoints land and that a rerun after a disconnect reuses every
finished run; it needs ../shared/data (skipped without it, failed under CI=true).
Run with -s to see the paths printed, the Drive footprint and the zip listing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from conftest import CIFAR_ARCHIVE, ROOT, bundle_kernel, need_data
from fake_bundle import executed_notebook, fill_declaration, write_results
from fake_colab import Colab, bundle_files

STUDENT = "21123456D"
UNZIP = "!unzip -q -o /content/drive/MyDrive/comp5541.zip -d /content/drive/MyDrive/comp5541"


def upload_and_unzip(colab: Colab) -> Path:
    """readme.txt's steps 1-2: comp5541.zip uploaded to My Drive, unzipped beside it."""
    assert UNZIP in (ROOT / "readme.txt").read_text(), "the test follows the readme's command"
    upload = colab.my_drive / "comp5541.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        for name in bundle_files():
            zf.write(ROOT / name, name)
    with zipfile.ZipFile(upload) as zf:
        zf.extractall(colab.my_drive / "comp5541")
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
    done = run_all(colab, bundle / "Q2" / "Q2.ipynb", smoke=True)
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
    done = run_all(colab, bundle / "Q2" / "Q2.ipynb", smoke=True)
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads((bundle / "Q2" / "results" / "summary.json").read_text())
    text = outputs(bundle / "Q2" / "Q2.ipynb")
    assert text.count("finished earlier") >= len(runs)
    assert again["training_time_s"] == first["training_time_s"]
    print(f"wall time: {first['wall_time_s']:.1f} s first, {again['wall_time_s']:.1f} s after the "
          f"disconnect; training time kept: {again['training_time_s']:.1f} s")
