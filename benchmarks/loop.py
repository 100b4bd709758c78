"""The training loop's own overhead: `common.train.fit` against a minimal
hand-written loop over the same batches and the same model.

Both train the same network from the same weights with the same recipe
(optimiser, schedule, label smoothing) and then run the model over the same
held-out batches. `fit` also does what makes it worth having: metrics on the
device, a checkpoint (model, optimiser, RNG states; written and fsync'ed) and
history.json after every epoch, and one log line. The minimal loop does none of
it. The difference is the price of that bookkeeping.
"""
from __future__ import annotations

import copy
import inspect
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from benchmarks.timing import median, spread

RECIPE_KEYS = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule",
               "schedule_options", "label_smoothing")


def full_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """`recipe` with fit's own defaults filled in, so the minimal loop uses exactly
    what fit would (fit's weight decay, for one, differs from the optimisers')."""
    from common.train import fit

    unknown = sorted(set(recipe) - set(RECIPE_KEYS))
    if unknown:
        raise ValueError(f"recipe keys {unknown} are not training settings; use {RECIPE_KEYS}")
    defaults = {k: p.default for k, p in inspect.signature(fit).parameters.items()
                if k in RECIPE_KEYS and p.default is not inspect.Parameter.empty}
    return {**defaults, **recipe}


