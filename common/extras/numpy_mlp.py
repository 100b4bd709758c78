"""A multi-layer perceptron in NumPy alone, composed from the layers of
`common.backprop` (ECE 449 A2 task 1, ECE 421 A3 section 1).

    params = init_mlp([784, 128, 10], activation="relu", seed=0)
    loss, grads = mlp_loss(params, x, y, "relu")          # x (N, 784) float, y (N,) int
    history = train(params, x_tr, y_tr, x_val, y_val, activation="relu", epochs=5,
                    batch_size=64, lr=0.05, momentum=0.9)
    run = train_or_load(combo, data, runs_dir=..., epochs=5, batch_size=64, seed=0)

Choosing among combinations is common.experiments.select_best of their
validation accuracies; run folders are named by common.experiments.run_id.
Training itself uses no autograd: the gradient checks, with their torch
reference of the same network, are in `common.extras.mlp_checks`.

Parameters live in one dict: "W1" (H1, D), "b1" (H1,), "W2" ... in PyTorch's
nn.Linear layout (backprop.py's), plus "alpha1", ... (per-unit slopes) for
PReLU. The ECE 449 names map as: relu -> relu_forward/relu_backward, prelu ->
prelu_forward/prelu_backward (backprop.py), DNNforward -> mlp_forward,
DNNbackward -> mlp_backward, train -> train.
"""
from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from .. import backprop as bp
from ..experiments import run_id
from ..files import atomic_write, read_json, to_jsonable, write_json
from ..plots import save_figure

__all__ = ["ACTIVATIONS", "init_mlp", "layer_count", "mlp_forward", "mlp_backward", "mlp_loss",
           "sgd_momentum_step", "evaluate", "train", "flatten_images",
           "train_or_load", "run_settings", "combo_name", "plot_iteration_loss",
           "blas_threads"]

ACTIVATIONS = ("relu", "prelu", "sigmoid", "tanh")
PRELU_INIT = 0.25  # He et al. (2015)'s initial slope, also torch.nn.PReLU's


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r}: use one of {', '.join(ACTIVATIONS)}")


def init_mlp(sizes: Sequence[int], activation: str = "relu", seed: int = 0) -> dict:
    """Weights for layer sizes [D, H1, ..., C]: Gaussian with variance 2/fan_in (He)
    for the ReLU family, 1/fan_in (LeCun) for sigmoid and tanh, so the activations
    neither vanish nor blow up at the start; biases zero; PReLU slopes 0.25."""
    _check_activation(activation)
    if len(sizes) < 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in sizes):
        raise ValueError(f"sizes={sizes!r}: expected at least two positive integers [D, ..., C]")
    rng = np.random.default_rng(seed)
    gain = 2.0 if activation in ("relu", "prelu") else 1.0
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        params[f"W{i}"] = rng.normal(0.0, np.sqrt(gain / fan_in), size=(fan_out, fan_in))
        params[f"b{i}"] = np.zeros(fan_out)
        if activation == "prelu" and i < len(sizes) - 1:
            params[f"alpha{i}"] = np.full(fan_out, PRELU_INIT)
    return params


def layer_count(params: dict) -> int:
    """The number of linear layers in `params`."""
    return sum(1 for k in params if k.startswith("W"))


def _act_forward(h, activation, params, i):
    if activation == "relu":
        return bp.relu_forward(h)
    if activation == "prelu":
        return bp.prelu_forward(h, params[f"alpha{i}"])
    if activation == "sigmoid":
        return bp.sigmoid_forward(h)
    return bp.tanh_forward(h)


def _act_backward(dout, cache, activation):
    """Returns (dx, dalpha or None)."""
    if activation == "relu":
        return bp.relu_backward(dout, cache), None
    if activation == "prelu":
        return bp.prelu_backward(dout, cache)
    if activation == "sigmoid":
        return bp.sigmoid_backward(dout, cache), None
    return bp.tanh_backward(dout, cache), None


