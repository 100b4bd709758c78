"""benchmarks/gpu_check.py (`make gpu-check`): the script for a lent CUDA machine.

That machine is bare and offline (torch, torchvision, numpy, matplotlib), and its
minutes are few, so the script must fail at once without CUDA, run its whole code
path on a CPU when asked, and import nothing the machine lacks. Each test runs it
in a subprocess: a fresh interpreter is what shows which modules it pulls in.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common.data import DATASETS

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# No GPU even on a machine that has one; two threads, as the other tests use.
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
ABSENT_THERE = ("papermill", "yaml", "IPython", "nbformat", "nbclient", "jupyter_client",
                "ipykernel", "pandas", "scipy")

# Imports the script the way the test asks (import only, or main() too), then prints
# the top-level modules it added beyond torch, torchvision, numpy and matplotlib
# (with everything those pull in themselves) and the standard library.
PROBE = """
import json, sys
sys.path.insert(0, {root!r})
import torch, torchvision, numpy, matplotlib
before = {{m.split('.')[0] for m in sys.modules}}
from benchmarks import gpu_check
code = gpu_check.main({argv!r}) if {run!r} else 0
added = {{m.split('.')[0] for m in sys.modules}} - before - set(sys.stdlib_module_names)
print('ADDED=' + json.dumps(sorted(added)))
print('PRESENT=' + json.dumps([m for m in {absent!r} if m in sys.modules]))
sys.exit(code)
"""


def probe(argv: list[str] | None, timeout: float,
          env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    code = PROBE.format(root=str(ROOT), argv=argv or [], run=argv is not None,
                        absent=ABSENT_THERE)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)
    found = {line.split("=", 1)[0]: json.loads(line.split("=", 1)[1])
             for line in proc.stdout.splitlines() if line.startswith(("ADDED=", "PRESENT="))}
    return proc, found


def assert_only_allowed_modules(found: dict) -> None:
    assert found["PRESENT"] == [], f"the GPU machine has none of these: {found['PRESENT']}"
    assert set(found["ADDED"]) <= {"common", "benchmarks"}, (
        f"beyond torch, torchvision, numpy, matplotlib and the stdlib: {found['ADDED']}")


def write_tiny_cifar(data_dir, per_class=(2, 2), seed=0) -> None:
    """A CIFAR-10 image-folder copy of random PNGs (lossless), as load_dataset reads it."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class):
        for name in DATASETS["cifar10"].classes:
            folder = data_dir / "cifar10" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(arr).save(folder / f"{i:04d}.png")


def test_without_cuda_it_exits_2_at_once_naming_the_problem_and_the_fix(tmp_path):
    out = tmp_path / "gpu_check.json"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--data-dir", str(tmp_path / "none"),
                           "--out", str(out)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=120)
    seconds = time.perf_counter() - started
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "CUDA is not available" in proc.stderr
    assert "--device cpu" in proc.stderr and "make gpu-check" in proc.stderr
    assert "Traceback" not in proc.stderr
    # It stops before the data: nothing was looked for, loaded or written.
    assert "cifar10" not in proc.stdout + proc.stderr and not out.exists()
    assert seconds < 60, f"took {seconds:.0f} s: it should stop right after importing torch"


