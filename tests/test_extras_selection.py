"""common.selection: the grid visits every configuration and chooses on
validation only; the confusion analysis reads a matrix correctly."""
from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

from common import extras_models as xm
from common.data import DeviceBatches
from common.selection import (confusion_analysis, describe_confusions, plot_grid_heatmap, run_grid,
                              select_best, train_run)
from common.tb import read_scalars
from common.train import evaluate


def test_select_best_takes_the_highest_earliest_and_skips_nan():
    assert select_best([0.2, 0.5, 0.5, 0.1]) == 1
    assert select_best([float("nan"), 0.3, 0.1]) == 1
    with pytest.raises(ValueError, match="all stopped"):
        select_best([float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        select_best([])


def test_grid_functions_take_no_test_data():
    """The choice cannot see the test set: nothing test-like can even be passed in."""
    for fn in (run_grid, select_best, train_run):
        assert not [p for p in inspect.signature(fn).parameters if "test" in p.lower()], fn.__name__


def synthetic(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    # Class-dependent brightness so the nets can learn a little in one epoch.
    images = (torch.rand(n, 1, 28, 28, generator=g) * 80 + labels.view(-1, 1, 1, 1) * 17).to(torch.uint8)
    return images, labels


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    tr_x, tr_y = synthetic(80, 0)
    va_x, va_y = synthetic(40, 1)
    common = dict(mean=(0.5,), std=(0.3,), batch_size=40)
    train = DeviceBatches(tr_x, tr_y, train=True, augment=False, **common)
    val = DeviceBatches(va_x, va_y, **common)
    visited = []

    def make(options):
        visited.append(dict(options))
        return xm.baseline_cnn(**options)

    fit_options = dict(epochs=1, optimizer="adam", lr=1e-3, weight_decay=0.0)
    out = run_grid(xm.baseline_grid(), make, train, val, runs_dir=tmp / "runs", seed=0, device="cpu",
                   fit_options=fit_options, label=xm.grid_label, tb_dir=tmp / "tb", log=lambda s: None)
    return {"out": out, "visited": visited, "tmp": tmp, "train": train, "val": val,
            "fit_options": fit_options, "make": make}


def test_grid_visits_all_twelve_and_chooses_on_validation(grid_run):
    out, tmp = grid_run["out"], grid_run["tmp"]
    assert len(grid_run["visited"]) == 12 and len(out["rows"]) == 12
    assert grid_run["visited"] == xm.baseline_grid()
    saved = []
    for row in out["rows"]:
        history = json.loads((tmp / "runs" / row["name"] / "history.json").read_text())
        assert history["epoch"] == [1]
        saved.append(history["test_accuracy"][-1])  # fit's held-out set here is the validation split
        tb = read_scalars(tmp / "tb" / row["name"])
        assert tb["accuracy/val"][1][-1] == pytest.approx(history["test_accuracy"][-1], rel=1e-6)
    assert [r["val_accuracy"] for r in out["rows"]] == saved
    assert out["best"] == select_best(saved)


def test_choice_does_not_move_when_test_labels_are_poisoned(grid_run):
    """The reported test accuracy follows the labels; the choice does not. With the
    test labels permuted (or all set to one class), the grid, rerun from its saved
    runs, picks the same configuration."""
    out, tmp = grid_run["out"], grid_run["tmp"]
    te_x, te_y = synthetic(40, 2)
    best = out["rows"][out["best"]]
    accuracies = []
    for labels in (te_y, te_y[torch.randperm(40, generator=torch.Generator().manual_seed(3))],
                   torch.zeros_like(te_y)):
        again = run_grid(xm.baseline_grid(), lambda o: xm.baseline_cnn(**o), grid_run["train"], grid_run["val"],
                         runs_dir=tmp / "runs", seed=0, device="cpu", fit_options=grid_run["fit_options"],
                         label=xm.grid_label, log=lambda s: None)
        assert again["best"] == out["best"]
        model, _ = train_run(best["name"], lambda: xm.baseline_cnn(**best["options"]), grid_run["train"],
                             grid_run["val"], runs_dir=tmp / "runs", seed=0, device="cpu",
                             fit_options=grid_run["fit_options"], config={"options": best["options"]},
                             log=lambda s: None)
        test = DeviceBatches(te_x, labels, mean=(0.5,), std=(0.3,), batch_size=40)
        accuracies.append(evaluate(model, test, "cpu")["accuracy"])
    preds = evaluate(model, DeviceBatches(te_x, te_y, mean=(0.5,), std=(0.3,), batch_size=40), "cpu",
                     predictions=True)["predictions"]
    assert accuracies[2] == pytest.approx(float((preds == 0).float().mean()))  # the test labels did matter


def test_heatmap_draws_every_cell(grid_run, tmp_path):
    fig = plot_grid_heatmap(grid_run["out"]["rows"], row_keys=["pool", "batchnorm"], col_key="dropout",
                            save_to=tmp_path / "h.png")
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (4, 3)
    got = sorted(np.asarray(image).ravel().tolist())
    assert got == pytest.approx(sorted(100 * r["val_accuracy"] for r in grid_run["out"]["rows"]))
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_confusion_analysis_reads_the_matrix():
    classes = ["T-shirt/top", "Trouser", "Shirt", "Sneaker"]
    cm = np.array([[80, 0, 20, 0],
                   [0, 100, 0, 0],
                   [30, 5, 60, 5],
                   [0, 0, 0, 100]])
    a = confusion_analysis(cm, classes, top=2)
    assert a["overall_accuracy"] == pytest.approx(340 / 400)
    assert a["per_class_accuracy"]["Shirt"] == pytest.approx(0.6)
    # Below the overall 85%: Shirt (60%) then T-shirt/top (80%), worst first.
    assert [p["class"] for p in a["problem_classes"]] == ["Shirt", "T-shirt/top"]
    shirt = a["problem_classes"][0]
    assert shirt["confused_with"][0] == {"class": "T-shirt/top", "count": 30, "share": 0.3}
    assert a["confused_pairs"][0]["classes"] == ["T-shirt/top", "Shirt"] and a["confused_pairs"][0]["count"] == 50
    assert a["confused_pairs"][0]["reason"]  # same garment group
    text = describe_confusions(a)
    assert "**Shirt**: 60.0%" in text and "T-shirt/top (30 images, 30.0%)" in text
    with pytest.raises(ValueError, match="shape"):
        confusion_analysis(cm[:3], classes)
