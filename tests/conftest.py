"""Shared fixtures.

Real data comes from ../shared/data beside the bundle (CIFAR-10 JPEG copy) and
Debian's dataset-fashion-mnist package. Without it a test skips with a reason,
except under CI=true, where a missing dataset is a failure: CI must never go
green by skipping the tests that matter.
"""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR_ARCHIVE = SHARED_DATA / "cifar10-jpeg.tar.xz"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# Decoded real data is kept between test sessions (build/ is ignored by git).
TEST_DATA = ROOT / "build" / "test-data"

IN_CI = os.environ.get("CI", "").lower() == "true"

torch.set_num_threads(min(2, os.cpu_count() or 1))
# The suite runs the CPU branch unless a test emulates a GPU itself (monkeypatch): an
# exported COMP5541_EMULATE would turn every bit-exact CPU comparison into float16.
os.environ.pop("COMP5541_EMULATE", None)


def bundle_kernel() -> str | None:
    """The kernel `make venv` registers; None falls back to the notebook's own."""
    from jupyter_client.kernelspec import KernelSpecManager
    return "comp5541" if "comp5541" in KernelSpecManager().find_kernel_specs() else None


def need_data(path: Path, what: str) -> None:
    """Skip when `path` is missing, but fail under CI=true."""
    need(path.exists(), f"{what} not found at {path}")


def need(present, missing_message: str) -> None:
    """Skip when a prerequisite (data, a system tool) is missing, but fail under
    CI=true: CI must never go green by skipping the tests that matter."""
    if present:
        return
    if IN_CI:
        pytest.fail(missing_message + " (CI=true: these tests must run, not skip)")
    pytest.skip(missing_message)


@pytest.fixture(scope="module")
def one_thread():
    """Tensors this small gain nothing from a second thread, and on a busy machine
    waiting for it made each step about 20 times slower (pytestmark = usefixtures)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cifar_data_dir() -> Path:
    """A data_dir holding the real CIFAR-10 JPEG copy as `cifar10-jpeg/`."""
    need_data(CIFAR_ARCHIVE, "the CIFAR-10 JPEG copy (../shared/data/cifar10-jpeg.tar.xz)")
    target = TEST_DATA / "cifar10-jpeg"
    if not (target / "test").is_dir():
        TEST_DATA.mkdir(parents=True, exist_ok=True)
        with tarfile.open(CIFAR_ARCHIVE) as tar:
            tar.extractall(TEST_DATA, filter="data")
    return TEST_DATA


@pytest.fixture(scope="session")
def cifar10(cifar_data_dir):
    from common.data import load_dataset
    return load_dataset("cifar10", cifar_data_dir, download=False)


@pytest.fixture(scope="session")
def fashion_system_dir() -> Path:
    need_data(FASHION_SYSTEM_DIR / "train-labels-idx1-ubyte.gz",
              "Fashion-MNIST from Debian's dataset-fashion-mnist package")
    return FASHION_SYSTEM_DIR


# --- executing notebooks in tests ------------------------------------------------

def bundle_tmpdir(prefix: str) -> Path:
    """A scratch folder inside the bundle (under build/): a notebook's first cell
    finds the bundle from its working directory, so it must run in here."""
    import tempfile
    (ROOT / "build").mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=ROOT / "build"))


def run_smoke_profile(notebook: Path, tmp: Path, data_dir: Path, build: str = "build") -> dict:
    """Run `notebook` through the real runner and smoke profile, as `make smoke`
    does, with builds and runs kept inside `tmp`. Returns the executed notebook,
    its path, its results folder and its summary."""
    import json

    import nbformat

    from common.tools import run

    args = ["--profile", str(ROOT / "profiles" / "smoke.yaml"), "--data-dir", str(data_dir),
            "--build-dir", str(tmp / build), "--runs-dir", str(tmp / "runs"), str(notebook)]
    if bundle_kernel():
        args += ["--kernel", bundle_kernel()]
    out = tmp / build / run.notebook_id(notebook)
    assert run.main(args) == 0, f"the smoke run failed; see {out}"
    results = out.parent / "results"
    return {"nb": nbformat.read(out, as_version=4), "path": out, "results": results,
            "summary": json.loads((results / "summary.json").read_text())}


def shown_text(nb) -> str:
    """Everything a reader sees in an executed notebook's outputs: streams and
    generated Markdown."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/markdown", ""))
    return "\n".join(parts)


def assert_submittable(question: str, notebook: Path, results_dir: Path) -> None:
    """The executed notebook and its summary pass `make check` (smoke allowed)."""
    from common.tools import submit

    work = submit.Work(question, notebook, results_dir)
    problems = submit.notebook_problems(notebook) + submit.summary_problems(work, allow_smoke=True)
    assert problems == [], problems
