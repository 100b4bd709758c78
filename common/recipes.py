"""Q2's runs, described once from the notebook's parameters.

    specs = q2_specs(config)             # {"a": [...], "b": [...], "c": [...]}
    experiment.train(specs["a"][0])      # common.experiments.Experiment

Each spec names its run by `run_id`: a readable label plus the digest of every
setting that decides the outcome, so a changed recipe never reuses an old run.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from .batches import DeviceBatches
from .config import check, check_positive_int
from .data import stratified_indices, train_val_split
from .experiments import run_id
from .models import MODEL_NAMES, FlipTTA
from .optim import SCHEDULES, make_scheduler

__all__ = ["MODEL_B", "OPTIMISER_LABEL", "MODEL_LABEL", "METHODS_C", "EVAL_ONLY_C", "METHOD_CODE",
           "check_q2_config",
           "check_budget", "q2_specs", "label_of", "budget", "q2_indices"]

MODEL_B = "alexnet"  # Q2(b) names AlexNet; not a parameter
OPTIMISER_LABEL = {"sgd": "SGD", "rmsprop": "RMSProp", "adam": "Adam"}
MODEL_LABEL = {"vgg16": "VGG16", "vgg13": "VGG13", "vgg11": "VGG11", "resnet18": "ResNet18",
               "resnet34": "ResNet34", "alexnet": "AlexNet"}

# Q2(c) candidate methods: (what changes, the fit options it changes, the training data
# it uses). Each changes exactly one thing of its network's baseline recipe, so its
# gain can be attributed to it; they are of different kinds: the loss, the data
# augmentation, the learning-rate schedule and the evaluation.
METHODS_C: dict[str, tuple[str, dict[str, Any], str]] = {
    "label_smoothing": ("label smoothing 0.1: the training targets put 0.9 on the true class "
                        "and share 0.1 over all classes (Szegedy et al. 2016)",
                        {"label_smoothing": 0.1}, "val"),
    "cutout": ("Cutout: one square of cutout_size pixels per training image is masked with "
               "the mean colour (DeVries and Taylor 2017)", {}, "val_cutout"),
    "onecycle": ("one-cycle schedule instead of cosine: a warm-up to the same peak lr over 30% "
                 "of the steps, then annealing, momentum cycled inversely (Smith 2018)",
                 {"schedule": "onecycle", "schedule_options": {}}, "val"),
    "step": ("step decay instead of cosine: the lr divided by 10 after each third of the epochs",
             {"schedule": "step", "schedule_options": {}}, "val"),
    # Evaluated on the baseline's own run: no training run of its own (fit options None).
    "flip_tta": ("test-time augmentation: each held-out image is classified with its mirror "
                 "image and the two softmax outputs averaged (common.models.FlipTTA); the "
                 "baseline's own weights, no training of its own (Krizhevsky et al. 2012 "
                 "averaged ten crops and their reflections)", None, "val"),
}
# The candidates evaluated on their baseline's run rather than trained: the module that
# wraps the trained model for the evaluation (Experiment.evaluate(wrap=...)).
EVAL_ONLY_C = {"flip_tta": FlipTTA}
# The code each method runs, shown in the notebook when it is chosen (label smoothing is
# torch's own loss: nn.CrossEntropyLoss(label_smoothing=0.1), in train.fit).
METHOD_CODE = {"cutout": (DeviceBatches._cut_out,), "flip_tta": (FlipTTA,),
               "onecycle": (make_scheduler,), "step": (make_scheduler,)}


def label_of(model: str) -> str:
    return MODEL_LABEL.get(model, model)


def check_q2_config(c: Mapping[str, Any]) -> None:
    """The Q2-specific parameter checks (make_config checks the shared ones)."""
    for name in ("epochs", "batch_size", "cutout_size"):
        check_positive_int(name, c[name])
    check_budget(c)
    check("schedule", c["schedule"], c["schedule"] in SCHEDULES, f"one of {', '.join(SCHEDULES)}")
    for name in ("lr_sgd", "lr_rmsprop", "lr_adam"):
        check(name, c[name], isinstance(c[name], (int, float)) and c[name] > 0,
              "a positive learning rate")
    check("momentum", c["momentum"], isinstance(c["momentum"], (int, float))
          and 0 <= c["momentum"] < 1, "a number in [0, 1)")
    check("nesterov", c["nesterov"], isinstance(c["nesterov"], bool)
          and (not c["nesterov"] or c["momentum"] > 0), "True or False (True needs momentum > 0)")
    for name in ("weight_decay", "weight_decay_adaptive", "warmup_epochs"):
        check(name, c[name], isinstance(c[name], (int, float)) and c[name] >= 0, "a number >= 0")
    models_a = c["models_a"]
    check("models_a", models_a, isinstance(models_a, list) and len(models_a) > 0
          and len(set(models_a)) == len(models_a) and all(m in MODEL_NAMES for m in models_a),
          f"a list of distinct model names from: {', '.join(MODEL_NAMES)}")
    check("models_c", c["models_c"], isinstance(c["models_c"], list) and len(c["models_c"]) > 0
          and len(set(c["models_c"])) == len(c["models_c"])
          and all(m in MODEL_NAMES for m in c["models_c"]),
          f"a list of distinct model names from: {', '.join(MODEL_NAMES)}")
    methods = c["methods_c"]
    check("methods_c", methods, isinstance(methods, list) and len(methods) >= 2
          and len(set(methods)) == len(methods) and all(m in METHODS_C for m in methods),
          f"at least two distinct names from: {', '.join(METHODS_C)}")
    check("val_fraction", c["val_fraction"], isinstance(c["val_fraction"], float)
          and 0 < c["val_fraction"] < 1, "a fraction in (0, 1), e.g. 0.1")


def check_budget(c: Mapping[str, Any]) -> None:
    """train_images and eval_images: 0 (all) or a count. A reduced profile (smoke, quick)
    sets them in profiles/<name>.yaml, the one place its budget lives."""
    for name in ("train_images", "eval_images"):
        check(name, c[name], isinstance(c[name], int) and not isinstance(c[name], bool)
              and c[name] >= 0, "0 (all images) or a positive number of images")
    for flag in ("smoke", "quick"):
        check("train_images", c["train_images"], not c.get(flag) or c["train_images"] > 0,
              f"a positive number when {flag}=True: profiles/{flag}.yaml sets the reduced sizes "
              f"(make {flag}); in Jupyter or Colab set train_images and eval_images as well")
    check("quick", c.get("quick"), not (c.get("smoke") and c.get("quick")),
          "False when smoke is True (one budget at a time)")


def budget(c: Mapping[str, Any]) -> dict[str, int]:
    """The images each part trains and evaluates on (0: all of them), as the profile or
    the parameters cell set them."""
    return {"train_images": c["train_images"], "eval_images": c["eval_images"]}


def q2_indices(train_labels, test_labels, c: Mapping[str, Any]) -> tuple:
    """(train, split, val, test) indices: (a) and (b) train on `train` and are monitored
    on `test`; (c) trains on `split`, the training set minus the class-stratified
    validation split `val`, monitored on `val`. The quick and smoke budgets take
    class-stratified subsets of the same sets, so the code path is the full one."""
    seed, sizes = c["seed"], budget(c)
    train = torch.arange(len(train_labels))
    split, val = train_val_split(train_labels, val_fraction=c["val_fraction"], seed=seed)
    test = torch.arange(len(test_labels))
    if sizes["train_images"]:
        train = stratified_indices(train_labels, count=sizes["train_images"], seed=seed)
        split = stratified_indices(train_labels, count=sizes["train_images"], seed=seed, pool=split)
    if sizes["eval_images"]:
        val = stratified_indices(train_labels, count=sizes["eval_images"], seed=seed, pool=val)
        test = stratified_indices(test_labels, count=sizes["eval_images"], seed=seed)
    return train, split, val, test


def _spec(c: Mapping[str, Any], part: str, model: str, optimizer: str = "sgd",
          method: str = "baseline") -> dict[str, Any]:
    """One run: (a) and (b) are monitored on the test set, (c) on the validation split.

    The recipe: every optimiser follows the same schedule from its own peak lr. SGD
    uses Nesterov momentum and L2 weight decay; Adam and RMSProp decay the weights
    decoupled from their adaptive steps (common.optim), by weight_decay_adaptive."""
    lr = {"sgd": c["lr_sgd"], "rmsprop": c["lr_rmsprop"], "adam": c["lr_adam"]}[optimizer]
    fit = {"optimizer": optimizer, "lr": lr, "momentum": c["momentum"],
           "nesterov": c["nesterov"] and optimizer == "sgd",
           "weight_decay": c["weight_decay"] if optimizer == "sgd" else c["weight_decay_adaptive"],
           "schedule": c["schedule"], "label_smoothing": 0.0,
           "schedule_options": {"warmup_epochs": c["warmup_epochs"]} if c["schedule"] == "cosine" else {}}
    data = "val" if part == "c" else "test"
    if method != "baseline":
        fit.update(METHODS_C[method][1])
        data = METHODS_C[method][2]
    monitored = "val" if part == "c" else "test"
    label = f"{part}_{model}_{optimizer}" + ("" if method == "baseline" else f"_{method}")
    identity = {"model": model, "fit": fit, "data": data, "epochs": c["epochs"],
                "batch_size": c["batch_size"], "seed": c["seed"], "smoke": c["smoke"],
                "cutout_size": c["cutout_size"] if data.endswith("cutout") else None, **budget(c)}
    return {"part": part, "name": run_id(label, identity), "model": model, "optimizer": optimizer,
            "method": method, "monitored": monitored, "lr": lr, "label": label_of(model),
            "data": data, "fit": fit}


def q2_specs(c: Mapping[str, Any]) -> dict[str, list[dict]]:
    """Every run of Q2, by part, from the validated config. (c) has, for each network of
    models_c, its baseline and each candidate method that trains (EVAL_ONLY_C are
    evaluated on the baseline's run)."""
    return {"a": [_spec(c, "a", m) for m in c["models_a"]],
            "b": [_spec(c, "b", MODEL_B, opt) for opt in ("sgd", "rmsprop", "adam")],
            "c": [_spec(c, "c", m, "sgd", method) for m in c["models_c"]
                  for method in ["baseline", *c["methods_c"]] if method not in EVAL_ONLY_C]}
