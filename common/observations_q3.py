"""Q3's tables and observations, written from the run records, so every number
and every "better" or "worse" in the analysis follows the runs that produced it.

    display(Markdown(caveats(runs_a, smoke=smoke)))
    rows = fraction_rows(runs_a, fractions, images_of)
    display(Markdown(fractions_table(rows)))
    display(Markdown(observe_fractions(rows, epochs_a)))

A record is what common.transfer_runs.train_transfer returns: the run's settings
and its history (accuracies are fractions in [0, 1]; "eval_accuracy" is the test
set's for the runs reported here, the validation split's for the learning-rate trials).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from .latex import markdown_table
from .transfer import display_name, freeze_strategies

__all__ = ["describe_freeze", "final_accuracy", "mean_epoch_seconds", "caveats",
           "lr_selection_table", "fraction_rows", "fractions_table", "models_table",
           "freezing_table", "observe_fractions", "observe_models", "observe_freezing"]


def describe_freeze(model: str, strategy: str) -> str:
    """'all layers', 'head only (linear probe)' or 'layer4 + head (stem..layer3 frozen)'."""
    if strategy == "none":
        return "all layers"
    if strategy == "head":
        return "head only (linear probe)"
    groups = [g for g in freeze_strategies(model) if g.startswith("upto:")]
    names = [g[len("upto:"):] for g in groups] + ["head"]
    cut = names.index(strategy[len("upto:"):]) + 1
    frozen = names[0] if cut == 1 else f"{names[0]}..{names[cut - 1]}"
    return f"{' + '.join(names[cut:])} ({frozen} frozen)"


def final_accuracy(record: Mapping) -> float:
    acc = record["history"]["eval_accuracy"]
    return acc[-1] if acc else float("nan")


def mean_epoch_seconds(record: Mapping) -> float:
    seconds = record["history"]["seconds"]
    return sum(seconds) / len(seconds) if seconds else float("nan")


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def caveats(records: Sequence[Mapping], *, smoke: bool) -> str:
    """What the reader must know before reading any number: a smoke run, or
    weights that are not the official ImageNet files."""
    notes = []
    if smoke:
        notes.append("**Smoke run**: a few hundred images, one epoch, small inputs. The numbers "
                     "only show that every step runs; they are not results and support no conclusion.")
    bad = sorted({r["model"] for r in records if r["pretrained"] and r["weights_source"] != "official"})
    if bad:
        notes.append(f"**Not ImageNet weights**: the weights files of {', '.join(bad)} do not match "
                     "the official files' sha256 (e.g. random stand-ins fabricated for an offline "
                     "smoke run). 'Pretrained' runs of these models started from those values, so no "
                     "conclusion about transfer learning follows from them.")
    return "\n\n".join(notes)


# --- tables -------------------------------------------------------------------------------

def lr_selection_table(selection: Sequence[Mapping], candidates: Sequence[float]) -> str:
    """One row per setting: the validation accuracy at each candidate and the chosen lr."""
    def cell(row: Mapping, lr: float) -> str:
        trial = next(c for c in row["candidates"] if c["lr"] == lr)
        return _percent(trial["val_accuracy"]) + (" (diverged)" if trial["stopped"] else "")

    return markdown_table(
        ["model", "freeze", *[f"val. acc. at lr {lr:g}" for lr in candidates], "chosen lr"],
        [[display_name(r["model"], r["pretrained"]), r["freeze"],
          *[cell(r, lr) for lr in candidates], f"{r['chosen_lr']:g}"] for r in selection])


def fraction_rows(records: Sequence[Mapping], fractions: Sequence[float],
                  images_of: Callable[[float], int]) -> list[dict]:
    """Q3(a): per fraction, the final test accuracy of the pretrained and the scratch run."""
    by = {(r["fraction"], r["pretrained"]): r for r in records}
    return [{"fraction": f, "images": images_of(f), "pretrained": final_accuracy(by[f, True]),
             "scratch": final_accuracy(by[f, False]), "lr_pretrained": by[f, True]["lr"],
             "lr_scratch": by[f, False]["lr"]} for f in fractions]


def fractions_table(rows: Sequence[Mapping]) -> str:
    return markdown_table(
        ["training data", "images", "pretrained: test acc.", "scratch: test acc.", "gain (points)",
         "lr pretrained / scratch"],
        [[f"{100 * r['fraction']:g}%", f"{r['images']:,}", f"{100 * r['pretrained']:.2f}%",
          f"{100 * r['scratch']:.2f}%", f"{100 * (r['pretrained'] - r['scratch']):+.2f}",
          f"{r['lr_pretrained']:g} / {r['lr_scratch']:g}"] for r in rows])


def models_table(records: Sequence[Mapping]) -> str:
    return markdown_table(
        ["model", "lr", "final test acc.", "best test acc.", "s per epoch", "parameters"],
        [[r["label"], f"{r['lr']:g}", f"{100 * final_accuracy(r):.2f}%",
          f"{100 * max(r['history']['eval_accuracy']):.2f}%", f"{mean_epoch_seconds(r):.1f}",
          f"{r['total_params']:,}"] for r in records])


def freezing_table(records: Sequence[Mapping]) -> str:
    return markdown_table(
        ["trained layers", "freeze", "lr", "trainable / total parameters", "s per epoch",
         "test acc. after epoch 1", "final test acc."],
        [[describe_freeze(r["model"], r["freeze"]), f"`{r['freeze']}`", f"{r['lr']:g}",
          f"{r['trainable_params']:,} / {r['total_params']:,}", f"{mean_epoch_seconds(r):.1f}",
          f"{100 * r['history']['eval_accuracy'][0]:.2f}%", f"{100 * final_accuracy(r):.2f}%"]
         for r in records])


# --- observations ---------------------------------------------------------------------------

def _trend(rows: Sequence[Mapping], gains: Sequence[float]) -> str:
    """How the benefit of transfer changes with the amount of data."""
    steps = [b - a for a, b in zip(gains, gains[1:])]
    trend = ("shrinks" if all(d < 0 for d in steps) else
             "grows" if all(d > 0 for d in steps) else "does not change monotonically")
    listed = ", ".join(f"{g:+.1f} at {100 * r['fraction']:g}%" for g, r in zip(gains, rows))
    return (f"- The benefit of transfer {trend} as the amount of data grows "
            f"({listed}, in points of test accuracy)."
            + (" Pretrained features matter most when labelled data are scarce; with more "
               "data the scratch model learns more of what ImageNet supplied."
               if trend == "shrinks" else ""))


def observe_fractions(rows: Sequence[Mapping], epochs: int) -> str:
    """Q3(a) observations. rows: {'fraction', 'images', 'pretrained', 'scratch'}
    (final test accuracies in [0, 1]), in increasing fraction."""
    lines, gains = [], []
    for r in rows:
        p, s = 100 * r["pretrained"], 100 * r["scratch"]
        gains.append(p - s)
        lines.append(f"- With {100 * r['fraction']:g}% of the training split ({r['images']:,} images), "
                     f"fine-tuning reaches {p:.1f}% test accuracy against {s:.1f}% from scratch "
                     f"({p - s:+.1f} points; test error {100 - s:.1f}% -> {100 - p:.1f}%).")
    first, last = rows[0], rows[-1]
    if len(rows) > 1:
        lines.append(_trend(rows, gains))
        p0, sn = 100 * first["pretrained"], 100 * last["scratch"]
        verdict = "beats" if p0 > sn else "does not beat"
        lines.append(f"- Fine-tuned on {100 * first['fraction']:g}% of the data, the pretrained model "
                     f"{verdict} the scratch model trained on {100 * last['fraction']:g}% "
                     f"({p0:.1f}% against {sn:.1f}%).")
    worse = [r for r, g in zip(rows, gains) if g <= 0]
    if worse:
        where = ", ".join(f"{100 * r['fraction']:g}%" for r in worse)
        lines.append(f"- Transfer did not help at {where}.")
    lines.append(f"- Both settings had the same budget ({_epochs(epochs)}, same images, same "
                 "schedule); the learning rate of each was chosen on the validation split.")
    return "\n".join(lines)


def observe_models(records: Sequence[Mapping]) -> str:
    """Q3(b) observations: accuracy, speed and size of each fine-tuned model."""
    lines = []
    for r in records:
        acc = r["history"]["eval_accuracy"]
        best = max(range(len(acc)), key=acc.__getitem__) if acc else 0
        gap = 100 * (r["history"]["train_accuracy"][-1] - acc[-1]) if acc else float("nan")
        lines.append(f"- {r['label']}: {100 * final_accuracy(r):.1f}% test accuracy after "
                     f"{_epochs(len(acc))} (best {100 * acc[best]:.1f}% at epoch {best + 1}; "
                     f"{100 * acc[0]:.1f}% after the first), {mean_epoch_seconds(r):.1f} s per epoch, "
                     f"{r['total_params'] / 1e6:.1f}M parameters; train minus test accuracy at the "
                     f"end: {gap:+.1f} points.")
    if len(records) > 1:
        ranked = sorted(records, key=final_accuracy, reverse=True)
        top, low = ranked[0], ranked[-1]
        ratio = mean_epoch_seconds(top) / mean_epoch_seconds(low)
        lines.append(f"- {top['label']} ends {100 * (final_accuracy(top) - final_accuracy(low)):.1f} "
                     f"points above {low['label']}, at {ratio:.2f} times its time per epoch and "
                     f"{top['total_params'] / low['total_params']:.2f} times its parameters.")
        fastest = min(records, key=mean_epoch_seconds)
        lines.append(f"- The cheapest per epoch is {fastest['label']}. Seconds per epoch include the "
                     "test pass; compute grows with the image size squared.")
    return "\n".join(lines)


def observe_freezing(records: Sequence[Mapping]) -> str:
    """Q3(c) observations: what each freezing strategy trains, costs and reaches."""
    def said(r: Mapping) -> str:
        return describe_freeze(r["model"], r["freeze"])

    lines = []
    for r in records:
        acc = r["history"]["eval_accuracy"]
        lines.append(f"- {said(r)}: {r['trainable_params']:,} of {r['total_params']:,} parameters "
                     f"trainable ({100 * r['trainable_params'] / r['total_params']:.3g}%), "
                     f"{mean_epoch_seconds(r):.1f} s per epoch, {100 * acc[0]:.1f}% test accuracy "
                     f"after epoch 1, {100 * final_accuracy(r):.1f}% after {_epochs(len(acc))}.")
    if len(records) > 1:
        quick = min(records, key=mean_epoch_seconds)
        slow = max(records, key=mean_epoch_seconds)
        lines.append(f"- Time per epoch: {said(quick)} is "
                     f"{mean_epoch_seconds(slow) / mean_epoch_seconds(quick):.2f} times faster than "
                     f"{said(slow)}: frozen layers need no backward pass and no optimiser update "
                     "(the forward pass remains).")
        early = max(records, key=lambda r: r["history"]["eval_accuracy"][0])
        best = max(records, key=final_accuracy)
        lines.append(f"- Learning speed: after one epoch {said(early)} is ahead "
                     f"({100 * early['history']['eval_accuracy'][0]:.1f}%); at the end "
                     f"{said(best)} is best ({100 * final_accuracy(best):.1f}%).")
    return "\n".join(lines)
