"""Q3's runs, described once from the notebook's parameters (`q3_specs`, as Q2's are
by `recipes.q2_specs`), and what Q3 adds to a run's record. The data they see is
common.transfer_data.Q3Data's; common.experiments.Experiment trains them, as it
does Q2's.

    data = Q3Data(ds.train_labels, ds.test_labels, config, ds=ds)
    experiment = Experiment(runs_dir, data, build=data.build, annotate=annotate, ...)
    trials = experiment.train_all(q3_specs(config, data)["trials"])
    chosen, selection = choose_lrs(trials)
    runs_a = experiment.train_all(q3_specs(config, data, chosen)["a"])

A run's folder is named by experiments.run_id over everything that decides its
outcome, so a run two parts share (ResNet18 on all layers in (b) and (c)) is
trained once. A record is Experiment's (settings and history) with what Q3 adds:
the chance level, and whether the run ended near it (`annotate`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .config import check, check_choice, check_fraction, check_positive_int
from .experiments import run_id, select_best
from .optim import OPTIMIZERS, SCHEDULES
from .recipes import check_budget
from .transfer import (SCRATCH_INITS, TRANSFER_MODELS, display_name, freeze_strategies,
                       head_lr_multipliers, min_image_size)
from .transfer_data import Q3Data
from .weights import weights_source

__all__ = ["SUMMARY_KEYS", "CHANCE_MARGIN", "near_chance", "annotate", "warn_near_chance",
           "near_chance_runs", "summary", "choose_lr", "choose_lrs", "check_q3_config",
           "q3_settings", "q3_specs"]

# What summary.json keeps of each record.
SUMMARY_KEYS = ("part", "model", "label", "pretrained", "fraction", "freeze", "optimizer", "lr",
                "head_lr_multiplier", "init", "epochs", "steps", "image_size", "train_images",
                "subset_digest", "trainable_params", "total_params", "weights_source",
                "chance_accuracy", "chance_margin", "near_chance", "run_dir", "history")

# A run whose final accuracy is below chance plus this many points (10% + 5 for
# CIFAR-10) learned next to nothing: it is flagged, and never compared as if it had.
CHANCE_MARGIN = 0.05
NUM_CLASSES = 10


def near_chance(accuracy: float | None, num_classes: int = NUM_CLASSES,
                margin: float = CHANCE_MARGIN) -> bool:
    """Is a final accuracy within `margin` of chance (1 / num_classes)? A run with
    no accuracy at all (it stopped before its first epoch ended) counts as near chance."""
    if accuracy is None or math.isnan(accuracy):
        return True
    return accuracy < 1 / num_classes + margin - 1e-9  # 0.1 + 0.05 is 0.15000000000000002


def annotate(record: dict) -> dict:
    """Experiment's record with Q3's names and flags (Experiment(annotate=annotate))."""
    final = (record["history"]["eval_accuracy"] or [None])[-1]
    return {**record, "total_params": record["params"], "chance_accuracy": 1 / NUM_CLASSES,
            "chance_margin": CHANCE_MARGIN, "near_chance": near_chance(final)}


def warn_near_chance(records: Iterable[Mapping], log: Callable[[str], None] = print) -> list[dict]:
    """Log a loud line for every run that ended near chance; return those runs."""
    flagged = [dict(r) for r in records if r["near_chance"]]
    for r in flagged:
        final = (r["history"]["eval_accuracy"] or [float("nan")])[-1]
        log(f"WARNING: NEAR CHANCE: {Path(r['run_dir']).name} ended at {100 * final:.1f}% "
            f"{r['eval_split']} accuracy, below chance ({100 * r['chance_accuracy']:g}%) "
            f"+ {100 * CHANCE_MARGIN:g} points: flagged, and never compared.")
    return flagged


def summary(records: Iterable[Mapping]) -> list[dict]:
    """The records as summary.json keeps them."""
    return [{k: r.get(k) for k in SUMMARY_KEYS} for r in records]


def near_chance_runs(records: Iterable[Mapping]) -> list[dict]:
    """The runs that ended near chance, for summary.json's top-level list."""
    keys = ("part", "label", "freeze", "fraction", "lr", "run_dir")
    return [{**{k: r.get(k) for k in keys}, "final_accuracy": (
        r["history"]["eval_accuracy"] or [None])[-1]} for r in records if r["near_chance"]]


# --- choosing learning rates on the validation split --------------------------------------

