"""Training and evaluation as plain functions, in the manner of the PyTorch examples.

    history = fit(model, train_batches, val_batches, eval_split="validation",
                  run_dir=runs_dir / "vgg16", epochs=40, optimizer="sgd", lr=0.05,
                  schedule="cosine", device=device, config={"model": "vgg16", "seed": 0})
    result = evaluate(model, test_batches, device, predictions=True)

`train_one_epoch` and `evaluate` are the training step and the evaluation pass.
`fit` only orchestrates them: it checks the settings, resumes or reuses the run
saved in `run_dir` (common.checkpoints.RunDir), runs the epoch loop, stops a
diverged run and logs one line per epoch.

A history holds lists, one entry per epoch: "epoch" (1-based), "train_loss",
"train_accuracy" (running mean over the epoch, in train mode), "eval_loss",
"eval_accuracy" (eval mode, the whole held-out set), "lr" (at the epoch's first
batch) and "seconds"; accuracies are fractions. "eval_split" names the held-out
set ("test" or "validation"), so no validation number is ever shown as a test
one. "stopped" is None, or why the run stopped early (a non-finite loss): the
lists then hold the epochs up to the last checkpoint before it, the model holds the
weights of the last of them, and the stop is returned, not raised.

Calling `fit` again with the same settings continues an unfinished run from its
last checkpoint (see `checkpoint_overhead`), or reuses a finished one (weights
loaded, history returned, nothing trained) unless `force=True`. Different settings
are an error naming the keys, never a silent mix of two runs. The device's choices
(common.hardware: precision, kernels, layout) are provenance, not settings: a run
started on the CPU resumes on a GPU. A resumed run ends bit for bit where an
uninterrupted one would on the CPU (an emulated GPU included); on CUDA, cuDNN's
autotuning and atomic adds make it close, not bitwise.
"""
from __future__ import annotations

import math
import os
import re
import time
import warnings
from functools import partial
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoints import (CHECKPOINT_FORMAT, CheckpointError, ConfigMismatchError, RunDir,
                          load_history, normalise_settings, rng_state, run_status, set_rng_state)
from .config import check, check_fraction, check_positive_int
from .hardware import hardware_for
from .models import count_parameters
from .optim import (OPTIMIZERS, SCHEDULE_OPTIONS, SCHEDULES, check_name, load_optimizer_state,
                    make_optimizer, make_scheduler, parameter_groups, schedule_settings)

__all__ = ["OPTIMIZERS", "SCHEDULES", "SCHEDULE_OPTIONS", "HISTORY_KEYS", "EVAL_SPLITS",
           "CheckpointError", "ConfigMismatchError", "train_one_epoch", "evaluate", "fit",
           "make_optimizer", "make_scheduler", "schedule_settings", "load_history", "run_status"]

HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "eval_loss", "eval_accuracy",
                "lr", "seconds")
EVAL_SPLITS = ("test", "validation")


# --- Q2(a)(b)(c), Q3: the training step and the evaluation pass ---------------------------

