"""The observations against a table of synthetic histories: ties, differences at the
level of the noise, clear differences and reversed directions. Each case lists the
sentences that must appear and those that must not; every explanation (and citation)
the generator can write has a case whose data do not support it, where it is absent.
Smoke-sized runs (100 images, two epochs) must explain nothing and say "within noise"."""
from __future__ import annotations

import numpy as np
import pytest

from common import observations as obs
from common import observations_q3 as q3
from common.observations_q2 import budget_notice, describe_selection, explain_optimisers
from test_observations import make_history

BIG = dict(held_out_images=10_000, train_images=50_000)  # 2 SE of two accuracies near 1.4 points
SMALL = dict(held_out_images=100, train_images=100)  # the smoke run's sizes: near 8 to 14 points

# Every explanatory sentence (and citation) the generators can write, by a phrase of it.
EXPLANATIONS = ["adaptive step rule", "Wilson et al.", "Against the usual expectation",
                "Against the common finding", "it overfits", "grows confident", "underfits",
                "far better than new ones", "more epochs would likely help", "matter most",
                "need no backward pass"]


def run(first, final, *, gap=0.05, epochs=6, loss=(2.0, 1.0)):
    """Test accuracy rising linearly from `first` to `final`, train accuracy `gap` above
    it, the training loss falling linearly (the held-out loss 0.2 above it)."""
    acc = np.linspace(first, final, epochs)
    train_loss = np.linspace(*loss, epochs)
    return make_history(train_loss, train_loss + 0.2, np.clip(acc + gap, 0, 1), acc)


def check(text, must, must_not):
    for sentence in must:
        assert sentence in text, f"missing {sentence!r} in:\n{text}"
    for sentence in must_not:
        assert sentence not in text, f"unsupported {sentence!r} in:\n{text}"


# --- Q2(b): the optimisers, their facts (compare_optimisers) and explanations ----------------

OPTIMISERS = {
    "tie": ({"SGD": run(0.3, 0.6), "RMSProp": run(0.3, 0.6), "Adam": run(0.3, 0.6)}, BIG,
            ["RMSProp +0.00 points, within noise", "No run is best beyond noise"],
            EXPLANATIONS + ["is best beyond noise."]),
    "noise level": ({"SGD": run(0.300, 0.600), "RMSProp": run(0.305, 0.595),
                     "Adam": run(0.310, 0.605)}, BIG,
                    ["RMSProp +0.50 points, within noise", "Adam +1.00 points, within noise",
                     "No run is best beyond noise"], EXPLANATIONS),
    # Adaptive methods ahead early, behind at the end with a wider gap: both mechanisms.
    "textbook": ({"SGD": run(0.30, 0.65), "RMSProp": run(0.45, 0.60, gap=0.15),
                  "Adam": run(0.47, 0.61, gap=0.14)}, BIG,
                 ["Adam +17.00 points, beyond noise", "SGD is best beyond noise",
                  "Adam gets there 2 epochs sooner than SGD",
                  "The early lead of both RMSProp and Adam over SGD is the adaptive step rule at "
                  "work", "they generalise worse, as Wilson et al. (2017) found"],
                 ["Against the usual expectation", "Against the common finding"]),
    # The same shape on 100 images: nothing beyond noise, nothing explained.
    "textbook, smoke-sized": ({"SGD": run(0.30, 0.65), "RMSProp": run(0.33, 0.62, gap=0.15),
                               "Adam": run(0.34, 0.61, gap=0.14)}, SMALL,
                              ["within noise", "No run is best beyond noise"], EXPLANATIONS),
    "reversed": ({"SGD": run(0.45, 0.55), "RMSProp": run(0.30, 0.62), "Adam": run(0.31, 0.63)},
                 BIG, ["Against the usual expectation that adaptive steps speed up early "
                       "training, RMSProp and Adam start behind SGD",
                       "Against the common finding that adaptive methods generalise worse than "
                       "SGD, RMSProp and Adam end above it"],
                 ["adaptive step rule", "Wilson et al."]),
    # Only Adam is ahead early: the mechanism of both adaptive methods is not shown.
    "one adaptive fast": ({"SGD": run(0.30, 0.60), "RMSProp": run(0.301, 0.60),
                           "Adam": run(0.45, 0.60)}, BIG,
                          ["Adam +15.00 points, beyond noise", "RMSProp +0.10 points, within"],
                          ["adaptive step rule", "Against the usual expectation"]),
    # Below SGD at the end but with a narrower gap: they fit less, not generalise worse.
    "worse, no wider gap": ({"SGD": run(0.30, 0.65, gap=0.10), "RMSProp": run(0.30, 0.60, gap=0.0),
                             "Adam": run(0.30, 0.60, gap=0.0)}, BIG,
                            ["SGD is best beyond noise", "RMSProp -10.00 points, beyond noise"],
                            ["Wilson et al.", "Against the common finding"]),
}


