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
from .observations import noise_note
from .transfer import display_name, freeze_strategies

__all__ = ["describe_freeze", "final_accuracy", "mean_epoch_seconds", "caveats", "budget_notice",
           "near_chance_note", "lr_selection_table", "fraction_rows", "fractions_table",
           "models_table", "freezing_table", "observe_fractions", "observe_models",
           "observe_freezing"]


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


def caveats(records: Sequence[Mapping], *, smoke: bool, quick: bool = False) -> str:
    """What the reader must know before reading any number: a smoke or quick run,
    weights that are not the official ImageNet files, runs that ended near chance."""
    notes = []
    if smoke:
        notes.append("**Smoke run**: a few hundred images, one epoch, small inputs. The numbers "
                     "only show that every step runs; they are not results and support no conclusion.")
    if quick:
        notes.append("**Quick run**: class-stratified subsets, few epochs and small inputs on a CPU "
                     "(the budget is stated under 'Data, subsets and weights'). The numbers compare "
                     "the settings at that budget; the full settings reach far higher.")
    bad = sorted({r["model"] for r in records if r["pretrained"] and r["weights_source"] != "official"})
    if bad:
        notes.append(f"**Not ImageNet weights**: the weights files of {', '.join(bad)} do not match "
                     "the official files' sha256 (e.g. random stand-ins fabricated for an offline "
                     "smoke run). 'Pretrained' runs of these models started from those values, so no "
                     "conclusion about transfer learning follows from them.")
    notes += [near_chance_note(r) for r in records if r.get("near_chance")]
    return "\n\n".join(notes)


def near_chance_note(r: Mapping) -> str:
    """The loud line a run near chance carries wherever its number is shown."""
    acc = r["history"]["eval_accuracy"]
    final = _percent(acc[-1]) if acc else "no accuracy (it stopped)"
    return (f"**WARNING, near chance**: {r['label']}, {_setting(r)}: final {r['eval_split']} "
            f"accuracy {final}, within {100 * r['chance_margin']:g} points of chance "
            f"({_percent(r['chance_accuracy'])}). It learned next to nothing, so no comparison "
            "with it is made.")


def _setting(r: Mapping) -> str:
    where = f", {100 * r['fraction']:g}% of the pool" if r.get("fraction") is not None else ""
    return f"{describe_freeze(r['model'], r['freeze'])}{where}, lr {r['lr']:g}"


def budget_notice(*, smoke: bool, quick: bool, sizes: Mapping[str, int], image_size: int,
                  epochs: Mapping[str, int], trial_steps: int) -> str:
    """The label a smoke or quick run carries above its numbers, from the actual sizes.
    sizes: {'pool', 'b', 'validation', 'test'} images ('b': what (b) and (c) train on);
    epochs: {'a', 'b', 'c', 'trials'}."""
    if not (smoke or quick):
        return ""
    what = (f"a pool of {sizes['pool']:,} training images (class-stratified; (b) and (c) train "
            f"on {sizes['b']:,}), {sizes['validation']:,} validation and {sizes['test']:,} test "
            f"images, {image_size} px inputs, {_epochs(epochs['a'])} per run in (a), "
            f"{epochs['b']} in (b), {epochs['c']} in (c), learning-rate trials of "
            f"{_epochs(epochs['trials'])} ({trial_steps:,} step{'s' * (trial_steps != 1)})")
    if smoke:
        return (f"**Smoke run**: {what}. It checks that every cell runs; the numbers below mean "
                "nothing about transfer learning.")
    return (f"**Quick run**: {what}, on the CPU: a budget meant for a laptop. The "
            "code path is the full one, so the numbers compare pretrained and scratch, models and "
            "freezing strategies at this budget; they sit well below what the full settings (the "
            "whole training split, 224 px, more epochs, on a GPU) reach.")


# --- tables -------------------------------------------------------------------------------

