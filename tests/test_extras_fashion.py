"""extras/fashion_mnist.ipynb end to end in smoke mode on real Fashion-MNIST:
the 12-point grid chosen on validation, the test-set report read from the
confusion matrix, TensorBoard event files read back, the ECE 449/421 runs."""
from __future__ import annotations

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common.experiments import select_best
from common.extras import models as xm
from common.models import count_parameters
from conftest import bundle_tmpdir
from extras_helpers import cleanup, fashion_data_dir, outputs_text, run_extra

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fashion_run(fashion_system_dir):
    tmp = bundle_tmpdir("test-fashion-")
    nb, summary = run_extra("fashion_mnist", tmp, data_dir=fashion_data_dir(fashion_system_dir),
                            runs_dir=str(tmp / "runs"), smoke=True, device="cpu")
    yield tmp, nb, summary
    cleanup(tmp)


def test_grid_covers_figure_2_and_is_chosen_on_validation(fashion_run):
    _, _, summary = fashion_run
    res = summary["results"]
    assert summary["smoke"] is True
    rows = res["cis520_grid"]
    assert sorted(xm.grid_label(r["options"]) for r in rows) == sorted(xm.grid_label(o) for o in xm.baseline_grid())
    best = res["cis520_best"]
    assert best["name"] == rows[select_best([r["val_accuracy"] for r in rows])]["name"]
    assert best["val_accuracy"] == max(r["val_accuracy"] for r in rows)


def test_best_model_report_agrees_with_its_confusion_matrix(fashion_run):
    _, nb, summary = fashion_run
    best = summary["results"]["cis520_best"]
    cm = np.array(best["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == summary["results"]["sizes"]["test"]
    assert best["test_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    per_class = best["per_class_accuracy"]
    assert list(per_class) == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                               "Sneaker", "Bag", "Ankle boot"]
    np.testing.assert_allclose(list(per_class.values()), np.diag(cm) / cm.sum(axis=1))
    below = [c for c, a in per_class.items() if a < best["test_accuracy"]]
    assert sorted(p["class"] for p in best["problem_classes"]) == sorted(below)
    text = outputs_text(nb)
    for p in best["problem_classes"]:
        assert f"**{p['class']}**: {100 * p['accuracy']:.1f}%" in text


def test_tensorboard_events_exist_for_every_run(fashion_run):
    tmp, _, summary = fashion_run
    res = summary["results"]
    tb = tmp / "results" / "tensorboard"
    runs = [tb / "cis520_grid" / r["name"] for r in res["cis520_grid"]]
    runs += [tb / "ece449" / name for name in res["ece449"]] + [tb / "ece421" / "mlp"]
    assert len(runs) == 16
    for run in runs:
        acc = EventAccumulator(str(run))
        acc.Reload()
        assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val"} <= set(acc.Tags()["scalars"])
        assert [e.step for e in acc.Scalars("accuracy/val")] == [1]
    best = res["cis520_best"]
    acc = EventAccumulator(str(tb / "cis520_grid" / best["name"]))
    acc.Reload()
    assert acc.Scalars("accuracy/val")[-1].value == pytest.approx(best["val_accuracy"], rel=1e-6)


def test_ece449_and_ece421_runs_and_figures(fashion_run):
    tmp, _, summary = fashion_run
    res = summary["results"]
    assert set(res["ece449"]) == {"dnn", "lenet5", "resnet18_d2l"}
    assert res["ece449"]["resnet18_d2l"]["parameters"] == count_parameters(xm.get_resnet())
    assert all(0 <= v["test_accuracy"] <= 1 for v in res["ece449"].values())
    assert res["ece421"]["reached_82"] is None  # smoke: no claim
    assert len(res["ece421"]["val_accuracy"]) == 1
    assert set(res["figures"]) == set(res["parts"])
    for names in res["figures"].values():
        for name in names:
            assert (tmp / "results" / name).read_bytes()[:8] == PNG