def mlp_forward(params: dict, x: np.ndarray, activation: str = "relu"):
    """DNNforward: (linear -> activation) for each hidden layer, then a linear output.

    x: (N, D). Returns logits (N, C) and the caches the backward pass needs,
    one (linear cache, activation cache) pair per layer (None after the last).
    """
    _check_activation(activation)
    L = layer_count(params)
    caches = []
    h = x
    for i in range(1, L + 1):
        h, lin = bp.linear_forward(h, params[f"W{i}"], params[f"b{i}"])
        act = None
        if i < L:
            h, act = _act_forward(h, activation, params, i)
        caches.append((lin, act))
    return h, caches


def mlp_backward(dlogits: np.ndarray, caches, activation: str = "relu") -> dict:
    """DNNbackward: dlogits (N, C) = dL/dlogits -> gradients shaped like the params."""
    grads = {}
    d = dlogits
    for i in range(len(caches), 0, -1):
        lin, act = caches[i - 1]
        if act is not None:
            d, dalpha = _act_backward(d, act, activation)
            if dalpha is not None:
                grads[f"alpha{i}"] = dalpha
        d, grads[f"W{i}"], grads[f"b{i}"] = bp.linear_backward(d, lin)
    return grads


def mlp_loss(params: dict, x: np.ndarray, y: np.ndarray, activation: str = "relu"):
    """Mean softmax cross-entropy over the batch and its gradients.
    x: (N, D); y: (N,) integer labels. Returns (loss, grads)."""
    logits, caches = mlp_forward(params, x, activation)
    loss, ce = bp.cross_entropy_forward(logits, y)
    return float(loss), mlp_backward(bp.cross_entropy_backward(1.0, ce), caches, activation)


def sgd_momentum_step(params: dict, grads: dict, velocity: dict, lr: float, momentum: float) -> None:
    """In place: v <- momentum v - lr g; p <- p + v (CS231n's sgd_momentum, and
    torch.optim.SGD's update up to where lr is applied; the two agree for a fixed lr).
    `velocity` starts empty and gets zeros on first use."""
    for k, g in grads.items():
        v = velocity.get(k)
        v = -lr * g if v is None else momentum * v - lr * g
        velocity[k] = v
        params[k] += v


def evaluate(params: dict, x: np.ndarray, y: np.ndarray, activation: str = "relu",
             batch_size: int = 4096) -> dict:
    """Mean loss and accuracy over a whole set, in chunks to bound memory."""
    total, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits, _ = mlp_forward(params, x[start:start + batch_size], activation)
        yb = y[start:start + batch_size]
        total += bp.cross_entropy_forward(logits, yb, reduction="sum")[0]
        correct += int((logits.argmax(axis=1) == yb).sum())
    return {"loss": float(total / len(x)), "acc": correct / len(x)}


@contextlib.contextmanager
def blas_threads(n: int = 1):
    """Run NumPy's matrix products on `n` BLAS threads inside the block, then restore.

    A mini-batch of 64 rows is too small to split across threads: the BLAS threads
    then mostly wait for each other, and on a busy two-core machine one training
    epoch measured about 50 times slower on 2 threads than on 1. threadpoolctl
    finds whichever BLAS NumPy loaded (OpenBLAS, MKL, BLIS); without one the block
    runs unchanged."""
    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


def train(params: dict, x_train, y_train, x_val, y_val, *, activation: str = "relu",
          epochs: int = 5, batch_size: int = 64, lr: float = 0.05, momentum: float = 0.9,
          seed: int = 0, log: Callable[[str], None] | None = print) -> dict:
    """Mini-batch SGD with momentum, updating `params` in place (on one BLAS thread,
    see blas_threads).

    Every epoch reshuffles the training set with a generator seeded by (seed, epoch)
    and ends with one evaluation on the validation set. Returns the history:
    iter_loss (one per mini-batch), and per epoch train_loss (the mean of that
    epoch's mini-batch losses), val_loss, val_acc, seconds.
    """
    with blas_threads(1):
        return _train(params, x_train, y_train, x_val, y_val, activation, epochs, batch_size,
                      lr, momentum, seed, log)


