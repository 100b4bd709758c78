"""A run's folder on disk: its settings, its history and its checkpoints.

`RunDir` owns one run directory:

    config.json    the settings compared on every re-run, plus provenance
    history.json   per-epoch metrics (rewritten after every epoch)
    last.pt        the newest checkpoint; prev.pt the one before it (while training)

A resumable checkpoint holds the optimiser state too (~200 MB for AlexNet, ~1 GB
for VGG16, fsynced to Google Drive on Colab), so `RunDir.checkpoint` skips epochs
to keep the writes within a share of the run's time (fit's checkpoint_overhead);
history.json can then be a few epochs ahead, and a resume trains those epochs
again. A checkpoint is a plain dict, as in the PyTorch examples: the state_dicts
and the epoch, with the RNG states, history and settings added, so a resumed run
ends where an uninterrupted one would: bit for bit on the CPU, close but not
bitwise on CUDA (cuDNN's autotuning and atomic adds vary between runs).

Writes are atomic (common.files.atomic_write): a crash at any point leaves last.pt
or prev.pt (or both) complete. A run that is over (every epoch done, or stopped)
is only reused, never resumed, so its last.pt becomes a *final* checkpoint
(weights, history, settings; no optimiser, schedule, scaler or RNG state) and
prev.pt goes: for AlexNet with SGD 93 MB instead of 370 MB per run, which matters
on Google Drive. A run whose model no later cell uses (Q3) keeps no weights.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .config import ConfigError, environment_info
from .files import (atomic_write, check_free_space, lock_folder, read_json, tensor_bytes,
                    to_jsonable, unlock_folder, write_json)

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "ConfigMismatchError", "RunDir",
           "rng_state", "set_rng_state", "load_history", "run_status", "normalise_settings"]

CHECKPOINT_FORMAT = 1
CHECKPOINT_FILES = ("last.pt", "prev.pt")
RESUME_KEYS = ("format", "epoch", "model", "optimizer", "scheduler", "scaler", "rng", "history")
FINAL_KEYS = ("format", "epoch", "model", "history", "settings")  # what reusing a finished run needs


class CheckpointError(RuntimeError):
    """A run directory's checkpoints cannot be used to resume the run."""


class ConfigMismatchError(ConfigError):
    """A run directory holds a run made with different settings."""