@pytest.mark.parametrize("case", OPTIMISERS)
def test_optimiser_observations(case):
    runs, sizes, must, must_not = OPTIMISERS[case]
    text = (obs.compare_optimisers(runs, baseline="SGD", **sizes) + " "
            + explain_optimisers(runs, **sizes))
    check(text, must, must_not)


def test_optimiser_text_comes_in_the_reader_s_order():
    runs, sizes, _, _ = OPTIMISERS["textbook"]
    text = (obs.compare_optimisers(runs, baseline="SGD", **sizes) + " "
            + explain_optimisers(runs, **sizes))
    marks = ["By final test accuracy", "After the first epoch", "Epoch reaching 90%",
             "Train minus test accuracy", "adaptive step rule", "Wilson"]
    places = [text.index(m) for m in marks]
    assert places == sorted(places)
    for name, h in runs.items():  # each fact once
        assert text.count(f"{name} {obs.pct(h['eval_accuracy'][-1])}") == 1
    assert explain_optimisers(runs) == ""  # without the size nothing is judged or explained


# --- Q2(a), (c): compare_runs, (i) best, (ii) speed, (iii) generalisation ---------------------

FAST = make_history(*[[2.0, 1.5, 1.2, 1.0, 0.9, 0.8]] * 2, [0.55, 0.75, 0.75, 0.75, 0.75, 0.75],
                    [0.50, 0.70, 0.70, 0.70, 0.70, 0.70])  # 90% of its final at epoch 2
RUNS = {
    "tie": ({"VGG16": run(0.3, 0.6), "ResNet18": run(0.3, 0.6)}, BIG,
            ["No run is best beyond noise", "In speed no run differs from"], ["is best beyond noise."]),
    "noise level": ({"VGG16": run(0.30, 0.600), "ResNet18": run(0.30, 0.605)}, BIG,
                    ["No run is best beyond noise: VGG16 is within noise of ResNet18",
                     "VGG16 -0.50 points, within noise (2 SE 1.38)"], ["is best beyond noise."]),
    "clear": ({"VGG16": run(0.30, 0.60), "ResNet18": run(0.30, 0.70)}, BIG,
              ["ResNet18 is best beyond noise.", "VGG16 -10.00 points, beyond noise"],
              ["No run is best"]),
    "reversed": ({"VGG16": run(0.30, 0.70), "ResNet18": run(0.30, 0.60)}, BIG,
                 ["VGG16 is best beyond noise.", "ResNet18 -10.00 points, beyond noise"],
                 ["ResNet18 is best", "No run is best"]),
    "clear lead, 100 images": ({"VGG16": run(0.30, 0.60), "ResNet18": run(0.30, 0.66)}, SMALL,
                               ["No run is best beyond noise", "VGG16 -6.00 points, within noise"],
                               ["ResNet18 is best"]),
    "faster beyond noise": ({"Fast": FAST, "Slow": run(0.30, 0.70)}, BIG,
                            ["Fast gets there 4 epochs sooner than Slow, and leads it at epoch 2 "
                             "by +32.00 points, beyond noise"], ["In speed no run differs"]),
    "one epoch sooner": ({"A": run(0.30, 0.60), "B": run(0.46, 0.60)}, BIG,
                         ["Epoch reaching 90% of its final accuracy: A 5, B 4.", "In speed no run differs"],
                         ["sooner than"]),
    "sooner, within noise": ({"A": make_history(*[[2, 1.5, 1.2, 1, 0.9, 0.8]] * 2, [0.4] * 6,
                                                [0.30, 0.34, 0.35, 0.35, 0.35, 0.35]),
                              "B": make_history(*[[2, 1.5, 1.2, 1, 0.9, 0.8]] * 2, [0.4] * 6,
                                                [0.30, 0.31, 0.32, 0.33, 0.34, 0.40])}, SMALL,
                             ["A 2, B 6.", "In speed no run differs"], ["sooner than"]),
    "wider gap": ({"VGG16": run(0.3, 0.6, gap=0.20), "ResNet18": run(0.3, 0.61, gap=0.05)}, BIG,
                  ["Train minus test accuracy at the end (the gap): VGG16 +20.00, ResNet18 +5.00",
                   "Against ResNet18: VGG16 +15.00 points, beyond noise"], []),
    "no sizes": ({"VGG16": run(0.30, 0.60), "ResNet18": run(0.30, 0.70)}, {},
                 ["The number of test images is not given", "By final test accuracy: ResNet18 "
                  "70.00%, VGG16 60.00%."], ["noise (", "is best"]),
}


