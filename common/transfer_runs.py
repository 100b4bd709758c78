"""Q3's training runs: the data each run sees, the name of its folder, training
or reusing it, and choosing learning rates on the validation split.

    runs = Q3Runs(load_dataset("cifar10", config["data_dir"]), config,
                  models=["tv_alexnet", "tv_resnet18"], fractions=[0.1, 1.0])
    chosen, selection = runs.choose_lrs([("tv_alexnet", True, "none")], fraction=0.2, epochs=5)
    records = runs.train_all([dict(model="tv_alexnet", pretrained=True, freeze="none",
                                   fraction=0.1, epochs=10, lr=chosen["tv_alexnet", True, "none"])],
                             part="a")

A record is a dict describing one run (model, pretrained, freeze, optimiser, lr,
the head's lr factor, epochs, image size, subset fingerprint, parameter counts,
where its weights came from, whether it ended near chance) with its history;
tables, figures and summary.json are made from records. Fine-tuning and training
from scratch each have their own recipe (Q3Runs.recipe) and lr candidates.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .batches import DeviceBatches, held_out_batch_size
from .data import stratified_indices, subset_digest, train_val_split
from .experiments import run_id, select_best, train_or_reuse
from .plan import plan, time_left
from .transfer import (build_transfer_model, check_image_size, display_name, head_lr_multipliers,
                       head_module, initialise_scratch, parameter_counts, shared_normalisation)
from .weights import fetch_weights_file, file_sha256, resolve_weights, weights_source

__all__ = ["SUMMARY_KEYS", "CHANCE_MARGIN", "near_chance", "train_transfer",
           "choose_lr", "split_pool", "Q3Runs"]

# What summary.json keeps of each record.
SUMMARY_KEYS = ("part", "model", "label", "pretrained", "fraction", "freeze", "optimizer", "lr",
                "head_lr_multiplier", "init", "epochs", "image_size", "train_images",
                "subset_digest", "trainable_params", "total_params", "weights_source",
                "chance_accuracy", "chance_margin", "near_chance", "run_dir", "history")

# A run whose final accuracy is below chance plus this many points (10% + 5 for
# CIFAR-10) learned next to nothing: it is flagged, and never compared as if it had.
CHANCE_MARGIN = 0.05


def near_chance(accuracy: float | None, num_classes: int = 10, margin: float = CHANCE_MARGIN) -> bool:
    """Is a final accuracy within `margin` of chance (1 / num_classes)? A run with
    no accuracy at all (it stopped before its first epoch ended) counts as near chance."""
    if accuracy is None or math.isnan(accuracy):
        return True
    return accuracy < 1 / num_classes + margin - 1e-9  # 0.1 + 0.05 is 0.15000000000000002


def train_transfer(name: str, *, pretrained: bool, freeze: str, train_batches, eval_batches,
                   run_dir: str | os.PathLike, epochs: int, lr: float, device, seed: int,
                   eval_split: str = "test", weights_dir: str | os.PathLike | None = None,
                   head_lr_multiplier: float = 1, init: str = "torchvision", subset=None,
                   config: Mapping[str, Any] | None = None,
                   log: Callable[[str], None] = print, **fit_options) -> dict:
    """Build `name` and train it in `run_dir` (resuming or reusing the run there, by
    experiments.train_or_reuse); return the record of the run.

    train_batches / eval_batches: DeviceBatches normalised with normalisation(name),
    at least min_image_size(name); `eval_split` names eval_batches' held-out set.
    The new head trains at head_lr_multiplier x lr (fit's lr_multipliers); `init` is
    a scratch model's (transfer.initialise_scratch). `subset` (the training indices)
    is fingerprinted in the record, so runs can be checked to have seen the same
    images. All that defines the run goes into fit's `config`: no run dir mixes two.
    """
    check_image_size(name, train_batches.image_size or train_batches.images.shape[-1])
    # Fetched before anything else: the file's hash is part of the run's settings, so a
    # run trained from other weights (say the fabricated smoke stand-ins) is never
    # reused as if from the official ones.
    sha = file_sha256(fetch_weights_file(name, weights_dir)) if pretrained else None
    record = {"model": name, "label": display_name(name, pretrained), "pretrained": pretrained,
              "freeze": freeze, "optimizer": fit_options.get("optimizer", "sgd"), "lr": lr,
              "head_lr_multiplier": head_lr_multiplier, "init": None if pretrained else init,
              "epochs": epochs, "eval_split": eval_split,
              "image_size": train_batches.image_size, "train_images": train_batches.num_samples,
              "subset_digest": subset_digest(subset) if subset is not None else None,
              "weights_source": weights_source(name, weights_dir) if pretrained else "none (random init)",
              "weights_sha256": sha, "run_dir": str(run_dir)}
    run_config = {**(config or {}), **{k: record[k] for k in (
        "model", "pretrained", "freeze", "init", "image_size", "train_images", "subset_digest",
        "weights_sha256")}}

    def build():
        model = build_transfer_model(name, pretrained=pretrained, freeze=freeze,
                                     weights_dir=weights_dir)
        if not pretrained:
            initialise_scratch(model, init)
        counts = parameter_counts(model)
        log(f"--- {Path(run_dir).name}: {record['label']}, freeze={freeze}, "
            f"{record['optimizer']} lr={lr:g} (head x{head_lr_multiplier:g}), "
            f"{counts['trainable']:,}/{counts['total']:,} parameters trainable")
        return model

    model, history = train_or_reuse(
        build, train_batches, eval_batches, run_dir=run_dir, seed=seed, eval_split=eval_split,
        config=run_config, log=log, epochs=epochs, lr=lr, device=device,
        lr_multipliers=head_lr_multipliers(name, head_lr_multiplier),
        **{"keep_weights": False, **fit_options})  # Q3 reads the curves, never the weights
    counts = parameter_counts(model)
    classes = model.get_submodule(head_module(name)).out_features
    final = history["eval_accuracy"][-1] if history["eval_accuracy"] else None
    return {**record, "trainable_params": counts["trainable"], "total_params": counts["total"],
            "chance_accuracy": 1 / classes, "chance_margin": CHANCE_MARGIN,
            "near_chance": near_chance(final, classes),
            "history": history}


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


def split_pool(labels, test_labels, config: Mapping[str, Any]):
    """(pool, val_idx, test_idx): the training pool the subsets are drawn from, the
    validation split carved from the training images first, and the test images
    used (None: all). Smoke runs take small class-stratified parts of each; the
    quick profile (train_images, eval_images > 0) larger ones."""
    seed, prefix = config["seed"], "smoke_" if config["smoke"] else ""
    train_idx, val_idx = train_val_split(labels, val_fraction=config["val_fraction"], seed=seed)
    pool_size, eval_size = config[f"{prefix}train_images"], config[f"{prefix}eval_images"]
    pool = stratified_indices(labels, count=pool_size, seed=seed, pool=train_idx) if pool_size \
        else train_idx
    if not eval_size:
        return pool, val_idx, None
    val_idx = stratified_indices(labels, count=eval_size, seed=seed, pool=val_idx)
    return pool, val_idx, stratified_indices(test_labels, count=eval_size, seed=seed)


class Q3Runs:
    """Every training run of the Q3 notebook: one data pipeline, one set of fit
    options, one record per run.

    Built from the dataset and the notebook's validated config (make_config): it
    draws the class-stratified, nested subsets of each fraction, makes the
    validation and test batches, and decides where each model's weights load
    from (common.weights.resolve_weights). A run's folder is named by
    experiments.run_id over everything that decides its outcome, so a run two
    parts share (e.g. ResNet18 on all layers in (b) and (c)) is trained once and
    its record reused.
    """

    def __init__(self, ds, config: Mapping[str, Any], *, models: Iterable[str],
                 fractions: Iterable[float], log: Callable[[str], None] = print):
        self.ds, self.config, self.log = ds, dict(config), log
        self.runs_dir = Path(config["runs_dir"])
        self.pool, self.val_idx, test_idx = split_pool(ds.train_labels, ds.test_labels, config)
        self.subsets = {f: stratified_indices(ds.train_labels, fraction=f, seed=config["seed"],
                                              pool=self.pool) for f in sorted(set(fractions))}
        self.digests = {f: subset_digest(idx) for f, idx in self.subsets.items()}
        models = list(dict.fromkeys(models))
        self.mean, self.std = shared_normalisation(models)
        self.channels_last = bool(config["channels_last"]) and config["device"].startswith("cuda")
        test = (ds.test_images, ds.test_labels) if test_idx is None else (
            ds.test_images[test_idx], ds.test_labels[test_idx])
        self.eval_batches = {
            "validation": self.batches(ds.train_images[self.val_idx], ds.train_labels[self.val_idx]),
            "test": self.batches(*test)}
        self.weights_dirs = resolve_weights(models, smoke=config["smoke"], log=log,
                                            smoke_dir=Path(config["data_dir"]) / "fabricated-weights")
        self.records: dict[str, dict] = {}
        self.seconds_left: dict[str, float] = {}  # the current part's runs, from its plan

    def batches(self, images, labels, *, train: bool = False) -> DeviceBatches:
        """Device-resident batches, resized to image_size on the device (no per-image PIL)."""
        c = self.config  # held-out batches: 2x on a GPU (4x of VGG16 at 224 px is ~7 GB)
        size = c["batch_size"] if train else held_out_batch_size(c["batch_size"], c["device"], 2)
        return DeviceBatches(images, labels, batch_size=size, device=c["device"],
                             train=train, mean=self.mean, std=self.std, image_size=c["image_size"],
                             channels_last=self.channels_last, seed=c["seed"])

    def describe(self) -> str:
        lines = [f"{self.ds!r}", f"training pool {len(self.pool):,} images, validation "
                 f"{self.eval_batches['validation'].num_samples:,}, "
                 f"test {self.eval_batches['test'].num_samples:,}"]
        lines += [f"  subset {100 * f:g}% of the pool: {len(idx):,} images"
                  for f, idx in self.subsets.items()]
        return "\n".join(lines)

    def images_of(self, fraction: float) -> int:
        return len(self.subsets[fraction])

    def steps_per_epoch(self, fraction: float) -> int:
        """Optimiser steps in one epoch on the subset of `fraction` (the last batch may be short)."""
        return math.ceil(self.images_of(fraction) / self.config["batch_size"])

    @property
    def fit_options(self) -> dict[str, Any]:
        """The fit options every run shares."""
        c = self.config
        return dict(momentum=c["momentum"], schedule=c["schedule"], amp=c["amp"],
                    channels_last=self.channels_last)

    def recipe(self, pretrained: bool) -> dict[str, Any]:
        """What differs between fine-tuning and training from scratch (the lr aside,
        which choose_lrs picks for each setting from the recipe's own candidates)."""
        c = self.config
        if pretrained:
            # The new head starts from random weights under features that are already
            # good: a larger step lets it catch up while the pretrained layers move little.
            return dict(optimizer=c["optimizer"], weight_decay=c["weight_decay"],
                        head_lr_multiplier=c["head_lr_multiplier"], init="torchvision")
        # From scratch every layer is random: there is no pretrained backbone for the
        # head to outpace, so one lr for all layers (factor 1).
        return dict(optimizer=c["scratch_optimizer"], weight_decay=c["scratch_weight_decay"],
                    head_lr_multiplier=1, init=c["scratch_init"])

    def candidates(self, pretrained: bool) -> list[float]:
        """The learning rates tried for a pretrained or a from-scratch setting."""
        return list(self.config["lr_candidates" if pretrained else "scratch_lr_candidates"])

    def name(self, model: str, *, pretrained: bool, freeze: str, fraction: float, epochs: int,
             lr: float, evaluate_on: str = "test") -> str:
        """The run's folder name: readable settings, then the digest of all of them."""
        c = self.config
        label = (f"{'select_' if evaluate_on == 'validation' else ''}{model}_"
                 f"{'pretrained' if pretrained else 'scratch'}_{freeze.replace(':', '-')}"
                 f"_f{fraction:g}_lr{lr:g}")
        return run_id(label, {
            "model": model, "pretrained": pretrained, "freeze": freeze, "fraction": fraction,
            "subset_digest": self.digests[fraction], "epochs": epochs, "lr": lr,
            "evaluated_on": evaluate_on, "eval_images": self.eval_batches[evaluate_on].num_samples,
            "image_size": c["image_size"], "batch_size": c["batch_size"], "seed": c["seed"],
            "smoke": c["smoke"], **self.fit_options, **self.recipe(pretrained)})

    def planned(self, model: str, *, fraction: float, epochs: int, evaluate_on: str = "test",
                **settings) -> dict:
        """A row for common.plan.plan: the training ahead, printed before it starts."""
        return {"name": self.name(model, fraction=fraction, epochs=epochs,
                                  evaluate_on=evaluate_on, **settings),
                "model": model, "input_size": self.config["image_size"], "epochs": epochs,
                "train_images": self.images_of(fraction),
                "test_images": self.eval_batches[evaluate_on].num_samples,
                "batch_size": self.config["batch_size"], "keep_weights": False}

    def train(self, model: str, *, pretrained: bool, freeze: str, fraction: float, epochs: int,
              lr: float, evaluate_on: str = "test") -> dict:
        """Train (or reuse) one run on the subset of `fraction`, evaluated each epoch
        on `evaluate_on` ('test' or 'validation'); returns its record."""
        c = self.config
        name = self.name(model, pretrained=pretrained, freeze=freeze, fraction=fraction,
                         epochs=epochs, lr=lr, evaluate_on=evaluate_on)
        if name not in self.records:
            if self.seconds_left.get(name):  # a run to train, not one to reuse
                self.log(time_left(self.seconds_left, name, "this part"))
            idx = self.subsets[fraction]
            self.records[name] = train_transfer(
                model, pretrained=pretrained, freeze=freeze,
                train_batches=self.batches(self.ds.train_images[idx], self.ds.train_labels[idx],
                                           train=True),
                eval_batches=self.eval_batches[evaluate_on], eval_split=evaluate_on,
                run_dir=self.runs_dir / name, epochs=epochs, lr=lr, device=c["device"],
                seed=c["seed"], weights_dir=self.weights_dirs.get(model) if pretrained else None,
                subset=idx, config={"evaluated_on": evaluate_on, "fraction": fraction,
                                    "smoke": c["smoke"]},
                log=self.log, force=c["force"], **self.fit_options, **self.recipe(pretrained))
        return {**self.records[name], "fraction": fraction}

    def _plan(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Print the plan of `rows`, timed on the device; keep each run's time left."""
        totals = plan(rows, runs_dir=self.runs_dir, device=self.config["device"], log=self.log)
        self.seconds_left = totals.get("run_seconds_left", {})

    def train_all(self, runs: Sequence[Mapping[str, Any]], *, part: str) -> list[dict]:
        """Print the plan of `runs` (each the keyword arguments of `train`), then
        train them in order; each record is tagged with its `part`. A run that ends
        near chance is announced at once (warn_near_chance)."""
        self._plan([self.planned(**run) for run in runs])
        records = [{**self.train(**run), "part": part} for run in runs]
        self.warn_near_chance(records)
        return records

    def warn_near_chance(self, records: Iterable[Mapping]) -> list[dict]:
        """Log a loud line for every run that ended near chance; return those runs."""
        flagged = [r for r in records if r["near_chance"]]
        for r in flagged:
            final = (r["history"]["eval_accuracy"] or [float("nan")])[-1]
            self.log(f"WARNING: NEAR CHANCE: {Path(r['run_dir']).name} ended at {100 * final:.1f}% "
                     f"{r['eval_split']} accuracy, below chance ({100 * r['chance_accuracy']:g}%) "
                     f"+ {100 * CHANCE_MARGIN:g} points: flagged, and never compared.")
        return flagged

    def choose_lrs(self, settings: Iterable[tuple[str, bool, str]], *, fraction: float,
                   epochs: int) -> tuple[dict, list[dict]]:
        """One learning rate per (model, pretrained, freeze) setting, chosen on the
        validation split by choose_lr from a trial of each of the recipe's candidates.
        Returns ({setting: lr}, one row per setting for the table and summary.json)."""
        trials = {s: [dict(model=s[0], pretrained=s[1], freeze=s[2], fraction=fraction,
                           epochs=epochs, lr=lr, evaluate_on="validation")
                      for lr in self.candidates(s[1])] for s in dict.fromkeys(settings)}
        self._plan([self.planned(**t) for ts in trials.values() for t in ts])
        chosen, selection = {}, []
        for (model, pretrained, freeze), ts in trials.items():
            records = [self.train(**t) for t in ts]
            lr, rows = choose_lr(records)
            chosen[model, pretrained, freeze] = lr
            selection.append({"model": model, "pretrained": pretrained, "freeze": freeze,
                              "optimizer": records[0]["optimizer"], "chosen_lr": lr,
                              "steps": epochs * self.steps_per_epoch(fraction),
                              "all_near_chance": all(r["near_chance"] for r in records),
                              "candidates": rows})
            if selection[-1]["all_near_chance"]:
                self.log(f"WARNING: NEAR CHANCE: every lr trial of {display_name(model, pretrained)}, "
                         f"freeze={freeze} ended near chance; the choice among them means nothing.")
        return chosen, selection

    def weights_sources(self) -> dict[str, str]:
        """Each model's weights: 'official', 'unofficial' or 'missing'."""
        return {m: weights_source(m, d) for m, d in self.weights_dirs.items()}

    @staticmethod
    def summary(records: Iterable[Mapping]) -> list[dict]:
        """The records as summary.json keeps them."""
        return [{k: r.get(k) for k in SUMMARY_KEYS} for r in records]

    @staticmethod
    def near_chance_runs(records: Iterable[Mapping]) -> list[dict]:
        """The runs that ended near chance, for summary.json's top-level list."""
        keys = ("part", "label", "freeze", "fraction", "lr", "run_dir")
        return [{**{k: r.get(k) for k in keys}, "final_accuracy": (
            r["history"]["eval_accuracy"] or [None])[-1]} for r in records if r["near_chance"]]