def choose_lr(records: Sequence[Mapping]) -> tuple[float, list[dict]]:
    """The learning rate whose trial ends with the best validation accuracy, and one
    row per candidate, in the order given.

    experiments.select_best decides: a diverged trial has no score and never wins,
    and equal scores go to the earliest candidate listed. The candidates are listed
    to it from the smallest learning rate up, so a tie goes to the smaller, more
    conservative rate: it moves the pretrained weights less, and a rate that only
    ties a smaller one has shown no benefit for its larger risk of diverging."""
    if any(r["eval_split"] != "validation" for r in records):
        raise ValueError("choose_lr: learning rates are chosen on the validation split only; "
                         "train the trials with evaluate_on='validation'")
    rows = [{"lr": r["lr"], "val_accuracy": (r["history"]["eval_accuracy"] or [None])[-1],
             "stopped": r["history"].get("stopped"), "near_chance": r.get("near_chance"),
             "run_dir": r.get("run_dir"), "history": r["history"]} for r in records]
    by_lr = sorted(rows, key=lambda row: row["lr"])
    scores = [None if row["stopped"] else row["val_accuracy"] for row in by_lr]
    if all(score is None for score in scores):
        raise RuntimeError("every learning-rate candidate diverged; add smaller values "
                           f"to the candidates (tried {[r['lr'] for r in rows]})")
    return by_lr[select_best(scores)]["lr"], rows


def choose_lrs(trials: Sequence[Mapping]) -> tuple[dict, list[dict]]:
    """One learning rate per setting (model, pretrained, freeze, fraction), chosen by
    choose_lr from that setting's trial records. Returns ({setting: lr}, one row per
    setting for the table and summary.json)."""
    by_setting: dict[tuple, list[Mapping]] = {}
    for t in trials:
        by_setting.setdefault(tuple(t["setting"]), []).append(t)
    chosen, selection = {}, []
    for setting, records in by_setting.items():
        lr, rows = choose_lr(records)
        chosen[setting] = lr
        model, pretrained, freeze, fraction = setting
        selection.append({"model": model, "pretrained": pretrained, "freeze": freeze,
                          "fraction": fraction, "optimizer": records[0]["optimizer"],
                          "chosen_lr": lr, "steps": records[0]["steps"],
                          "all_near_chance": all(r["near_chance"] for r in records),
                          "candidates": rows})
    return chosen, selection


# --- the parameters -------------------------------------------------------------------------

def check_q3_config(c: Mapping[str, Any]) -> None:
    """The Q3-specific parameter checks (make_config checks the shared ones)."""
    fractions = c["fractions"]
    check("fractions", fractions, isinstance(fractions, list) and len(fractions) > 0
          and all(isinstance(f, float) and 0 < f < 1 for f in fractions)
          and fractions == sorted(set(fractions)),
          "increasing fractions in (0, 1) without repeats, e.g. [0.1, 0.2, 0.5]")
    check_fraction("fraction_b", c["fraction_b"])
    check("val_fraction", c["val_fraction"], isinstance(c["val_fraction"], float)
          and 0 < c["val_fraction"] < 1, "a fraction in (0, 1)")
    largest = max(*fractions, c["fraction_b"])
    check("fraction_b", c["fraction_b"], largest + c["val_fraction"] <= 1 + 1e-9,
          f"at most {1 - c['val_fraction']:g} with val_fraction={c['val_fraction']:g}: the "
          "validation images are drawn from outside the largest training subset")
    for name in ("image_size", "batch_size", "steps_a", "epochs_b", "epochs_c", "select_steps"):
        check_positive_int(name, c[name])
    check_budget(c)
    check("models_b", c["models_b"], isinstance(c["models_b"], list) and len(c["models_b"]) > 0,
          "a non-empty list")
    for name, value in [("model_a", c["model_a"]), ("model_c", c["model_c"])] + [
            (f"models_b[{i}]", m) for i, m in enumerate(c["models_b"])]:
        check_choice(name, value, TRANSFER_MODELS)
        smallest = min_image_size(value)
        check("image_size", c["image_size"], c["image_size"] >= smallest,
              f"at least {smallest} pixels for {value}")
    valid = freeze_strategies(c["model_c"])
    check("freeze_strategies", c["freeze_strategies"], isinstance(c["freeze_strategies"], list)
          and len(c["freeze_strategies"]) > 0 and all(s in valid for s in c["freeze_strategies"]),
          f"a non-empty list of strategies valid for {c['model_c']}: {', '.join(valid)}")
    for name in ("lr_candidates", "scratch_lr_candidates"):
        check(name, c[name], isinstance(c[name], list) and len(c[name]) > 0
              and all(isinstance(v, (int, float)) and v > 0 for v in c[name]),
              "a non-empty list of positive learning rates")
    for name in ("weight_decay", "scratch_weight_decay", "momentum"):
        check(name, c[name], isinstance(c[name], (int, float)) and c[name] >= 0, "a number >= 0")
    check("head_lr_multiplier", c["head_lr_multiplier"],
          isinstance(c["head_lr_multiplier"], (int, float))
          and not isinstance(c["head_lr_multiplier"], bool) and c["head_lr_multiplier"] > 0,
          "a positive number (1: the head trains at the same lr as the rest)")
    for name in ("optimizer", "scratch_optimizer"):
        check_choice(name, c[name], OPTIMIZERS)
    check_choice("scratch_init", c["scratch_init"], SCRATCH_INITS)
    check_choice("schedule", c["schedule"], SCHEDULES)


# --- the runs -------------------------------------------------------------------------------

