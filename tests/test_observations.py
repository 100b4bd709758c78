"""common.observations: synthetic histories with a known shape (overfitting,
underfitting, a diverged run, two optimisers, method selection) must give the
right diagnosis, and every number in the text must be the history's own,
computed here independently with NumPy."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from common import observations as obs
from common.experiments import choose_methods
from common.observations_q2 import budget_notice, describe_confusion, describe_selection


def make_history(train_loss, test_loss, train_acc, test_acc, stopped=None):
    n = len(train_loss)
    assert all(len(v) == n for v in (test_loss, train_acc, test_acc))
    h = {"epoch": list(range(1, n + 1)), "train_loss": list(train_loss),
         "eval_loss": list(test_loss), "train_accuracy": list(train_acc),
         "eval_accuracy": list(test_acc), "lr": [0.01] * n, "seconds": [1.0] * n,
         "stopped": stopped}
    return json.loads(json.dumps(h))  # as history.json holds it


def overfitting(n=20):
    """Test loss falls to a minimum at epoch 6, then climbs; train loss keeps falling."""
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


def numbers(text):
    return set(re.findall(r"[-+]?\d+\.\d+%?", text))


def test_formatting_helpers():
    assert obs.pct(0.91234) == "91.23%" and obs.pct(None) == "n/a"
    assert obs.points(0.0125) == "+1.25 points" and obs.points(-0.003) == "-0.30 points"


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
    assert s["instability"] == pytest.approx(np.mean(np.abs(np.diff(acc[10:]))))
    assert s["late_gain"] == pytest.approx(acc[-1] - acc[-6])


def test_overfitting_is_diagnosed_with_the_history_numbers():
    h = overfitting()
    text = obs.notable("VGG16", h)
    assert text.startswith("**VGG16**: it overfits: the test loss is lowest at epoch 6 (0.6000)")
    assert f"rises to {h['eval_loss'][-1]:.4f}" in text
    assert f"+{100 * (h['eval_loss'][-1] / 0.6 - 1):.0f}%" in text
    assert f"({h['train_loss'][5]:.4f} to {h['train_loss'][-1]:.4f})" in text
    assert (f"(train {obs.pct(h['train_accuracy'][-1])}, test {obs.pct(h['eval_accuracy'][-1])})"
            in text)  # the gap, above 10 points
    assert "points below its best" not in text  # flat at 80% from epoch 6
    assert "underfits" not in text and "still improving" not in text
    h["eval_accuracy"][-1] = 0.7712
    assert "its accuracy ends 2.88 points below its best" in obs.notable("VGG16", h)
    # Monitored on a validation split: the text says so.
    assert "it overfits: the val loss is lowest" in obs.notable("x", h, held_out="val")


def test_a_falling_test_loss_is_not_called_overfitting():
    h = overfitting()
    h["eval_loss"] = sorted(h["eval_loss"], reverse=True)  # minimum in the last epoch
    assert "overfits" not in obs.notable("ResNet18", h)


def test_underfitting_and_still_improving():
    h = underfitting()
    text = obs.notable("AlexNet with RMSProp", h)
    assert "it underfits: train accuracy 50.00% with almost no gap to test" in text
    late = h["eval_accuracy"][-1] - h["eval_accuracy"][-3]  # last quarter of 10 epochs: 2
    assert f"still improving at the end ({obs.points(late)} over the last 2 epochs)" in text
    assert "overfits" not in text


def test_stopped_runs_say_so():
    h = underfitting()
    reason = "non-finite loss at epoch 5, batch 3/10: loss=nan. The run diverged."
    part = make_history(*(h[k][:4] for k in ("train_loss", "eval_loss", "train_accuracy",
                                             "eval_accuracy")), stopped=reason)
    text = obs.notable("AlexNet with Adam", part, epochs_planned=10)
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
    assert "cannot be compared" in obs.compare_optimisers({"SGD": h, "Adam": empty}, baseline="SGD")


def two_optimisers():
    e = np.arange(1, 11)
    sgd = make_history(2.0 / e, 2.1 / e, 1 - 0.6 / e, 0.80 - 0.5 / e)  # slow, smooth
    jitter = np.where(e % 2 == 0, 0.03, -0.03) * (e > 5)
    adam_acc = np.minimum(0.85, 0.78 + 0.01 * e) + jitter  # fast start, jumpy late
    adam = make_history(1.0 / e, 1.1 / e, np.minimum(0.99, 0.8 + 0.02 * e), adam_acc)
    return sgd, adam


def test_optimiser_comparison_numbers_and_verdicts():
    sgd, adam = two_optimisers()
    text = obs.compare_optimisers({"SGD": sgd, "Adam": adam}, baseline="SGD")
    s_sgd, s_adam = obs.run_stats(sgd), obs.run_stats(adam)
    diff = s_adam["final_accuracy"] - s_sgd["final_accuracy"]
    assert diff > 0
    assert (f"Adam ends {100 * diff:.2f} points above SGD ({obs.pct(s_adam['final_accuracy'])} "
            f"against {obs.pct(s_sgd['final_accuracy'])})") in text
    earlier = s_sgd["epochs_to_speed"] - s_adam["epochs_to_speed"]
    assert earlier > 0
    assert (f"{earlier} epoch{'s' * (earlier != 1)} earlier (epoch {s_adam['epochs_to_speed']} "
            f"against {s_sgd['epochs_to_speed']})") in text
    assert s_adam["instability"] > s_sgd["instability"]
    assert (f"fluctuates more late in training ({100 * s_adam['instability']:.2f} against "
            f"{100 * s_sgd['instability']:.2f} points per epoch)") in text
    assert f"By final test accuracy: Adam {obs.pct(s_adam['final_accuracy'])}, SGD" in text
    assert f"After the first epoch: SGD {obs.pct(sgd['eval_accuracy'][0])}, Adam " in text
    assert "Adam trains" not in text and "SGD trains more stably" in text
    with pytest.raises(ValueError, match="baseline 'RMSProp'"):
        obs.compare_optimisers({"SGD": sgd}, baseline="RMSProp")


def test_ties_are_called_level():
    sgd, _ = two_optimisers()
    text = obs.compare_optimisers({"SGD": sgd, "RMSProp": sgd}, baseline="SGD")
    assert "RMSProp ends level with SGD" in text and "SGD and RMSProp end level" in text
    assert "All reach 90% of the final accuracy in the same epoch" in text
    assert "leads" not in text and "widest" not in text


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
    sel = choose_methods(base, candidates, k=2)
    assert sel["baseline_val_accuracy"] == pytest.approx(0.65)
    assert sel["chosen"] == ["cosine", "onecycle"] and sel["effective"] == ["cosine", "onecycle"]
    gains = {c["method"]: c["gain"] for c in sel["candidates"]}
    assert gains["cosine"] == pytest.approx(0.05) and gains["label_smoothing"] == pytest.approx(-0.05)
    assert not next(c for c in sel["candidates"] if c["method"] == "huge_lr")["eligible"]
    text = describe_selection(sel, {"baseline": 0.64, "cosine": 0.69, "onecycle": 0.63})
    assert "the baseline ends at 65.00%" in text
    assert "cosine 70.00% (+5.00 points)" in text and "huge_lr 99.00% (stopped early, not eligible)" in text
    assert "Chosen on validation: cosine and onecycle." in text
    assert "baseline 64.00%, cosine 69.00% (+5.00 points), onecycle 63.00% (-1.00 points)" in text
    assert "validation gain of onecycle did not carry over" in text
    assert "Cosine improves on the baseline on both validation and test" in text
    assert "No candidate" not in text and "Only" not in text


def test_fewer_than_two_effective_methods_are_reported_honestly():
    base, ending = val_runs()
    one = choose_methods(base, {"cosine": ending(0.70), "step": ending(0.60)})
    assert one["chosen"] == ["cosine", "step"] and one["effective"] == ["cosine"]
    text = describe_selection(one, {"baseline": 0.6, "cosine": 0.7, "step": 0.5})
    assert "Only cosine beat the baseline on validation, not 2 methods as asked" in text
    assert "step did not and is not called effective" in text
    none = choose_methods(base, {"cosine": ending(0.64), "step": ending(0.65)})
    assert none["effective"] == []  # a tie is no gain
    text = describe_selection(none, {"baseline": 0.6, "cosine": 0.61, "step": 0.62})
    assert "No candidate beat the baseline on validation" in text
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


def test_explain_optimisers_reads_the_curves():
    from common.observations_q2 import explain_optimisers

    e = np.arange(1, 6)
    sgd = make_history(2.0 / e, 1.5 / e, 0.5 + 0.05 * e, 0.45 + 0.05 * e)  # ends 70%, gap 5
    adam = make_history(1.6 / e, 1.4 / e, 0.6 + 0.06 * e, 0.45 + 0.04 * e)  # ends 65%, gap 25
    rms = make_history(1.8 / e, 1.4 / e, 0.5 + 0.05 * e, 0.452 + 0.05 * e)
    text = explain_optimisers({"SGD": sgd, "RMSProp": rms, "Adam": adam})
    assert "falls furthest with Adam" in text and "SGD 2.000, RMSProp 1.800 and Adam 1.600" in text
    assert "adaptive step rule" in text and "At the end RMSProp is ahead" in text
    assert "Adam ends with a wider train/test gap" in text and "RMSProp ends" not in text
    level = explain_optimisers({"SGD": sgd, "Adam": make_history(*(sgd[k] for k in (
        "train_loss", "eval_loss", "train_accuracy", "eval_accuracy")))})
    assert "within the noise of a single run" in level and "steps are proportional" in level


def test_a_lead_within_two_standard_errors_is_called_noise():
    def flat(acc):
        return make_history([1.0, 0.5], [1.0, 0.6], [acc - 0.1, acc], [acc - 0.1, acc])

    runs = {"A": flat(0.52), "B": flat(0.50)}
    # 2 SE of the difference on n images: 2 sqrt((0.52*0.48 + 0.5*0.5) / n).
    small = obs.compare_runs(runs, held_out_images=1_000)  # 2 SE = 4.47 points > 2
    assert "within the noise" in small and "4.47 points" in small
    large = obs.compare_runs(runs, held_out_images=100_000)  # 2 SE = 0.45 points < 2
    assert "within the noise" not in large and "more than two standard errors (0.45 points" in large
    assert "two standard errors" not in obs.compare_runs(runs)  # no size given: no claim
    within, two_se = obs.within_noise(0.52, 0.50, 1_000)
    assert within and two_se == pytest.approx(2 * ((0.52 * 0.48 + 0.25) / 1_000) ** 0.5)


def test_notes_say_only_what_stands_out():
    def steady(n=8):  # converged: test loss at its minimum last, small gap, flat accuracy
        e = np.arange(1, n + 1)
        return make_history(1.0 / e, 1.0 / e + 0.05, [0.90] * n, [0.88] * n)

    over, under = overfitting(), underfitting()
    text = obs.notes({"VGG16": over, "ResNet18": steady(), "AlexNet": under})
    bullets = text.splitlines()
    assert len(bullets) == 2 and all(b.startswith("- **") for b in bullets)
    assert bullets[0].startswith("- **VGG16**: it overfits: the test loss is lowest at epoch 6")
    s = obs.run_stats(over)
    assert f"(+{100 * s['loss_rise']:.0f}%)" in bullets[0]
    assert f"(train {obs.pct(s['final_train_accuracy'])}, test {obs.pct(s['final_accuracy'])})" \
        in bullets[0]
    assert bullets[1].startswith("- **AlexNet**: it underfits: train accuracy 50.00%")
    assert "still improving" in bullets[1]
    assert obs.notes({"ResNet18": steady()}) == ""
    stopped = make_history([2.0], [2.1], [0.3], [0.25], stopped="non-finite loss at epoch 2.")
    assert obs.notable("Adam", stopped, epochs_planned=40).startswith(
        "**Adam**: it stopped early, after 1 of 40 epochs (non-finite loss at epoch 2)")


def test_q3_gains_within_two_standard_errors_are_called_noise():
    from common import observations_q3 as text

    row = {"fraction": 0.1, "images": 500, "pretrained": 0.62, "scratch": 0.60,
           "pretrained_near_chance": False, "scratch_near_chance": False,
           "recipe_pretrained": "sgd", "recipe_scratch": "adamw"}
    # 2 SE of a 2-point gain: 2 sqrt((0.62*0.38 + 0.6*0.4) / n) = 6.2 points on 500 images.
    small = text.observe_fractions([row], epochs=1, test_images=500)
    assert "+2.0 points" in small and "within the noise: two standard errors of the difference " \
        "on 500 test images are 6.2 points" in small
    assert "within the noise" not in text.observe_fractions([row], epochs=1, test_images=100_000)
    assert "within the noise" not in text.observe_fractions([row], epochs=1)  # size unknown


def test_the_transfer_trend_is_explained_only_when_transfer_helped():
    from common import observations_q3 as text

    def row(fraction, pretrained, scratch):
        return {"fraction": fraction, "images": int(fraction * 5000), "pretrained": pretrained,
                "scratch": scratch, "pretrained_near_chance": False, "scratch_near_chance": False,
                "recipe_pretrained": "sgd", "recipe_scratch": "adamw"}

    helped = text.observe_fractions([row(0.1, 0.70, 0.40), row(0.5, 0.80, 0.70)], epochs=1)
    assert "benefit of transfer shrinks" in helped and "matter most when labelled data" in helped
    hurt = text.observe_fractions([row(0.1, 0.38, 0.40), row(0.5, 0.60, 0.70)], epochs=1)
    assert "benefit of transfer shrinks" in hurt and "matter most" not in hurt
    assert "Transfer did not help at 10%, 50%" in hurt
