"""Q3's tables and observations, written from the run records (common.transfer_runs:
settings and history; "eval_accuracy" is the test set's, the validation images' for
the trials), so every number and every "better" or "worse" follows the runs that
produced it. Observations follow common.observations' order, (i) to (iv), and its
noise rule. The notebook shows fraction_rows' fractions_table and observe_fractions.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from .latex import markdown_table
from .observations import binomial, capitalise, comparison, judged, noise, pct
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


def _percent(value: float | None) -> str:  # one decimal: the notes' and the trials' table
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
    where = f", {100 * r['fraction']:g}% of the training images" if r.get("fraction") is not None else ""
    return f"{describe_freeze(r['model'], r['freeze'])}{where}, lr {r['lr']:g}"


def budget_notice(*, smoke: bool, quick: bool, config: Mapping, data, specs: Mapping) -> str:
    """The label a smoke or quick run carries above its numbers, from the actual sizes
    (data: common.transfer_data.Q3Data; specs: transfer_runs.q3_specs')."""
    if not (smoke or quick):
        return ""
    c, steps = config, sorted({t["steps"] for t in specs["trials"]})
    what = (f"{data.base_size:,} training images (class-stratified; (a) trains on "
            + ", ".join(f"{data.images_of(f):,}" for f in c["fractions"])
            + f", (b) and (c) on {data.images_of(c['fraction_b']):,}), "
            f"{data.held_out_size('validation'):,} validation and {data.held_out_size('test'):,} "
            f"test images, {c['image_size']} px inputs, {c['steps_a']:,} optimiser steps per run "
            f"in (a), {c['epochs_b']} epochs in (b), {c['epochs_c']} in (c), learning-rate trials "
            f"of {steps[0]:,}" + (f" to {steps[-1]:,}" if len(steps) > 1 else "") + " steps")
    if smoke:
        return (f"**Smoke run**: {what}. It checks that every cell runs; the numbers below mean "
                "nothing about transfer learning.")
    return (f"**Quick run**: {what}, on the CPU: a budget meant for a laptop. The code path is "
            "the full one, so the numbers compare pretrained and scratch, models and freezing "
            "strategies at this budget; they sit well below what the full settings (every "
            "training image, larger inputs, more steps, on a GPU) reach.")


# --- tables -------------------------------------------------------------------------------

def lr_selection_table(selection: Sequence[Mapping]) -> str:
    """One table per list of candidates (pretrained and scratch settings have their own):
    a row per setting (and share of the data), the validation accuracy at each candidate."""
    def cell(trial: Mapping) -> str:
        flag = " (diverged)" if trial["stopped"] else " (near chance)" if trial["near_chance"] else ""
        return _percent(trial["val_accuracy"]) + flag

    groups: dict[tuple, list[Mapping]] = {}
    for row in selection:
        groups.setdefault(tuple(c["lr"] for c in row["candidates"]), []).append(row)
    tables = []
    for lrs, rows in groups.items():
        table = markdown_table(
            ["model", "trained layers", "data", "optimiser", "steps per trial",
             *[f"val. acc. at lr {lr:g}" for lr in lrs], "chosen lr"],
            [[display_name(r["model"], r["pretrained"]), describe_freeze(r["model"], r["freeze"]),
              f"{100 * r['fraction']:g}%", r["optimizer"], f"{r['steps']:,}",
              *[cell(c) for c in r["candidates"]], f"{r['chosen_lr']:g}"] for r in rows])
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
             "lr_scratch": by[f, False]["lr"], "pretrained_near_chance": bool(by[f, True]["near_chance"]),
             "scratch_near_chance": bool(by[f, False]["near_chance"]),
             "recipe_pretrained": _recipe(by[f, True]), "recipe_scratch": _recipe(by[f, False])}
            for f in fractions]


def _recipe(r: Mapping) -> str:
    """'sgd, new head at 10x the lr' or 'adamw, kaiming initialisation'."""
    if r["pretrained"]:
        return f"{r['optimizer']}, new head at {r['head_lr_multiplier']:g}x the lr"
    return f"{r['optimizer']}, {r['init']} initialisation"


def _void(row: Mapping) -> bool:  # a fraction where either run ended near chance
    return row["pretrained_near_chance"] or row["scratch_near_chance"]


def fractions_table(rows: Sequence[Mapping]) -> str:
    def acc(r: Mapping, side: str) -> str:
        return pct(r[side]) + (" (near chance)" if r[f"{side}_near_chance"] else "")

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
    return pct(max(acc) if epoch is None else acc[epoch]) if acc else "n/a (stopped)"


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


# --- observations: (i) best, (ii) speed, (iii) generalisation, (iv) what stands out --------

def _said(diff: float, variances: Sequence[float], n: int | None) -> str:
    """'+2.0 points, within noise (2 SE 6.2)' by common.observations' rule; without n, bare."""
    return judged(diff, noise(diff, *variances)[1], 1) if n else f"{100 * diff:+.1f} points"