def lr_selection_table(selection: Sequence[Mapping]) -> str:
    """One table per list of candidates (pretrained and scratch settings have their
    own): a row per setting, the validation accuracy at each candidate, the chosen lr."""
    def cell(trial: Mapping) -> str:
        flag = " (diverged)" if trial["stopped"] else " (near chance)" if trial["near_chance"] else ""
        return _percent(trial["val_accuracy"]) + flag

    groups: dict[tuple, list[Mapping]] = {}
    for row in selection:
        groups.setdefault(tuple(c["lr"] for c in row["candidates"]), []).append(row)
    tables = []
    for lrs, rows in groups.items():
        table = markdown_table(
            ["model", "trained layers", "optimiser", "steps per trial",
             *[f"val. acc. at lr {lr:g}" for lr in lrs], "chosen lr"],
            [[display_name(r["model"], r["pretrained"]), describe_freeze(r["model"], r["freeze"]),
              r["optimizer"], f"{r['steps']:,}", *[cell(c) for c in r["candidates"]],
              f"{r['chosen_lr']:g}"] for r in rows])
        # With two candidates every choice is at an edge: only wider grids say so.
        edge = [r for r in rows if r["chosen_lr"] in (min(lrs), max(lrs)) and len(lrs) > 2]
        notes = [f"- {display_name(r['model'], r['pretrained'])}, "
                 f"{describe_freeze(r['model'], r['freeze'])}: the chosen lr is at the edge of "
                 "the candidates; a rate beyond it might do better." for r in edge]
        notes += [f"- **WARNING, near chance**: every trial of {display_name(r['model'], r['pretrained'])}, "
                  f"{describe_freeze(r['model'], r['freeze'])} ended near chance; the choice among "
                  "them means nothing." for r in rows if r["all_near_chance"]]
        tables.append("\n".join([table, "", *notes]).strip())
    return "\n\n".join(tables)


def fraction_rows(records: Sequence[Mapping], fractions: Sequence[float],
                  images_of: Callable[[float], int]) -> list[dict]:
    """Q3(a): per fraction, the final test accuracy of the pretrained and the scratch
    run, and whether either ended near chance."""
    by = {(r["fraction"], r["pretrained"]): r for r in records}
    return [{"fraction": f, "images": images_of(f), "pretrained": final_accuracy(by[f, True]),
             "scratch": final_accuracy(by[f, False]), "lr_pretrained": by[f, True]["lr"],
             "lr_scratch": by[f, False]["lr"],
             "pretrained_near_chance": bool(by[f, True]["near_chance"]),
             "scratch_near_chance": bool(by[f, False]["near_chance"]),
             "recipe_pretrained": _recipe(by[f, True]), "recipe_scratch": _recipe(by[f, False])}
            for f in fractions]


def _recipe(r: Mapping) -> str:
    """'sgd, new head at 10x the lr' or 'adamw, kaiming initialisation'."""
    if r["pretrained"]:
        return f"{r['optimizer']}, new head at {r['head_lr_multiplier']:g}x the lr"
    return f"{r['optimizer']}, {r['init']} initialisation"


def _void(row: Mapping) -> bool:
    return row["pretrained_near_chance"] or row["scratch_near_chance"]


def fractions_table(rows: Sequence[Mapping]) -> str:
    def acc(r: Mapping, side: str) -> str:
        return f"{100 * r[side]:.2f}%" + (" (near chance)" if r[f"{side}_near_chance"] else "")

    return markdown_table(
        ["training data", "images", "pretrained: test acc.", "scratch: test acc.", "gain (points)",
         "lr pretrained / scratch"],
        [[f"{100 * r['fraction']:g}%", f"{r['images']:,}", acc(r, "pretrained"), acc(r, "scratch"),
          "void (near chance)" if _void(r) else f"{100 * (r['pretrained'] - r['scratch']):+.2f}",
          f"{r['lr_pretrained']:g} / {r['lr_scratch']:g}"] for r in rows])


def _lr(r: Mapping) -> str:
    """'0.01 (head 0.1)' for a run whose head has its own lr."""
    m = r["head_lr_multiplier"]
    return f"{r['lr']:g}" + (f" (head {r['lr'] * m:g})" if m != 1 else "")


def _acc(r: Mapping, epoch: int | None = None) -> str:
    acc = r["history"]["eval_accuracy"]
    if not acc:
        return "n/a (stopped)"
    value = max(acc) if epoch is None else acc[epoch]
    return f"{100 * value:.2f}%"