def _stop(history: dict, params: dict, last_good: dict, losses: list, log, reason: str) -> dict:
    """End a diverged run: record why, keep the last finished epoch's weights (so a
    comparison of several settings carries on, like common.train.fit)."""
    history["stopped"] = reason
    params.update(last_good)
    history["iter_loss"] += losses
    if log:
        log("STOPPED: " + reason)
    return history


def _train(params, x_train, y_train, x_val, y_val, activation, epochs, batch_size, lr,
           momentum, seed, log) -> dict:
    history = {"iter_loss": [], "train_loss": [], "val_loss": [], "val_acc": [], "seconds": [],
               "stopped": None}
    velocity: dict = {}
    n = len(x_train)
    for epoch in range(epochs):
        last_good = {k: v.copy() for k, v in params.items()}
        started = time.time()
        order = np.random.default_rng([seed, epoch]).permutation(n)
        losses = []
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            with np.errstate(over="ignore", invalid="ignore"):
                loss, grads = mlp_loss(params, x_train[idx], y_train[idx], activation)
            if not np.isfinite(loss):
                return _stop(history, params, last_good, losses, log,
                             f"non-finite loss at epoch {epoch + 1}, iteration "
                             f"{len(history['iter_loss']) + len(losses) + 1}: the learning "
                             f"rate {lr:g} (momentum {momentum:g}) is too large here")
            sgd_momentum_step(params, grads, velocity, lr, momentum)
            losses.append(loss)
        with np.errstate(over="ignore", invalid="ignore"):
            val = evaluate(params, x_val, y_val, activation)
        if not np.isfinite(val["loss"]):
            return _stop(history, params, last_good, losses, log,
                         f"non-finite validation loss after epoch {epoch + 1}: the learning "
                         f"rate {lr:g} (momentum {momentum:g}) is too large here")
        history["iter_loss"] += losses
        history["train_loss"].append(float(np.mean(losses)))
        history["val_loss"].append(val["loss"])
        history["val_acc"].append(val["acc"])
        history["seconds"].append(time.time() - started)
        if log:
            log(f"epoch {epoch + 1:>3}/{epochs}  train_loss {history['train_loss'][-1]:.4f}  "
                f"val_loss {val['loss']:.4f}  val_acc {val['acc']:.4f}  lr {lr:g}  "
                f"{history['seconds'][-1]:.1f}s")
    return history