def _var(n: int | None, *accuracies: float) -> list[float]:
    return [binomial(a, n) for a in accuracies] if n else []


def _trend(rows: Sequence[Mapping], gains: Sequence[float], n: int | None) -> str:
    """How the benefit of transfer changes from the smallest fraction to the largest; why,
    only when it shrinks beyond noise and transfer helped beyond noise at every fraction."""
    text = "- The gain from transfer, in points of test accuracy: " + ", ".join(
        f"{100 * g:+.1f} at {100 * r['fraction']:g}%" for g, r in zip(gains, rows))
    ends = _var(n, *(r[k] for r in (rows[0], rows[-1]) for k in ("pretrained", "scratch")))
    change, helped = gains[-1] - gains[0], all(
        g > 0 and noise(g, *_var(n, r["pretrained"], r["scratch"]))[0] for g, r in zip(gains, rows))
    if not n or not noise(change, *ends)[0]:
        return text + ("." if not n else ". From the smallest fraction to the largest the benefit "
                       f"of transfer does not change beyond noise: {_said(change, ends, n)}.")
    return (text + f". The benefit of transfer {'shrinks' if change < 0 else 'grows'} as the "
            f"amount of data grows, smallest fraction to largest: {_said(change, ends, n)}."
            + (" Pretrained features matter most when labelled data are scarce; with more data "
               "the scratch model learns more of what ImageNet supplied." if change < 0 and helped
               else ""))


def _curves(rows: Sequence[Mapping], histories: Mapping, n: int | None) -> list[str]:
    """Q3(a) (ii) and (iii): first-epoch accuracy and final gap, pretrained against scratch."""
    first, gaps = [], []
    for r in rows:
        hp, hs, at = histories[r["fraction"], True], histories[r["fraction"], False], \
            f"{100 * r['fraction']:g}%"
        a, b, ta, tb = hp["eval_accuracy"][0], hs["eval_accuracy"][0], \
            hp["train_accuracy"][-1], hs["train_accuracy"][-1]
        first.append(f"{_said(a - b, _var(n, a, b), n)} at {at}")
        gp, gs = ta - r["pretrained"], tb - r["scratch"]
        gaps.append(f"{100 * gp:+.1f} against {100 * gs:+.1f} at {at}: " + _said(gp - gs, _var(
            n and r["images"], ta, tb) + _var(n, r["pretrained"], r["scratch"]), n))
    return ["- After the first epoch, pretrained minus scratch test accuracy: " + "; ".join(first)
            + ".", "- Train minus test accuracy at the end, pretrained against scratch: "
            + "; ".join(gaps) + "."]


def _void_line(r: Mapping) -> str:
    sides = [side for side in ("pretrained", "scratch") if r[f"{side}_near_chance"]]
    return (f"- **With {100 * r['fraction']:g}% of the training images ({r['images']:,} images), the "
            f"comparison is void**: {'both runs' if len(sides) == 2 else f'the {sides[0]} run'} "
            f"ended near chance (pretrained {100 * r['pretrained']:.1f}%, scratch "
            f"{100 * r['scratch']:.1f}%), so the difference measures a failed run, not transfer.")


def observe_fractions(rows: Sequence[Mapping], steps: int, test_images: int | None = None,
                      histories: Mapping | None = None) -> str:
    """Q3(a): (i) the gain of transfer per fraction, (ii) after the first epoch and (iii)
    the final gaps (with `histories`, {(fraction, pretrained): history}), (iv) the trend and
    what stands out. rows: fraction_rows', in increasing fraction; one where either run
    ended near chance is void. With `test_images`, common.observations' noise rule."""
    n, valid = test_images, [r for r in rows if not _void(r)]
    lines = [_void_line(r) if _void(r) else
             f"- With {100 * r['fraction']:g}% of the training images ({r['images']:,} images), "
             f"fine-tuning reaches {100 * r['pretrained']:.1f}% test accuracy against "
             f"{100 * r['scratch']:.1f}% from scratch: "
             f"{_said(r['pretrained'] - r['scratch'], _var(n, r['pretrained'], r['scratch']), n)}."
             for r in rows]
    lines += _curves(valid, histories, n) if histories and valid else []
    gains = [r["pretrained"] - r["scratch"] for r in valid]
    if len(valid) > 1:
        a, b = valid[0], valid[-1]
        lines += [_trend(valid, gains, n), f"- Fine-tuned on {100 * a['fraction']:g}% of the data, "
                  f"the pretrained model reaches {100 * a['pretrained']:.1f}% against "
                  f"{100 * b['scratch']:.1f}% for the scratch model trained on "
                  f"{100 * b['fraction']:g}%: " + _said(a["pretrained"] - b["scratch"],
                                                         _var(n, a["pretrained"], b["scratch"]), n)
                  + "."]
    beyond = [noise(g, *_var(n, r["pretrained"], r["scratch"]))[0] for g, r in zip(gains, valid)]
    for verdict, where in [("does not help beyond noise", [not b for b in beyond]),
                           ("hurts beyond noise", [b and g < 0 for b, g in zip(beyond, gains)])]:
        if n and any(where):
            lines.append(f"- Transfer {verdict} at " + ", ".join(
                f"{100 * r['fraction']:g}%" for r, w in zip(valid, where) if w) + ".")
    if not valid:
        lines.append("- **No fraction gives a valid comparison**: nothing about transfer follows.")
    lines.append(f"- At every fraction both settings had the same budget ({steps:,} optimiser "
                 f"step{'s' * (steps != 1)}, same images, same schedule) and each its own recipe "
                 f"(fine-tuning: {rows[0]['recipe_pretrained']}; from scratch: "
                 f"{rows[0]['recipe_scratch']}), with its learning rate chosen on validation.")
    return "\n".join(lines)