class MinimalLoop:
    """The smallest honest training loop for a recipe: forward, loss, backward,
    step (and the schedule), then a bare forward pass over the held-out batches."""

    def __init__(self, model: nn.Module, recipe: Mapping[str, Any], *, epochs: int,
                 steps_per_epoch: int):
        from common.train import make_optimizer, make_scheduler

        r = full_recipe(recipe)
        self.model = model
        self.optimizer = make_optimizer(r["optimizer"], model.parameters(), lr=r["lr"],
                                        momentum=r["momentum"], nesterov=r["nesterov"],
                                        weight_decay=r["weight_decay"])
        self.scheduler, self.per_batch = make_scheduler(
            r["schedule"], self.optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch,
            options=r["schedule_options"])
        self.criterion = nn.CrossEntropyLoss(label_smoothing=r["label_smoothing"])

    def epoch(self, train_batches, eval_batches, epoch: int) -> None:
        train_batches.set_epoch(epoch)
        self.model.train()
        for x, y in train_batches:
            loss = self.criterion(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.per_batch:
                self.scheduler.step()
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()
        self.model.eval()
        with torch.no_grad():
            for x, _ in eval_batches:
                self.model(x)


def compare_fit_overhead(train_images, train_labels, eval_images, eval_labels, *, mean, std,
                         run_dir, recipe: Mapping[str, Any], epochs: int, repeats: int | None = None,
                         batch_size: int = 128, model_name: str = "alexnet",
                         seed: int = 0) -> tuple[dict, nn.Module, dict]:
    """Seconds per epoch of fit and of the minimal loop, interleaved epoch by epoch.

    fit trains for `epochs` epochs; after each of its first repeats + 1 epochs its
    on_epoch_end callback runs one epoch of the minimal loop, so the two alternate
    (fit, minimal, fit, ...) and a burst of load on the machine hits both. fit's
    epoch is the time between two callbacks, so it includes its checkpoint,
    history and log. The first epoch of each is warm-up and not counted; `repeats`
    (default epochs - 1) epochs of each are.

    Returns (figures, the model fit trained, fit's history): the run doubles as a
    training run whose result can be used (benchmarks/quality.py)."""
    from common.batches import DeviceBatches
    from common.models import build_model
    from common.checkpoints import RunDir
    from common.config import seed_everything
    from common.train import fit

    repeats = epochs - 1 if repeats is None else repeats
    if not 1 <= repeats < epochs:
        raise ValueError(f"repeats={repeats}, epochs={epochs}: need 1 <= repeats < epochs "
                         "(the first epoch is warm-up)")
    seed_everything(seed)
    model_fit = build_model(model_name)
    model_min = copy.deepcopy(model_fit)  # the same initial weights

    def batches(images, labels, train):
        return DeviceBatches(images, labels, batch_size=batch_size, device="cpu", train=train,
                             mean=mean, std=std, seed=seed)

    train_fit, train_min = batches(train_images, train_labels, True), batches(train_images, train_labels, True)
    eval_batches = batches(eval_images, eval_labels, False)
    minimal = MinimalLoop(model_min, recipe, epochs=epochs, steps_per_epoch=len(train_min))
    marks: list[tuple[float, float]] = []

    def run_minimal(epoch: int, history: dict) -> None:
        if epoch > repeats + 1:
            return  # enough repetitions; fit finishes its run alone
        started = time.perf_counter()
        minimal.epoch(train_min, eval_batches, epoch - 1)
        marks.append((started, time.perf_counter()))

    run_dir = Path(run_dir)
    writes: list[float] = []  # seconds of each resumable checkpoint write, in this run
    save, resumable_mb = RunDir.save, []

    def timed_save(self, state):
        started = time.perf_counter()
        save(self, state)
        writes.append(time.perf_counter() - started)
        resumable_mb.append((self.path / "last.pt").stat().st_size / 1e6)

    RunDir.save = timed_save
    try:
        history = fit(model_fit, train_fit, eval_batches, run_dir=run_dir, epochs=epochs,
                      device="cpu", force=True, log=lambda line: None, on_epoch_end=run_minimal,
                      config={"benchmark": "fit overhead", "model": model_name}, **recipe)
        final_mb = (run_dir / "last.pt").stat().st_size / 1e6
    finally:
        RunDir.save = save
        shutil.rmtree(run_dir, ignore_errors=True)  # ~200 MB of checkpoints per run
    if history["stopped"]:
        raise RuntimeError(f"the fit-overhead run stopped: {history['stopped']}")
    fit_seconds = [marks[i][0] - marks[i - 1][1] for i in range(1, len(marks))]
    minimal_seconds = [end - start for start, end in marks[1:]]
    fit_s, minimal_s = median(fit_seconds), median(minimal_seconds)
    # The overhead is the median of the ratios of paired epochs (fit epoch k and the
    # minimal epoch right after it): a burst of load lasting a minute or so slows
    # one pair, not the estimate, as it would a ratio of two separate medians.
    ratios = [f / m for f, m in zip(fit_seconds, minimal_seconds)]
    figures = {"model": model_name, "recipe": full_recipe(recipe), "train_images": len(train_labels),
               "eval_images": len(eval_labels), "batch_size": batch_size, "epochs": epochs,
               "repeats": len(fit_seconds), "checkpoint_mb": resumable_mb[-1],
               "final_checkpoint_mb": final_mb,
               "fit_seconds_per_epoch": fit_s, "minimal_seconds_per_epoch": minimal_s,
               "overhead": median(ratios) - 1, "paired_ratios": ratios, "fit_seconds": fit_seconds,
               "minimal_seconds": minimal_seconds, "fit_spread_s": spread(fit_seconds),
               "minimal_spread_s": spread(minimal_seconds), **checkpoint_share(writes, history)}
    return figures, model_fit, history


def checkpoint_share(writes: list[float], history: dict) -> dict:
    """Checkpoint writes as a share of a run's time: as fit spaces them (the writes it
    made) and as a write after every epoch would cost (plus the same epoch-0 write,
    at the run's median write), from the same run's writes and epochs."""
    trained = sum(history["seconds"])
    every = (len(history["seconds"]) + 1) * median(writes)
    return {"checkpoint_writes": len(writes), "checkpoint_write_seconds": writes,
            "checkpoint_share_spaced": sum(writes) / (trained + sum(writes)),
            "checkpoint_share_every_epoch": every / (trained + every)}
