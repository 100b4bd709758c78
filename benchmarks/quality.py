"""Quality at the quick budget: each Q2 network's recipe against the reference recipe.

"Ours" is the very recipe the Q2 notebook trains: the fit options of its spec in
common.recipes.q2_specs, built from the notebook's parameters cell with the quick
profile on top (common.tools.run.notebook_defaults). Change a parameter in the
notebook and the bench measures the new recipe; nothing is copied here.

The reference is the recipe students copy, kuangliu/pytorch-cifar's main.py, written
here from its published settings (REFERENCE). Both recipes train the same network
from the same initial weights, on the same images and batches (DeviceBatches: crop
and flip, as the reference's RandomCrop(32, padding=4) + RandomHorizontalFlip) for
the same epochs, and are tested once on the same class-stratified test subset.

The networks are Q2(a)'s (SGD) and Q2(b)'s AlexNet with each of its optimisers; all
AlexNet rows share one reference run. The AlexNet reference run doubles as the
fit-overhead measurement (benchmarks/loop.py) when both sections run.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "Q2" / "Q2.ipynb"
PROFILE = ROOT / "profiles" / "quick.yaml"

# kuangliu/pytorch-cifar main.py: optim.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4)
# (classical momentum: torch's nesterov=False), CosineAnnealingLR to 0 over the run
# (T_max=200 for its 200 epochs), plain CrossEntropyLoss, batch 128, crop+flip. The
# one liberty: fit anneals per batch, the script per epoch; the same cosine from 0.1
# to 0 over the run, sampled per step (fit has no per-epoch cosine).
REFERENCE: dict[str, Any] = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False,
                             "weight_decay": 5e-4, "schedule": "cosine", "label_smoothing": 0.0}
REFERENCE_BATCH_SIZE = 128
REFERENCE_SOURCE = "kuangliu/pytorch-cifar"


def q2_config(notebook: str | Path = NOTEBOOK, profile: str | Path | None = PROFILE) -> dict:
    """The Q2 notebook's parameters under `profile`: what `make quick` would train with."""
    from common.recipes import MODEL_B
    from common.tools.run import notebook_defaults

    return {**notebook_defaults(notebook, profile), "model_b": MODEL_B}


def quality_plan(config: Mapping[str, Any]) -> list[dict]:
    """One comparison per Q2(a) network and per Q2(b) optimiser, from the notebook's
    specs: {"name", "part", "model", "optimizer", "label", "ours", "ours_batch_size",
    "reference", "reference_batch_size"}."""
    from common.recipes import OPTIMISER_LABEL, check_q2_config, label_of, q2_specs

    check_q2_config(config)
    specs = q2_specs(config)
    return [{"name": f"{s['model']}_{s['optimizer']}", "part": s["part"], "model": s["model"],
             "optimizer": s["optimizer"],
             "label": f"{label_of(s['model'])} {OPTIMISER_LABEL[s['optimizer']]} (Q2({s['part']}))",
             "ours": dict(s["fit"]), "ours_batch_size": config["batch_size"],
             "reference": dict(REFERENCE), "reference_batch_size": REFERENCE_BATCH_SIZE}
            for s in [*specs["a"], *specs["b"]]]


def run_key(item: Mapping[str, Any], which: str) -> str:
    """The training run a plan item's side uses: every reference run of a network is
    the same run (AlexNet's three rows share one), each of ours is its own."""
    return f"{item['model']}_reference" if which == "reference" else f"{item['name']}_ours"


def split(ds, *, train_images: int, val_images: int, test_images: int | None = None,
          seed: int = 0) -> dict:
    """Class-balanced index sets: `train_images` and `val_images` from disjoint parts
    of the training split, and `test_images` of the test set (None or 0: all of it).
    The test subset is the one the quick notebook reports on (same count and seed)."""
    from common.data import stratified_indices, train_val_split

    train_pool, val_pool = train_val_split(ds.train_labels, val_fraction=0.1, seed=seed)
    return {"train": stratified_indices(ds.train_labels, count=train_images, seed=seed, pool=train_pool),
            "val": stratified_indices(ds.train_labels, count=val_images, seed=seed, pool=val_pool),
            "test": (stratified_indices(ds.test_labels, count=test_images, seed=seed)
                     if test_images else slice(None))}