def train_one_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, *,
                    criterion: nn.Module, scaler: torch.amp.GradScaler, device: torch.device,
                    dtype: torch.dtype | None = None, scheduler=None,
                    channels_last: bool = False) -> dict[str, torch.Tensor]:
    """One pass over `batches` in train mode: forward, loss, backward, step.

    `scheduler` is stepped after every batch (per-batch schedules only). The sums
    stay on the device and the caller syncs once per epoch: a per-batch .item()
    would stall a GPU at every step. "first_bad" is the 1-based index of the first
    batch whose loss was not finite (0: none), and "bad_loss" that loss."""
    model.train()
    zero = dict(device=device)
    sums = {"loss_sum": torch.zeros((), dtype=torch.float64, **zero),
            "correct": torch.zeros((), dtype=torch.int64, **zero),
            "count": torch.zeros((), dtype=torch.int64, **zero),
            "first_bad": torch.zeros((), dtype=torch.int64, **zero),
            "bad_loss": torch.zeros((), dtype=torch.float32, **zero)}
    for step, (x, y) in enumerate(batches, start=1):
        with _autocast(device, dtype):
            logits = model(_prepare_input(x, channels_last))
            loss = criterion(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # the scale is 1 (a no-op) unless float16 needs it
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        loss = loss.detach()
        newly_bad = ~torch.isfinite(loss) & (sums["first_bad"] == 0)
        sums["first_bad"] = torch.where(newly_bad, step, sums["first_bad"])
        sums["bad_loss"] = torch.where(newly_bad, loss, sums["bad_loss"])
        sums["loss_sum"] += loss.double() * y.numel()
        sums["correct"] += (logits.detach().argmax(1) == y).sum()
        sums["count"] += y.numel()
    return sums


def evaluate(model: nn.Module, batches: Iterable, device, amp: bool = True, *,
             predictions: bool = False, channels_last: bool = False) -> dict[str, Any]:
    """Mean cross-entropy and accuracy (a fraction) of `model` over all `batches`, in
    eval mode. With `predictions=True` also the predicted and true labels (int64 CPU
    tensors, in batch order) for a confusion matrix. The loss is plain cross-entropy
    even when training uses label smoothing, so held-out losses stay comparable.
    `amp` and `channels_last` are wishes, as in fit: the device decides (common.hardware)."""
    device = torch.device(device)
    hw = hardware_for(device)
    dtype, channels_last = hw.autocast_dtype(amp), hw.use_channels_last(channels_last)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count, preds, labels = 0, [], []
    with torch.no_grad():
        for x, y in batches:
            with _autocast(device, dtype):
                logits = model(_prepare_input(x, channels_last))
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
            pred = logits.argmax(1)
            correct += (pred == y).sum()
            count += y.numel()
            if predictions:
                preds.append(pred)
                labels.append(y)
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluate: the batches yielded no samples")
    loss, hits = torch.stack([loss_sum, correct.double()]).tolist()  # the one sync
    result: dict[str, Any] = {"loss": loss / count, "accuracy": hits / count, "num_samples": count}
    if predictions:
        result["predictions"] = torch.cat(preds).cpu()
        result["labels"] = torch.cat(labels).cpu()
    return result


# --- fit: settings, resume or reuse, the epoch loop ---------------------------------------

def fit(model: nn.Module, train_batches, eval_batches, *, run_dir: str | os.PathLike,
        epochs: int, lr: float, device, eval_split: str = "test", optimizer: str = "sgd",
        momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 5e-4,
        schedule: str = "none", schedule_options: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0, amp: bool = True, channels_last: bool = False,
        lr_multipliers: Mapping[str, float] | None = None, force: bool = False,
        config: Mapping[str, Any] | None = None, log: Callable[[str], None] = print,
        on_epoch_end: Callable[[int, dict], None] | None = None,
        checkpoint_overhead: float | None = 0.05, keep_weights: bool = True) -> dict[str, Any]:
    """Train `model` for `epochs` epochs (or resume/reuse the run in `run_dir`); return
    its history (see the module docstring).

    train_batches / eval_batches: re-iterable (x, y) batches with len(), e.g.
        DeviceBatches; `set_epoch(epoch)` (0-based) is called on them each epoch when
        they have it. eval_batches is the held-out set evaluated after every epoch,
        and `eval_split` says which one it is: "test" or "validation".
    optimizer: one of OPTIMIZERS (see make_optimizer); schedule: one of SCHEDULES,
        tuned by `schedule_options` (see SCHEDULE_OPTIONS / make_scheduler).
    lr_multipliers: {module name prefix: factor on lr}, e.g. {"fc": 10} for a new head
        (see common.optim.parameter_groups); the schedule scales every group alike.
    amp, channels_last: mixed precision and NHWC where the hardware gains from them
        (common.hardware: on a GPU); how the run computes, so not settings of the run.
    config: the caller's description of the run (model name, data, seed, ...). It is
        compared, with the training settings, with the saved run's, so put in it what
        defines the run, not paths or the device (a run may resume on another machine).
    on_epoch_end(epoch, history): called after each epoch (and its checkpoint, if due).
    checkpoint_overhead: the largest share of the run's time spent writing checkpoints
        (RunDir.checkpoint; None or 0: after every epoch). keep_weights=False: the
        finished run keeps its history only (nothing uses its model later), and a reuse
        leaves `model` as built. Neither is a setting of the run: change them freely.
    """
    fit_settings = dict(epochs=epochs, optimizer=optimizer, lr=lr, momentum=momentum,
                        nesterov=nesterov, weight_decay=weight_decay, schedule=schedule,
                        schedule_options=schedule_settings(schedule, schedule_options),
                        label_smoothing=label_smoothing, lr_multipliers=dict(lr_multipliers or {}))
    _check_fit_settings(fit_settings, eval_split, len(train_batches), checkpoint_overhead)
    settings = _run_settings(model, fit_settings, eval_split, train_batches, eval_batches, config)
    run = RunDir(run_dir, keep_weights=keep_weights)
    run.path.mkdir(parents=True, exist_ok=True)
    if force:
        run.clear()
    run.check_settings(settings)

    device = torch.device(device)
    parts = _training_parts(model, fit_settings, device, len(train_batches), amp=amp,
                            channels_last=channels_last)
    state = run.resume(model, epochs, log, fresh=lambda: _empty_history(eval_split),
                       snapshot=lambda epoch, history: _snapshot(model, parts, epoch, history, settings),
                       settings=settings, device=str(device), eval_batches=len(eval_batches),
                       **parts["hardware"].provenance(amp, channels_last))  # how, not what
    history, start = state["history"], state["epoch"]
    if "optimizer" in state:  # an unfinished run: the optimiser, schedule and scaler go on
        _load_training_state(parts, state)
    if history.get("stopped") or start >= epochs:
        return history
    history.setdefault("eval_split", eval_split)  # runs saved before histories named their split
    return _epoch_loop(model, train_batches, eval_batches, run, parts, history, start=start,
                       epochs=epochs, device=device, log=log, on_epoch_end=on_epoch_end,
                       settings=settings, overhead=checkpoint_overhead)


def _run_settings(model, fit_settings, eval_split, train_batches, eval_batches, config) -> dict:
    """What defines the run, as saved in config.json and compared on every re-run."""
    return normalise_settings({"fit": {
        "model_class": type(model).__name__, "parameters": count_parameters(model),
        **fit_settings, "eval_split": eval_split, "train_batches": len(train_batches),
        "train_samples": getattr(train_batches, "num_samples", None),
        "eval_samples": getattr(eval_batches, "num_samples", None)}, "config": dict(config or {})})


def _epoch_loop(model, train_batches, eval_batches, run: RunDir, parts: dict, history: dict, *,
                start: int, epochs: int, device, log, on_epoch_end,
                settings, overhead: float | None) -> dict:
    """Epochs start+1..epochs: train, evaluate, checkpoint when due, log. Returns the history."""
    opt, scheduler, per_batch = parts["optimizer"], parts["scheduler"], parts["per_batch"]
    channels_last = parts["channels_last"]  # what the hardware makes of fit's wish
    split, width, spent = history["eval_split"], len(str(epochs)), []
    for epoch in range(start, epochs):
        for batches in (train_batches, eval_batches):
            if hasattr(batches, "set_epoch"):
                batches.set_epoch(epoch)
        started, lr_now = time.perf_counter(), opt.param_groups[0]["lr"]
        with warnings.catch_warnings():
            # With float16 the GradScaler skips steps while it calibrates the loss scale,
            # and torch warns when the schedule then steps before the optimiser has. That
            # is expected (the schedule counts batches) and would clutter the notebook.
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler"))
            sums = train_one_epoch(model, train_batches, opt, criterion=parts["criterion"],
                                   scaler=parts["scaler"], device=device, dtype=parts["dtype"],
                                   scheduler=scheduler if per_batch else None,
                                   channels_last=channels_last)
        loss_sum, correct, count, first_bad, bad_loss = torch.stack([sums[k].double() for k in (
            "loss_sum", "correct", "count", "first_bad", "bad_loss")]).tolist()  # the one sync
        if first_bad:
            return run.stop(model, log, f"non-finite loss at epoch {epoch + 1}, batch "
                         f"{int(first_bad)}/{len(train_batches)}: loss={bad_loss}. The run "
                         f"diverged; try a smaller lr (was {lr_now:.3g} with "
                         f"{settings['fit']['optimizer']}) or check the inputs.")
        if scheduler is not None and not per_batch:
            scheduler.step()
        held = evaluate(model, eval_batches, device, parts["amp"],
                        channels_last=channels_last)
        if not math.isfinite(held["loss"]):
            return run.stop(model, log, f"non-finite {split} loss at epoch {epoch + 1}: "
                         f"{held['loss']}. The run diverged.")
        spent.append(time.perf_counter() - started)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / count, "train_accuracy": correct / count,
               "eval_loss": held["loss"], "eval_accuracy": held["accuracy"], "lr": lr_now,
               "seconds": spent[-1]}
        for key in HISTORY_KEYS:
            history[key].append(row[key])
        if epoch + 1 < epochs or not overhead:  # else the final checkpoint follows at once
            run.checkpoint(partial(_snapshot, model, parts, epoch + 1, history, settings), overhead)
        run.write_history(history)  # small: every epoch, even when the checkpoint waits
        eta = sum(spent) / len(spent) * (epochs - epoch - 1)
        log(f"epoch {epoch + 1:>{width}}/{epochs}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.4f}  {split} loss {row['eval_loss']:.4f} "
            f"acc {row['eval_accuracy']:.4f}  lr {lr_now:.2e}  s {spent[-1]:.1f}  "
            f"ETA {_format_seconds(eta)}")
        if epoch == start and epoch + 1 < epochs:  # once: how much a disconnect can lose
            log(run.checkpoint_plan(overhead, spent[0], epochs - epoch - 1))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, history)
    run.save_final(_snapshot(model, parts, epochs, history, settings))
    return history


