"""common.observations: synthetic histories with a known shape (overfitting,
underfitting, a diverged run, method selection) must give the right diagnosis, every
number in the text must be the history's own, computed here independently with NumPy,
and the noise rule must be the formula it states. The table of cases that checks which
sentences appear, and which must not, is tests/test_observations_table.py."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from common import observations as obs
from common.experiments import choose_methods
from common.observations_q2 import budget_notice, describe_confusion, describe_selection

BIG = dict(held_out_images=10_000, train_images=50_000)


def make_history(train_loss, test_loss, train_acc, test_acc, stopped=None, seconds=None):
    n = len(train_loss)
    assert all(len(v) == n for v in (test_loss, train_acc, test_acc))
    h = {"epoch": list(range(1, n + 1)), "train_loss": list(train_loss),
         "eval_loss": list(test_loss), "train_accuracy": list(train_acc),
         "eval_accuracy": list(test_acc), "lr": [0.01] * n,
         "seconds": list(seconds) if seconds is not None else [1.0] * n, "stopped": stopped}
    return json.loads(json.dumps(h))  # as history.json holds it


def overfitting(n=20):
    """Test loss falls to a minimum at epoch 6, then climbs; train loss keeps falling;
    test accuracy flat at 80% from epoch 6."""
    e = np.arange(1, n + 1)
    train_loss = 2.0 * np.exp(-0.3 * e)
    test_loss = 0.6 + 0.02 * (e - 6) ** 2
    train_acc = np.minimum(0.99, 0.5 + 0.05 * e)
    test_acc = np.minimum(0.80, 0.45 + 0.06 * e)
    return make_history(train_loss, test_loss, train_acc, test_acc)


def underfitting(n=10):
    """Both accuracies low and close; the loss still falling at the end."""
    e = np.arange(1, n + 1)
    return make_history(2.3 - 0.05 * e, 2.3 - 0.05 * e + 0.01, 0.20 + 0.03 * e, 0.19 + 0.03 * e)


def test_formatting_helpers():
    assert obs.pct(0.91234) == "91.23%" and obs.pct(None) == "n/a"
    assert obs.points(0.0125) == "+1.25 points" and obs.points(-0.003) == "-0.30 points"
    assert obs.judged(0.02, 0.01) == "+2.00 points, beyond noise (2 SE 1.00)"
    assert obs.judged(-0.00001, 0.01, 1) == "+0.0 points, within noise (2 SE 1.0)"  # no "-0.0"


def test_the_noise_rule_is_the_formula_it_states():
    # Two accuracies on n1, n2 images: 2 sqrt(p1 (1 - p1) / n1 + p2 (1 - p2) / n2).
    beyond, two_se = obs.noise(0.52 - 0.50, obs.binomial(0.52, 1_000), obs.binomial(0.50, 2_000))
    assert two_se == pytest.approx(2 * math.sqrt(0.52 * 0.48 / 1_000 + 0.25 / 2_000))
    assert not beyond and obs.noise(0.06, obs.binomial(0.52, 1_000), obs.binomial(0.5, 2_000))[0]
    same = [obs.binomial(0.52, 100_000), obs.binomial(0.50, 100_000)]
    assert obs.noise(0.02, *same)[0]  # 2 SE = 0.45 points on 100,000 images each
    # A loss: the per-epoch noise variance from second differences; a straight line has none.
    x = [2.0, 1.7, 1.5, 1.45, 1.3]
    d2 = np.diff(x, 2)
    assert obs.series_variance(x) == pytest.approx(np.sum(d2 ** 2) / (6 * 3))
    assert obs.series_variance([3.0, 2.0, 1.0, 0.0]) == pytest.approx(0.0)
    assert obs.series_variance([2.0, 1.0]) is None  # under 3 epochs nothing is judged


def test_run_stats_against_numpy():
    h = overfitting()
    s = obs.run_stats(h)
    acc, loss = np.array(h["eval_accuracy"]), np.array(h["eval_loss"])
    assert s["epochs"] == 20 and s["stopped"] is None
    assert s["final_accuracy"] == acc[-1] and s["best_accuracy"] == acc.max()
    assert s["best_epoch"] == int(np.argmax(acc)) + 1
    assert s["min_loss_epoch"] == 6 and s["min_loss"] == loss.min()
    assert s["loss_rise"] == pytest.approx(loss[-1] / loss.min() - 1)
    assert s["gap"] == pytest.approx(h["train_accuracy"][-1] - acc[-1])
    # First epoch at 90% of the final accuracy, by brute force.
    assert s["epochs_to_speed"] == next(i + 1 for i, a in enumerate(acc) if a >= 0.9 * acc[-1])
    assert s["late_gain"] == pytest.approx(acc[-1] - acc[-6])


def test_overfitting_is_diagnosed_with_the_history_numbers():
    h = overfitting()
    text = obs.notable("VGG16", h, **BIG)
    assert text.startswith("**VGG16**: it overfits: the test loss is lowest at epoch 6 (0.6000)")
    assert f"rises to {h['eval_loss'][-1]:.4f}" in text
    assert f"+{100 * (h['eval_loss'][-1] / 0.6 - 1):.0f}%" in text
    var = np.sum(np.diff(h["eval_loss"], 2) ** 2) / (6 * 18)
    assert f"beyond its per-epoch noise: 2 SE {2 * math.sqrt(2 * var):.4f}" in text
    assert f"({h['train_loss'][5]:.4f} to {h['train_loss'][-1]:.4f})" in text
    # Accuracy flat at 80% while the loss rises: confident mistakes, said with the numbers.
    assert "does not fall beyond noise (80.00% to 80.00%), so it grows confident" in text
    assert "far better than new ones" in text  # train 99%, test 80%, on 10,000 / 50,000 images
    assert "underfits" not in text and "still improving" not in text
    # Monitored on a validation split: the text says so.
    assert "it overfits: the val loss is lowest" in obs.notable("x", h, held_out="val")


def test_a_falling_test_loss_is_not_called_overfitting():
    h = overfitting()
    h["eval_loss"] = sorted(h["eval_loss"], reverse=True)  # minimum in the last epoch
    assert "overfits" not in obs.notable("ResNet18", h, **BIG)


def test_underfitting_is_judged_only_with_the_sizes():
    h = underfitting()
    text = obs.notable("AlexNet with RMSProp", h, **BIG)
    assert "it underfits: its train accuracy (50.00%) is below 75% beyond noise" in text
    late = h["eval_accuracy"][-1] - h["eval_accuracy"][-3]  # last quarter of 10 epochs: 2
    assert f"still improving at the end: {obs.points(late)} over the last 2 epochs" in text
    assert "overfits" not in text
    assert obs.notable("AlexNet with RMSProp", h) == ""  # no sizes: no accuracy is judged


def test_stopped_runs_say_so():
    h = underfitting()
    reason = "non-finite loss at epoch 5, batch 3/10: loss=nan. The run diverged."
    part = make_history(*(h[k][:4] for k in ("train_loss", "eval_loss", "train_accuracy",
                                             "eval_accuracy")), stopped=reason)
    text = obs.notable("AlexNet with Adam", part, epochs_planned=10, **BIG)
    assert text.startswith("**AlexNet with Adam**: it stopped early, after 4 of 10 epochs ("
                           + reason.rstrip("."))
    assert "unfinished run" in text
    assert "still improving" not in text  # a stopped run is not "improving"
    empty = make_history([], [], [], [], stopped="non-finite loss at epoch 1, batch 1/10")
    text = obs.notable("Adam", empty)
    assert "after 0 epochs" in text and "batch 1/10" in text
    # Comparisons leave a run without epochs out and say so.
    cmp = obs.compare_runs({"SGD": h, "Adam": empty})
    assert cmp.startswith("Adam completed no epoch") and "SGD 49.00%" in cmp
    assert "Adam completed no epoch" in obs.compare_optimisers({"SGD": h, "Adam": empty},
                                                               baseline="SGD")
    with pytest.raises(ValueError, match="baseline 'RMSProp'"):
        obs.compare_optimisers({"SGD": h}, baseline="RMSProp")


def test_every_percentage_in_a_comparison_is_a_history_value():
    e = np.arange(1, 7)
    runs = {"VGG16": make_history(2 / e, 2 / e, 0.40 + 0.07 * e, 0.31 + 0.06 * e),
            "ResNet18": make_history(2 / e, 2 / e, 0.50 + 0.07 * e, 0.42 + 0.05 * e)}
    text = obs.compare_runs(runs, **BIG)
    allowed = {obs.pct(v) for h in runs.values() for v in h["eval_accuracy"]}
    found = re.findall(r"\d+\.\d\d%", text)
    assert found and set(found) <= allowed
    # Each fact once: every final and first-epoch accuracy appears a single time.
    for h in runs.values():
        assert text.count(obs.pct(h["eval_accuracy"][-1])) == 1
        assert text.count(obs.pct(h["eval_accuracy"][0])) == 1
    # The 2 SE quoted for the final accuracies is the formula's, on 10,000 test images.
    a, b = runs["ResNet18"]["eval_accuracy"][-1], runs["VGG16"]["eval_accuracy"][-1]
    two_se = 2 * math.sqrt(a * (1 - a) / 10_000 + b * (1 - b) / 10_000)
    assert f"VGG16 {100 * (b - a):+.2f} points, beyond noise (2 SE {100 * two_se:.2f})" in text


def val_runs():
    e = np.arange(1, 6)
    base = make_history(1 / e, 1 / e, 0.5 + 0.05 * e, 0.40 + 0.05 * e)  # ends at 65%

    def ending(final):
        return make_history(1 / e, 1 / e, 0.5 + 0.05 * e, 0.40 + 0.05 * e + (final - 0.65))
    return base, ending


def test_choose_methods_takes_the_two_largest_validation_gains():
    base, ending = val_runs()
    diverged = make_history([2.0], [2.0], [0.1], [0.99], stopped="non-finite loss")  # would win
    candidates = {"cosine": ending(0.70), "onecycle": ending(0.68), "step": ending(0.66),
                  "label_smoothing": ending(0.60), "huge_lr": diverged}
    sel = choose_methods(base, candidates, k=2, held_out_images=5_000)
    assert sel["baseline_val_accuracy"] == pytest.approx(0.65)
    assert sel["chosen"] == ["cosine", "onecycle"] and sel["effective"] == ["cosine", "onecycle"]
    gains = {c["method"]: c["gain"] for c in sel["candidates"]}
    assert gains["cosine"] == pytest.approx(0.05) and gains["label_smoothing"] == pytest.approx(-0.05)
    assert not next(c for c in sel["candidates"] if c["method"] == "huge_lr")["eligible"]
    test = {"baseline": 0.64, "cosine": 0.69, "onecycle": 0.63}
    text = describe_selection(sel, test, val_images=5_000, test_images=10_000)
    assert "On the validation split the baseline ends at 65.00%." in text
    two_se = 2 * math.sqrt(0.7 * 0.3 / 5_000 + 0.65 * 0.35 / 5_000)
    assert f"cosine 70.00%: +5.00 points, beyond noise (2 SE {100 * two_se:.2f})" in text
    assert "huge_lr 99.00% (stopped early, not eligible)" in text
    assert "Chosen on validation: cosine and onecycle." in text
    assert "baseline 64.00%; cosine 69.00%: +5.00 points, beyond noise" in text
    assert "onecycle 63.00%: -1.00 points, within noise" in text
    assert "validation gain of onecycle is not confirmed on the test set beyond noise" in text
    assert "Cosine improves on the baseline on both validation and test beyond noise" in text
    assert "No candidate" not in text and "Only" not in text
    # Without the sizes the numbers are given and nothing about them is judged.
    bare = describe_selection(sel, test)
    assert "cosine 70.00%: +5.00 points;" in bare and "noise" not in bare
    assert "improves" not in bare and "weak" not in bare


def test_fewer_than_two_effective_methods_are_reported_honestly():
    base, ending = val_runs()
    one = choose_methods(base, {"cosine": ending(0.70), "step": ending(0.60)}, held_out_images=5_000)
    assert one["chosen"] == ["cosine", "step"] and one["effective"] == ["cosine"]
    # The same gain on 100 images is within noise (2 SE 13.2 points): not effective; and
    # without the size nothing is judged effective.
    small = choose_methods(base, {"cosine": ending(0.70), "step": ending(0.60)}, held_out_images=100)
    assert small["chosen"] == ["cosine", "step"] and small["effective"] == []
    assert choose_methods(base, {"cosine": ending(0.70)}, k=1)["effective"] == []
    text = describe_selection(one, {"baseline": 0.6, "cosine": 0.7, "step": 0.5},
                              val_images=5_000, test_images=10_000)
    assert "Only cosine beats the baseline on validation beyond noise, not 2 methods as asked" in text
    assert "step did not and is not called effective" in text
    none = choose_methods(base, {"cosine": ending(0.64), "step": ending(0.65)}, held_out_images=5_000)
    assert none["effective"] == []  # a tie is no gain
    text = describe_selection(none, {"baseline": 0.6, "cosine": 0.61, "step": 0.62})
    assert "No candidate beats the baseline on validation" in text
    assert "improves on the baseline" not in text
    with pytest.raises(ValueError, match="baseline run stopped"):
        choose_methods(make_history([], [], [], [], stopped="nan"), {"cosine": base})


def test_describe_confusion_names_the_right_classes():
    classes = ["plane", "car", "bird", "cat"]
    cm = np.array([[90, 2, 5, 3],
                   [1, 95, 2, 2],
                   [10, 0, 70, 20],
                   [0, 1, 30, 69]])
    text = describe_confusion(cm, classes)
    assert text.startswith(f"Overall accuracy {obs.pct(np.trace(cm) / cm.sum())}.")
    assert "Best class: car (95.00%); worst: cat (69.00%)." in text
    assert "cat taken for bird (30 images, 30.00% of the cat images)" in text
    assert "Counting both directions" not in text  # bird/cat is also the top pair
    cm[0, 3] = 45  # plane -> cat is now the most frequent single mistake
    text = describe_confusion(cm, classes)
    assert "plane taken for cat (45 images" in text
    assert "Counting both directions, bird and cat are confused most often (50 images)" in text


def test_budget_notices():
    text = budget_notice(smoke=True, train_images=100, eval_images=50, epochs=2)
    assert text.startswith("**Smoke run**") and "100 training images" in text and "2 epochs" in text
    text = budget_notice(smoke=False, train_images=2500, eval_images=1000, epochs=5)
    assert text.startswith("**Quick run**") and "2,500 training images" in text
    assert "5 epochs" in text and "mean nothing" not in text


def test_notes_say_only_what_stands_out():
    def steady(n=8):  # converged: test loss at its minimum last, small gap, flat accuracy
        e = np.arange(1, n + 1)
        return make_history(1.0 / e, 1.0 / e + 0.05, [0.90] * n, [0.88] * n)

    over, under = overfitting(), underfitting()
    text = obs.notes({"VGG16": over, "ResNet18": steady(), "AlexNet": under}, **BIG)
    bullets = text.splitlines()
    assert len(bullets) == 2 and all(b.startswith("- **") for b in bullets)
    assert bullets[0].startswith("- **VGG16**: it overfits: the test loss is lowest at epoch 6")
    assert bullets[1].startswith("- **AlexNet**: it underfits: its train accuracy (50.00%)")
    assert "still improving" in bullets[1]
    assert obs.notes({"ResNet18": steady()}, **BIG) == ""
    stopped = make_history([2.0], [2.1], [0.3], [0.25], stopped="non-finite loss at epoch 2.")
    assert obs.notable("Adam", stopped, epochs_planned=40).startswith(
        "**Adam**: it stopped early, after 1 of 40 epochs (non-finite loss at epoch 2)")


def test_q3_gains_are_judged_by_the_same_rule():
    from common import observations_q3 as text

    row = {"fraction": 0.1, "images": 500, "pretrained": 0.62, "scratch": 0.60,
           "pretrained_near_chance": False, "scratch_near_chance": False,
           "recipe_pretrained": "sgd", "recipe_scratch": "adamw"}
    # 2 SE of a 2-point gain: 2 sqrt((0.62*0.38 + 0.6*0.4) / n) = 6.2 points on 500 images.
    small = text.observe_fractions([row], steps=1, test_images=500)
    assert "from scratch: +2.0 points, within noise (2 SE 6.2)." in small
    assert "Transfer does not help beyond noise at 10%." in small
    large = text.observe_fractions([row], steps=1, test_images=100_000)
    assert "+2.0 points, beyond noise (2 SE 0.4)" in large and "does not help" not in large
    bare = text.observe_fractions([row], steps=1)  # size unknown: nothing judged
    assert "from scratch: +2.0 points." in bare and "noise" not in bare
