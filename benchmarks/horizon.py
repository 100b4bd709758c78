"""The horizon sweep (`make bench`, section "horizon"): how the best peak learning rate
of Q2's SGD recipe moves as the run grows longer.

A step size chosen on a short run is biased towards small steps (Wu, Ren, Liao and
Grosse, "Understanding Short-Horizon Bias in Stochastic Meta-Optimization", ICLR
2018): early on, a small step lowers the loss fastest, while a large one pays off
only later, through the exploration it buys and the annealing that follows. The
full run is 40 epochs (15,600 steps at batch 128), which no CPU here can train, so
this section measures the trend on the longest horizons that fit and the
notebook's defaults extrapolate it together with published 30+ epoch results.

Every run is the notebook's own SGD recipe (common.recipes.q2_specs under the full
profile: Nesterov momentum, L2 weight decay, linear warm-up then cosine to 0), with
only the peak lr changed and the warm-up kept at the full run's share of the steps
(1 of 40 epochs). The network is Q2(b)'s CIFAR AlexNet (BatchNorm), the cheapest
of Q2's nets. It trains on the training split minus a class-stratified
validation split and is scored on that validation split: the test set plays no
part in choosing a rate. One seed per cell: differences under two standard errors
(printed) are ties.

The section starts with VGG16's first epochs of the full 40-epoch recipe at the
notebook's full peak rate: does the warm-up keep it stable there?

Each finished cell is kept in `run_root/results.json` under its settings, so an
interrupted sweep resumes where it stopped and a finished one is not trained twice.
"""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "Q2" / "Q2.ipynb"

# (training images, epochs): 628 and 158 optimiser steps at batch 128, the longest
# first: on a busy machine it is the one that matters most.
HORIZONS: tuple[tuple[int, int], ...] = ((20_000, 4), (10_000, 2))
RATES: tuple[float, ...] = (0.01, 0.03, 0.1)
VAL_IMAGES = 5_000
FULL_EPOCHS = 40  # the full run's warm-up is 1 of these epochs
# VGG16's warm-up on 20,000 images: 157 warm-up steps, shorter than the full run's 352,
# so a run that stays stable here is stable there too.
WARMUP_CHECK = {"model": "vgg16", "epochs_shown": 2, "train_images": 20_000}


class _Enough(Exception):
    """Raised from fit's epoch callback to end a run whose first epochs are all we need."""


def full_recipe() -> tuple[dict, dict]:
    """(config, fit options) of Q2(b)'s AlexNet SGD run under the notebook's defaults
    (the full profile): the recipe this section varies."""
    from common.recipes import MODEL_B, check_q2_config, q2_specs
    from common.tools.run import notebook_defaults

    config = {**notebook_defaults(NOTEBOOK, None), "model_b": MODEL_B}
    check_q2_config(config)
    spec = next(s for s in q2_specs(config)["b"] if s["optimizer"] == "sgd")
    return config, dict(spec["fit"])


def _cached(run_root: Path, key: str, options: Mapping, val_images: int) -> dict | None:
    """A cell measured earlier with the same recipe and validation size, or None."""
    from common.files import read_json, settings_digest

    path = run_root / "results.json"
    kept = read_json(path) if path.exists() else {}
    return kept.get(f"{key}_{settings_digest({**options, 'val': val_images})}")


def _keep(run_root: Path, key: str, options: Mapping, val_images: int, result: dict) -> None:
    from common.files import read_json, settings_digest, write_json

    path = run_root / "results.json"
    kept = read_json(path) if path.exists() else {}
    kept[f"{key}_{settings_digest({**options, 'val': val_images})}"] = result
    run_root.mkdir(parents=True, exist_ok=True)
    write_json(path, kept)


def _two_se(p: float, n: int) -> float:
    """Two standard errors of the difference of two accuracies near p on n images each."""
    return 2 * math.sqrt(2 * p * (1 - p) / n)