def rng_state() -> dict[str, Any]:
    """Every RNG as tensors and plain lists, so weights_only loading accepts it."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def normalise_settings(obj: Any) -> Any:
    """Through JSON and back, so saved and fresh settings compare like for like
    (tuples become lists, paths strings)."""
    return json.loads(json.dumps(to_jsonable(obj)))


# Saved as settings by earlier versions, but set by the device: how a run computes, not
# what. A run may resume on another device, so saved runs' values are ignored.
NOT_SETTINGS = {"fit": ("amp", "channels_last", "eval_batches")}


def _differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    out = []
    for section in sorted(set(saved) | set(now)):
        old, new = saved.get(section, {}), now.get(section, {})
        for key in sorted((set(old) | set(new)) - set(NOT_SETTINGS.get(section, ()))):
            a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
            if a != b:
                out.append(f"{section}.{key}: saved {a!r}, now {b!r}")
    return out


class RunDir:
    """One training run's directory. `settings` is a dict of sections (e.g. "fit"
    and "config") that define the run; they are compared on every re-run."""

    clock = staticmethod(time.perf_counter)  # tests put a fake clock here

    def __init__(self, path: str | os.PathLike, keep_weights: bool = True):
        self.path = Path(path)
        self.keep_weights = keep_weights  # False: a finished run keeps its history only
        self.name = self.path.name
        # The last checkpoint write timed in this session: how long it took, when it ended.
        self.save_seconds: float | None = None
        self.saved_at = 0.0

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- settings and history ---------------------------------------------------------

    def clear(self) -> None:
        """Forget the saved run (force=True): checkpoints, history and settings."""
        for path in [*(self.path / n for n in CHECKPOINT_FILES + ("history.json", "config.json")),
                     *self.path.glob("*.tmp")]:  # and the temporaries of interrupted writes
            path.unlink(missing_ok=True)

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        """Raise ConfigMismatchError naming every key where the saved run differs."""
        path = self.path / "config.json"
        if not path.exists():
            return
        saved = read_json(path)
        diffs = _differences({k: saved.get(k, {}) for k in settings}, settings)
        if diffs:
            raise ConfigMismatchError(
                f"{self.path} holds a run with different settings:\n  " + "\n  ".join(diffs)
                + "\nUse another run directory for the new settings, or force=True to "
                "replace the saved run.")

    def write_config(self, settings: Mapping[str, Any], **provenance: Any) -> None:
        write_json(self.path / "config.json", {**settings, "run": self.name, **provenance})

    def write_history(self, history: Mapping[str, Any]) -> None:
        write_json(self.path / "history.json", history)

    def history(self) -> dict[str, Any]:
        return load_history(self.path)

    def _history_epochs(self) -> int:
        return len(self.history()["epoch"]) if (self.path / "history.json").exists() else 0

    # --- checkpoints ------------------------------------------------------------------

    def save(self, state: Mapping[str, Any]) -> None:
        """Write last.pt atomically and keep the one before as prev.pt."""
        atomic_write(self.path / "last.pt", lambda f: torch.save(dict(state), f), sync=True,
                     keep_previous=self.path / "prev.pt")

    def checkpoint(self, snapshot: Callable[[], Mapping[str, Any]], overhead: float | None) -> bool:
        """save(snapshot()) if a checkpoint is due; return whether one was written.

        overhead None or 0: always (a checkpoint after every epoch). Otherwise once the
        time since the last write ended is at least that write's duration / overhead, so
        writes take at most about `overhead` of the run's time. With no write timed yet
        (a resumed run) it is due: that write gives the measurement."""
        if overhead and self.save_seconds is not None and \
                self.clock() - self.saved_at < self.save_seconds / overhead:
            return False
        self._timed_save(snapshot())
        return True

    def _timed_save(self, state: Mapping[str, Any]) -> None:
        started = self.clock()
        self.save(state)
        self.saved_at = self.clock()
        self.save_seconds = self.saved_at - started

    def checkpoint_plan(self, overhead: float | None, epoch_seconds: float,
                        epochs_left: int) -> str:
        """One log line saying how often `checkpoint` will write, i.e. how much training
        a disconnect can lose, from the last write's and an epoch's duration."""
        if not overhead or self.save_seconds is None:
            return "checkpoints: every epoch"
        every = math.ceil(self.save_seconds / overhead / max(epoch_seconds, 1e-9))
        when = ("every epoch" if every <= 1 else "only at the end" if every > epochs_left
                else f"about every {every} epochs")
        return (f"checkpoints: {when} (a write takes {self.save_seconds:.2g} s; at most "
                f"{overhead * 100:.3g}% of training time)")

    def save_final(self, state: Mapping[str, Any]) -> None:
        """Replace last.pt by the final checkpoint of a run that is over (without the
        model's weights unless self.keep_weights); delete prev.pt.

        A crash between the two steps leaves a complete final last.pt and a stale
        prev.pt, which the next reuse removes."""
        final = {key: state[key] for key in FINAL_KEYS if key in state}
        if not self.keep_weights:
            final["model"] = {}
        final["final"] = True
        atomic_write(self.path / "last.pt", lambda f: torch.save(final, f), sync=True)
        (self.path / "prev.pt").unlink(missing_ok=True)
        unlock_folder(self.path)  # the run is over: another process may reuse it

    def read(self, name: str = "last.pt") -> dict:
        path = self.path / name
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated zip, garbage bytes, foreign pickle: all unusable
            detail = str(err).splitlines()[0] if str(err) else "no detail"
            raise CheckpointError(f"{name}: cannot be read ({type(err).__name__}: {detail})") from None
        needed = ("format", "epoch", "model", "history") if isinstance(state, dict) and \
            state.get("final") else RESUME_KEYS
        if not isinstance(state, dict) or any(k not in state for k in needed):
            raise CheckpointError(f"{name}: not a checkpoint written by common.train.fit")
        if state["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{name}: checkpoint format {state['format']}, "
                                  f"this code reads format {CHECKPOINT_FORMAT}")
        if len(state["history"]["epoch"]) != state["epoch"]:
            raise CheckpointError(f"{name}: its history does not match its epoch count")
        return state

    def load_latest(self, log: Callable[[str], None] = print) -> dict | None:
        """The newest readable checkpoint; None for a run that never started.

        An unreadable last.pt falls back to prev.pt with a warning (the epochs since
        prev.pt are retrained). history.json ahead of the checkpoint is normal (it is
        written every epoch, checkpoints less often): the checkpoint wins. When
        checkpoints exist but none is readable, or history.json shows finished epochs
        but no checkpoint exists, it is an error: a run is never silently restarted
        from zero."""
        errors = []
        for i, name in enumerate(CHECKPOINT_FILES):
            if not (self.path / name).exists():
                continue
            try:
                state = self.read(name)
            except CheckpointError as err:
                errors.append(str(err))
                continue
            if errors or i > 0:
                msg = (f"{self.path}: {'; '.join(errors) or 'last.pt is missing'}; "
                       f"falling back to {name} (epoch {state['epoch']})")
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
                log("warning: " + msg)
            return state
        fix = (f"Delete {self.path} or call fit(..., force=True) to train this run from scratch, "
               "or restore a good last.pt.")
        if errors:
            raise CheckpointError(f"no usable checkpoint in {self.path}: {'; '.join(errors)}. {fix}")
        done = self._history_epochs()
        if done:
            raise CheckpointError(f"{self.path}/history.json records {done} finished epoch(s) but "
                                  f"there is no checkpoint to resume from. {fix}")
        return None

    # --- resume, reuse, stop --------------------------------------------------------------

    def resume(self, model: torch.nn.Module, epochs: int, log: Callable[[str], None], *,
               fresh: Callable[[], dict], snapshot: Callable[[int, dict], dict],
               settings: Mapping[str, Any], **provenance: Any) -> dict:
        """Where the run stands, as a checkpoint dict with at least "epoch" and "history".

        A new run writes its settings, the history `fresh()` and the epoch-0 checkpoint
        (a run killed in its first epoch resumes identically; a diverged one goes back to
        its starting weights). A saved run's weights are loaded into `model`; an unfinished
        run's whole checkpoint comes back, a run that is over is reused as it is. The
        folder stays locked to this process until the run is over; disk space is checked."""
        lock_folder(self.path, log)
        for path in self.path.glob("*.tmp"):  # an interrupted write's: only the holder writes
            path.unlink(missing_ok=True)
        state = self.load_latest(log)
        if state is None:
            history = fresh()
            self._check_space(first := snapshot(0, history), model)
            self.write_config(settings, **provenance, environment=environment_info(),
                              started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            self.write_history(history)
            self._timed_save(first)  # also the first measure of a write
            return {"epoch": 0, "history": history}
        if state["model"]:  # empty: a finished run kept without weights
            model.load_state_dict(state["model"])
        history, start = state["history"], state["epoch"]
        if history["stopped"] or start >= epochs:
            if not state.get("final") or (self.path / "prev.pt").exists():
                self.save_final(state)  # a run saved before final checkpoints existed
            unlock_folder(self.path)
            log(f"run {self.name} stopped earlier: {history['stopped']} (returning its history; "
                "force=True trains it again)" if history["stopped"] else
                f"run {self.name} finished earlier ({start} epochs): reusing its "
                f"{'weights and ' if state['model'] else ''}history (force=True trains it again)")
            return {"epoch": start, "history": history}
        if state.get("final"):
            raise CheckpointError(f"{self.path}/last.pt is a finished run's final checkpoint (no "
                                  f"optimiser state): it cannot be resumed for epochs {start + 1}-"
                                  f"{epochs}. Use another run directory, or force=True to retrain.")
        done = self._history_epochs()
        if done > start:  # epochs after the last checkpoint: history.json goes back with it
            self.write_history(history)
        if start or done > start:
            log(f"run {self.name}: resuming after epoch {start}/{epochs}" + (
                f", its last checkpoint (epochs {start + 1}-{done} are trained again)"
                if done > start else ""))
        self._check_space(state, model)
        return state

    def _check_space(self, state: Mapping[str, Any], model: torch.nn.Module) -> None:
        """Refuse to train (DiskFullError) unless the disk holds this run's checkpoints at
        their peak: last.pt, prev.pt and a temporary file, less what is there already."""
        opt = state.get("optimizer") or {}  # before its first step, without the buffers it
        # makes then (momentum: one per trained weight; Adam: two)
        slots = 0 if opt.get("state") else max([2 if "betas" in g else int(bool(g.get("momentum")))
                                                for g in opt.get("param_groups", [])] or [0])
        size = int(1.02 * (tensor_bytes(state) + slots * sum(  # + the pickle around them
            p.numel() * p.element_size() for p in model.parameters() if p.requires_grad))) + 2**20
        held = sum(p.stat().st_size for p in map(self.path.joinpath, CHECKPOINT_FILES) if p.is_file())
        check_free_space(self.path, 3 * size - held, f"3 x {size / 1e6:.0f} MB: last.pt, prev.pt "
                         "and the temporary file of the checkpoint being written")

    def stop(self, model: torch.nn.Module, log: Callable[[str], None], reason: str) -> dict:
        """Record why the run stopped in its last checkpoint and history.json, and put
        the model back to that checkpoint's weights (the current ones are garbage); the
        epochs after it, if any, are dropped. Returns the history."""
        state = self.read("last.pt")
        model.load_state_dict(state["model"])
        state["history"]["stopped"] = reason
        self.save_final(state)  # a stopped run is over: reused, never resumed
        self.write_history(state["history"])
        log(f"STOPPED run {self.name}: {reason} (kept as of epoch {state['epoch']}, its last "
            "checkpoint)")
        return state["history"]


def load_history(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's history.json as a dict (what the plots take)."""
    path = Path(run_dir) / "history.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: has this run been trained (common.train.fit)?")
    return read_json(path)


def run_status(run_dir: str | os.PathLike, epochs: int) -> str:
    """'new', 'partial k/K', 'finished' or 'stopped', read from history.json (a resume
    continues from the last checkpoint, which can be a few epochs before k)."""
    if not (Path(run_dir) / "history.json").exists():
        return "new"
    history = load_history(run_dir)
    done = len(history["epoch"])
    if history.get("stopped"):
        return "stopped"
    return "finished" if done >= epochs else f"partial {done}/{epochs}"
