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
from .plan import plan, time_left
from .train import evaluate, fit

__all__ = ["rank_on_validation", "select_best", "choose_methods", "run_id", "train_or_reuse",
           "Experiment"]


def choose_methods(baseline: Mapping[str, Any], candidates: Mapping[str, Mapping[str, Any]], *,
                   k: int = 2) -> dict[str, Any]:
    """Pick the `k` candidates with the largest gain in final validation accuracy
    over the baseline, by `rank_on_validation`'s rule. All histories must be
    evaluated on the validation split: nothing here sees the test set. A candidate
    that stopped early is not eligible (its accuracy is from an unfinished run).

    Returns {"baseline_val_accuracy", "candidates": [{"method", "val_accuracy",
    "gain", "stopped", "eligible"}], "chosen": [k names at most, largest gain first],
    "effective": [chosen names whose gain is positive], "k"}."""
    def final(history):
        return history["eval_accuracy"][-1] if history["epoch"] else None

    base = final(baseline)
    if base is None or baseline.get("stopped"):
        raise ValueError("choose_methods: the baseline run stopped early, so there is nothing to "
                         f"measure gains against ({baseline.get('stopped')}); fix the baseline "
                         "recipe first")
    rows = []
    for method, history in candidates.items():
        val, stopped = final(history), history.get("stopped")
        rows.append({"method": method, "val_accuracy": val,
                     "gain": None if val is None else val - base, "stopped": stopped,
                     "eligible": not stopped and val is not None})
    ranked = [rows[i] for i in rank_on_validation([r["gain"] if r["eligible"] else None
                                                    for r in rows])][:k]
    return {"baseline_val_accuracy": base, "candidates": rows,
            "chosen": [r["method"] for r in ranked],
            "effective": [r["method"] for r in ranked if r["gain"] > 0], "k": k}


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
    """The training runs of one notebook, each trained once (or reused) and recorded.

    A run is a spec: a dict with "name" (its folder under `runs_dir`), "model" (a
    common.models name), "data" (a key of `data`: which (train, held-out) batches it
    uses) and "fit" (its fit options; `fit_defaults` fills the rest). Anything else
    in the spec (part, label, optimiser, ...) is copied into the run's record.

    data: {key: (train_batches, eval_batches, eval_split)}.
    """

    def __init__(self, runs_dir: str | os.PathLike, data: Mapping[str, tuple], *, seed: int,
                 device, fit_defaults: Mapping[str, Any], config: Mapping[str, Any] | None = None,
                 force: bool = False, build: Callable[[str], nn.Module] = build_model):
        self.runs_dir, self.data, self.seed, self.device = Path(runs_dir), data, seed, device
        self.fit_defaults, self.config, self.force, self.build = dict(fit_defaults), \
            dict(config or {}), force, build
        self.records: dict[str, dict] = {}  # run name -> record, in training order
        self.models: dict[str, nn.Module] = {}  # run name -> trained model, kept on the CPU
        self.test_evaluations: list[str] = []  # run names evaluated on the test set, in order
        self.run_seconds_left: dict[str, float] = {}  # from plan(): each run's measured time left

    def plan(self, specs: Sequence[Mapping[str, Any]], log: Callable[[str], None] = print) -> dict:
        """Print the plan of `specs` (common.plan.plan), timed on the device; each run
        then starts with the notebook's time left."""
        totals = plan([self.planned(s) for s in specs], runs_dir=self.runs_dir,
                      device=self.device, log=log)
        self.run_seconds_left = totals.get("run_seconds_left", {})
        return totals

    def train(self, spec: Mapping[str, Any], log: Callable[[str], None] = print) -> dict:
        """Fit the run (or reuse it when finished) and return its record. A run met
        again in the same session is returned from memory, never retrained."""
        if spec["name"] in self.records:
            return self.records[spec["name"]]
        train_batches, eval_batches, split = self.data[spec["data"]]
        options = {**self.fit_defaults, **spec["fit"]}
        log(f"--- {spec['name']}: {spec['model']}, {options.get('optimizer', 'sgd')} lr "
            f"{options['lr']:g}, {train_batches.num_samples:,} training images, "
            f"evaluated on the {split} split" + (
                f" ({time_left(self.run_seconds_left, spec['name'])})"
                if self.run_seconds_left.get(spec["name"]) else ""))
        config = {**self.config, "model": spec["model"], "train_images": train_batches.num_samples}
        model, history = train_or_reuse(
            lambda: self.build(spec["model"]), train_batches, eval_batches,
            run_dir=self.runs_dir / spec["name"], seed=self.seed, eval_split=split,
            device=self.device, force=self.force, config=config, log=log, **options)
        self.models[spec["name"]] = model.cpu()
        record = {k: v for k, v in spec.items() if k not in ("fit", "data")}
        self.records[spec["name"]] = {
            **record, "params": count_parameters(model), "settings": spec["fit"],
            "train_images": train_batches.num_samples, "run_dir": str(self.runs_dir / spec["name"]),
            "history": history}
        return self.records[spec["name"]]

    def planned(self, spec: Mapping[str, Any], input_size: int = 32) -> dict:
        """The spec as a row of common.plan.plan."""
        train_batches, eval_batches, _ = self.data[spec["data"]]
        return {"name": spec["name"], "model": spec["model"], "input_size": input_size,
                "epochs": {**self.fit_defaults, **spec["fit"]}["epochs"],
                "train_images": train_batches.num_samples, "test_images": eval_batches.num_samples,
                "batch_size": train_batches.batch_size}

    def evaluate(self, name: str, batches, *, predictions: bool = False, **options) -> dict:
        """Evaluate a trained run's model (moved to the device and back)."""
        model = self.models[name].to(self.device)
        try:
            return evaluate(model, batches, self.device, predictions=predictions, **options)
        finally:
            self.models[name] = model.cpu()

    def test_accuracy_once(self, name: str, test_batches, **options) -> float:
        """The test accuracy of a run chosen on validation. Each run may be evaluated
        on the test set once: a second call is an error, so nothing can be chosen
        by looking at the test set."""
        if name in self.test_evaluations:
            raise RuntimeError(f"{name} was already evaluated on the test set")
        self.test_evaluations.append(name)
        return self.evaluate(name, test_batches, **options)["accuracy"]
