"""Experiments: runs described once, trained or reused, and chosen on validation.

Choosing on validation has one rule in this bundle, `rank_on_validation`: the
highest score first; equal scores keep the order in which the candidates were
listed (so list the default or simplest candidate first); a candidate without a
score (NaN or None: it stopped before finishing) is never chosen.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch.nn as nn

from .config import seed_everything
from .files import settings_digest
from .models import build_model, count_parameters
from .plan import format_seconds, plan, time_left
from .stats import binomial, noise
from .train import evaluate, fit

__all__ = ["rank_on_validation", "select_best", "choose_methods", "run_id", "train_or_reuse",
           "Experiment", "evaluated_variant"]


def choose_methods(baseline: Mapping[str, Any], candidates: Mapping[str, Mapping[str, Any]], *,
                   k: int = 2, held_out_images: int | None = None) -> dict[str, Any]:
    """Pick the `k` candidates with the largest gain in final validation accuracy
    over the baseline, by `rank_on_validation`'s rule, and say which are effective. All
    histories must be evaluated on the validation split: nothing here sees the test set.
    A candidate that stopped early is not eligible (its accuracy is from an unfinished
    run). A candidate evaluated on the baseline's own run (test-time augmentation, say)
    gives a history of its final evaluation only.

    Effective: a chosen candidate whose gain is positive and beyond two standard errors
    of the difference at `held_out_images` validation images (common.stats.noise). The
    `k` best are chosen whatever their gains, as the assignment asks for k methods;
    only the effective ones may be called improvements. Without `held_out_images`
    nothing is judged effective.

    Returns {"baseline_val_accuracy", "candidates": [{"method", "val_accuracy", "gain",
    "two_se", "beyond_noise", "stopped", "eligible"}], "chosen": [k names at most, largest
    gain first], "effective": [chosen names that meet the rule], "k", "held_out_images"}."""
    def final(history):
        return history["eval_accuracy"][-1] if history["eval_accuracy"] else None

    base = final(baseline)
    if base is None or baseline.get("stopped"):
        raise ValueError("choose_methods: the baseline run stopped early, so there is nothing to "
                         f"measure gains against ({baseline.get('stopped')}); fix the baseline "
                         "recipe first")
    rows = []
    for method, history in candidates.items():
        val, stopped = final(history), history.get("stopped")
        beyond, two_se = (noise(val - base, binomial(val, held_out_images),
                                binomial(base, held_out_images))
                          if held_out_images and val is not None else (None, None))
        rows.append({"method": method, "val_accuracy": val,
                     "gain": None if val is None else val - base, "two_se": two_se,
                     "beyond_noise": beyond, "stopped": stopped,
                     "eligible": not stopped and val is not None})
    ranked = [rows[i] for i in rank_on_validation([r["gain"] if r["eligible"] else None
                                                    for r in rows])][:k]
    return {"baseline_val_accuracy": base, "candidates": rows,
            "chosen": [r["method"] for r in ranked],
            "effective": [r["method"] for r in ranked if r["gain"] > 0 and r["beyond_noise"]],
            "k": k, "held_out_images": held_out_images}


def run_id(label: str, settings: Mapping[str, Any]) -> str:
    """A run's folder name: a readable label plus the digest of every setting that
    decides its outcome. Equal settings share one run, trained once and reused;
    runs that differ in anything never share a folder."""
    return f"{label}_{settings_digest(settings)}"


def _usable(score: Optional[float]) -> bool:
    return score is not None and not (isinstance(score, float) and math.isnan(score))


def rank_on_validation(val_scores: Sequence[Optional[float]]) -> list[int]:
    """Indices of the candidates with a score, best first (see the module's rule)."""
    scores = list(val_scores)
    if not scores:
        raise ValueError("rank_on_validation needs at least one candidate's validation score")
    usable = [i for i, s in enumerate(scores) if _usable(s)]
    return sorted(usable, key=lambda i: -float(scores[i]))  # sorted() is stable: ties keep order


def select_best(val_scores: Sequence[Optional[float]]) -> int:
    """Index of the best validation score, by `rank_on_validation`'s rule. Takes
    validation scores only, so nothing else can influence the choice."""
    ranked = rank_on_validation(val_scores)
    if not ranked:
        raise ValueError("select_best: every candidate lacks a validation score (all stopped early)")
    return ranked[0]


def train_or_reuse(build: Callable[[], nn.Module], train_batches, eval_batches, *,
                   run_dir: str | os.PathLike, seed: int, eval_split: str,
                   config: Mapping[str, Any] | None = None, log: Callable[[str], None] = print,
                   **fit_options) -> tuple[nn.Module, dict]:
    """Seed, build the model, and `fit` it in `run_dir` (resuming an unfinished run,
    reusing a finished one); returns (model, history). Seeding right before `build`
    gives every run of a network the same initial weights, so runs that differ in
    one setting differ only in it."""
    seed_everything(seed)
    model = build()
    history = fit(model, train_batches, eval_batches, run_dir=Path(run_dir), eval_split=eval_split,
                  config={**(config or {}), "seed": seed}, log=log, **fit_options)
    return model, history


class Experiment:
    """The training runs of one notebook, each trained once (or reused) and recorded:
    the one runner of Q2 and Q3.

    A run is a spec: a dict with "name" (its folder under `runs_dir`), "model" (a
    common.models name), "data" (a key of `data`: which (train, held-out) batches it
    uses) and "fit" (its fit options; `fit_defaults` fills the rest). Optional keys:
    "config" (more of what defines the run, compared on every re-run, e.g. the hash of
    the weights it starts from), "input_size" (for the plan; 32 by default) and the
    plan's sizes "train_images", "eval_images", "batch_size" (else read off the batches).
    Anything else in the spec (part, label, optimiser, ...) is copied into the run's
    record.

    data: {key: (train_batches, eval_batches, eval_split)}; any mapping, so Q3's
        subsets can be batched on demand.
    build(spec): the spec's freshly initialised model (default: common.models by name).
    keep_models=False: records only; no trained model is kept in memory (Q3 reads
        only the curves, and its ImageNet models are large).
    annotate(record): what a question adds to each record (Q3: the near-chance flag).
    """

    def __init__(self, runs_dir: str | os.PathLike, data: Mapping[str, tuple], *, seed: int,
                 device, fit_defaults: Mapping[str, Any], config: Mapping[str, Any] | None = None,
                 force: bool = False, build: Callable[[Mapping[str, Any]], nn.Module] | None = None,
                 keep_models: bool = True, annotate: Callable[[dict], dict] | None = None):
        self.runs_dir, self.data, self.seed, self.device = Path(runs_dir), data, seed, device
        self.fit_defaults, self.config, self.force = dict(fit_defaults), dict(config or {}), force
        self.build = build or (lambda spec: build_model(spec["model"]))
        self.keep_models, self.annotate = keep_models, annotate
        self.records: dict[str, dict] = {}  # run name -> record, in training order
        self.models: dict[str, nn.Module] = {}  # run name -> trained model, kept on the CPU
        self.test_evaluations: list[str] = []  # run names evaluated on the test set, in order
        self.run_seconds_left: dict[str, float] = {}  # from plan(): each run's measured time left
        self.run_epoch_seconds: dict[str, float] = {}  # from plan(): each run's planned epoch

    def plan(self, specs: Sequence[Mapping[str, Any]], log: Callable[[str], None] = print) -> dict:
        """Print the plan of `specs` (common.plan.plan), timed on the device; each run
        then starts with the time left."""
        once = {s["name"]: s for s in specs}.values()  # a run two parts share trains once
        totals = plan([self.planned(s) for s in once], runs_dir=self.runs_dir,
                      device=self.device, log=log)
        self.run_seconds_left = totals.get("run_seconds_left", {})
        self.run_epoch_seconds = totals.get("run_epoch_seconds", {})
        return totals

    def train_all(self, specs: Sequence[Mapping[str, Any]],
                  log: Callable[[str], None] = print) -> list[dict]:
        """Print the plan of `specs`, then train (or reuse) each; their records, in order."""
        self.plan(specs, log=log)
        return [self.train(s, log=log) for s in specs]

    def train(self, spec: Mapping[str, Any], log: Callable[[str], None] = print) -> dict:
        """Fit the run (or reuse it when finished) and return its record. A run met
        again in the same session is returned from memory, never retrained."""
        if spec["name"] in self.records:
            return {**self.records[spec["name"]], **_labels(spec)}
        train_batches, eval_batches, split = self.data[spec["data"]]
        options = {**self.fit_defaults, **spec["fit"]}
        log(f"--- {spec['name']}: {spec['model']}, {options.get('optimizer', 'sgd')} lr "
            f"{options['lr']:g}, {train_batches.num_samples:,} training images, "
            f"evaluated on the {split} split" + (
                f" ({time_left(self.run_seconds_left, spec['name'])})"
                if self.run_seconds_left.get(spec["name"]) else ""))
        config = {**self.config, "model": spec["model"], "train_images": train_batches.num_samples,
                  **spec.get("config", {})}
        model, history = train_or_reuse(
            lambda: self.build(spec), train_batches, eval_batches,
            run_dir=self.runs_dir / spec["name"], seed=self.seed, eval_split=split,
            device=self.device, force=self.force, config=config, log=log,
            on_epoch_end=self._plan_check(spec["name"], log), **options)
        if self.keep_models:
            self.models[spec["name"]] = model.cpu()
        record = {k: v for k, v in spec.items() if k not in ("fit", "data", "config")}
        record = {**record, "params": count_parameters(model),
                  "trainable_params": count_parameters(model, trainable_only=True),
                  "settings": spec["fit"], "eval_split": split,
                  "train_images": train_batches.num_samples,
                  "run_dir": str(self.runs_dir / spec["name"]), "history": history}
        self.records[spec["name"]] = self.annotate(record) if self.annotate else record
        return self.records[spec["name"]]

    def _plan_check(self, name: str, log: Callable[[str], None]):
        """fit's on_epoch_end: after the first epoch trained in this session, compare its
        time with the plan's, and say so when it is far off (a factor of 2 either way): the
        time left printed before training was then wrong by as much."""
        planned, seen = self.run_epoch_seconds.get(name), []

        def check(epoch: int, history: Mapping[str, Any]) -> None:
            if seen or not planned:
                return
            seen.append(epoch)
            took = history["seconds"][-1]
            if not 0.5 <= took / planned <= 2:
                log(f"plan check: epoch {epoch} took {format_seconds(took)}, the plan said "
                    f"{format_seconds(planned)} ({took / planned:.1f}x): the times left printed "
                    "above are off by about as much (a busy machine, or another device than "
                    "the one measured)")
        return check

    def planned(self, spec: Mapping[str, Any]) -> dict:
        """The spec as a row of common.plan.plan. Sizes come from the spec where it
        gives them ("train_images", "eval_images", "batch_size"), else from its batches."""
        options = {**self.fit_defaults, **spec["fit"]}
        if "train_images" in spec:
            sizes = (spec["train_images"], spec["eval_images"], spec["batch_size"])
        else:
            train_batches, eval_batches, _ = self.data[spec["data"]]
            sizes = (train_batches.num_samples, eval_batches.num_samples, train_batches.batch_size)
        return {"name": spec["name"], "model": spec["model"],
                "input_size": spec.get("input_size", 32), "epochs": options["epochs"],
                "train_images": sizes[0], "test_images": sizes[1], "batch_size": sizes[2],
                "keep_weights": options.get("keep_weights", True)}

    def evaluate(self, name: str, batches, *, predictions: bool = False,
                 wrap: Callable[[nn.Module], nn.Module] | None = None, **options) -> dict:
        """Evaluate a trained run's model (moved to the device and back); `wrap` puts it
        inside another module first (test-time augmentation: models.FlipTTA)."""
        model = self.models[name].to(self.device)
        try:
            return evaluate(wrap(model) if wrap else model, batches, self.device,
                            predictions=predictions, **options)
        finally:
            self.models[name] = model.cpu()

    def test_accuracy_once(self, name: str, test_batches, *, variant: str | None = None,
                           **options) -> float:
        """The test accuracy of a run chosen on validation. Each run (and each `variant`
        of its evaluation, such as test-time augmentation) may be evaluated on the test
        set once: a second call is an error, so nothing can be chosen by looking at it."""
        key = name + (f"+{variant}" if variant else "")
        if key in self.test_evaluations:
            raise RuntimeError(f"{key} was already evaluated on the test set")
        self.test_evaluations.append(key)
        return self.evaluate(name, test_batches, **options)["accuracy"]


def evaluated_variant(record: Mapping[str, Any], variant: str, result: Mapping[str, Any]) -> dict:
    """The record of an evaluation of a trained run (test-time augmentation, say): the
    run's record with a history of that one final evaluation (`result`: evaluate's). It
    is not a run: no folder of its own, and no "seconds" (config.training_seconds counts
    the training time of runs, and this one trained nothing)."""
    h = record["history"]
    last = {k: h[k][-1:] for k in ("epoch", "train_loss", "train_accuracy", "lr")}
    history = {**last, "eval_loss": [result["loss"]], "eval_accuracy": [result["accuracy"]],
               "eval_split": h.get("eval_split"), "stopped": None}
    return {**record, "method": variant, "run_dir": None, "evaluated_on_run": record["name"],
            "history": history}


def _labels(spec: Mapping[str, Any]) -> dict:
    """What a spec says of its place in the notebook (its part, say): a run two parts
    share is trained once, and each part's record carries its own labels."""
    return {k: spec[k] for k in ("part",) if k in spec}