def test_cpu_run_writes_the_report_and_stops_on_the_budget(tmp_path):
    write_tiny_cifar(tmp_path / "data")
    out, runs = tmp_path / "gpu_check.json", tmp_path / "runs"
    # One model of each question (both timing paths: 32 px, and Q3's resize on the
    # device), ResNet18's recipe with a 3-epoch schedule and a budget only one epoch
    # beats: the stop on the budget, deterministically.
    argv = ["--device", "cpu", "--data-dir", str(tmp_path / "data"), "--no-download",
            "--out", str(out), "--runs-dir", str(runs), "--models", "alexnet,tv_alexnet",
            "--batch-size", "10", "--image-size", "64", "--warmup-steps", "1", "--steps", "1",
            "--max-images", "20", "--epochs", "3", "--minutes", "0.001", "--lrs", "0.05"]
    proc, found = probe(argv, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_only_allowed_modules(found)  # the run's imports too, not only the module's

    report = json.loads(out.read_text())
    assert set(report) >= {"environment", "overrides", "settings", "data", "timing", "training",
                           "total_seconds"}
    env = report["environment"]
    assert env["device_type"] == "cpu" and env["precision"] == "float32"
    assert {"torch", "torchvision", "cuda", "device_name"} <= set(env)
    assert report["overrides"]["device"] == "cpu" and report["overrides"]["epochs"] == 3
    assert report["data"] == {"data_dir": str(tmp_path / "data"), "source": "image folder",
                              "train_images": 20, "test_images": 20}

    timing = {r["model"]: r for r in report["timing"]}
    assert list(timing) == ["alexnet", "tv_alexnet"]
    assert (timing["alexnet"]["input_size"], timing["tv_alexnet"]["input_size"]) == (32, 64)
    for r in timing.values():
        assert "error" not in r
        # The CPU evaluates at the training batch size (a GPU at 4x for Q2, 2x for Q3).
        assert r["batch_size"] == r["eval_batch_size"] == 10
        assert r["timed_steps"] == 1 and r["parameters"] > 0
        for split in ("train", "eval"):
            assert r[f"{split}_img_per_s"] > 0 and r[f"{split}_step_ms"] > 0
            # img/s and ms/step are one measurement
            assert abs(r[f"{split}_img_per_s"] * r[f"{split}_step_ms"] / 1000 - 10) < 1e-6
        assert r["peak_memory_gib"] is None  # CUDA only

    t = report["training"]
    assert t["model"] == "resnet18" and t["run"].startswith("a_resnet18_sgd_")
    # The Q2 notebook's recipe, with the overridden schedule length kept whole.
    assert t["fit"]["optimizer"] == "sgd" and t["fit"]["nesterov"] is True
    assert t["fit"]["schedule"] == "cosine" and t["fit"]["schedule_options"]["warmup_epochs"] == 1
    assert (t["schedule_epochs"], t["epochs_run"], t["stopped_by"]) == (3, 1, "budget")
    assert t["minutes_budget"] == 0.001 and len(t["per_epoch"]) == 1
    epoch = t["per_epoch"][0]
    assert epoch["epoch"] == 1 and epoch["wall_seconds"] > 0 and 0 <= epoch["test_accuracy"] <= 1
    assert t["final_test_accuracy"] == epoch["test_accuracy"]
    assert t["estimated_full_run_minutes"] > 0 and "3-epoch" in t["note"]
    # fit's own record of the unfinished run: one epoch of three, resumable.
    history = json.loads((runs / t["run"] / "history.json").read_text())
    assert history["epoch"] == [1] and history["eval_split"] == "test"
    assert "Q2(a) resnet18 recipe" in proc.stdout and "1 of 3 epochs" in proc.stdout
    # --lrs: the same recipe and schedule at another peak rate, its own run and budget.
    other = report["lr_sweep"]["0.05"]
    assert other["fit"]["lr"] == 0.05 and other["fit"]["schedule"] == t["fit"]["schedule"]
    assert other["run"] != t["run"] and other["stopped_by"] == "budget"


def test_an_emulated_t4_times_with_its_precision_and_the_notebooks_eval_batches(
        tmp_path, monkeypatch):
    # COMP5541_EMULATE=t4: the CUDA branch (float16, GradScaler, fused SGD, channels_last)
    # on the CPU, and held-out batches as the notebooks make them on a GPU: 4x Q2's
    # batch size, 2x Q3's. In this process, with a tiny net in place of each model
    # (float16 on a CPU is slow), and the batches each pass sees recorded.
    import torch

    from benchmarks import gpu_check
    from common.data import load_dataset

    monkeypatch.setenv("COMP5541_EMULATE", "t4")
    monkeypatch.setattr(gpu_check, "build_model", lambda name: torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(4, 10)))
    seen = {"train": [], "eval": []}
    for name, label in (("train_one_epoch", "train"), ("evaluate", "eval")):
        def spy(model, batches, *args, _real=getattr(gpu_check, name), _label=label, **kw):
            batches = list(batches)
            seen[_label] += [(x.shape[0], x.dtype, x.is_contiguous(
                memory_format=torch.channels_last)) for x, _ in batches]
            return _real(model, batches, *args, **kw)
        monkeypatch.setattr(gpu_check, name, spy)
    write_tiny_cifar(tmp_path / "data")
    ds = load_dataset("cifar10", tmp_path / "data", download=False)
    pool = torch.arange(len(ds.train_labels))
    assert gpu_check.environment(torch.device("cpu"))["precision"] == "float16"
    for model, image_size, eval_size in (("alexnet", None, 16), ("tv_alexnet", 64, 8)):
        seen = {"train": [], "eval": []}
        r = gpu_check.time_model(model, ds, pool, device=torch.device("cpu"), batch_size=4,
                                 image_size=image_size, warmup=1, steps=2)
        assert (r["batch_size"], r["eval_batch_size"]) == (4, eval_size)
        assert seen == {"train": [(4, torch.float32, True)] * 3,
                        "eval": [(eval_size, torch.float32, True)] * 3}
        assert abs(r["eval_img_per_s"] * r["eval_step_ms"] / 1000 - eval_size) < 1e-6


def test_imports_nothing_the_gpu_machine_lacks():
    proc, found = probe(None, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_only_allowed_modules(found)
