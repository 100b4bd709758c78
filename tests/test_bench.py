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
from benchmarks.bench import QUALITY_TARGET, quality_budget, quality_rows
from benchmarks.quality import (REFERENCE, REFERENCE_BATCH_SIZE, compare_networks, q2_config,
                                quality_plan)
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
    assert result["checkpoint_mb"] > result["final_checkpoint_mb"] > 0  # no optimiser state
    # The checkpoint row's shares, from the writes and epochs of this very run.
    writes = result["checkpoint_write_seconds"]
    assert len(writes) == result["checkpoint_writes"] >= 1  # at least the epoch-0 one
    assert result["checkpoint_share_spaced"] == pytest.approx(
        sum(writes) / (sum(history["seconds"]) + sum(writes)))
    assert 0 < result["checkpoint_share_every_epoch"] < 1
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
    # Two tiny "networks" in the shape of quality_plan's items; lenet5's two rows share
    # their reference run as AlexNet's three optimiser rows do.
    plan = [{"name": f"lenet5_{opt}", "label": f"LeNet5 {opt}", "model": "lenet5", "part": "b",
             "optimizer": opt, "ours": {"optimizer": opt, "lr": 0.01, "label_smoothing": 0.1},
             "ours_batch_size": 20, "reference": dict(REFERENCE), "reference_batch_size": 20}
            for opt in ("sgd", "adam")]
    torch.manual_seed(5)
    ready = build_model("lenet5")
    result = compare_networks(ds, plan, train_images=100, epochs=1, val_images=10,
                              run_root=tmp_path,
                              trained={"lenet5_reference": (ready, {"epoch": [], "eval_accuracy": [],
                                                                    "stopped": None, "seconds": []})},
                              log=lambda line: None)
    runs = result["runs"]
    assert set(runs) == {"lenet5_sgd_ours", "lenet5_adam_ours", "lenet5_reference"}
    ref = runs["lenet5_reference"]
    assert ref["test_images"] == 40 and ref["epochs_trained"] == 0  # tested, not retrained
    assert runs["lenet5_adam_ours"]["epochs_trained"] == 1 and runs["lenet5_adam_ours"]["seconds"] > 0
    assert [r["reference"] for r in result["rows"]] == ["lenet5_reference"] * 2
    for r in result["rows"]:
        assert r["difference"] == runs[r["ours"]]["test_accuracy"] - ref["test_accuracy"]
    assert not any(tmp_path.iterdir())  # checkpoints are cleaned up
    # The table: one row per item, the difference in points, the target checked per row.
    rows = quality_rows(result, plan)
    assert len(rows) == 2 and all(r["target"] == QUALITY_TARGET for r in rows)
    for r, made in zip(rows, result["rows"]):
        assert r["met"] == (made["difference"] >= 0)
        assert r["ratio"] == f"{made['difference'] * 100:+.1f} pts"
        assert r["ours"].endswith(" s") and "kuangliu" in r["note"]
    assert "same reference run" in rows[1]["note"] and "same reference run" not in rows[0]["note"]


def test_ours_is_the_recipe_the_notebook_trains():
    from common.recipes import q2_specs
    from common.tools.run import notebook_defaults

    config = q2_config()
    assert config == {**notebook_defaults(ROOT / "Q2" / "Q2.ipynb", ROOT / "profiles" / "quick.yaml"),
                      "model_b": "alexnet"}
    plan = quality_plan(config)
    specs = q2_specs(config)
    assert [(i["model"], i["optimizer"]) for i in plan] == \
        [(s["model"], s["optimizer"]) for s in specs["a"] + specs["b"]]
    assert [i["model"] for i in plan[-3:]] == ["alexnet"] * 3  # Q2(b): SGD, RMSProp, Adam
    for item, spec in zip(plan, specs["a"] + specs["b"]):
        assert item["ours"] == spec["fit"] and item["ours_batch_size"] == config["batch_size"]
    # A changed parameter changes the measured recipe, and nothing else does.
    changed = quality_plan({**config, "lr_sgd": 0.02, "lr_adam": 3e-4, "nesterov": False})
    lr = {"sgd": 0.02, "rmsprop": config["lr_rmsprop"], "adam": 3e-4}
    assert [i["ours"]["lr"] for i in changed] == [lr[i["optimizer"]] for i in changed]
    assert not any(i["ours"]["nesterov"] for i in changed)
    assert [i["reference"] for i in changed] == [i["reference"] for i in plan]
    assert [i["model"] for i in quality_plan({**config, "models_a": ["vgg11"]})][0] == "vgg11"