def q3_settings(c: Mapping[str, Any]) -> list[tuple]:
    """Every setting that gets its own learning rate: (model, pretrained, freeze, fraction).
    Q3(a) has one per fraction and side, (b) one per model, (c) one per strategy."""
    return list(dict.fromkeys([
        *[(c["model_a"], p, "none", f) for f in c["fractions"] for p in (True, False)],
        *[(m, True, "none", c["fraction_b"]) for m in c["models_b"]],
        *[(c["model_c"], True, s, c["fraction_b"]) for s in c["freeze_strategies"]]]))


def _recipe(c: Mapping[str, Any], pretrained: bool) -> dict[str, Any]:
    """What differs between fine-tuning and training from scratch, the lr aside."""
    if pretrained:
        # The new head starts from random weights under features that are already
        # good: a larger step lets it catch up while the pretrained layers move little.
        return dict(optimizer=c["optimizer"], weight_decay=c["weight_decay"],
                    head_lr_multiplier=c["head_lr_multiplier"], init=None)
    # From scratch every layer is random: no pretrained backbone for the head to outpace.
    return dict(optimizer=c["scratch_optimizer"], weight_decay=c["scratch_weight_decay"],
                head_lr_multiplier=1, init=c["scratch_init"])


def _spec(c: Mapping[str, Any], data: Q3Data, part: str, setting: tuple, *, epochs: int,
          lr: float | None, split: str) -> dict[str, Any]:
    model, pretrained, freeze, fraction = setting
    recipe = _recipe(c, pretrained)
    identity = {"model": model, "pretrained": pretrained, "freeze": freeze, "fraction": fraction,
                "subset_digest": data.digests[fraction], "epochs": epochs, "lr": lr,
                "evaluated_on": split, "eval_images": data.held_out_size(split),
                "image_size": c["image_size"], "batch_size": c["batch_size"], "seed": c["seed"],
                "smoke": c["smoke"], "momentum": c["momentum"], "schedule": c["schedule"],
                **recipe}
    label = (f"{'select_' if split == 'validation' else ''}{model}_"
             f"{'pretrained' if pretrained else 'scratch'}_{freeze.replace(':', '-')}"
             f"_f{fraction:g}" + (f"_lr{lr:g}" if lr is not None else ""))
    images = data.images_of(fraction)
    return {"part": part, "name": run_id(label, identity) if lr is not None else label,
            "setting": setting, "model": model, "label": display_name(model, pretrained),
            "pretrained": pretrained, "freeze": freeze, "fraction": fraction, "lr": lr,
            "epochs": epochs, "steps": epochs * math.ceil(images / c["batch_size"]),
            "image_size": c["image_size"], "input_size": c["image_size"],
            "train_images": images, "eval_images": data.held_out_size(split),
            "batch_size": c["batch_size"], "subset_digest": data.digests[fraction],
            "weights_source": (weights_source(model, data.weights_dirs.get(model))
                               if pretrained else "none (random init)"),
            "data": f"{fraction:g}:{split}", **recipe,
            "config": {"weights_sha256": data.weights_sha(model) if pretrained else None,
                       "evaluated_on": split, "fraction": fraction},
            "fit": {"epochs": epochs, "lr": lr, "optimizer": recipe["optimizer"],
                    "weight_decay": recipe["weight_decay"], "momentum": c["momentum"],
                    "schedule": c["schedule"], "keep_weights": False,
                    "lr_multipliers": head_lr_multipliers(model, recipe["head_lr_multiplier"])}}


def q3_specs(c: Mapping[str, Any], data: Q3Data,
             chosen: Mapping[tuple, float] | None = None) -> dict[str, list[dict]]:
    """Every run of Q3, by part: "trials" (each setting's lr candidates, `select_steps`
    steps on the subset its run trains on, scored on validation), then "a", "b" and
    "c" with the rates `chosen` on validation (without `chosen`: lr None, for the plan).

    Q3(a)'s budget rule: every run, pretrained or scratch, at every fraction, takes
    `steps_a` optimiser steps, so the amount of data is the only thing a fraction
    changes (the smaller subsets are seen for more epochs)."""
    lr = (lambda s: chosen[s]) if chosen is not None else (lambda s: None)
    trials = [_spec(c, data, "trials", s, epochs=data.epochs_for(c["select_steps"], s[3]),
                    lr=rate, split="validation")
              for s in q3_settings(c)
              for rate in c["lr_candidates" if s[1] else "scratch_lr_candidates"]]
    a = [_spec(c, data, "a", s, epochs=data.epochs_for(c["steps_a"], s[3]), lr=lr(s), split="test")
         for s in [(c["model_a"], p, "none", f) for f in c["fractions"] for p in (True, False)]]
    b = [_spec(c, data, "b", (m, True, "none", c["fraction_b"]), epochs=c["epochs_b"],
               lr=lr((m, True, "none", c["fraction_b"])), split="test") for m in c["models_b"]]
    cc = [_spec(c, data, "c", (c["model_c"], True, s, c["fraction_b"]), epochs=c["epochs_c"],
                lr=lr((c["model_c"], True, s, c["fraction_b"])), split="test")
          for s in c["freeze_strategies"]]
    return {"trials": trials, "a": a, "b": b, "c": cc}
