"""Training and evaluation as plain functions, with resumable runs on disk.

    history = fit(model, train_batches, test_batches, run_dir=runs_dir / "vgg16",
                  epochs=40, optimizer="sgd", lr=0.05, schedule="cosine", device=device,
                  config={"model": "vgg16", "data": "cifar10 train 45k", "seed": 0})
    result = evaluate(model, test_batches, device, predictions=True)

A run directory holds

    config.json    the settings compared on every re-run, plus provenance
    history.json   per-epoch metrics (rewritten after every epoch)
    last.pt        the newest checkpoint; prev.pt the one before it (while training)

Calling `fit` again with the same settings continues an unfinished run from its
last completed epoch, or reuses a finished one (weights loaded, history returned,
nothing trained) unless `force=True`. Different settings are an error naming the
keys, never a silent mix of two runs. A checkpoint holds the model, optimiser,
schedule, grad scaler and every RNG state, and the batches reshuffle from
(seed, epoch) (`DeviceBatches.set_epoch`), so on the CPU a resumed run ends bit
for bit where an uninterrupted one would.

A run that is over (every epoch done, or stopped) is only ever reused, never
resumed, so its last.pt is rewritten as a *final* checkpoint (weights, history and
settings, without optimiser, schedule, scaler and RNG state) and prev.pt is
deleted. For AlexNet with SGD that is 93 MB instead of 370 MB per run, which
matters when checkpoints live in Google Drive.

A loss that turns NaN or inf stops the run: `fit` puts the model back to its last
good epoch, records the reason in `history["stopped"]`, logs it and *returns* the
history (a notebook comparing several settings keeps going; plots show the reason).
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.models import count_parameters
from common.config import ConfigError, check, check_positive_int, environment_info
from common.files import to_jsonable, write_json

__all__ = ["OPTIMIZERS", "SCHEDULES", "SCHEDULE_OPTIONS", "HISTORY_KEYS", "CheckpointError",
           "ConfigMismatchError", "make_optimizer", "make_scheduler", "schedule_settings",
           "autocast_dtype", "evaluate", "fit", "plan", "load_history", "run_status"]

OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle")
# Options each schedule accepts through fit(schedule_options=...), with defaults.
SCHEDULE_OPTIONS: dict[str, dict[str, Any]] = {
    "none": {},
    "step": {"step_size": None, "gamma": 0.1},  # step_size None: epochs // 3 (at least 1)
    "cosine": {"eta_min": 0.0},
    "onecycle": {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
}
HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                "lr", "seconds")
CHECKPOINT_FORMAT = 1
CHECKPOINT_FILES = ("last.pt", "prev.pt")


class CheckpointError(RuntimeError):
    """A run directory's checkpoints cannot be used to resume the run."""


class ConfigMismatchError(ConfigError):
    """A run directory holds a run made with different settings."""


# --- optimisers and schedules ---------------------------------------------------------

