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


def bundle_kernel() -> str | None:
    """The kernel `make venv` registers; None falls back to the notebook's own."""
    from jupyter_client.kernelspec import KernelSpecManager
    return "comp5541" if "comp5541" in KernelSpecManager().find_kernel_specs() else None


def need_data(path: Path, what: str) -> None:
    """Skip when `path` is missing, but fail under CI=true."""
    if path.exists():
        return
    msg = f"{what} not found at {path}"
    if IN_CI:
        pytest.fail(msg + " (CI=true: real-data tests must run, not skip)")
    pytest.skip(msg)


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
