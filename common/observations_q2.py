"""Q2's own observations: the (c) selection, what the optimisers' step rules explain in
(b), the errors of the best network, the smoke-run notice. Written from the results,
like every sentence in the notebooks, with common.observations' noise rule: a gain is
called one, and explained, only beyond two standard errors.

    describe_selection(selection, test_accuracy, val_images=5_000, test_images=10_000)
    explain_optimisers(runs_b, held_out_images=10_000, train_images=50_000)
    describe_confusion(cm, class_names)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .observations import (capitalise, epochs_phrase, join_words, binomial, judged, noise, pct, points,
                           run_stats)

__all__ = ["describe_selection", "describe_confusion", "budget_notice", "init_signal_text",
           "explain_optimisers"]


def _gain(gain: float, a: float, b: float, images: int | None) -> str:
    """A gain a - b = `gain` (fractions), judged against noise when `images` is known."""
    return judged(gain, noise(gain, binomial(a, images), binomial(b, images))[1]) if images \
        else points(gain)


def _beyond(a: float, b: float, images: int | None) -> bool:
    """Is a above b beyond noise? Without `images`: above at all (nothing is judged)."""
    return a > b and (not images or noise(a - b, binomial(a, images), binomial(b, images))[0])


def describe_selection(selection: Mapping[str, Any], test_accuracy: Mapping[str, float],
                       descriptions: Mapping[str, str] | None = None, *,
                       val_images: int | None = None, test_images: int | None = None) -> str:
    """The choice made on validation, then the single test evaluation of the baseline and
    the chosen methods (`test_accuracy`: "baseline" and each chosen method). With
    `val_images` and `test_images` every gain is judged by observations' noise rule, and a
    method is called effective only when it beats the baseline beyond noise."""
    name = lambda m: (descriptions or {}).get(m, m)  # noqa: E731
    k, base, chosen = selection["k"], selection["baseline_val_accuracy"], selection["chosen"]
    rows = {r["method"]: r for r in selection["candidates"]}
    nv, nt = (val_images, test_images) if val_images and test_images else (None, None)
    out = [f"On the validation split the baseline ends at {pct(base)}."]
    if nv:
        out.append(f"A gain counts only beyond two standard errors (2 SE) of the difference, from "
                   f"the binomial variance p(1 - p)/n of each accuracy on the {nv:,} validation "
                   f"and {nt:,} test images.")
    out += ["Final validation accuracy of each candidate and its gain over the baseline: "
           + "; ".join(f"{name(m)} {pct(r['val_accuracy'])}"
                       + (" (stopped early, not eligible)" if r["stopped"]
                          else f": {_gain(r['gain'], r['val_accuracy'], base, nv)}")
                       for m, r in rows.items()) + "."]
    if chosen:
        out.append(f"Chosen on validation: {join_words([name(m) for m in chosen])}.")
    beyond = " beyond noise" if nv else ""
    effective = [m for m in chosen if _beyond(rows[m]["val_accuracy"], base, nv)]
    if not effective:
        out.append(f"No candidate beats the baseline on validation{beyond}, so none of them can "
                   "be called an effective improvement here; the chosen ones are reported on the "
                   "test set for completeness.")
    elif len(effective) < k:
        missing = [name(m) for m in chosen if m not in effective]
        out.append(f"Only {join_words([name(m) for m in effective])} beat{'s' * (len(effective) == 1)} "
                   f"the baseline on validation{beyond}, not {k} methods as asked"
                   + (f"; {join_words(missing)} did not and is not called effective." if missing
                      else "; no other candidate was eligible."))
    test_base = test_accuracy["baseline"]
    out.append("On the test set, evaluated once after the choice: baseline " + pct(test_base) + "; "
               + "; ".join(f"{name(m)} {pct(test_accuracy[m])}: "
                           + _gain(test_accuracy[m] - test_base, test_accuracy[m], test_base, nt)
                           for m in chosen) + ".")
    if not nv:  # without the sizes, nothing about the test evaluation is judged
        return " ".join(out)
    held = [m for m in effective if _beyond(test_accuracy[m], test_base, nt)]
    if lost := [name(m) for m in effective if m not in held]:
        out.append(f"The validation gain of {join_words(lost)} is not confirmed on the test set"
                   f"{beyond}, so the evidence for {'it' if len(lost) == 1 else 'them'} is weak.")
    if held:
        out.append(f"{capitalise(join_words([name(m) for m in held]))} improve{'s' * (len(held) == 1)} on the "
                   f"baseline on both validation and test{beyond}.")
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


def budget_notice(*, smoke: bool, train_images: int, eval_images: int, epochs: int) -> str:
    """The label a smoke or quick run carries above its numbers."""
    if smoke:
        return (f"**Smoke run**: {train_images:,} training images, {eval_images:,} evaluation "
                f"images, {epochs_phrase(epochs)} per run, on the CPU. It checks that every cell runs; "
                "the numbers below mean nothing about the methods.")
    return (f"**Quick run**: {train_images:,} training images (a class-stratified subset), "
            f"{eval_images:,} evaluation images, {epochs_phrase(epochs)} per run: a budget a laptop CPU "
            "manages in under an hour. The numbers compare the methods at this budget; they are "
            "well below what the full settings (the whole training set, 40 epochs, on a GPU) reach.")


def init_signal_text(build: Callable[[bool], Any], batch: torch.Tensor, seed: int) -> str:
    """Why AlexNet has BatchNorm, measured: the spread across images of the logits at
    initialisation (train mode, as in the first steps, without dropout's noise), for the
    network built with and without BN. `build(batch_norm)` returns a fresh network."""
    spread = {}
    for bn in (False, True):
        torch.manual_seed(seed)
        model = build(bn).train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        with torch.no_grad():
            logits = model(batch.float().cpu())
        spread[bn] = (logits - logits.mean(0)).std().item()
    return (f"At initialisation, on the first training batch, the part of the logits that depends "
            f"on the image has a standard deviation of {spread[False]:.2g} without BatchNorm and "
            f"{spread[True]:.2g} with it ({spread[True] / spread[False]:.0f} times more). Without "
            "BN the network's output barely depends on its input, the loss sits at ln 10 = 2.303 "
            "and gradients are too small to move it.")


# The optimisers whose per-weight step rule explain_optimisers can name.
ADAPTIVE = ("RMSProp", "Adam")


def explain_optimisers(runs: Mapping[str, Mapping[str, Any]], *, baseline: str = "SGD",
                       held_out: str = "test", held_out_images: int | None = None,
                       train_images: int | None = None) -> str:
    """Q2(b), (iv): what the optimisers' step rules explain, said after the facts of
    observations.compare_optimisers. A mechanism is named only where the data show its
    signature beyond noise (observations' rule); where they contradict the usual
    expectation, that is said plainly. `runs` maps "SGD", "RMSProp", "Adam" to histories
    of the same network from the same weights. Without `held_out_images` nothing is
    judged, so nothing is explained: ""."""
    return " ".join(_explain(runs, baseline, held_out, held_out_images, train_images))


def _explain(runs: Mapping[str, Mapping], base: str, held_out: str, n: int | None,
             m: int | None) -> list[str]:
    """(iv) for optimisers: a mechanism only where the data show its signature, and a
    plain statement where they contradict the usual expectation."""
    ok = {k: run_stats(h) for k, h in runs.items() if h["epoch"] and not h.get("stopped")}
    fast = [k for k in ADAPTIVE if k in ok]
    if not n or base not in ok or not fast:
        return []

    def versus(value: Callable[[str], float], var: Callable[[str], float]) -> dict[str, float]:
        """Each adaptive run's difference from the baseline: its sign, or 0 within noise."""
        return {k: math.copysign(1, value(k) - value(base))
                if noise(value(k) - value(base), var(k), var(base))[0] else 0.0 for k in fast}

    first = versus(lambda k: runs[k]["eval_accuracy"][0],
                   lambda k: binomial(runs[k]["eval_accuracy"][0], n))
    final = versus(lambda k: ok[k]["final_accuracy"],
                   lambda k: binomial(ok[k]["final_accuracy"], n))
    gap = versus(lambda k: ok[k]["gap"], lambda k: binomial(ok[k]["final_train_accuracy"], m or n)
                 + binomial(ok[k]["final_accuracy"], n))
    both, out = len(fast) == len(ADAPTIVE), []
    if both and all(v > 0 for v in first.values()):
        out.append(f"The early lead of both {join_words(fast)} over {base} is the adaptive step rule at "
                   "work: they divide each weight's step by the running RMS of its gradients, so "
                   "every weight moves by about the learning rate from the first steps, whatever "
                   "the scale of its gradient.")
    if slow := [k for k in fast if first[k] < 0]:
        out.append(f"Against the usual expectation that adaptive steps speed up early training, "
                   f"{join_words(slow)} start{'s' * (len(slow) == 1)} behind {base} after the first "
                   "epoch, beyond noise.")
    if both and all(final[k] < 0 and gap[k] > 0 for k in fast):
        out.append(f"Both {join_words(fast)} end below {base} on the {held_out} set with a wider train/"
                   f"{held_out} gap, each beyond noise: they generalise worse, as Wilson et al. "
                   "(2017) found for adaptive methods.")
    if better := [k for k in fast if final[k] > 0]:
        out.append(f"Against the common finding that adaptive methods generalise worse than "
                   f"{base}, {join_words(better)} end{'s' * (len(better) == 1)} above it on the "
                   f"{held_out} set, beyond noise.")
    return out
