"""common.extras.selection: the grid visits every configuration and chooses on
validation only; the confusion analysis reads a matrix correctly."""
from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch

from common.batches import DeviceBatches
from common.experiments import select_best
from common.extras import models as xm
from common.extras.selection import (confusion_analysis, describe_confusions, plot_grid_heatmap, run_grid,
                                     train_run)
from common.extras.tb import read_scalars
from common.train import evaluate


def test_select_best_takes_the_highest_earliest_and_skips_nan():
    assert select_best([0.2, 0.5, 0.5, 0.1]) == 1
    assert select_best([float("nan"), 0.3, 0.1]) == 1
    with pytest.raises(ValueError, match="all stopped"):
        select_best([float("nan")])
    with pytest.raises(ValueError, match="at least one"):
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
        saved.append(history["eval_accuracy"][-1])  # fit's held-out set here is the validation split
        tb = read_scalars(tmp / "tb" / row["name"])
        assert tb["accuracy/val"][1][-1] == pytest.approx(history["eval_accuracy"][-1], rel=1e-6)
    assert [r["val_accuracy"] for r in out["rows"]] == saved
    assert out["best"] == select_best(saved)


def spy_on_the_grid(monkeypatch):
    """Wrap fit (as common.experiments.train_or_reuse calls it), common.train.evaluate
    (what fit scores with) and select_best (as run_grid calls it): record every batches
    object the first two receive and every list of scores the choice is made from."""
    import common.experiments as experiments
    import common.extras.selection as selection
    import common.train as training

    seen, scores = [], []
    real_fit, real_evaluate, real_select = experiments.fit, training.evaluate, selection.select_best

    def fit(model, train_batches, eval_batches, **kwargs):
        seen.extend([train_batches, eval_batches])
        return real_fit(model, train_batches, eval_batches, **kwargs)

    def evaluate(model, batches, *args, **kwargs):
        seen.append(batches)
        return real_evaluate(model, batches, *args, **kwargs)

    def select(val_scores):
        scores.append(list(val_scores))
        return real_select(val_scores)

    monkeypatch.setattr(experiments, "fit", fit)
    monkeypatch.setattr(training, "evaluate", evaluate)
    monkeypatch.setattr(selection, "select_best", select)
    return seen, scores


def test_the_choice_never_touches_the_test_batches(grid_run, tmp_path, monkeypatch):
    """Train and choose on a few grid points, from scratch, with a test split built
    alongside: the spies see the training and validation batches only, and the choice
    is made from the validation accuracies. Handing the grid the test batches as its
    validation set (the mistake this guards against) is caught by the same spies."""
    seen, scores = spy_on_the_grid(monkeypatch)
    te_x, te_y = synthetic(40, 2)
    test = DeviceBatches(te_x, te_y, mean=(0.5,), std=(0.3,), batch_size=40)
    train, val = grid_run["train"], grid_run["val"]
    grid = xm.baseline_grid()[:3]
    options = dict(seed=0, device="cpu", fit_options=grid_run["fit_options"], label=xm.grid_label,
                   log=lambda s: None)
    out = run_grid(grid, lambda o: xm.baseline_cnn(**o), train, val, runs_dir=tmp_path / "ok", **options)
    assert not any(b is test for b in seen)
    assert {id(b) for b in seen} == {id(train), id(val)}
    assert sum(b is val for b in seen) >= 2 * len(grid)  # handed to fit, then evaluated in it
    assert scores == [[r["val_accuracy"] for r in out["rows"]]]
    # Each score is the model's accuracy on the validation batches.
    best = out["rows"][out["best"]]
    model, _ = train_run(best["name"], lambda: xm.baseline_cnn(**best["options"]), train, val,
                         runs_dir=tmp_path / "ok", seed=0, device="cpu", fit_options=grid_run["fit_options"],
                         config={"options": best["options"]}, log=lambda s: None)
    assert evaluate(model, val, "cpu")["accuracy"] == pytest.approx(best["val_accuracy"])
    # The spies would notice the test set standing in for the validation set.
    seen.clear()
    run_grid(grid[:1], lambda o: xm.baseline_cnn(**o), train, test, runs_dir=tmp_path / "leak", **options)
    assert any(b is test for b in seen)


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