def sweep(ds, *, horizons: Sequence[tuple[int, int]] = HORIZONS, rates: Sequence[float] = RATES,
          model: str = "alexnet", val_images: int = VAL_IMAGES, run_root: Path, seed: int = 0,
          log=print) -> dict:
    """Train `model` at every (horizon, rate) and score it on the validation split.
    Returns {"runs": [...], "best": {horizon label: rate}, "recipe": ..., ...}."""
    from common.batches import DeviceBatches
    from common.config import seed_everything
    from common.data import stratified_indices, train_val_split
    from common.models import build_model
    from common.train import fit

    config, recipe = full_recipe()
    pool, val_pool = train_val_split(ds.train_labels, val_fraction=0.1, seed=seed)
    val = stratified_indices(ds.train_labels, count=val_images, seed=seed, pool=val_pool)
    val_batches = DeviceBatches(ds.train_images[val], ds.train_labels[val], batch_size=512,
                                mean=ds.mean, std=ds.std)
    runs = []
    for images, epochs in horizons:
        train = (pool if images >= len(pool) else
                 stratified_indices(ds.train_labels, count=images, seed=seed, pool=pool))
        batches = DeviceBatches(ds.train_images[train], ds.train_labels[train],
                                batch_size=config["batch_size"], train=True, mean=ds.mean,
                                std=ds.std, seed=seed)
        for lr in rates:
            key = f"{model}_{len(train)}x{epochs}_lr{lr:g}"
            options = {**recipe, "lr": lr,
                       "schedule_options": {"warmup_epochs": epochs / FULL_EPOCHS}}
            cached = _cached(run_root, key, options, len(val))
            if cached:
                log(f"  {key}: measured earlier, validation accuracy {cached['val_accuracy']:.2%}")
                runs.append(cached)
                continue
            seed_everything(seed)  # every rate starts from the same weights
            net = build_model(model)
            started = time.perf_counter()
            try:
                history = fit(net, batches, val_batches, run_dir=run_root / key, epochs=epochs,
                              device="cpu", force=True, eval_split="validation",
                              log=lambda line: log(f"  {key}: {line}"),
                              config={"benchmark": "horizon", "run": key}, **options)
            finally:
                shutil.rmtree(run_root / key, ignore_errors=True)
            accuracy = history["eval_accuracy"][-1] if history["epoch"] else float("nan")
            runs.append({"model": model, "horizon": f"{len(train):,} x {epochs}",
                         "train_images": len(train), "epochs": epochs,
                         "steps": epochs * len(batches), "lr": lr, "val_accuracy": accuracy,
                         "val_loss": history["eval_loss"][-1] if history["epoch"] else None,
                         "stopped": history["stopped"],
                         "seconds": time.perf_counter() - started})
            _keep(run_root, key, options, len(val), runs[-1])
            log(f"  {key}: validation accuracy {accuracy:.2%} "
                f"({runs[-1]['seconds']:.0f} s)")
    best = {h: _best([r for r in runs if r["horizon"] == h])["lr"]
            for h in dict.fromkeys(r["horizon"] for r in runs)}
    return {"model": model, "recipe": recipe, "val_images": len(val), "rates": list(rates),
            "horizons": [list(h) for h in horizons], "runs": runs, "best": best, "seed": seed}


def warmup_check(ds, *, lr: float, model: str = WARMUP_CHECK["model"],
                 epochs_shown: int = WARMUP_CHECK["epochs_shown"], val_images: int = VAL_IMAGES,
                 train_images: int | None = WARMUP_CHECK["train_images"], run_root: Path, seed: int = 0,
                 log=print) -> dict:
    """The first `epochs_shown` epochs of the full 40-epoch recipe for `model` on the full
    training split (or `train_images` of it) at peak `lr`: finite, falling losses mean the
    warm-up holds."""
    from common.batches import DeviceBatches
    from common.config import seed_everything
    from common.data import stratified_indices, train_val_split
    from common.models import build_model
    from common.train import fit

    config, recipe = full_recipe()
    pool, val_pool = train_val_split(ds.train_labels, val_fraction=0.1, seed=seed)
    val = stratified_indices(ds.train_labels, count=val_images, seed=seed, pool=val_pool)
    if train_images:
        pool = stratified_indices(ds.train_labels, count=train_images, seed=seed, pool=pool)
    train = DeviceBatches(ds.train_images[pool], ds.train_labels[pool],
                          batch_size=config["batch_size"], train=True, mean=ds.mean,
                          std=ds.std, seed=seed)
    held = DeviceBatches(ds.train_images[val], ds.train_labels[val], batch_size=512,
                         mean=ds.mean, std=ds.std)
    seen: dict[str, Any] = {}

    def enough(epoch: int, history: Mapping) -> None:
        seen.update({k: list(v) if isinstance(v, list) else v for k, v in history.items()})
        if epoch >= epochs_shown:
            raise _Enough

    seed_everything(seed)
    key = f"{model}_warmup_lr{lr:g}"
    options = {**recipe, "lr": lr, "schedule_options": {"warmup_epochs": config["warmup_epochs"]}}
    try:
        history = fit(build_model(model), train, held, run_dir=run_root / key, epochs=FULL_EPOCHS,
                      device="cpu", force=True, eval_split="validation", on_epoch_end=enough,
                      log=lambda line: log(f"  {key}: {line}"),
                      config={"benchmark": "horizon-warmup", "run": key}, **options)
        seen.update(history)
    except _Enough:
        pass
    finally:
        shutil.rmtree(run_root / key, ignore_errors=True)
    losses = seen.get("train_loss", [])
    stable = bool(losses) and all(math.isfinite(x) for x in losses) and not seen.get("stopped")
    return {"model": model, "lr": lr, "warmup_epochs": config["warmup_epochs"],
            "epochs_of": FULL_EPOCHS, "train_images": len(pool), "history": seen,
            "stable": stable}


def _best(cell: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    return max(cell, key=lambda r: r["val_accuracy"] if not r["stopped"] else -1.0)


def table(result: Mapping[str, Any]) -> list[str]:
    """The sweep as text: one line per horizon, validation accuracy per rate, the best
    rate and two standard errors of a difference at the best accuracy."""
    rates = result["rates"]
    lines = [f"{'images x epochs (steps)':<26}" + "".join(f"{'lr ' + format(r, 'g'):>10}"
                                                          for r in rates) + "  best    2 SE"]
    for horizon in dict.fromkeys(r["horizon"] for r in result["runs"]):
        cell = {r["lr"]: r for r in result["runs"] if r["horizon"] == horizon}
        best = _best(list(cell.values()))
        shown = [("diverged" if cell[r]["stopped"] else f"{cell[r]['val_accuracy']:.1%}")
                 if r in cell else "-" for r in rates]
        lines.append(f"{horizon + ' (' + str(best['steps']) + ')':<26}"
                     + "".join(f"{x:>10}" for x in shown)
                     + f"  {best['lr']:<6g}  {_two_se(best['val_accuracy'], result['val_images']):.1%}")
    return lines
