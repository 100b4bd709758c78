"""Observations written from training histories: every number, and every "better" or
"worse", follows the runs that produced it, and no difference is stated or explained
unless it is larger than its noise.

    compare_runs({"VGG16": h1, "ResNet18": h2}, held_out_images=10_000, train_images=50_000)
    compare_optimisers(runs, baseline="SGD", held_out_images=10_000, train_images=50_000)
    notes({"VGG16": h1, "ResNet18": h2}, held_out_images=10_000, train_images=50_000)

Order, as a reader asks: (i) which run is best, by how much; (ii) how fast each learned;
(iii) how well each generalises; (iv) what stands out (`notes`; for Q2's optimisers,
observations_q2.explain_optimisers). Accuracies are fractions, written by `pct`, `points`.

The noise rule (`noise`), one for every statistic: a difference counts only beyond two
standard errors (2 SE) of itself, SE^2 the sum of the variances of the independent
estimates it is made of; below that the text says "within noise" and explains nothing.
- Accuracy p on n images: p(1 - p)/n, so two runs: 2 sqrt(p1(1-p1)/n1 + p2(1-p2)/n2).
  Runs scored on the same images correlate positively: this overstates their noise.
- Training accuracy: a running mean over the epoch's `train_images`, taken as binomial
  (without the size, on the held-out one: more noise where the training set is larger).
- Train/held-out gap: the sum of its two accuracies' variances; two gaps: of four.
- Loss: a run's per-epoch noise variance from the second differences of its series,
  sum (x[t+1] - 2x[t] + x[t-1])^2 / (6 (k - 2)) (a straight trend drops out, a curved one
  counts as noise); a change between two epochs has twice that. Under 3 epochs: none.
- Epochs to SPEED_FRACTION of the final accuracy: faster only when SPEED_EPOCHS or more
  sooner and, at that epoch, ahead of the other beyond noise.
Without `held_out_images` no accuracy is judged: the numbers are given, nothing more.
A run's fit (over-, underfitting, a gap) is read only if its training loss fell beyond noise.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .stats import binomial, noise

__all__ = ["OVERFIT_LOSS_RISE", "LARGE_GAP", "SMALL_GAP", "UNDERFIT_TRAIN_ACCURACY",
           "STILL_IMPROVING", "SPEED_FRACTION", "SPEED_EPOCHS", "pct", "points", "binomial",
           "noise", "series_variance", "judged", "against", "run_stats",
           "notable", "notes", "comparison", "compare_runs", "compare_optimisers", "capitalise",
           "epochs_phrase", "join_words"]

# Overfitting: the held-out loss ends this fraction (and noise) above its minimum, reached
# before the last epoch, while the train loss falls beyond its noise.
OVERFIT_LOSS_RISE = 0.10
# Final train-minus-held-out accuracy gap (a fraction) called large / small.
LARGE_GAP = 0.10
SMALL_GAP = 0.03
# Underfitting: final train accuracy below this beyond noise, with no gap beyond noise.
UNDERFIT_TRAIN_ACCURACY = 0.75
# Still improving: held-out accuracy rose by more than this (and noise) in the last quarter.
STILL_IMPROVING = 0.01
# Speed: the first epoch at this fraction of the final accuracy, sooner by SPEED_EPOCHS.
SPEED_FRACTION = 0.9
SPEED_EPOCHS = 2


def pct(fraction: float | None) -> str:
    """0.91234 -> '91.23%'; None -> 'n/a'."""
    return "n/a" if fraction is None else f"{100 * fraction:.2f}%"


def points(difference: float) -> str:
    """A difference of two accuracies (fractions) in percentage points: '+1.25 points'."""
    return f"{100 * difference:+.2f} points"


def _loss(value: float) -> str:
    return f"{value:.4f}"


def epochs_phrase(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def capitalise(text: str) -> str:  # a sentence that starts with a run label such as 'cosine'
    return text[:1].upper() + text[1:]


def join_words(items: Sequence[str]) -> str:
    items = list(items)
    return "".join(items) if len(items) <= 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --- the noise rule -------------------------------------------------------------------------

def series_variance(values: Sequence[float]) -> float | None:
    """The per-epoch noise variance of one run's series (a loss), from its second
    differences: sum (x[t+1] - 2 x[t] + x[t-1])^2 / (6 (k - 2)), which a straight-line
    trend leaves out and a curved one inflates. None under 3 epochs."""
    x = np.asarray(values, dtype=float)
    return None if len(x) < 3 else float(np.sum(np.diff(x, 2) ** 2) / (6 * (len(x) - 2)))


def judged(difference: float, two_se: float, digits: int = 2) -> str:
    """'+5.10 points, beyond noise (2 SE 1.07)' or '+0.30 points, within noise (2 SE 1.07)'."""
    word = "beyond" if abs(difference) > two_se else "within"
    value = round(100 * difference, digits) + 0.0  # never "-0.00"
    return f"{value:+.{digits}f} points, {word} noise (2 SE {100 * two_se:.{digits}f})"


def against(values: Mapping[str, float], reference: str, variance: Callable[[str], float],
            digits: int = 2) -> str:
    """'Against SGD: Adam +11.00 points, beyond noise (2 SE 4.17); ...' for each run
    but `reference`; variance(label) is that of values[label]."""
    return f"Against {reference}: " + "; ".join(
        f"{k} " + judged(values[k] - values[reference],
                         noise(0, variance(k), variance(reference))[1], digits)
        for k in values if k != reference) + "."


def _rule(held_out: str, n: int, m: int | None) -> str:
    train = (f" and the {m:,} training images (the training accuracy, a running mean over the "
             "epoch)" if m else "; the training accuracy is counted on as many images")
    return (f"A difference counts only beyond two standard errors (2 SE) of itself, from the "
            f"binomial variance p(1 - p)/n of each accuracy on the {n:,} {held_out} images"
            f"{train}; below that it is within noise.")


# --- one run ------------------------------------------------------------------------------

def run_stats(history: Mapping[str, Any]) -> dict[str, Any]:
    """One history's numbers: epochs (completed), stopped (the reason or None) and, after
    an epoch: final/best held-out accuracy (best_epoch 1-based), final train accuracy, gap
    (train minus held-out), first/final train loss, min_loss(_epoch) of the held-out loss,
    final_loss, loss_rise (final over minimum - 1), train_loss_at_min, epochs_to_speed
    (first epoch >= SPEED_FRACTION x final accuracy), late_gain (accuracy gained over the
    last quarter of the epochs)."""
    n = len(history["epoch"])
    stats: dict[str, Any] = {"epochs": n, "stopped": history.get("stopped") or None}
    if n == 0:
        return stats
    acc = np.asarray(history["eval_accuracy"], dtype=float)
    loss = np.asarray(history["eval_loss"], dtype=float)
    train_acc = np.asarray(history["train_accuracy"], dtype=float)
    train_loss = np.asarray(history["train_loss"], dtype=float)
    best, low, final = int(np.argmax(acc)), int(np.argmin(loss)), float(acc[-1])
    quarter = max(1, n // 4)
    stats.update(
        final_accuracy=final, best_accuracy=float(acc[best]), best_epoch=best + 1,
        final_train_accuracy=float(train_acc[-1]), gap=float(train_acc[-1] - final),
        first_train_loss=float(train_loss[0]), final_train_loss=float(train_loss[-1]),
        min_loss=float(loss[low]), min_loss_epoch=low + 1, final_loss=float(loss[-1]),
        loss_rise=float(loss[-1] / loss[low] - 1) if loss[low] > 0 else 0.0,
        train_loss_at_min=float(train_loss[low]),
        epochs_to_speed=int(np.flatnonzero(acc >= SPEED_FRACTION * final)[0]) + 1,
        late_gain=float(acc[-1] - acc[-1 - quarter]) if n > quarter else None)
    return stats


def _changed(values: Sequence[float], start: int) -> tuple[bool, float | None]:
    """Did a loss series change from epoch index `start` to the last beyond its noise?"""
    var = series_variance(values)
    return (False, None) if var is None else noise(values[-1] - values[start], var, var)


def _overfit(h: Mapping[str, Any], s: Mapping[str, Any], held_out: str, n: int | None) -> str:
    loss, train, low = h["eval_loss"], h["train_loss"], s["min_loss_epoch"] - 1
    rose, two_se = _changed(loss, low)
    fell, _ = _changed(train, low)
    if not (low < s["epochs"] - 1 and s["loss_rise"] > OVERFIT_LOSS_RISE and rose and fell
            and train[-1] < train[low]):
        return ""
    text = (f"it overfits: the {held_out} loss is lowest at epoch {low + 1} ({_loss(loss[low])}) "
            f"and rises to {_loss(loss[-1])} (+{100 * s['loss_rise']:.0f}%, beyond its per-epoch "
            f"noise: 2 SE {_loss(two_se)}) while the train loss keeps falling "
            f"({_loss(train[low])} to {_loss(train[-1])})")
    if not n:
        return text
    a, b = h["eval_accuracy"][low], h["eval_accuracy"][-1]
    dropped, two_se = noise(b - a, binomial(a, n), binomial(b, n))
    if dropped and b < a:
        return text + f"; its {held_out} accuracy falls too ({judged(b - a, two_se)})"
    return text + (f", and its {held_out} accuracy does not fall beyond noise ({pct(a)} to "
                   f"{pct(b)}), so it grows confident on the {held_out} images it gets wrong")


def _fit(h: Mapping[str, Any], s: Mapping[str, Any], held_out: str, n: int | None,
         m: int | None) -> list[str]:
    """Over- and underfitting, judged only for a run whose training loss fell beyond noise."""
    fell, two_se = _changed(h["train_loss"], 0)
    if two_se is None:
        return [f"{epochs_phrase(s['epochs'])} {'is' if s['epochs'] == 1 else 'are'} too few to tell "
                "the trend of its training loss from noise, so nothing about its fit is diagnosed"]
    if not (fell and s["final_train_loss"] < s["first_train_loss"]):
        return [f"its training loss ({_loss(s['first_train_loss'])} to "
                f"{_loss(s['final_train_loss'])}) does not fall beyond its per-epoch noise "
                f"(2 SE {_loss(two_se)}), so nothing about its fit is diagnosed"]
    out = [o for o in [_overfit(h, s, held_out, n)] if o]
    if not n:
        return out
    train, gap = s["final_train_accuracy"], s["gap"]
    _, gap_se = noise(gap, binomial(train, m), binomial(s["final_accuracy"], n))
    low, _ = noise(train - UNDERFIT_TRAIN_ACCURACY, binomial(train, m))
    if gap - LARGE_GAP > gap_se:
        out.append(f"it fits the training images far better than new ones: its train/{held_out} "
                   f"gap exceeds {100 * LARGE_GAP:g} points by more than its noise "
                   f"(2 SE {100 * gap_se:.2f})")
    elif low and train < UNDERFIT_TRAIN_ACCURACY and (gap < SMALL_GAP or abs(gap) <= gap_se):
        out.append(f"it underfits: its train accuracy ({pct(train)}) is below "
                   f"{100 * UNDERFIT_TRAIN_ACCURACY:g}% beyond noise, with a train/{held_out} gap "
                   f"under {100 * SMALL_GAP:g} points or within noise")
    return out


def _improving(acc: Sequence[float], s: Mapping[str, Any], n: int) -> list[str]:
    q = max(1, s["epochs"] // 4)
    up, two_se = noise(s["late_gain"], binomial(acc[-1], n), binomial(acc[-1 - q], n))
    if not (up and s["late_gain"] > STILL_IMPROVING):
        return []
    return [f"it was still improving at the end: {points(s['late_gain'])} over the last "
            f"{epochs_phrase(q)}, beyond noise (2 SE {100 * two_se:.2f}), so more epochs would likely "
            "help"]


def notable(label: str, history: Mapping[str, Any], *, held_out: str = "test",
            epochs_planned: int | None = None, held_out_images: int | None = None,
            train_images: int | None = None) -> str:
    """What stands out in one run, beyond noise (see the module's rule): an early stop,
    overfitting, a large train/held-out gap, underfitting, accuracy still rising at the
    end. Accuracy-based ones need `held_out_images`. "" when nothing does."""
    s, n = run_stats(history), held_out_images
    out = []
    if s["stopped"]:
        of = f" of {epochs_planned}" if epochs_planned else ""
        out.append(f"it stopped early, after {s['epochs']}{of} epochs "
                   f"({s['stopped'].rstrip('.')}), so its numbers describe an unfinished run")
    if s["epochs"]:
        out += _fit(history, s, held_out, n, train_images or n)
        if n and s["late_gain"] is not None and not s["stopped"]:
            out += _improving(history["eval_accuracy"], s, n)
    return f"**{label}**: " + "; ".join(out) + "." if out else ""


def notes(runs: Mapping[str, Mapping[str, Any]], **options) -> str:
    """`notable` for each run, as Markdown bullets; "" when nothing stands out."""
    found = [notable(label, h, **options) for label, h in runs.items()]
    return "\n".join(f"- {n}" for n in found if n)


# --- several runs: (i) best, (ii) speed, (iii) generalisation -------------------------------

def _best(ok: Mapping[str, dict], ranked: Sequence[str], ref: str, held_out: str,
          n: int | None) -> list[str]:
    acc = {k: ok[k]["final_accuracy"] for k in ranked}
    out = [f"By final {held_out} accuracy: " + ", ".join(
        f"{k} {pct(acc[k])}" + (" (stopped early)" if ok[k]["stopped"] else "") for k in ranked)
        + "."]
    if len(ok) < 2 or not n:
        return out
    var = lambda k: binomial(acc[k], n)  # noqa: E731
    out.append(against(acc, ref, var))
    top = ranked[0]
    close = [k for k in ranked[1:] if not noise(acc[top] - acc[k], var(top), var(k))[0]]
    if not close:
        return out + [f"{capitalise(top)} is best beyond noise."]
    unsaid = [f"{k} " + judged(acc[k] - acc[top], noise(0, var(k), var(top))[1])
              for k in close if ref not in (k, top)]
    return out + [f"No run is best beyond noise: {join_words(close)} "
                  f"{'is' if len(close) == 1 else 'are'} within noise of {top}"
                  + (f"; against {top}: {'; '.join(unsaid)}" if unsaid else "") + "."]


def _faster(runs: Mapping[str, Mapping], epoch: Mapping[str, int], a: str, b: str, n: int) -> str:
    fast, slow = (a, b) if epoch[a] < epoch[b] else (b, a)
    at = epoch[fast]
    pf, ps = runs[fast]["eval_accuracy"][at - 1], runs[slow]["eval_accuracy"][at - 1]
    beyond, two_se = noise(pf - ps, binomial(pf, n), binomial(ps, n))
    if epoch[slow] - at < SPEED_EPOCHS or not beyond or pf < ps:
        return ""
    return (f"{capitalise(fast)} gets there {epochs_phrase(epoch[slow] - at)} sooner than {slow}, and leads "
            f"it at epoch {at} by {judged(pf - ps, two_se)}.")


def _speed(runs: Mapping[str, Mapping], ok: Mapping[str, dict], ref: str,
           n: int | None) -> list[str]:
    first = {k: float(runs[k]["eval_accuracy"][0]) for k in ok}
    out = ["After the first epoch: " + ", ".join(f"{k} {pct(v)}" for k, v in first.items()) + "."]
    if n:
        out.append(against(first, ref, lambda k: binomial(first[k], n)))
    epoch = {k: ok[k]["epochs_to_speed"] for k in ok}
    out.append(f"Epoch reaching {100 * SPEED_FRACTION:g}% of its final accuracy: "
               + ", ".join(f"{k} {v}" for k, v in epoch.items()) + ".")
    if n:
        faster = [f for f in (_faster(runs, epoch, k, ref, n) for k in ok if k != ref) if f]
        out += faster or [f"In speed no run differs from {ref} beyond noise: a run counts as "
                          f"faster when it gets there {SPEED_EPOCHS} or more epochs sooner and "
                          "leads at that epoch beyond noise."]
    return out


def comparison(runs: Mapping[str, Mapping[str, Any]], *, held_out: str = "test",
               held_out_images: int | None = None, train_images: int | None = None,
               baseline: str | None = None, best: bool = True) -> dict[str, list[str]]:
    """The sentences of a comparison, by part: "rule" (runs left out, the noise rule),
    "best", "speed", "generalisation". Each run is set against `baseline`, or else
    against the best run; `best=False` leaves (i) to the caller."""
    stats = {k: run_stats(h) for k, h in runs.items()}
    ok = {k: s for k, s in stats.items() if s["epochs"]}
    empty = [k for k in stats if k not in ok]
    parts: dict[str, list[str]] = {"rule": [], "best": [], "speed": [], "generalisation": []}
    if empty:
        parts["rule"].append(f"{join_words(empty)} completed no epoch and "
                             f"{'is' if len(empty) == 1 else 'are'} left out of the comparison.")
    if not ok:
        return parts
    n, m = held_out_images, train_images
    ranked = sorted(ok, key=lambda k: -ok[k]["final_accuracy"])
    ref = baseline if baseline in ok else ranked[0]
    if best:
        parts["best"] = _best(ok, ranked, ref, held_out, n)
    if len(ok) < 2:
        return parts
    parts["rule"].append(_rule(held_out, n, m) if n else f"The number of {held_out} images is "
                         "not given, so no difference below is judged against noise.")
    parts["speed"] = _speed(runs, ok, ref, n)
    gap = {k: s["gap"] for k, s in ok.items()}
    parts["generalisation"] = [f"Train minus {held_out} accuracy at the end (the gap): " + ", ".join(
        f"{k} {100 * v:+.2f}" for k, v in gap.items()) + " points."]
    if n:
        parts["generalisation"].append(against(gap, ref, lambda k: binomial(
            ok[k]["final_train_accuracy"], m or n) + binomial(ok[k]["final_accuracy"], n)))
    return parts


def compare_runs(runs: Mapping[str, Mapping[str, Any]], *, held_out: str = "test",
                 held_out_images: int | None = None, train_images: int | None = None,
                 baseline: str | None = None, best: bool = True) -> str:
    """(i) which run is best, by how much, (ii) how fast each learned (first-epoch accuracy,
    epochs to SPEED_FRACTION of the final one), (iii) the train/held-out gaps, each judged by
    the noise rule (with `held_out_images`). Runs without an epoch are named, left out."""
    return " ".join(s for part in comparison(
        runs, held_out=held_out, held_out_images=held_out_images, train_images=train_images,
        baseline=baseline, best=best).values() for s in part)


def compare_optimisers(runs: Mapping[str, Mapping[str, Any]], *, baseline: str,
                       held_out: str = "test", held_out_images: int | None = None,
                       train_images: int | None = None) -> str:
    """The effect of the optimiser: (i) to (iii) of `compare_runs`, each run set against
    `baseline` (the same network, data and initial weights). What the optimisers' step
    rules explain, (iv), is Q2's: observations_q2.explain_optimisers, after this."""
    if baseline not in runs:
        raise ValueError(f"baseline {baseline!r} is not among the runs: {', '.join(runs)}")
    return compare_runs(runs, held_out=held_out, held_out_images=held_out_images,
                        train_images=train_images, baseline=baseline)