@pytest.mark.parametrize("case", RUNS)
def test_run_comparisons(case):
    runs, sizes, must, must_not = RUNS[case]
    check(obs.compare_runs(runs, **sizes), must, must_not)


def test_a_baseline_is_the_reference_and_best_can_be_left_to_the_caller():
    runs = {"baseline": run(0.3, 0.60), "cosine": run(0.3, 0.65), "cutout": run(0.3, 0.66)}
    text = obs.compare_runs(runs, held_out="val", baseline="baseline", best=False, **BIG)
    assert "By final" not in text and text.index("After the first") < text.index("Train minus")
    assert "Against baseline: cosine +0.00 points" in text  # first epochs level


# --- (iv): what stands out in one run ------------------------------------------------------

def ups_and_downs(values, n=8):
    """A flat series with +-0.15 jitter and no trend: its changes are all noise."""
    return [values + 0.15 * (-1) ** i for i in range(n)]


OVER_ACC = [0.45, 0.55, 0.65, 0.75, 0.80, 0.80, 0.78, 0.72, 0.66, 0.60]
NOTES = {
    "overfits, accuracy falls": (make_history(
        np.linspace(2, 0.1, 10), [1.5, 1.0, 0.8, 0.65, 0.6, 0.7, 0.9, 1.2, 1.6, 2.1],
        np.linspace(0.5, 0.99, 10), OVER_ACC), BIG,
        ["it overfits: the test loss is lowest at epoch 5", "its test accuracy falls too"],
        ["grows confident"]),
    "jittery loss, no overfitting": (make_history(
        np.linspace(2, 0.5, 8), [0.6, 0.9, 0.6, 0.9, 0.6, 0.9, 0.6, 0.7],
        np.linspace(0.5, 0.7, 8), np.linspace(0.45, 0.62, 8)), BIG, [], ["overfits"]),
    "gap above 10 points, within noise": (make_history(
        np.linspace(2.3, 1.5, 5), np.linspace(2.3, 1.7, 5), [0.1, 0.15, 0.2, 0.22, 0.24],
        [0.1, 0.1, 0.11, 0.1, 0.1]), SMALL, [], ["far better than new ones", "underfits"]),
    "gap above 10 points, beyond noise": (make_history(
        np.linspace(2.3, 1.5, 5), np.linspace(2.3, 1.7, 5), [0.3, 0.5, 0.7, 0.8, 0.9],
        [0.3, 0.5, 0.6, 0.7, 0.7]), BIG, ["far better than new ones"], ["underfits"]),
    "training loss flat: no diagnosis": (make_history(
        ups_and_downs(2.0), ups_and_downs(2.1), [0.30] * 8, [0.29] * 8), BIG,
        ["does not fall beyond its per-epoch noise"], ["underfits", "overfits"]),
    "still improving": (make_history(np.linspace(2, 1, 8), np.linspace(2.1, 1.1, 8),
                                     np.linspace(0.4, 0.75, 8), np.linspace(0.4, 0.70, 8)), BIG,
                        ["still improving at the end: +8.57 points over the last 2 epochs"], []),
    "rising within noise": (make_history(np.linspace(2, 1, 8), np.linspace(2.1, 1.1, 8),
                                         np.linspace(0.4, 0.75, 8), np.linspace(0.4, 0.70, 8)),
                            SMALL, [], ["still improving", "more epochs"]),
    "two epochs": (make_history([2.3, 1.0], [2.3, 1.5], [0.9, 0.99], [0.1, 0.1]), SMALL,
                   ["2 epochs are too few to tell the trend of its training loss from noise"],
                   EXPLANATIONS),
}


@pytest.mark.parametrize("case", NOTES)
def test_notes(case):
    history, sizes, must, must_not = NOTES[case]
    check(obs.notable("Run", history, **sizes), must, must_not)


# --- Q2(c): the selection -------------------------------------------------------------------

