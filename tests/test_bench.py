"""benchmarks/: the command line and every comparison on tiny synthetic inputs.
No timing is asserted; `make bench` measures on real data."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from benchmarks.loop import MinimalLoop, compare_fit_overhead, full_recipe
from benchmarks.pipelines import (OurPipeline, StandardPipeline, UInt8ImageDataset,
                                  compare_pipelines, standard_transform)
from benchmarks.quality import compare_recipes
from benchmarks.timing import interleave
from common.data import ImageDataset
from common.models import build_model
from conftest import ROOT

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def images(n, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_help_runs_as_a_script():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--help"],
                         capture_output=True, text=True, cwd=ROOT.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--quick" in out.stdout and "--data-dir" in out.stdout


def test_missing_data_exits_non_zero_with_the_fix(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--data-dir",
                          str(tmp_path), "--only", "q2", "--out", str(tmp_path / "b.json")],
                         capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "HTTPS_PROXY": "http://127.0.0.1:9"})
    assert out.returncode != 0
    assert "Could not find the cifar10 dataset" in out.stderr
    assert "tar xJf ../shared/data/cifar10-jpeg.tar.xz -C data" in out.stderr


def test_standard_transform_does_the_same_augmentation_as_ours():
    # The baseline must do the same work: each of its outputs is a zero-padded crop,
    # or its mirror image, of its source, normalised.
    x = images(6)
    data = UInt8ImageDataset(x, torch.arange(6), standard_transform(MEAN, STD))
    for i in range(6):
        out, label = data[i]
        padded = torch.nn.functional.pad(x[i], (4, 4, 4, 4))
        crops = [TF.normalize(padded[:, dy:dy + 32, dx:dx + 32].float() / 255, MEAN, STD)
                 for dy in range(9) for dx in range(9)]
        assert label == i
        assert any(torch.allclose(out, c, atol=1e-5) or torch.allclose(out, c.flip(2), atol=1e-5)
                   for c in crops)


def test_dataset_serves_pil_images_like_torchvision_cifar():
    x = images(2)
    item, _ = UInt8ImageDataset(x, torch.arange(2), lambda img: img)[1]
    assert isinstance(item, Image.Image) and item.size == (32, 32)
    assert torch.equal(TF.pil_to_tensor(item), x[1])


def test_both_pipelines_give_batches_of_the_same_shape():
    x, y = images(20), torch.arange(20) % 10
    for size in (None, 64):
        ours = OurPipeline(x, y, batch_size=8, mean=MEAN, std=STD, image_size=size)
        standard = StandardPipeline(x, y, batch_size=8, mean=MEAN, std=STD, image_size=size, workers=0)
        assert ours() == standard() == 20
        a, _ = next(iter(ours.batches))
        b, _ = next(iter(standard.loader))
        assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
        standard.close()


def test_compare_pipelines_reports_rates_and_ratio():
    result = compare_pipelines(images(16), torch.arange(16), mean=MEAN, std=STD, batch_size=8,
                               workers=0, repeats=2, warmup=0)
    assert len(result["ours_seconds"]) == len(result["standard_seconds"]) == 2
    assert result["ratio"] == result["ours_images_per_s"] / result["standard_images_per_s"]


def test_interleave_alternates_contenders():
    calls = []
    seconds = interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                         repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert {k: len(v) for k, v in seconds.items()} == {"a": 3, "b": 3}


def test_fit_overhead_comparison_runs_and_returns_the_trained_model(tmp_path):
    x, y = images(24), torch.arange(24) % 10
    recipe = {"optimizer": "sgd", "lr": 0.01, "schedule": "onecycle", "label_smoothing": 0.1}
    result, model, history = compare_fit_overhead(x, y, x[:8], y[:8], mean=MEAN, std=STD,
                                                  run_dir=tmp_path / "run", recipe=recipe,
                                                  epochs=3, batch_size=8, model_name="lenet5")
    assert len(result["fit_seconds"]) == len(result["minimal_seconds"]) == 2
    assert result["recipe"]["weight_decay"] == 5e-4  # fit's default, used by both loops
    assert result["checkpoint_mb"] > 0
    assert history["epoch"] == [1, 2, 3] and isinstance(model, torch.nn.Module)
    assert not (tmp_path / "run").exists()  # checkpoints are cleaned up
    # Fewer repetitions than epochs: fit finishes its run, only the pairs are timed.
    result, _, history = compare_fit_overhead(x, y, x[:8], y[:8], mean=MEAN, std=STD,
                                              run_dir=tmp_path / "run", recipe=recipe, epochs=3,
                                              repeats=1, batch_size=8, model_name="lenet5")
    assert len(result["fit_seconds"]) == len(result["minimal_seconds"]) == 1
    assert history["epoch"] == [1, 2, 3]
    with pytest.raises(ValueError, match="repeats"):
        compare_fit_overhead(x, y, x[:8], y[:8], mean=MEAN, std=STD, run_dir=tmp_path / "run",
                             recipe=recipe, epochs=1, model_name="lenet5")


def test_minimal_loop_trains_like_fit_without_bookkeeping(tmp_path):
    # Same weights, batches and recipe: after one epoch the two models agree, so the
    # minimal loop really is the same work as fit minus fit's bookkeeping.
    from common.batches import DeviceBatches
    from common.models import build_model
    from common.train import fit

    x, y = images(32), torch.arange(32) % 10
    recipe = {"optimizer": "sgd", "lr": 0.05, "schedule": "cosine", "label_smoothing": 0.1}
    torch.manual_seed(0)
    a = build_model("lenet5")
    b = copy.deepcopy(a)

    def batches():
        return DeviceBatches(x, y, batch_size=8, train=True, mean=MEAN, std=STD, seed=0)

    fit(a, batches(), DeviceBatches(x[:8], y[:8], batch_size=8, mean=MEAN, std=STD),
        run_dir=tmp_path / "fit", epochs=1, device="cpu", log=lambda line: None, **recipe)
    loop = MinimalLoop(b, recipe, epochs=1, steps_per_epoch=4)
    loop.epoch(batches(), [], 0)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_recipe_with_an_unknown_key_is_refused():
    with pytest.raises(ValueError, match="not training settings"):
        full_recipe({"lr": 0.1, "epochs": 3})


def test_quality_comparison_runs_and_tests_a_trained_model_without_retraining(tmp_path):
    g = torch.Generator().manual_seed(1)
    ds = ImageDataset("cifar10", images(200), torch.arange(200) % 10, images(40, seed=2),
                      torch.randint(0, 10, (40,), generator=g), classes=(), source="synthetic")
    recipes = {"plain": {"lr": 0.01}, "smoothed": {"lr": 0.01, "label_smoothing": 0.1}}
    torch.manual_seed(5)
    ready = build_model("lenet5")
    result = compare_recipes(ds, recipes=recipes, model_name="lenet5", train_images=100,
                             epochs=1, val_images=10, batch_size=20, run_root=tmp_path,
                             trained={"plain": (ready, {"epoch": [], "eval_accuracy": [],
                                                        "stopped": None}, 0.0)},
                             log=lambda line: None)
    plain, smoothed = result["recipes"]["plain"], result["recipes"]["smoothed"]
    assert plain["test_images"] == 40 and plain["epochs_trained"] == 0  # tested, not retrained
    assert smoothed["epochs_trained"] == 1
    assert 0 <= plain["test_accuracy"] <= 1
    assert smoothed["difference_from_plain"] == smoothed["test_accuracy"] - plain["test_accuracy"]
