"""Q2's own observations: the (c) selection, the errors of the best network, the
smoke-run notice. Written from the results, like every sentence in the notebooks.

    describe_selection(selection, test_accuracy, descriptions)   # common.experiments.choose_methods
    describe_confusion(cm, class_names)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .observations import _cap, _epochs, _join, pct, points

__all__ = ["describe_selection", "describe_confusion", "smoke_notice"]


def describe_selection(selection: Mapping[str, Any], test_accuracy: Mapping[str, float],
                       descriptions: Mapping[str, str] | None = None) -> str:
    """The choice made on validation, then the single test evaluation of the
    baseline and the chosen methods. `test_accuracy` maps "baseline" and each
    chosen method to its test accuracy. Says plainly when fewer than k candidates
    beat the baseline on validation, and when a validation gain does not carry
    over to the test set."""
    descriptions = descriptions or {}
    name = lambda m: descriptions.get(m, m)  # noqa: E731
    k = selection["k"]
    out = [f"On the validation split the baseline ends at {pct(selection['baseline_val_accuracy'])}. "
           "Final validation accuracy of each candidate and its gain over the baseline: "
           + "; ".join(f"{name(r['method'])} {pct(r['val_accuracy'])} "
                       + ("(stopped early, not eligible)" if r["stopped"]
                          else f"({points(r['gain'])})")
                       for r in selection["candidates"]) + "."]
    chosen, effective = selection["chosen"], selection["effective"]
    if chosen:
        out.append(f"Chosen on validation: {_join([name(m) for m in chosen])}.")
    if len(effective) < k:
        if not effective:
            out.append("No candidate beat the baseline on validation, so none of them can be "
                       "called an effective improvement here; the chosen ones are reported on "
                       "the test set for completeness.")
        else:
            missing = [m for m in chosen if m not in effective]
            out.append(f"Only {_join([name(m) for m in effective])} beat the baseline on "
                       f"validation, not {k} methods as asked"
                       + (f"; {_join([name(m) for m in missing])} did not and is not called "
                          "effective." if missing else "; no other candidate was eligible."))
    base_test = test_accuracy["baseline"]
    parts = [f"baseline {pct(base_test)}"]
    for m in chosen:
        parts.append(f"{name(m)} {pct(test_accuracy[m])} ({points(test_accuracy[m] - base_test)})")
    out.append("On the test set, evaluated once after the choice: " + ", ".join(parts) + ".")
    for m in effective:
        if test_accuracy[m] <= base_test:
            out.append(f"The validation gain of {name(m)} did not carry over to the test set, so "
                       "the evidence for it is weak.")
    confirmed = [m for m in effective if test_accuracy[m] > base_test]
    if confirmed:
        out.append(f"{_cap(_join([name(m) for m in confirmed]))} improve{'s' * (len(confirmed) == 1)} "
                   "on the baseline on both validation and test. With one run per setting, a "
                   "gain of a few tenths of a point may still be seed noise.")
    return " ".join(out)


# --- errors by class ------------------------------------------------------------------------

def describe_confusion(cm, class_names: Sequence[str]) -> str:
    """The best and worst classes (accuracy = recall) and the most frequent confusion."""
    cm = np.asarray(cm, dtype=np.int64)
    rows = cm.sum(axis=1)
    if cm.sum() == 0:
        return "No test predictions to analyse."
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(rows > 0, np.diag(cm) / np.maximum(rows, 1), np.nan)
    seen = np.flatnonzero(rows > 0)
    best = int(seen[np.nanargmax(acc[seen])])
    worst = int(seen[np.nanargmin(acc[seen])])
    out = [f"Overall accuracy {pct(np.trace(cm) / cm.sum())}. Best class: {class_names[best]} "
           f"({pct(acc[best])}); worst: {class_names[worst]} ({pct(acc[worst])})."]
    off = cm.copy()
    np.fill_diagonal(off, 0)
    if off.sum():
        i, j = np.unravel_index(int(np.argmax(off)), off.shape)
        out.append(f"The most frequent mistake is {class_names[i]} taken for {class_names[j]} "
                   f"({off[i, j]} images, {pct(off[i, j] / rows[i])} of the {class_names[i]} "
                   "images).")
        pair = off + off.T
        a, b = np.unravel_index(int(np.argmax(np.triu(pair, 1))), pair.shape)
        if {a, b} != {i, j}:
            out.append(f"Counting both directions, {class_names[a]} and {class_names[b]} are "
                       f"confused most often ({pair[a, b]} images).")
    return " ".join(out)


def smoke_notice(train_images: int, eval_images: int, epochs: int) -> str:
    return (f"**Smoke run**: {train_images} training images, {eval_images} evaluation images, "
            f"{_epochs(epochs)} per run, on the CPU. It checks that every cell runs; the numbers "
            "below mean nothing about the methods.")