def selection(val_gain):
    return {"k": 1, "baseline_val_accuracy": 0.60, "chosen": ["cosine"],
            "effective": ["cosine"] if val_gain > 0 else [],
            "candidates": [{"method": "cosine", "val_accuracy": 0.60 + val_gain, "gain": val_gain,
                            "stopped": None}]}


SIZES_C = dict(val_images=5_000, test_images=10_000)
SELECTIONS = {
    "confirmed": (selection(0.05), 0.05, SIZES_C,
                  ["Cosine improves on the baseline on both validation and test beyond noise"],
                  ["weak", "No candidate"]),
    "not confirmed on test": (selection(0.05), 0.005, SIZES_C,
                              ["not confirmed on the test set beyond noise"], ["improves"]),
    "reversed on test": (selection(0.05), -0.05, SIZES_C, ["-5.00 points, beyond noise",
                                                            "not confirmed"], ["improves"]),
    "validation gain within noise": (selection(0.005), 0.05, SIZES_C,
                                     ["No candidate beats the baseline on validation beyond noise"],
                                     ["improves", "weak"]),
    "no sizes": (selection(0.05), 0.05, {}, ["cosine 65.00%: +5.00 points"],
                 ["noise", "improves", "weak"]),
}


@pytest.mark.parametrize("case", SELECTIONS)
def test_selection(case):
    sel, test_gain, sizes, must, must_not = SELECTIONS[case]
    text = describe_selection(sel, {"baseline": 0.6, "cosine": 0.6 + test_gain}, **sizes)
    check(text, must, must_not)


# --- Q3 -------------------------------------------------------------------------------------

def row(fraction, pretrained, scratch):
    return {"fraction": fraction, "images": int(fraction * 5000), "pretrained": pretrained,
            "scratch": scratch, "pretrained_near_chance": False, "scratch_near_chance": False,
            "recipe_pretrained": "sgd", "recipe_scratch": "adamw"}


FRACTIONS = {
    "shrinks, transfer helped": ([row(0.1, 0.70, 0.40), row(0.5, 0.80, 0.70)], 10_000,
                                 ["benefit of transfer shrinks", "matter most"], ["hurts"]),
    "shrinks within noise": ([row(0.1, 0.70, 0.60), row(0.5, 0.75, 0.70)], 100,
                             ["does not change beyond noise"], ["matter most", "shrinks"]),
    "shrinks, transfer hurt": ([row(0.1, 0.70, 0.40), row(0.5, 0.60, 0.70)], 10_000,
                               ["benefit of transfer shrinks", "Transfer hurts beyond noise at 50%"],
                               ["matter most"]),
    "grows": ([row(0.1, 0.45, 0.40), row(0.5, 0.80, 0.60)], 10_000,
              ["benefit of transfer grows"], ["matter most"]),
}


@pytest.mark.parametrize("case", FRACTIONS)
def test_transfer_fractions(case):
    rows, images, must, must_not = FRACTIONS[case]
    check(q3.observe_fractions(rows, steps=2, test_images=images), must, must_not)


def test_transfer_curves_with_histories():
    rows = [row(0.1, 0.70, 0.40)]
    histories = {(0.1, True): make_history([2, 1], [2, 1], [0.8, 0.9], [0.6, 0.7]),
                 (0.1, False): make_history([2, 1], [2, 1], [0.3, 0.5], [0.3, 0.4])}
    text = q3.observe_fractions(rows, steps=2, test_images=10_000, histories=histories)
    assert "After the first epoch, pretrained minus scratch test accuracy: +30.0 points, " \
           "beyond noise" in text
    assert "Train minus test accuracy at the end, pretrained against scratch: +20.0 against " \
           "+10.0 at 10%: +10.0 points, beyond noise" in text
    assert text.index("from scratch: +30.0") < text.index("After the first") < text.index("Train")


def record(freeze, trainable, seconds, acc=(0.5, 0.6, 0.7), near=False):
    n = len(acc)
    return {"label": freeze, "model": "tv_resnet18", "freeze": freeze, "near_chance": near,
            "train_images": 1000, "trainable_params": trainable, "total_params": 11_000_000,
            "history": make_history([1.0] * n, [1.0] * n, [a + 0.05 for a in acc], acc,
                                    seconds=seconds)}