def make_optimizer(name: str, params: Iterable, *, lr: float, momentum: float = 0.9,
                   nesterov: bool = False, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """An optimiser by name. `momentum` and `nesterov` apply to sgd only: RMSProp is
    used in its plain form (torch's default momentum 0) and Adam/AdamW keep their
    betas (0.9, 0.999). Weight decay is an L2 term in the gradient for sgd, rmsprop
    and adam, and decoupled (applied to the weights directly) for adamw."""
    _check_name("optimizer", name, OPTIMIZERS)
    if name == "sgd":
        if nesterov and momentum <= 0:
            raise ConfigError("nesterov=True needs momentum > 0; set momentum=0.9 or nesterov=False")
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov,
                               weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def schedule_settings(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The schedule's options with defaults filled in; unknown options are an error."""
    _check_name("schedule", name, SCHEDULES)
    options = dict(options or {})
    allowed = SCHEDULE_OPTIONS[name]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"schedule {name!r} takes no option {', '.join(unknown)}; its options "
                          f"are: {', '.join(allowed) or 'none'}")
    return {**allowed, **options}


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, *, epochs: int,
                   steps_per_epoch: int, options: Mapping[str, Any] | None = None):
    """(scheduler or None, per_batch). `lr` is the optimiser's lr at creation:

    none      constant lr.
    step      lr * gamma ** (epoch // step_size), stepped per epoch.
    cosine    lr * (1 + cos(pi * t / T)) / 2 down to eta_min, t counting batches,
              T = epochs * steps_per_epoch; stepped per batch (smooth even for few epochs).
    onecycle  Smith's one-cycle policy peaking at lr after pct_start of the batches,
              stepped per batch; momentum (sgd) or beta1 (adam/adamw) cycles inversely.
    """
    opts = schedule_settings(name, options)
    total = epochs * steps_per_epoch
    if name == "none":
        return None, False
    if name == "step":
        step_size = opts["step_size"] or max(1, epochs // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size,
                                               gamma=opts["gamma"]), False
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total,
                                                          eta_min=opts["eta_min"]), True
    group = optimizer.param_groups[0]
    # Cycling momentum means something only where there is a momentum term to cycle;
    # for RMSProp it would switch on a momentum the plain algorithm does not have.
    cycles = "betas" in group or (isinstance(optimizer, torch.optim.SGD) and group["momentum"] > 0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total,
        pct_start=opts["pct_start"], div_factor=opts["div_factor"],
        final_div_factor=opts["final_div_factor"], cycle_momentum=cycles), True


def _check_name(what: str, value: Any, choices: Iterable[str]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; valid names: {', '.join(choices)}")


# --- mixed precision ------------------------------------------------------------------

def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype, or None for full float32.

    On CUDA, bfloat16 where the GPU has it natively (Ampere and newer), float16 with
    a GradScaler otherwise (Colab's T4). On the CPU always None: CPU autocast is slow
    on these machines and would change the numerics the tests compare."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16,
                          enabled=dtype is not None)


def _prepare_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)  # a no-op when already so
    return x


# --- evaluation -----------------------------------------------------------------------

def evaluate(model: nn.Module, batches: Iterable, device, amp: bool = True, *,
             predictions: bool = False, channels_last: bool = False) -> dict[str, Any]:
    """Mean cross-entropy and accuracy (a fraction) of `model` over all `batches`, in
    eval mode. With `predictions=True` also the predicted and true labels (int64 CPU
    tensors, in batch order) for a confusion matrix. The loss is plain cross-entropy
    even when training uses label smoothing, so test losses stay comparable."""
    device = torch.device(device)
    dtype = autocast_dtype(device, amp)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    preds, labels = [], []
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


# --- checkpoints ----------------------------------------------------------------------