def _check_fit_settings(s: Mapping[str, Any], eval_split: str, steps_per_epoch: int,
                        checkpoint_overhead: float | None) -> None:
    check_positive_int("epochs", s["epochs"])
    check("lr", s["lr"], isinstance(s["lr"], (int, float)) and s["lr"] > 0, "a positive number")
    check("momentum", s["momentum"], isinstance(s["momentum"], (int, float))
          and 0 <= s["momentum"] < 1, "a number in [0, 1)")
    check("weight_decay", s["weight_decay"], isinstance(s["weight_decay"], (int, float))
          and s["weight_decay"] >= 0, "a number >= 0")
    check("label_smoothing", s["label_smoothing"], isinstance(s["label_smoothing"], (int, float))
          and 0 <= s["label_smoothing"] < 1, "a number in [0, 1)")
    check_name("optimizer", s["optimizer"], OPTIMIZERS)
    check_name("eval_split", eval_split, EVAL_SPLITS)
    if checkpoint_overhead not in (None, 0):  # both mean a checkpoint after every epoch
        check_fraction("checkpoint_overhead", checkpoint_overhead)
    if steps_per_epoch == 0:
        raise ValueError("train_batches is empty: there is nothing to train on")


def _training_parts(model: nn.Module, s: Mapping[str, Any], device: torch.device,
                    steps_per_epoch: int, *, amp: bool, channels_last: bool) -> dict[str, Any]:
    """Put the model on the device; the optimiser, schedule, loss and mixed-precision
    objects of a run, with the device's choices (common.hardware) where `amp` and
    `channels_last` ask for them."""
    hw = hardware_for(device)
    hw.set_backend_flags()
    model.to(device)
    channels_last = hw.use_channels_last(channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    groups = parameter_groups(model, s["lr"], s["lr_multipliers"])
    opt = make_optimizer(s["optimizer"], groups, lr=s["lr"], momentum=s["momentum"],
                         nesterov=s["nesterov"], weight_decay=s["weight_decay"], fused=hw.fused)
    scheduler, per_batch = make_scheduler(s["schedule"], opt, epochs=s["epochs"],
                                          steps_per_epoch=steps_per_epoch,
                                          options=s["schedule_options"])
    return {"optimizer": opt, "scheduler": scheduler, "per_batch": per_batch,
            "dtype": hw.autocast_dtype(amp), "scaler": hw.grad_scaler(amp), "amp": amp,
            "channels_last": channels_last, "hardware": hw,
            "criterion": nn.CrossEntropyLoss(label_smoothing=s["label_smoothing"])}


def _load_training_state(parts: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    load_optimizer_state(parts["optimizer"], state["optimizer"])
    if parts["scheduler"]:
        parts["scheduler"].load_state_dict(state["scheduler"])
    # A disabled scaler (the CPU, bfloat16) saves {} and an enabled one cannot load that:
    # load only where both sides scale. A T4 resuming a CPU run starts from a fresh
    # scale, whose first overflowing steps are skipped, as at the start of any run.
    if state["scaler"] and parts["scaler"].is_enabled():
        parts["scaler"].load_state_dict(state["scaler"])
    set_rng_state(state["rng"])


def _snapshot(model: nn.Module, parts: Mapping[str, Any], epoch: int, history: dict,
              settings: dict) -> dict:
    """A checkpoint: a plain dict of state_dicts plus the epoch, RNG states and history."""
    scheduler = parts["scheduler"]
    return {"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": model.state_dict(),
            "optimizer": parts["optimizer"].state_dict(),
            "scheduler": scheduler.state_dict() if scheduler else None,
            "scaler": parts["scaler"].state_dict(), "rng": rng_state(), "history": history,
            "settings": settings}


def _empty_history(eval_split: str) -> dict[str, Any]:
    return {**{key: [] for key in HISTORY_KEYS}, "eval_split": eval_split, "stopped": None}


def _format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# --- mixed precision ------------------------------------------------------------------

def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16,
                          enabled=dtype is not None)


def _prepare_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)  # a no-op when already so
    return x