def test_reference_is_kuangliu_pytorch_cifar():
    # main.py: SGD(lr=0.1, momentum=0.9, weight_decay=5e-4), classical momentum,
    # CosineAnnealingLR to 0, plain cross-entropy, batch 128.
    assert REFERENCE == {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False,
                         "weight_decay": 5e-4, "schedule": "cosine", "label_smoothing": 0.0}
    assert REFERENCE_BATCH_SIZE == 128
    assert all(i["reference"] == REFERENCE and i["reference_batch_size"] == 128
               for i in quality_plan(q2_config()))
    # What fit builds from it (MinimalLoop uses fit's own optimiser and schedule).
    loop = MinimalLoop(build_model("lenet5"), REFERENCE, epochs=2, steps_per_epoch=3)
    group = loop.optimizer.param_groups[0]
    assert isinstance(loop.optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == \
        (0.1, 0.9, False, 5e-4)
    assert isinstance(loop.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert loop.scheduler.eta_min == 0 and loop.scheduler.T_max == 6
    assert loop.criterion.label_smoothing == 0


def test_quality_budget_is_the_quick_profiles():
    import yaml

    config = q2_config()
    profile = yaml.safe_load((ROOT / "profiles" / "quick.yaml").read_text())["notebooks"]["Q2/Q2.ipynb"]
    assert quality_budget(config, quick=False) == {
        "train_images": profile["train_images"], "epochs": profile["epochs"],
        "test_images": profile["eval_images"], "source": "profiles/quick.yaml"}
    quick = quality_budget(config, quick=True)
    assert quick["train_images"] < profile["train_images"] and quick["epochs"] < profile["epochs"]
    smaller = quality_budget(config, quick=False, train_images=1000)
    assert (smaller["train_images"], smaller["epochs"]) == (1000, profile["epochs"])
    assert "--train-images" in smaller["source"]


def test_the_horizon_table_marks_each_horizons_best_rate_and_cells_are_kept_for_a_resume(tmp_path):
    import math

    from benchmarks import horizon
    result = {"rates": [0.01, 0.1], "val_images": 5000, "runs": [
        {"horizon": "20,000 x 4", "steps": 628, "lr": 0.01, "val_accuracy": 0.614, "stopped": None},
        {"horizon": "20,000 x 4", "steps": 628, "lr": 0.1, "val_accuracy": 0.5946, "stopped": None},
        {"horizon": "10,000 x 2", "steps": 158, "lr": 0.01, "val_accuracy": 0.45, "stopped": None},
        {"horizon": "10,000 x 2", "steps": 158, "lr": 0.1, "val_accuracy": 0.6, "stopped": "nan"}]}
    header, long, short = horizon.table(result)
    assert "lr 0.01" in header and "lr 0.1" in header
    two_se = 2 * math.sqrt(2 * 0.614 * 0.386 / 5000)  # a difference of two accuracies near 61%
    assert long.split()[-2:] == ["0.01", f"{two_se:.1%}"] and "(628)" in long
    assert "diverged" in short and short.split()[-2] == "0.01"  # a diverged run never wins
    # A finished cell is kept under its settings: an interrupted sweep resumes, a changed
    # recipe measures again.
    horizon._keep(tmp_path, "cell", {"lr": 0.1}, 5000, {"val_accuracy": 0.5})
    assert horizon._cached(tmp_path, "cell", {"lr": 0.1}, 5000) == {"val_accuracy": 0.5}
    assert horizon._cached(tmp_path, "cell", {"lr": 0.03}, 5000) is None
    # The recipe swept is the Q2 notebook's full SGD one.
    config, recipe = horizon.full_recipe()
    assert recipe["optimizer"] == "sgd" and recipe["lr"] == config["lr_sgd"]
    assert recipe["schedule"] == config["schedule"] and recipe["nesterov"] == config["nesterov"]
