"""Q2's own observations: the (c) selection, the errors of the best network, the
smoke-run notice. Written from the results, like every sentence in the notebooks.

    describe_selection(selection, test_accuracy, descriptions)   # common.experiments.choose_methods
    describe_confusion(cm, class_names)
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .observations import _cap, _epochs, _join, pct, points

__all__ = ["describe_selection", "describe_confusion", "budget_notice", "init_signal_text",
           "explain_optimisers"]


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


def budget_notice(*, smoke: bool, train_images: int, eval_images: int, epochs: int) -> str:
    """The label a smoke or quick run carries above its numbers."""
    if smoke:
        return (f"**Smoke run**: {train_images:,} training images, {eval_images:,} evaluation "
                f"images, {_epochs(epochs)} per run, on the CPU. It checks that every cell runs; "
                "the numbers below mean nothing about the methods.")
    return (f"**Quick run**: {train_images:,} training images (a class-stratified subset), "
            f"{eval_images:,} evaluation images, {_epochs(epochs)} per run: a budget a laptop CPU "
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
            "and gradients are too small to move it for epochs; with BN every optimiser leaves "
            "chance in its first epoch.")


NOISE_POINTS = 0.5  # single-seed differences below this many points are called noise


def explain_optimisers(runs: Mapping[str, Mapping[str, Any]], *, baseline: str = "SGD") -> str:
    """Q2(b): why the optimisers' curves differ, read from them. `runs` maps "SGD",
    "RMSProp", "Adam" to histories of the same network from the same weights."""
    done = {k: h for k, h in runs.items() if h["epoch"] and not h.get("stopped")}
    if baseline not in done or len(done) < 2:
        return "Too few runs finished to compare the optimisers."
    first = {k: h["train_loss"][0] for k, h in done.items()}
    final = {k: h["eval_accuracy"][-1] for k, h in done.items()}
    gap = {k: h["train_accuracy"][-1] - h["eval_accuracy"][-1] for k, h in done.items()}
    adaptive = [k for k in done if k != baseline]
    fast = min(first, key=first.get)
    out = [f"In the first epoch the training loss falls furthest with {fast} "
           f"({_join([f'{k} {v:.3f}' for k, v in first.items()])})."]
    if fast in adaptive:
        out.append("That is the adaptive step rule at work: RMSProp and Adam divide each weight's "
                   "step by the running RMS of its gradients, so every weight moves by about the "
                   "learning rate from the first steps, whatever the scale of its gradient.")
    else:
        out.append(f"{baseline}'s steps are proportional to the gradient itself, and with momentum "
                   "at its peak learning rate they are large from the start; the adaptive "
                   "optimisers' per-weight normalisation does not make them faster here.")
    best = max(final, key=final.get)
    spread = 100 * (max(final.values()) - min(final.values()))
    if spread < NOISE_POINTS:
        out.append(f"At the end the three are within {spread:.2f} points of each other, which is "
                   "within the noise of a single run: no optimiser is better here.")
    else:
        out.append(f"At the end {best} is ahead ({_join([f'{k} {pct(v)}' for k, v in final.items()])}).")
    wider = [k for k in adaptive if 100 * (gap[k] - gap[baseline]) >= NOISE_POINTS]
    if wider:
        out.append(f"{_join(wider)} {'ends' if len(wider) == 1 else 'end'} with a wider train/test "
                   f"gap than {baseline} ({_join([f'{k} {100 * gap[k]:.2f}' for k in done])} "
                   "points): fitting the training images faster does not carry over in full to "
                   "new ones, as Wilson et al. (2017) observed for adaptive methods.")
    return " ".join(out)
