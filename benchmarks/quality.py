"""Quality at a fixed budget: two training recipes for the same network, the same
training images and the same number of epochs, tested once on the test set.

The recipes are fit() keyword arguments: Q2(b)'s baseline against the best Q2(c)
recipe. The defaults below are placeholders until the notebooks settle;
`bench.py --recipes file.json` swaps them without editing code. The first recipe
is the reference, and its run doubles as the fit-overhead measurement
(benchmarks/loop.py) when both sections run.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Mapping

RECIPES: dict[str, dict[str, Any]] = {
    "baseline": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "schedule": "none",
                 "label_smoothing": 0.0},
    "improved": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "schedule": "onecycle",
                 "label_smoothing": 0.1},
}


def split(ds, *, train_images: int, val_images: int, test_images: int | None = None,
          seed: int = 0) -> dict:
    """Class-balanced index sets: `train_images` and `val_images` from disjoint parts
    of the training split, and `test_images` of the test set (None: all of it)."""
    from common.data import stratified_indices, train_val_split

    train_pool, val_pool = train_val_split(ds.train_labels, val_fraction=0.1, seed=seed)
    return {"train": stratified_indices(ds.train_labels, count=train_images, seed=seed, pool=train_pool),
            "val": stratified_indices(ds.train_labels, count=val_images, seed=seed, pool=val_pool),
            "test": (stratified_indices(ds.test_labels, count=test_images, seed=seed)
                     if test_images else slice(None))}


def compare_recipes(ds, *, recipes: Mapping[str, Mapping[str, Any]] = RECIPES,
                    model_name: str = "alexnet", train_images: int = 10_000, epochs: int = 5,
                    val_images: int = 1_000, test_images: int | None = None,
                    batch_size: int = 128, run_root, seed: int = 0,
                    trained: Mapping[str, tuple[Any, dict, float]] | None = None,
                    log=print) -> dict:
    """Train `model_name` once per recipe from the same initial weights on the same
    `split`, watching the validation images each epoch, then test each final model
    once on the test set. `trained` maps a recipe name to (model, history, seconds)
    of a run already made on the same split (then it is only tested).

    Returns each recipe's test accuracy, its difference from the first recipe's
    and the wall time of its run."""
    from common.batches import DeviceBatches
    from common.models import build_model
    from common.config import seed_everything
    from common.train import evaluate, fit

    idx = split(ds, train_images=train_images, val_images=val_images, test_images=test_images,
                seed=seed)

    def batches(images, labels, train):
        return DeviceBatches(images, labels, batch_size=batch_size, device="cpu", train=train,
                             mean=ds.mean, std=ds.std, seed=seed)

    test = batches(ds.test_images[idx["test"]], ds.test_labels[idx["test"]], False)
    trained = dict(trained or {})
    results = {}
    for name, recipe in recipes.items():
        if name in trained:
            model, history, seconds = trained[name]
        else:
            seed_everything(seed)  # every recipe starts from the same weights
            model = build_model(model_name)
            run_dir = Path(run_root) / name
            started = time.perf_counter()
            try:
                history = fit(model, batches(ds.train_images[idx["train"]], ds.train_labels[idx["train"]], True),
                              batches(ds.train_images[idx["val"]], ds.train_labels[idx["val"]], False),
                              run_dir=run_dir, epochs=epochs, device="cpu", force=True,
                              log=lambda line, name=name: log(f"  {name}: {line}"),
                              config={"benchmark": "quality", "recipe": name}, **recipe)
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
            seconds = time.perf_counter() - started
        result = evaluate(model, test, "cpu")
        results[name] = {"recipe": dict(recipe), "test_accuracy": result["accuracy"],
                         "test_loss": result["loss"], "test_images": result["num_samples"],
                         "val_accuracy": history["eval_accuracy"][-1] if history["epoch"] else None,
                         "epochs_trained": len(history["epoch"]), "stopped": history["stopped"],
                         "seconds": seconds}
    first = next(iter(results))
    for name, r in results.items():
        r["difference_from_" + first] = r["test_accuracy"] - results[first]["test_accuracy"]
    return {"model": model_name, "train_images": train_images, "val_images": val_images,
            "epochs": epochs, "batch_size": batch_size, "recipes": results}