def compare_networks(ds, plan: Sequence[Mapping[str, Any]], *, train_images: int, epochs: int,
                     val_images: int = 500, test_images: int | None = None, run_root,
                     seed: int = 0, trained: Mapping[str, tuple[Any, dict]] | None = None,
                     log=print) -> dict:
    """Train each run of `plan` (ours and the reference per item) once from the same
    initial weights per network on the same `split`, watching the validation images
    each epoch, then test each final model once on the test subset. `trained` maps a
    run_key to (model, history) of a run already made on the same split and budget
    (then it is only tested). Within an item ours trains right before the reference,
    so a burst of load on the shared machine tends to hit both.

    Returns {"runs": {run_key: result}, "rows": [per item: ours, reference, difference]}."""
    from common.batches import DeviceBatches
    from common.config import seed_everything
    from common.models import build_model
    from common.train import evaluate, fit

    idx = split(ds, train_images=train_images, val_images=val_images, test_images=test_images,
                seed=seed)

    def batches(part, images, labels, batch_size, train):
        return DeviceBatches(images[idx[part]], labels[idx[part]], batch_size=batch_size,
                             device="cpu", train=train, mean=ds.mean, std=ds.std, seed=seed)

    test = batches("test", ds.test_images, ds.test_labels, 256, False)
    trained = dict(trained or {})
    runs: dict[str, dict] = {}

    def run(item, which):
        key = run_key(item, which)
        if key in runs:
            return runs[key]
        recipe, batch_size = item[which], item[f"{which}_batch_size"]
        if key in trained:
            model, history = trained.pop(key)
        else:
            seed_everything(seed)  # both recipes of a network start from the same weights
            model = build_model(item["model"])
            run_dir = Path(run_root) / key
            try:
                history = fit(model, batches("train", ds.train_images, ds.train_labels, batch_size, True),
                              batches("val", ds.train_images, ds.train_labels, batch_size, False),
                              run_dir=run_dir, epochs=epochs, device="cpu", force=True,
                              eval_split="validation", log=lambda line: log(f"  {key}: {line}"),
                              config={"benchmark": "quality", "run": key}, **recipe)
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)  # up to ~120 MB per checkpoint
        result = evaluate(model, test, "cpu")
        runs[key] = {"model": item["model"], "recipe": dict(recipe), "batch_size": batch_size,
                     "test_accuracy": result["accuracy"], "test_loss": result["loss"],
                     "test_images": result["num_samples"],
                     "val_accuracy": history["eval_accuracy"][-1] if history["epoch"] else None,
                     "epochs_trained": len(history["epoch"]), "stopped": history["stopped"],
                     # fit's own epoch times (train + held-out pass, no checkpoint): a run
                     # shared with the fit-overhead section is not charged its minimal loop.
                     "seconds": float(sum(history["seconds"]))}
        log(f"  {key}: test accuracy {result['accuracy']:.2%} after {runs[key]['seconds']:.0f} s")
        return runs[key]

    rows = []
    for item in plan:
        ours, reference = run(item, "ours"), run(item, "reference")
        rows.append({"name": item["name"], "label": item["label"], "model": item["model"],
                     "optimizer": item["optimizer"], "part": item["part"],
                     "ours": run_key(item, "ours"), "reference": run_key(item, "reference"),
                     "difference": ours["test_accuracy"] - reference["test_accuracy"]})
    return {"train_images": train_images, "val_images": val_images, "epochs": epochs,
            "test_images": test.num_samples, "seed": seed, "reference_source": REFERENCE_SOURCE,
            "runs": runs, "rows": rows}


def describe(recipe: Mapping[str, Any], batch_size: int) -> str:
    """A recipe in one phrase, e.g. 'sgd lr 0.05 nesterov momentum 0.9 wd 0.0005 cosine'."""
    r = dict(recipe)
    optimizer = r.pop("optimizer", "sgd")
    parts = [f"{optimizer} lr {r.pop('lr')}"]
    momentum, nesterov = r.pop("momentum", None), r.pop("nesterov", False)
    if optimizer == "sgd" and momentum:  # the adaptive optimisers ignore momentum
        parts.append(f"{'nesterov' if nesterov else 'classical'} momentum {momentum}")
    # common.optim: L2 in the gradient for SGD, decoupled from the adaptive step otherwise
    parts.append(f"{'' if optimizer == 'sgd' else 'decoupled '}wd {r.pop('weight_decay', 5e-4):g}")
    parts.append(f"{r.pop('schedule', 'none')} schedule")
    smoothing = r.pop("label_smoothing", 0.0)
    if smoothing:
        parts.append(f"label smoothing {smoothing}")
    parts += [f"{k} {v}" for k, v in r.items()]
    return " ".join(parts[:1]) + ", " + ", ".join(parts[1:]) + f", batch {batch_size}"