def _seconds(records: Sequence[Mapping], said: Callable[[Mapping], str]) -> tuple[str, bool]:
    """Seconds per epoch; is the slowest run's mean beyond noise of the quickest's? 2 SE of
    a difference of two means, each of variance s^2/k from its k epochs' spread (k >= 2)."""
    secs = {said(r): r["history"]["seconds"] for r in records if r["history"]["seconds"]}
    mean = {k: float(np.mean(v)) for k, v in secs.items()}
    if len(secs) < 2:
        return "", False
    quick, slow = min(mean, key=mean.get), max(mean, key=mean.get)
    text = "Seconds per epoch, the test pass included: " + ", ".join(
        f"{k} {v:.1f}" for k, v in mean.items()) + "."
    if min(len(secs[quick]), len(secs[slow])) < 2:
        return text + " With one epoch per run, no spread judges a difference in time.", False
    beyond, two_se = noise(mean[slow] - mean[quick], *(
        float(np.var(secs[k], ddof=1)) / len(secs[k]) for k in (quick, slow)))
    return (text + f" {capitalise(slow)} takes {mean[slow] / mean[quick]:.2f} times as long as {quick}, "
            f"{'beyond' if beyond else 'within'} noise (2 SE {two_se:.1f} s)."), beyond


def _ordered(records: Sequence[Mapping], said: Callable[[Mapping], str], n: int | None,
             seconds: str) -> list[str]:
    """Runs left out (near chance, no epoch), then (i) to (iii) of common.observations'
    comparison, `seconds` (_seconds' text) in (ii); n, else the records' "eval_images"."""
    valid = [r for r in records if not r.get("near_chance") and r["history"]["eval_accuracy"]]
    n = n or min((r.get("eval_images") or 0 for r in valid), default=0) or None
    parts = comparison({said(r): r["history"] for r in valid}, held_out_images=n,
                       train_images=min((r["train_images"] for r in valid), default=None))
    parts["speed"] = parts["speed"] + [seconds]
    return [f"- {said(r)}: " + (f"{100 * r['history']['eval_accuracy'][-1]:.2f}% test accuracy"
                                if r["history"]["eval_accuracy"] else "stopped before its first "
                                f"epoch ended ({r['history'].get('stopped')})")
            + " **(near chance: not compared)**." for r in records if r not in valid] \
        + [f"- {' '.join(x for x in p if x)}" for p in parts.values() if any(p)]


def observe_models(records: Sequence[Mapping], test_images: int | None = None) -> str:
    """Q3(b): (i) to (iii) and time per epoch; runs near chance are flagged, never ranked."""
    said = lambda r: r["label"]  # noqa: E731
    return "\n".join(_ordered(records, said, test_images, _seconds(records, said)[0]))


def observe_freezing(records: Sequence[Mapping], test_images: int | None = None) -> str:
    """Q3(c): (i) to (iii) over the freezing strategies, with their time per epoch (the
    noise rule with `test_images`); (iv) why training fewer layers is cheaper, said only
    when the strategy training the fewest parameters is the quickest, beyond noise."""
    said = lambda r: describe_freeze(r["model"], r["freeze"])  # noqa: E731
    timed = [r for r in records if r["history"]["seconds"]]
    seconds, beyond = _seconds(timed, said)
    lines, quick = _ordered(records, said, test_images, seconds), min(
        timed, key=mean_epoch_seconds, default=None)
    if beyond and quick is min(timed, key=lambda r: r["trainable_params"]):
        lines.append(f"- {capitalise(said(quick))} trains {quick['trainable_params']:,} of "
                     f"{quick['total_params']:,} parameters and is the quickest per epoch: frozen "
                     "layers need no backward pass and no optimiser update (the forward pass "
                     "remains).")
    return "\n".join(lines)