def models_table(records: Sequence[Mapping]) -> str:
    return markdown_table(
        ["model", "lr", "final test acc.", "best test acc.", "s per epoch", "parameters"],
        [[r["label"], _lr(r), _acc(r, -1) + (" (near chance)" if r["near_chance"] else ""),
          _acc(r), f"{mean_epoch_seconds(r):.1f}", f"{r['total_params']:,}"] for r in records])


def freezing_table(records: Sequence[Mapping]) -> str:
    return markdown_table(
        ["trained layers", "freeze", "lr", "trainable / total parameters", "s per epoch",
         "test acc. after epoch 1", "final test acc."],
        [[describe_freeze(r["model"], r["freeze"]), f"`{r['freeze']}`", _lr(r),
          f"{r['trainable_params']:,} / {r['total_params']:,}", f"{mean_epoch_seconds(r):.1f}",
          _acc(r, 0), _acc(r, -1) + (" (near chance)" if r["near_chance"] else "")]
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
               if trend == "shrinks" and all(g > 0 for g in gains) else ""))


def observe_fractions(rows: Sequence[Mapping], epochs: int, test_images: int | None = None) -> str:
    """Q3(a) observations. rows: fraction_rows' (final test accuracies in [0, 1]), in
    increasing fraction. A fraction where either run ended near chance is void:
    its gain is not stated, and it takes no part in the trend or the verdicts. With
    `test_images`, a gain within two standard errors is called noise."""
    lines, gains, valid = [], [], []
    for r in rows:
        p, s = 100 * r["pretrained"], 100 * r["scratch"]
        at = f"With {100 * r['fraction']:g}% of the training pool ({r['images']:,} images)"
        if _void(r):
            sides = [n for n in ("pretrained", "scratch") if r[f"{n}_near_chance"]]
            who = "both runs" if len(sides) == 2 else f"the {sides[0]} run"
            lines.append(f"- **{at}, the comparison is void**: {who} ended near chance "
                         f"(pretrained {p:.1f}%, scratch {s:.1f}%), so the difference measures a "
                         "failed run, not transfer.")
            continue
        gains.append(p - s)
        valid.append(r)
        note = noise_note(r["pretrained"], r["scratch"], test_images, digits=1)
        lines.append(f"- {at}, fine-tuning reaches {p:.1f}% test accuracy against {s:.1f}% from "
                     f"scratch ({p - s:+.1f} points; test error {100 - s:.1f}% -> {100 - p:.1f}%"
                     + (f"; {note}" if note else "") + ").")
    if len(valid) > 1:
        lines.append(_trend(valid, gains))
        first, last = valid[0], valid[-1]
        p0, sn = 100 * first["pretrained"], 100 * last["scratch"]
        verdict = "beats" if p0 > sn else "does not beat"
        lines.append(f"- Fine-tuned on {100 * first['fraction']:g}% of the data, the pretrained model "
                     f"{verdict} the scratch model trained on {100 * last['fraction']:g}% "
                     f"({p0:.1f}% against {sn:.1f}%).")
    worse = [r for r, g in zip(valid, gains) if g <= 0]
    if worse:
        where = ", ".join(f"{100 * r['fraction']:g}%" for r in worse)
        lines.append(f"- Transfer did not help at {where}.")
    if not valid:
        lines.append("- **No fraction gives a valid comparison**: nothing about transfer follows.")
    lines.append(f"- Both settings had the same budget ({_epochs(epochs)}, same images, same "
                 f"schedule) and each its own recipe (fine-tuning: {rows[0]['recipe_pretrained']}; "
                 f"from scratch: {rows[0]['recipe_scratch']}), with its learning rate chosen on "
                 "the validation split.")
    return "\n".join(lines)


def _flag(r: Mapping) -> str:
    return " **(near chance: not compared)**" if r.get("near_chance") else ""


def _not_compared(flagged: Sequence[Mapping], said: Callable[[Mapping], str]) -> list[str]:
    if not flagged:
        return []
    return [f"- Left out of the accuracy comparisons below, as near chance: "
            f"{'; '.join(said(r) for r in flagged)}."]


