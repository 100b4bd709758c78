"""Q2's runs, described once from the notebook's parameters.

    specs = q2_specs(config)             # {"a": [...], "b": [...], "c": [...]}
    experiment.train(specs["a"][0])      # common.experiments.Experiment

Each spec names its run by `run_id`: a readable label plus the digest of every
setting that decides the outcome, so a changed recipe never reuses an old run.
"""
from __future__ import annotations

from typing import Any, Mapping

from .config import check, check_positive_int
from .experiments import run_id
from .models import MODEL_NAMES

__all__ = ["MODEL_B", "OPTIMISER_LABEL", "MODEL_LABEL", "METHODS_C", "check_q2_config",
           "q2_specs", "label_of"]

MODEL_B = "alexnet"  # Q2(b) names AlexNet; not a parameter
OPTIMISER_LABEL = {"sgd": "SGD", "rmsprop": "RMSProp", "adam": "Adam"}
MODEL_LABEL = {"vgg16": "VGG16", "vgg13": "VGG13", "vgg11": "VGG11", "resnet18": "ResNet18",
               "resnet34": "ResNet34", "alexnet": "AlexNet"}

# Q2(c) candidate methods: (what changes, the fit options it changes). Each changes
# exactly one setting of the baseline recipe (AlexNet + SGD as in (b)), so its gain
# can be attributed to it.
METHODS_C: dict[str, tuple[str, dict[str, Any]]] = {
    "cosine": ("cosine decay of the learning rate from lr_sgd to 0, per batch",
               {"schedule": "cosine"}),
    "onecycle": ("one-cycle schedule: warm-up to lr_sgd, then annealing, momentum cycled inversely",
                 {"schedule": "onecycle"}),
    "step": ("step decay: lr_sgd divided by 10 after each third of the epochs",
             {"schedule": "step"}),
    "label_smoothing": ("label smoothing 0.1 in the training loss", {"label_smoothing": 0.1}),
}


def label_of(model: str) -> str:
    return MODEL_LABEL.get(model, model)


def check_q2_config(c: Mapping[str, Any]) -> None:
    """The Q2-specific parameter checks (make_config checks the shared ones)."""
    for name in ("epochs", "batch_size", "smoke_train_images", "smoke_eval_images"):
        check_positive_int(name, c[name])
    for name in ("lr_sgd", "lr_rmsprop", "lr_adam"):
        check(name, c[name], isinstance(c[name], (int, float)) and c[name] > 0,
              "a positive learning rate")
    check("momentum", c["momentum"], isinstance(c["momentum"], (int, float))
          and 0 <= c["momentum"] < 1, "a number in [0, 1)")
    check("nesterov", c["nesterov"], isinstance(c["nesterov"], bool)
          and (not c["nesterov"] or c["momentum"] > 0), "True or False (True needs momentum > 0)")
    check("weight_decay", c["weight_decay"], isinstance(c["weight_decay"], (int, float))
          and c["weight_decay"] >= 0, "a number >= 0")
    models_a = c["models_a"]
    check("models_a", models_a, isinstance(models_a, list) and len(models_a) > 0
          and len(set(models_a)) == len(models_a) and all(m in MODEL_NAMES for m in models_a),
          f"a list of distinct model names from: {', '.join(MODEL_NAMES)}")
    methods = c["methods_c"]
    check("methods_c", methods, isinstance(methods, list) and len(methods) >= 2
          and len(set(methods)) == len(methods) and all(m in METHODS_C for m in methods),
          f"at least two distinct names from: {', '.join(METHODS_C)}")
    check("val_fraction", c["val_fraction"], isinstance(c["val_fraction"], float)
          and 0 < c["val_fraction"] < 1, "a fraction in (0, 1), e.g. 0.1")


def _spec(c: Mapping[str, Any], part: str, model: str, optimizer: str = "sgd",
          method: str = "baseline") -> dict[str, Any]:
    """One run: (a) and (b) are monitored on the test set, (c) on the validation split."""
    lr = {"sgd": c["lr_sgd"], "rmsprop": c["lr_rmsprop"], "adam": c["lr_adam"]}[optimizer]
    fit = {"optimizer": optimizer, "lr": lr, "momentum": c["momentum"],
           "nesterov": c["nesterov"] and optimizer == "sgd", "weight_decay": c["weight_decay"],
           "schedule": "none", "label_smoothing": 0.0}
    if method != "baseline":
        fit.update(METHODS_C[method][1])
    monitored = "val" if part == "c" else "test"
    label = f"{part}_{model}_{optimizer}" + ("" if method == "baseline" else f"_{method}")
    identity = {"model": model, "fit": fit, "epochs": c["epochs"], "batch_size": c["batch_size"],
                "monitored": monitored, "seed": c["seed"], "smoke": c["smoke"]}
    return {"part": part, "name": run_id(label, identity), "model": model, "optimizer": optimizer,
            "method": method, "monitored": monitored, "lr": lr, "label": label_of(model),
            "data": monitored, "fit": fit}


def q2_specs(c: Mapping[str, Any]) -> dict[str, list[dict]]:
    """Every run of Q2, by part, from the validated config."""
    return {"a": [_spec(c, "a", m) for m in c["models_a"]],
            "b": [_spec(c, "b", MODEL_B, opt) for opt in ("sgd", "rmsprop", "adam")],
            "c": [_spec(c, "c", MODEL_B, "sgd", m) for m in ["baseline", *c["methods_c"]]]}