def flatten_images(images, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N, C, H, W) tensor or array -> float64 (N, C*H*W), normalised per channel."""
    x = np.asarray(images.cpu() if hasattr(images, "cpu") else images, dtype=np.float64) / 255.0
    mean = np.asarray(mean).reshape(1, -1, 1, 1)
    std = np.asarray(std).reshape(1, -1, 1, 1)
    return ((x - mean) / std).reshape(len(x), -1)


# --- hyperparameter combinations: train once, reuse on a re-run ----------------------------

def combo_name(combo: dict) -> str:
    """A folder name for a combination, e.g. 'lr0.05_mom0.9_relu_h128'."""
    hidden = combo["hidden"] if isinstance(combo["hidden"], (list, tuple)) else [combo["hidden"]]
    return (f"lr{combo['lr']:g}_mom{combo['momentum']:g}_{combo['activation']}_h"
            + "-".join(str(h) for h in hidden))


def _data_digest(data: dict) -> str:
    """A fingerprint of the training and validation arrays: two runs with equal sizes
    but different images (another split, another subset) must not share a folder."""
    h = hashlib.blake2b(digest_size=8)
    for part in ("train", "val"):
        for a in data[part]:
            a = np.ascontiguousarray(a)
            h.update(f"{part}{a.dtype.str}{a.shape}".encode())
            h.update(a.data)
    return h.hexdigest()


def run_settings(combo: dict, data: dict, *, epochs: int, batch_size: int, seed: int) -> dict:
    """Everything that decides a run's outcome, as plain JSON values (equal to what
    run.json reads back): the combination, the layer sizes, epochs, batch size, seed,
    the data sizes and a data fingerprint."""
    x_tr, y_tr = data["train"]
    x_val, y_val = data["val"]
    hidden = combo["hidden"] if isinstance(combo["hidden"], (list, tuple)) else [combo["hidden"]]
    sizes = [x_tr.shape[1], *[int(h) for h in hidden], int(max(y_tr.max(), y_val.max())) + 1]
    settings = {**combo, "hidden": [int(h) for h in hidden], "sizes": sizes, "epochs": int(epochs),
                "batch_size": int(batch_size), "seed": int(seed), "n_train": len(x_tr),
                "n_val": len(x_val), "data": _data_digest(data)}
    return to_jsonable(settings)


def train_or_load(combo: dict, data: dict, *, runs_dir: str | Path, epochs: int, batch_size: int,
                  seed: int, force: bool = False, log: Callable[[str], None] | None = print) -> dict:
    """Train one combination (lr, momentum, activation, hidden) on data["train"], selecting
    on data["val"] (each an (x, y) pair), or reuse the run finished earlier with the same
    settings.

    Each run has its own folder, runs_dir/<combo_name>_<settings digest> (run_id), holding
    params.npz and run.json (the full settings and the history). Different settings
    (a smoke run, other epochs, data or seed) land in a different folder, so they
    never overwrite a finished run, and going back to earlier settings reuses it.
    Returns {"combo", "history", "params", "reused", "run_dir"}.
    """
    settings = run_settings(combo, data, epochs=epochs, batch_size=batch_size, seed=seed)
    run_dir = Path(runs_dir) / run_id(combo_name(combo), settings)
    meta, weights = run_dir / "run.json", run_dir / "params.npz"
    if not force and meta.is_file() and weights.is_file():
        saved = read_json(meta)
        # The digest names the folder; comparing the full settings guards against a collision.
        if saved.get("settings") == settings:
            with np.load(weights) as f:
                params = {k: f[k] for k in f.files}
            if log:
                log(f"{run_dir.name}: reusing the finished run in {run_dir}")
            return {"combo": combo, "history": saved["history"], "params": params, "reused": True,
                    "run_dir": str(run_dir)}
    x_tr, y_tr = data["train"]
    x_val, y_val = data["val"]
    if log:
        log(f"{run_dir.name}: training {settings['sizes']} for {epochs} epoch(s)")
    params = init_mlp(settings["sizes"], combo["activation"], seed=seed)
    history = train(params, x_tr, y_tr, x_val, y_val, activation=combo["activation"],
                    epochs=epochs, batch_size=batch_size, lr=combo["lr"],
                    momentum=combo["momentum"], seed=seed, log=log)
    # Weights first, then run.json: run.json marks a finished run.
    atomic_write(weights, lambda f: np.savez(f, **params), sync=True)
    write_json(meta, {"settings": settings, "history": history})
    return {"combo": combo, "history": history, "params": params, "reused": False,
            "run_dir": str(run_dir)}


def plot_iteration_loss(history: dict, *, batches_per_epoch: int, window: int = 50,
                        title: str | None = None, save_to=None):
    """Training loss against iteration (one point per mini-batch), a moving average over
    `window` iterations, and the validation loss at the end of each epoch."""
    loss = np.asarray(history["iter_loss"], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(9, 4), layout="constrained")
    steps = np.arange(1, len(loss) + 1)
    ax.plot(steps, loss, lw=0.6, alpha=0.45, label="mini-batch loss")
    w = max(1, min(window, len(loss) // 5 or 1))
    if len(loss) >= w > 1:
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], smooth, lw=1.8, label=f"moving average ({w} iterations)")
    ends = batches_per_epoch * np.arange(1, len(history["val_loss"]) + 1)
    ax.plot(ends, history["val_loss"], "o-", color="tab:red", label="validation loss (end of epoch)")
    ax.set(xlabel="iteration (mini-batch)", ylabel="cross-entropy loss",
           title=title or "training loss against iterations")
    ax.grid(alpha=0.3)
    ax.legend()
    plt.close(fig)
    if save_to is not None:
        save_figure(fig, save_to)
    return fig