def _rng_state() -> dict[str, Any]:
    """Every RNG as tensors and plain lists, so weights_only loading accepts it."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state(),
             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_synced(path: Path, state: dict) -> None:
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def _save_checkpoint(run_dir: Path, state: dict) -> None:
    """Write last.pt atomically and keep the previous one as prev.pt.

    The new file is written and synced under a temporary name first; a crash at any
    point leaves last.pt or prev.pt (or both) complete."""
    tmp = run_dir / "last.pt.tmp"
    _write_synced(tmp, state)
    last = run_dir / "last.pt"
    if last.exists():
        os.replace(last, run_dir / "prev.pt")
    os.replace(tmp, last)


# What reusing a run that is over needs; the rest only serves resuming.
FINAL_KEYS = ("format", "epoch", "model", "history", "settings")


def _save_final_checkpoint(run_dir: Path, state: Mapping[str, Any]) -> None:
    """Replace last.pt by the final checkpoint of a run that is over and delete prev.pt.

    last.pt is replaced atomically, then prev.pt goes: a crash in between leaves a
    complete final last.pt and a stale prev.pt, which the next reuse removes."""
    final = {key: state[key] for key in FINAL_KEYS if key in state}
    final["final"] = True
    tmp = run_dir / "last.pt.tmp"
    _write_synced(tmp, final)
    os.replace(tmp, run_dir / "last.pt")
    (run_dir / "prev.pt").unlink(missing_ok=True)


def _read_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, foreign pickle: all unusable
        raise CheckpointError(f"{path.name}: cannot be read ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'no detail'})") from None
    needed = ("format", "epoch", "model", "optimizer", "scheduler", "scaler", "rng", "history")
    if isinstance(state, dict) and state.get("final"):
        needed = ("format", "epoch", "model", "history")
    if not isinstance(state, dict) or any(k not in state for k in needed):
        raise CheckpointError(f"{path.name}: not a checkpoint written by common.train.fit")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path.name}: checkpoint format {state['format']}, "
                              f"this code reads format {CHECKPOINT_FORMAT}")
    if len(state["history"]["epoch"]) != state["epoch"]:
        raise CheckpointError(f"{path.name}: its history does not match its epoch count")
    return state


def _load_latest_checkpoint(run_dir: Path, log: Callable[[str], None]) -> dict | None:
    """The newest readable checkpoint, None for a run that never started.

    An unreadable last.pt falls back to prev.pt with a warning (one epoch is
    retrained). When checkpoints exist but none is readable, or history.json shows
    finished epochs but no checkpoint exists, it is an error: a run is never
    silently restarted from zero."""
    errors = []
    for i, name in enumerate(CHECKPOINT_FILES):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            state = _read_checkpoint(path)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if errors or i > 0:
            msg = (f"{run_dir}: {'; '.join(errors) or 'last.pt is missing'}; "
                   f"falling back to {name} (epoch {state['epoch']})")
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            log("warning: " + msg)
        return state
    fix = (f"Delete {run_dir} or call fit(..., force=True) to train this run from scratch, "
           "or restore a good last.pt.")
    if errors:
        raise CheckpointError(f"no usable checkpoint in {run_dir}: {'; '.join(errors)}. {fix}")
    done = len(load_history(run_dir)["epoch"]) if (run_dir / "history.json").exists() else 0
    if done:
        raise CheckpointError(f"{run_dir}/history.json records {done} finished epoch(s) but "
                              f"there is no checkpoint to resume from. {fix}")
    return None


# --- settings compared across re-runs -------------------------------------------------

def _normalise(obj: Any) -> Any:
    """Through JSON and back, so saved and fresh settings compare like for like
    (tuples become lists, paths strings)."""
    return json.loads(json.dumps(to_jsonable(obj)))


def _differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    out = []
    for section in sorted(set(saved) | set(now)):
        old, new = saved.get(section, {}), now.get(section, {})
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
            if a != b:
                out.append(f"{section}.{key}: saved {a!r}, now {b!r}")
    return out


# --- fit ------------------------------------------------------------------------------

def _empty_history() -> dict[str, Any]:
    history: dict[str, Any] = {key: [] for key in HISTORY_KEYS}
    history["stopped"] = None
    return history


def _format_seconds(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


def _train_one_epoch(model, batches, optimizer, scheduler, per_batch, scaler, criterion,
                     device, dtype, channels_last) -> dict[str, torch.Tensor]:
    """One pass over `batches` in train mode. Metrics stay on the device until the
    caller syncs once; a per-batch .item() would stall a GPU every step."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    step = torch.zeros((), dtype=torch.int64, device=device)
    # The first batch whose loss is not finite (0 = none) and that loss.
    first_bad = torch.zeros((), dtype=torch.int64, device=device)
    bad_loss = torch.zeros((), dtype=torch.float32, device=device)
    with warnings.catch_warnings():
        # With float16 the GradScaler skips steps while it calibrates the loss scale,
        # and torch warns when the schedule then steps before the optimiser has. That
        # is expected (the schedule counts batches) and would clutter the notebook.
        warnings.filterwarnings("ignore",
                                message=re.escape("Detected call of `lr_scheduler.step()`"))
        for x, y in batches:
            with _autocast(device, dtype):
                logits = model(_prepare_input(x, channels_last))
                loss = criterion(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if per_batch:
                scheduler.step()
            loss = loss.detach()
            step += 1
            newly_bad = ~torch.isfinite(loss) & (first_bad == 0)
            first_bad = torch.where(newly_bad, step, first_bad)
            bad_loss = torch.where(newly_bad, loss, bad_loss)
            loss_sum += loss.double() * y.numel()
            correct += (logits.detach().argmax(1) == y).sum()
            count += y.numel()
    return {"loss_sum": loss_sum, "correct": correct, "count": count,
            "first_bad": first_bad, "bad_loss": bad_loss}


def fit(model: nn.Module, train_batches, test_batches, *, run_dir: str | os.PathLike,
        epochs: int, lr: float, device, optimizer: str = "sgd", momentum: float = 0.9,
        nesterov: bool = False, weight_decay: float = 5e-4, schedule: str = "none",
        schedule_options: Mapping[str, Any] | None = None, label_smoothing: float = 0.0,
        amp: bool = True, channels_last: bool = False, force: bool = False,
        config: Mapping[str, Any] | None = None, log: Callable[[str], None] = print,
        on_epoch_end: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Train `model` for `epochs` epochs (or resume/reuse the run in `run_dir`); return
    its history.

    train_batches / test_batches: re-iterable (x, y) batches with len(), e.g.
        DeviceBatches; `set_epoch(epoch)` (0-based) is called on them each epoch when
        they have it. test_batches is whatever held-out set is evaluated each epoch.
    optimizer: one of OPTIMIZERS (see make_optimizer); schedule: one of SCHEDULES,
        tuned by `schedule_options` (see SCHEDULE_OPTIONS / make_scheduler).
    config: the caller's description of the run (model name, data, seed, ...). It is
        compared, together with the training settings, with the saved run's, so put
        in it what defines the run, not paths or the device (a run may be resumed on
        another machine).
    on_epoch_end(epoch, history): called after each epoch's checkpoint is written.

    Returns the history: lists "epoch" (1-based), "train_loss", "train_accuracy"
    (running mean over the epoch in train mode), "test_loss", "test_accuracy" (eval
    mode, whole set), "lr" (at the epoch's first batch), "seconds" (wall time of the
    epoch, evaluation included); accuracies are fractions in [0, 1]. "stopped" is
    None, or why the run stopped early (a non-finite loss); the lists then hold the
    epochs before it and the model holds the weights of the last of them. A stop is
    returned, not raised: check `history["stopped"]` before using the results.
    """
    run_dir = Path(run_dir)
    device = torch.device(device)
    check_positive_int("epochs", epochs)
    check("lr", lr, isinstance(lr, (int, float)) and lr > 0, "a positive number")
    check("momentum", momentum, isinstance(momentum, (int, float)) and 0 <= momentum < 1,
          "a number in [0, 1)")
    check("weight_decay", weight_decay, isinstance(weight_decay, (int, float)) and weight_decay >= 0,
          "a number >= 0")
    check("label_smoothing", label_smoothing,
          isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing < 1, "a number in [0, 1)")
    _check_name("optimizer", optimizer, OPTIMIZERS)
    sched_opts = schedule_settings(schedule, schedule_options)
    steps_per_epoch = len(train_batches)
    if steps_per_epoch == 0:
        raise ValueError("train_batches is empty: there is nothing to train on")

    settings = _normalise({
        "fit": {"model_class": type(model).__name__, "parameters": count_parameters(model),
                "epochs": epochs, "optimizer": optimizer, "lr": lr, "momentum": momentum,
                "nesterov": nesterov, "weight_decay": weight_decay, "schedule": schedule,
                "schedule_options": sched_opts, "label_smoothing": label_smoothing,
                "amp": amp, "channels_last": channels_last,
                "train_batches": steps_per_epoch,
                "train_samples": getattr(train_batches, "num_samples", None),
                "test_batches": len(test_batches),
                "test_samples": getattr(test_batches, "num_samples", None)},
        "config": dict(config or {})})

    run_dir.mkdir(parents=True, exist_ok=True)
    if force:
        for name in CHECKPOINT_FILES + ("last.pt.tmp", "history.json", "config.json"):
            (run_dir / name).unlink(missing_ok=True)
    config_path = run_dir / "config.json"
    if config_path.exists():
        saved = json.loads(config_path.read_text())
        diffs = _differences({k: saved.get(k, {}) for k in ("fit", "config")}, settings)
        if diffs:
            raise ConfigMismatchError(
                f"{run_dir} holds a run with different settings:\n  " + "\n  ".join(diffs)
                + "\nUse another run directory for the new settings, or force=True to "
                "replace the saved run.")

    dtype = autocast_dtype(device, amp)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr, momentum=momentum,
                         nesterov=nesterov, weight_decay=weight_decay)
    scheduler, per_batch = make_scheduler(schedule, opt, epochs=epochs,
                                          steps_per_epoch=steps_per_epoch, options=sched_opts)
    # Loss scaling only for float16: bfloat16 has float32's exponent range.
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def snapshot(epoch: int, history: dict) -> dict:
        return {"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler else None,
                "scaler": scaler.state_dict(), "rng": _rng_state(), "history": history,
                "settings": settings}

    name = run_dir.name
    state = _load_latest_checkpoint(run_dir, log)
    if state is None:
        history = _empty_history()
        write_json(config_path, {**settings, "run": name, "device": str(device),
                                 "precision": str(dtype or torch.float32).replace("torch.", ""),
                                 "environment": environment_info(),
                                 "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        write_json(run_dir / "history.json", history)
        # Epoch 0: the initial state, so a run killed in its first epoch resumes
        # identically and a diverged one can be put back to its starting weights.
        _save_checkpoint(run_dir, snapshot(0, history))
        start = 0
    else:
        model.load_state_dict(state["model"])
        history = state["history"]
        start = state["epoch"]
        over = bool(history["stopped"]) or start >= epochs
        if over and (not state.get("final") or (run_dir / "prev.pt").exists()):
            _save_final_checkpoint(run_dir, state)  # a run saved before final checkpoints existed
        if history["stopped"]:
            log(f"run {name} stopped earlier: {history['stopped']} "
                "(returning its history; force=True trains it again)")
            return history
        if start >= epochs:
            log(f"run {name} finished earlier ({start} epochs): reusing its weights and "
                "history (force=True trains it again)")
            return history
        if state.get("final"):
            raise CheckpointError(
                f"{run_dir}/last.pt is the final checkpoint of a finished run (weights only, no "
                f"optimiser state), so it cannot be resumed for epochs {start + 1}-{epochs}. "
                "Use another run directory, or force=True to train this run from scratch.")
        opt.load_state_dict(state["optimizer"])
        if scheduler:
            scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        if start:
            log(f"run {name}: resuming after epoch {start}/{epochs}")

    width = len(str(epochs))
    session_seconds: list[float] = []
    for epoch in range(start, epochs):
        for batches in (train_batches, test_batches):
            if hasattr(batches, "set_epoch"):
                batches.set_epoch(epoch)
        started = time.perf_counter()
        lr_now = opt.param_groups[0]["lr"]
        sums = _train_one_epoch(model, train_batches, opt, scheduler, per_batch, scaler,
                                criterion, device, dtype, channels_last)
        loss_sum, correct, count, first_bad, bad_loss = torch.stack(
            [sums[k].double() for k in ("loss_sum", "correct", "count", "first_bad", "bad_loss")]
        ).tolist()  # the one sync of the training pass
        if first_bad:
            reason = (f"non-finite loss at epoch {epoch + 1}, "
                      f"batch {int(first_bad)}/{steps_per_epoch}: "
                      f"loss={bad_loss}. The run diverged; try a smaller lr (was {lr_now:.3g} "
                      f"with {optimizer}) or check the inputs.")
            return _stop(run_dir, model, reason, log)
        if scheduler is not None and not per_batch:
            scheduler.step()
        test = evaluate(model, test_batches, device, amp, channels_last=channels_last)
        if not math.isfinite(test["loss"]):
            reason = f"non-finite test loss at epoch {epoch + 1}: {test['loss']}. The run diverged."
            return _stop(run_dir, model, reason, log)
        seconds = time.perf_counter() - started
        session_seconds.append(seconds)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / count,
               "train_accuracy": correct / count, "test_loss": test["loss"],
               "test_accuracy": test["accuracy"], "lr": lr_now, "seconds": seconds}
        for key in HISTORY_KEYS:
            history[key].append(row[key])
        _save_checkpoint(run_dir, snapshot(epoch + 1, history))
        write_json(run_dir / "history.json", history)
        eta = sum(session_seconds) / len(session_seconds) * (epochs - epoch - 1)
        log(f"epoch {epoch + 1:>{width}}/{epochs}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.4f}  test loss {row['test_loss']:.4f} "
            f"acc {row['test_accuracy']:.4f}  lr {lr_now:.2e}  s {seconds:.1f}  "
            f"ETA {_format_seconds(eta)}")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, history)
    _save_final_checkpoint(run_dir, snapshot(epochs, history))
    return history


def _stop(run_dir: Path, model: nn.Module, reason: str, log: Callable[[str], None]) -> dict:
    """Record why the run stopped in its last good checkpoint and history.json, and
    put the model back to that checkpoint's weights (the current ones are garbage)."""
    state = _read_checkpoint(run_dir / "last.pt")
    model.load_state_dict(state["model"])
    state["history"]["stopped"] = reason
    _save_final_checkpoint(run_dir, state)  # a stopped run is over: reused, never resumed
    write_json(run_dir / "history.json", state["history"])
    log(f"STOPPED run {run_dir.name}: {reason}")
    return state["history"]


# --- run bookkeeping ------------------------------------------------------------------

def load_history(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's history.json as a dict (what the plots take)."""
    path = Path(run_dir) / "history.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: has this run been trained (common.train.fit)?")
    return json.loads(path.read_text())


def run_status(run_dir: str | os.PathLike, epochs: int) -> str:
    """'new', 'partial k/K', 'finished' or 'stopped', read from history.json."""
    path = Path(run_dir) / "history.json"
    if not path.exists():
        return "new"
    history = load_history(run_dir)
    done = len(history["epoch"])
    if history.get("stopped"):
        return "stopped"
    return "finished" if done >= epochs else f"partial {done}/{epochs}"


def plan(runs: Iterable[Mapping[str, Any]], *, runs_dir: str | os.PathLike | None = None,
         log: Callable[[str], None] = print) -> dict[str, int]:
    """Print the training ahead, before any of it starts, to budget a Colab session.

    Each run is a mapping with "name", "epochs", "train_images" and optionally
    "test_images" (evaluated every epoch). With `runs_dir`, runs already finished
    there are marked and left out of the remaining count. When every run also
    names its "model" (a common.models name) and "input_size", the compute is
    printed too: FLOPs per run and an estimated T4 time (common.costs, the same
    plan `make bench` prints). Returns the totals.
    """
    runs, rows = list(runs), []
    for run in runs:
        missing = [k for k in ("name", "epochs", "train_images") if k not in run]
        if missing:
            raise ValueError(f"plan: run {run!r} lacks {', '.join(missing)}")
        epochs, train, test = run["epochs"], run["train_images"], run.get("test_images", 0)
        status = run_status(Path(runs_dir) / run["name"], epochs) if runs_dir else "new"
        done = {"finished": epochs, "stopped": epochs}.get(status, 0)
        if status.startswith("partial"):
            done = int(status.split()[1].split("/")[0])
        rows.append((run["name"], epochs, train, test, epochs * (train + test), status,
                     (epochs - done) * (train + test), epochs - done))
    width = max([len(r[0]) for r in rows] + [3])
    log(f"{'run':<{width}}  epochs  train img/epoch  test img/epoch  images total  status")
    for name, epochs, train, test, total, status, _, _ in rows:
        log(f"{name:<{width}}  {epochs:>6}  {train:>15,}  {test:>14,}  {total:>12,}  {status}")
    totals = {"runs": len(rows), "epochs": sum(r[1] for r in rows),
              "images": sum(r[4] for r in rows), "remaining_epochs": sum(r[7] for r in rows),
              "remaining_images": sum(r[6] for r in rows)}
    log(f"total: {totals['runs']} runs, {totals['epochs']} epochs, {totals['images']:,} images; "
        f"still to train: {totals['remaining_epochs']} epochs, {totals['remaining_images']:,} images")
    if runs and all("model" in r and "input_size" in r for r in runs):
        from common.costs import print_plan

        log("")
        _, cost = print_plan([{"source": "common", "test_images": 0, **r} for r in runs], log=log)
        totals["flops"], totals["t4_seconds_estimate"] = cost["total_flops"], cost["t4_seconds"]
    return totals