def observe_models(records: Sequence[Mapping], test_images: int | None = None) -> str:
    """Q3(b) observations: accuracy, speed and size of each fine-tuned model. Runs
    near chance are described and flagged, never ranked."""
    lines = []
    for r in records:
        acc = r["history"]["eval_accuracy"]
        if not acc:
            lines.append(f"- {r['label']}: stopped before its first epoch ended "
                         f"({r['history'].get('stopped')}){_flag(r)}.")
            continue
        best = max(range(len(acc)), key=acc.__getitem__)
        gap = 100 * (r["history"]["train_accuracy"][-1] - acc[-1])
        lines.append(f"- {r['label']}: {100 * final_accuracy(r):.1f}% test accuracy after "
                     f"{_epochs(len(acc))} (best {100 * acc[best]:.1f}% at epoch {best + 1}; "
                     f"{100 * acc[0]:.1f}% after the first), {mean_epoch_seconds(r):.1f} s per epoch, "
                     f"{r['total_params'] / 1e6:.1f}M parameters; train minus test accuracy at the "
                     f"end: {gap:+.1f} points{_flag(r)}.")
    valid = [r for r in records if not r.get("near_chance")]
    lines += _not_compared([r for r in records if r.get("near_chance")], lambda r: r["label"])
    if len(valid) > 1:
        ranked = sorted(valid, key=final_accuracy, reverse=True)
        top, low = ranked[0], ranked[-1]
        ratio = mean_epoch_seconds(top) / mean_epoch_seconds(low)
        note = noise_note(final_accuracy(top), final_accuracy(low), test_images, digits=1)
        lines.append(f"- {top['label']} ends {100 * (final_accuracy(top) - final_accuracy(low)):.1f} "
                     f"points above {low['label']}, at {ratio:.2f} times its time per epoch and "
                     f"{top['total_params'] / low['total_params']:.2f} times its parameters"
                     + (f"; {note}" if note else "") + ".")
    if len(records) > 1:  # time per epoch is measured whatever the accuracy
        fastest = min(records, key=mean_epoch_seconds)
        lines.append(f"- The cheapest per epoch is {fastest['label']}. Seconds per epoch include the "
                     "test pass; compute grows with the image size squared.")
    return "\n".join(lines)


def observe_freezing(records: Sequence[Mapping]) -> str:
    """Q3(c) observations: what each freezing strategy trains, costs and reaches. Runs
    near chance are described and flagged, never ranked on accuracy."""
    def said(r: Mapping) -> str:
        return describe_freeze(r["model"], r["freeze"])

    lines = []
    for r in records:
        acc = r["history"]["eval_accuracy"] or [float("nan")]
        lines.append(f"- {said(r)}: {r['trainable_params']:,} of {r['total_params']:,} parameters "
                     f"trainable ({100 * r['trainable_params'] / r['total_params']:.3g}%), "
                     f"{mean_epoch_seconds(r):.1f} s per epoch, {100 * acc[0]:.1f}% test accuracy "
                     f"after epoch 1, {100 * final_accuracy(r):.1f}% after "
                     f"{_epochs(len(r['history']['eval_accuracy']))}{_flag(r)}.")
    if len(records) > 1:
        quick = min(records, key=mean_epoch_seconds)
        slow = max(records, key=mean_epoch_seconds)
        lines.append(f"- Time per epoch: {said(quick)} is "
                     f"{mean_epoch_seconds(slow) / mean_epoch_seconds(quick):.2f} times faster than "
                     f"{said(slow)}: frozen layers need no backward pass and no optimiser update "
                     "(the forward pass remains).")
    valid = [r for r in records if not r.get("near_chance")]
    lines += _not_compared([r for r in records if r.get("near_chance")], said)
    if len(valid) > 1:
        early = max(valid, key=lambda r: r["history"]["eval_accuracy"][0])
        best = max(valid, key=final_accuracy)
        lines.append(f"- Learning speed: after one epoch {said(early)} is ahead "
                     f"({100 * early['history']['eval_accuracy'][0]:.1f}%); at the end "
                     f"{said(best)} is best ({100 * final_accuracy(best):.1f}%).")
    return "\n".join(lines)
