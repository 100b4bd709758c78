"""Observations written from training histories, so every number and every
"better" or "worse" in a notebook's analysis follows the run that produced it.

    stats = run_stats(history)                        # the numbers the sentences use
    notes({"VGG16": history, ...})                    # what stands out per run, as bullets
    compare_runs({"VGG16": h1, "ResNet18": h2})       # ranking, speed, stability, gap
    compare_optimisers({"SGD": h1, "RMSProp": h2, "Adam": h3}, baseline="SGD")

Histories are what `common.train.fit` returns (accuracies are fractions). Their
"eval_*" columns hold the set named by the history's "eval_split"; `held_out="val"`
names it in the text. Accuracies are written by `pct` (two decimals, "91.23%"),
differences by `points` ("+1.25 points"), so a test can find a history's numbers
in the text.

Each diagnosis states its criterion in the sentence that uses it; the thresholds
are the module constants below.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["OVERFIT_LOSS_RISE", "LARGE_GAP", "SMALL_GAP", "UNDERFIT_TRAIN_ACCURACY",
           "STILL_IMPROVING", "SPEED_FRACTION", "pct", "points", "run_stats", "notable", "notes",
           "within_noise", "noise_note", "compare_runs", "compare_optimisers"]

# Overfitting: the held-out loss ends this fraction above its minimum (reached
# before the last epoch) while the train loss kept falling.
OVERFIT_LOSS_RISE = 0.10
# Final train-minus-held-out accuracy gap (a fraction) called large / small.
LARGE_GAP = 0.10
SMALL_GAP = 0.03
# Underfitting: final train accuracy below this, with a small gap.
UNDERFIT_TRAIN_ACCURACY = 0.75
# Still improving: held-out accuracy rose by more than this over the last quarter of the epochs.
STILL_IMPROVING = 0.01
# Convergence speed: the first epoch reaching this fraction of the final accuracy.
SPEED_FRACTION = 0.9


def pct(fraction: float | None) -> str:
    """0.91234 -> '91.23%'; None -> 'n/a'."""
    return "n/a" if fraction is None else f"{100 * fraction:.2f}%"


def points(difference: float) -> str:
    """A difference of two accuracies (fractions) in percentage points: '+1.25 points'."""
    return f"{100 * difference:+.2f} points"


def _loss(value: float) -> str:
    return f"{value:.4f}"


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def _cap(text: str) -> str:
    """Capitalise a sentence that starts with a run label such as 'cosine'."""
    return text[:1].upper() + text[1:]


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# --- one run ----------------------------------------------------------------------------

def run_stats(history: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers the observations use, from one history.

    epochs (completed), stopped (the reason or None), and, when at least one epoch
    completed: final/best held-out accuracy (best_epoch 1-based), final train
    accuracy, gap (final train minus held-out accuracy), first/final train loss,
    min_loss and min_loss_epoch of the held-out loss, final_loss, loss_rise
    (final over minimum, relative), train_loss_at_min, epochs_to_speed (first
    epoch with accuracy >= SPEED_FRACTION x final), late_gain (accuracy gained
    over the last quarter of the epochs) and instability (mean absolute change of
    the held-out accuracy between consecutive epochs in the second half, a fraction).
    """
    n = len(history["epoch"])
    stats: dict[str, Any] = {"epochs": n, "stopped": history.get("stopped") or None}
    if n == 0:
        return stats
    acc = np.asarray(history["eval_accuracy"], dtype=float)
    loss = np.asarray(history["eval_loss"], dtype=float)
    train_acc = np.asarray(history["train_accuracy"], dtype=float)
    train_loss = np.asarray(history["train_loss"], dtype=float)
    best = int(np.argmax(acc))
    low = int(np.argmin(loss))
    final = float(acc[-1])
    reached = np.flatnonzero(acc >= SPEED_FRACTION * final)
    quarter = max(1, n // 4)
    half = acc[n // 2:]
    stats.update(
        final_accuracy=final, best_accuracy=float(acc[best]), best_epoch=best + 1,
        final_train_accuracy=float(train_acc[-1]), gap=float(train_acc[-1] - final),
        first_train_loss=float(train_loss[0]), final_train_loss=float(train_loss[-1]),
        min_loss=float(loss[low]), min_loss_epoch=low + 1, final_loss=float(loss[-1]),
        loss_rise=float(loss[-1] / loss[low] - 1) if loss[low] > 0 else 0.0,
        train_loss_at_min=float(train_loss[low]),
        epochs_to_speed=int(reached[0]) + 1,
        late_gain=float(acc[-1] - acc[-1 - quarter]) if n > quarter else None,
        instability=float(np.mean(np.abs(np.diff(half)))) if len(half) > 1 else None,
    )
    return stats


def _overfits(s: Mapping[str, Any]) -> bool:
    return (s["min_loss_epoch"] < s["epochs"] and s["loss_rise"] > OVERFIT_LOSS_RISE
            and s["final_train_loss"] < s["train_loss_at_min"])


def notable(label: str, history: Mapping[str, Any], *, held_out: str = "test",
            epochs_planned: int | None = None) -> str:
    """What stands out in one run, for a bullet under a comparison that already gives
    its accuracies: an early stop, overfitting, a large train/held-out gap,
    underfitting, or accuracy still rising at the end. "" when nothing does."""
    s = run_stats(history)
    out = []
    if s["stopped"]:
        of = f" of {epochs_planned}" if epochs_planned else ""
        out.append(f"it stopped early, after {s['epochs']}{of} epochs ({s['stopped'].rstrip('.')}), "
                   "so its numbers describe an unfinished run")
    if s["epochs"] == 0:
        return f"**{label}**: " + "; ".join(out) + "." if out else ""
    if _overfits(s):
        drop = s["best_accuracy"] - s["final_accuracy"]
        out.append(f"it overfits: the {held_out} loss is lowest at epoch {s['min_loss_epoch']} "
                   f"({_loss(s['min_loss'])}) and then rises to {_loss(s['final_loss'])} "
                   f"(+{100 * s['loss_rise']:.0f}%) while the train loss keeps falling "
                   f"({_loss(s['train_loss_at_min'])} to {_loss(s['final_train_loss'])}), so it "
                   f"grows confident on the {held_out} images it gets wrong"
                   + (f", and its accuracy ends {100 * drop:.2f} points below its best"
                      if drop > 0 else ""))
    if s["gap"] > LARGE_GAP:
        out.append(f"it fits the training images far better than new ones (train "
                   f"{pct(s['final_train_accuracy'])}, {held_out} {pct(s['final_accuracy'])})")
    elif s["gap"] < SMALL_GAP and s["final_train_accuracy"] < UNDERFIT_TRAIN_ACCURACY:
        out.append(f"it underfits: train accuracy {pct(s['final_train_accuracy'])} with almost "
                   f"no gap to {held_out}, so it has not yet fit the training data itself")
    if s["late_gain"] is not None and s["late_gain"] > STILL_IMPROVING and not s["stopped"]:
        out.append(f"it was still improving at the end ({points(s['late_gain'])} over the last "
                   f"{_epochs(max(1, s['epochs'] // 4))}), so more epochs would likely help")
    if not out:
        return ""
    return f"**{label}**: " + "; ".join(out) + "."


def notes(runs: Mapping[str, Mapping[str, Any]], **options) -> str:
    """`notable` for each run, as Markdown bullets; "" when nothing stands out."""
    found = [notable(label, h, **options) for label, h in runs.items()]
    return "\n".join(f"- {n}" for n in found if n)


# --- several runs -------------------------------------------------------------------------

def _completed(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    return {label: run_stats(h) for label, h in runs.items()}


def within_noise(a: float, b: float, images: int) -> tuple[bool, float]:
    """Is the accuracy difference a - b within two standard errors of it, for two
    independent estimates on `images` images each? Returns (within, 2 SE), from the
    binomial variance p(1 - p)/n of each accuracy."""
    two_se = 2 * math.sqrt((a * (1 - a) + b * (1 - b)) / images)
    return abs(a - b) <= two_se, two_se


def noise_note(a: float, b: float, images: int | None, held_out: str = "test",
               digits: int = 2) -> str:
    """'within the noise: two standard errors of the difference on n test images are
    x points' when accuracies a and b are within_noise; '' otherwise, or without `images`."""
    if not images:
        return ""
    within, two_se = within_noise(a, b, images)
    return (f"within the noise: two standard errors of the difference on {images:,} {held_out} "
            f"images are {100 * two_se:.{digits}f} points" if within else "")


def _lead(ranked: Sequence[str], ok: Mapping[str, dict], held_out: str,
          images: int | None) -> str:
    """How far the first run leads the second; within the noise, when `images` says so."""
    top, second = ranked[0], ranked[1]
    a, b = ok[top]["final_accuracy"], ok[second]["final_accuracy"]
    if a <= b:
        level = [label for label in ranked if ok[label]["final_accuracy"] == a]
        return f"{_cap(_join(level))} end level."
    leads = f"{top} leads {second} by {100 * (a - b):.2f} points"
    if not images:
        return _cap(leads + ".")
    if note := noise_note(a, b, images, held_out):
        return _cap(f"{leads}, {note}, so the two are not told apart.")
    return _cap(f"{leads}, more than two standard errors ({100 * within_noise(a, b, images)[1]:.2f} "
                f"points on {images:,} {held_out} images).")


def compare_runs(runs: Mapping[str, Mapping[str, Any]], *, held_out: str = "test",
                 held_out_images: int | None = None) -> str:
    """Ranks runs by final held-out accuracy and compares their speed (epochs to
    SPEED_FRACTION of the final accuracy, and accuracy after the first epoch),
    stability (mean epoch-to-epoch change in the second half) and final gap.
    With `held_out_images`, a lead within two standard errors is called noise.
    Runs that completed no epoch are named and left out."""
    stats = _completed(runs)
    empty = [label for label, s in stats.items() if s["epochs"] == 0]
    ok = {label: s for label, s in stats.items() if s["epochs"] > 0}
    out = []
    if empty:
        out.append(f"{_join(empty)} completed no epoch and {'is' if len(empty) == 1 else 'are'} "
                   "left out of the comparison.")
    if not ok:
        return " ".join(out)
    ranked = sorted(ok, key=lambda label: -ok[label]["final_accuracy"])
    out.append(f"By final {held_out} accuracy: "
               + ", ".join(f"{label} {pct(ok[label]['final_accuracy'])}"
                           + (" (stopped early)" if ok[label]["stopped"] else "")
                           for label in ranked) + ".")
    if len(ok) < 2:
        return " ".join(out)
    out.append(_lead(ranked, ok, held_out, held_out_images))
    first = {label: float(runs[label]["eval_accuracy"][0]) for label in ok}
    out.append("After the first epoch: " + ", ".join(f"{label} {pct(first[label])}" for label in ok)
               + ".")
    speed = {label: ok[label]["epochs_to_speed"] for label in ok}
    fastest = [label for label in ok if speed[label] == min(speed.values())]
    target = f"{round(100 * SPEED_FRACTION)}% of the final accuracy"
    if len(fastest) == len(ok):
        out.append(f"All reach {target} in the same epoch ({speed[fastest[0]]}).")
    else:
        out.append(_cap(f"{_join(fastest)} {'is' if len(fastest) == 1 else 'are'} the fastest to "
                        f"reach {target} (epoch {speed[fastest[0]]}; "
                        + ", ".join(f"{label} epoch {speed[label]}"
                                    for label in ok if label not in fastest) + ")."))
    steady = {label: s["instability"] for label, s in ok.items() if s["instability"] is not None}
    if len(steady) >= 2:
        calm = min(steady, key=steady.get)
        jumpy = max(steady, key=steady.get)
        if steady[jumpy] > steady[calm]:
            out.append(f"In the second half of training the {held_out} accuracy of {jumpy} moves "
                       f"{100 * steady[jumpy]:.2f} points per epoch on average, against "
                       f"{100 * steady[calm]:.2f} for {calm}: {calm} trains more stably.")
    widest = max(ok, key=lambda label: ok[label]["gap"])
    narrowest = min(ok, key=lambda label: ok[label]["gap"])
    if ok[widest]["gap"] > ok[narrowest]["gap"]:
        out.append(f"The train/{held_out} accuracy gap is widest for {widest} "
                   f"({100 * ok[widest]['gap']:.2f} points) and narrowest for {narrowest} "
                   f"({100 * ok[narrowest]['gap']:.2f}).")
    overfit = [label for label, s in ok.items() if _overfits(s)]
    if overfit:
        out.append(f"{_cap(_join(overfit))} show{'s' * (len(overfit) == 1)} the overfitting pattern "
                   f"(the {held_out} loss turning up while the train loss falls).")
    return " ".join(out)


def compare_optimisers(runs: Mapping[str, Mapping[str, Any]], *, baseline: str,
                       held_out: str = "test", held_out_images: int | None = None) -> str:
    """The effect of the optimiser: each run against `baseline` (the same network,
    data and initial weights) on final accuracy, speed, stability and gap, then
    the overall comparison of `compare_runs`."""
    if baseline not in runs:
        raise ValueError(f"baseline {baseline!r} is not among the runs: {', '.join(runs)}")
    stats = _completed(runs)
    base = stats[baseline]
    out = []
    for label, s in stats.items():
        if label == baseline:
            continue
        if s["epochs"] == 0 or base["epochs"] == 0:
            who = label if s["epochs"] == 0 else baseline
            out.append(f"{label} cannot be compared with {baseline}: {who} completed no epoch.")
            continue
        diff = s["final_accuracy"] - base["final_accuracy"]
        if diff:
            sentence = (f"{label} ends {abs(100 * diff):.2f} points "
                        f"{'above' if diff > 0 else 'below'} {baseline} "
                        f"({pct(s['final_accuracy'])} against {pct(base['final_accuracy'])})")
        else:
            sentence = f"{label} ends level with {baseline} ({pct(s['final_accuracy'])} each)"
        speed = s["epochs_to_speed"] - base["epochs_to_speed"]
        if speed:
            sentence += (f", reaches {round(100 * SPEED_FRACTION)}% of its final accuracy "
                         f"{_epochs(abs(speed))} {'earlier' if speed < 0 else 'later'} "
                         f"(epoch {s['epochs_to_speed']} against {base['epochs_to_speed']})")
        else:
            sentence += (f", reaches {round(100 * SPEED_FRACTION)}% of its final accuracy in the "
                         f"same epoch ({s['epochs_to_speed']})")
        if s["instability"] is not None and base["instability"] is not None:
            more = s["instability"] > base["instability"]
            sentence += (f", and fluctuates {'more' if more else 'less'} late in training "
                         f"({100 * s['instability']:.2f} against "
                         f"{100 * base['instability']:.2f} points per epoch)")
        sentence += (f". Its train/{held_out} gap is {100 * s['gap']:.2f} points against "
                     f"{100 * base['gap']:.2f} for {baseline}.")
        if s["stopped"]:
            sentence += f" It stopped early, after {_epochs(s['epochs'])}."
        out.append(_cap(sentence))
    out.append(compare_runs(runs, held_out=held_out, held_out_images=held_out_images))
    return " ".join(out)