FREEZING = {
    "frozen is quicker beyond noise": ([record("head", 5_000, [5, 5.2, 5.1]),
                                        record("none", 11_000_000, [10, 11, 10.5])],
                                       ["need no backward pass", "beyond noise (2 SE"], []),
    "one epoch each": ([record("head", 5_000, [5], acc=(0.5,)), record("none", 11_000_000, [10],
                                                                       acc=(0.6,))],
                       ["no spread judges a difference in time"], ["need no backward pass"]),
    "times within noise": ([record("head", 5_000, [4, 12, 6]), record("none", 11_000_000, [9, 5, 10])],
                           ["within noise (2 SE"], ["need no backward pass"]),
    "frozen is slower": ([record("head", 5_000, [10, 11, 10.5]),
                          record("none", 11_000_000, [5, 5.2, 5.1])], [], ["need no backward pass"]),
}


@pytest.mark.parametrize("case", FREEZING)
def test_freezing(case):
    records, must, must_not = FREEZING[case]
    check(q3.observe_freezing(records, test_images=10_000), must, must_not)


def test_q3_takes_the_held_out_size_from_the_records():
    records = [{**record("head", 5_000, [5, 5, 5]), "eval_images": 10_000},
               {**record("none", 11_000_000, [9, 9, 9], acc=(0.6, 0.7, 0.8)), "eval_images": 10_000}]
    assert "head only (linear probe) -10.00 points, beyond noise" in q3.observe_freezing(records)
    near = record("x", 1, [1, 1, 1], acc=(0.1, 0.1, 0.1), near=True)
    assert "**(near chance: not compared)**" in q3.observe_models([near, record("y", 1, [1, 1, 1])])


# --- smoke runs: the notice stays, nothing is explained, the numbers are within noise --------

def smoke(first, final, train):
    return make_history([2.32, 2.30], [2.31, 2.30], [train - 0.02, train], [first, final])


def test_a_smoke_q2_report_explains_nothing():
    a = {"VGG16": smoke(0.10, 0.10, 0.22), "ResNet18": smoke(0.10, 0.12, 0.12)}
    b = {"SGD": smoke(0.10, 0.10, 0.12), "RMSProp": smoke(0.10, 0.10, 0.10),
         "Adam": smoke(0.12, 0.14, 0.20)}
    c = {"baseline": smoke(0.10, 0.11, 0.12), "cutout": smoke(0.10, 0.13, 0.11)}
    sel = {"k": 1, "baseline_val_accuracy": 0.11, "chosen": ["cutout"], "effective": ["cutout"],
           "candidates": [{"method": "cutout", "val_accuracy": 0.13, "gain": 0.02, "stopped": None}]}
    sizes = dict(held_out_images=100, train_images=100)
    # As the notebook calls them today, and with the sizes its call sites should pass.
    for s in ({}, sizes):
        report = "\n\n".join([
            budget_notice(smoke=True, train_images=100, eval_images=100, epochs=2),
            obs.compare_runs(a, held_out_images=100, **{k: v for k, v in s.items()
                                                         if k != "held_out_images"}),
            obs.notes(a, epochs_planned=2, **s),
            explain_optimisers(b, **s),
            obs.compare_optimisers(b, baseline="SGD", held_out_images=100),
            obs.notes(b, epochs_planned=2, **s),
            describe_selection(sel, {"baseline": 0.10, "cutout": 0.12},
                               **({"val_images": 100, "test_images": 100} if s else {})),
            obs.compare_runs(c, held_out="val", held_out_images=100),
            obs.notes(c, held_out="val", epochs_planned=2, **s)])
        check(report, ["**Smoke run**", "the numbers below mean nothing", "within noise",
                       "No run is best beyond noise"], EXPLANATIONS)
        assert "beyond noise (" not in report


def test_a_smoke_q3_report_explains_nothing():
    rows = [row(0.1, 0.16, 0.15), {**row(0.5, 0.10, 0.16), "pretrained_near_chance": True}]
    b = [record("ResNet18", 11_000_000, [20], acc=(0.18,)), record("VGG16", 134_000_000, [90],
                                                                    acc=(0.16,))]
    c = [record("head", 5_000, [5], acc=(0.17,)), record("none", 11_000_000, [9], acc=(0.18,))]
    report = "\n".join([q3.observe_fractions(rows, steps=1, test_images=100),
                        q3.observe_models(b, test_images=100),
                        q3.observe_freezing(c, test_images=100)])
    check(report, ["within noise", "the comparison is void", "no spread judges"], EXPLANATIONS)
    assert "beyond noise (" not in report
