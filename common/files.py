"""Files on disk: atomic writes, a folder lock, JSON, and the digest that names a run.

Every file the bundle writes goes through `atomic_write`: the bytes land in a
temporary file beside the target, which then replaces it in one step, so a crash
or a Colab disconnect leaves either the old file or the new one, never half of
one, and a full disk says so (DiskFullError). `lock_folder` keeps a run's folder
to one process at a time. Imports nothing heavier than the standard library.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, IO

__all__ = ["DiskFullError", "FolderLockedError", "atomic_write", "check_free_space", "disk_name",
           "free_bytes", "lock_folder", "tensor_bytes", "unlock_folder", "write_json", "read_json",
           "to_jsonable", "settings_digest"]

# What to do about a full disk, in every message that reports one.
FREE_SPACE = ("Free some space (smoke checkpoints: make clean-smoke, readme.txt; on Google Drive, "
              "also empty the bin) and run again")


class DiskFullError(OSError):
    """A write failed, or would fail, for lack of space; the message says where,
    how much is free and what to do."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def disk_name(path: str | os.PathLike) -> str:
    """'Google Drive' for a path in Colab's Drive mount, else the folder's disk."""
    path = Path(path)
    return "Google Drive" if "MyDrive" in path.parts else f"the disk holding {path}"


def free_bytes(path: str | os.PathLike) -> int:
    """Free space where `path` is (or would be) written."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Raise DiskFullError, before anything is written, when `folder`'s disk has less
    than `needed` bytes free; `what` says what the space is for."""
    free = free_bytes(folder)
    if free < needed:
        raise DiskFullError(
            f"{disk_name(folder)} has {free / 1e6:.0f} MB free; this run needs "
            f"{needed / 1e6:.0f} MB ({what}). {FREE_SPACE}.")


def _disk_full(err: BaseException) -> bool:
    """ENOSPC, a quota, or torch's own words for a short write, which is what a
    full disk looks like from inside torch.save."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    text = str(err)
    return isinstance(err, RuntimeError) and ("unexpected pos" in text
                                              or "file write failed" in text)


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[IO[bytes]], Any], *,
                 sync: bool = False, keep_previous: str | os.PathLike | None = None) -> Path:
    """Write `data` (bytes, or a function that writes to a binary file) to `path`
    atomically. `sync=True` also flushes it to the disk before the rename, for
    files whose loss would cost training time (checkpoints). `keep_previous`: move
    the file being replaced there first (only once the new one is complete).

    The temporary file has a name of its own (last.<random>.pt.tmp), so two writers
    never share one, and it is removed when the write fails. A write that fails for
    lack of space raises DiskFullError, saying so."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{secrets.token_hex(4)}{path.suffix}.tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        if keep_previous is not None:
            try:
                os.replace(path, keep_previous)
            except FileNotFoundError:  # nothing to keep yet
                pass
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if _disk_full(err) and not isinstance(err, DiskFullError):
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DiskFullError(
                f"disk full: writing {path} failed, and its temporary file was removed "
                f"({disk_name(path.parent)} has {free_bytes(path.parent) / 1e6:.0f} MB free). "
                f"{FREE_SPACE}: what was saved before is kept. ({type(err).__name__}: "
                f"{detail})") from None
        raise
    return path


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors and arrays in a nest of dicts, lists and tuples (a
    checkpoint's state_dicts): what torch.save writes, less a little pickle."""
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):  # a torch.Tensor
        return obj.numel() * obj.element_size()
    if hasattr(obj, "nbytes") and hasattr(obj, "dtype"):  # a numpy array
        return int(obj.nbytes)
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


# --- one process at a time in a folder -------------------------------------------------

LOCK_NAME = "lock.json"


class FolderLockedError(RuntimeError):
    """Another live process holds the folder; the message names it and what to do."""


def _holder_text(holder: Mapping[str, Any]) -> str:
    return (f"process {holder.get('pid')} on {holder.get('host')} (since "
            f"{holder.get('started_at')})")


def _read_holder(path: Path) -> dict | None:
    """The lock's record; None when there is no lock (any more). A lock being written
    this instant is read again; one that stays unreadable is nobody's."""
    for attempt in range(2):
        try:
            holder = json.loads(path.read_text())
            if isinstance(holder, dict):
                return holder
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return {"pid": None, "host": None, "started_at": None, "unreadable": True}


def _gone(holder: Mapping[str, Any], me: Mapping[str, Any]) -> str | None:
    """Why the holder can no longer be using the folder, or None while it may be."""
    if holder.get("unreadable"):
        return "its lock file is unreadable"
    if holder.get("host") == me["host"]:
        try:
            os.kill(int(holder["pid"]), 0)  # signal 0: is it running? (sends nothing)
        except ProcessLookupError:
            return "that process is no longer running"
        except (PermissionError, TypeError, ValueError, OverflowError):
            pass
        return None
    if holder.get("colab") and me["colab"]:
        return "that was an earlier Colab runtime (each reconnect starts a new one)"
    return None


def lock_folder(folder: str | os.PathLike, log: Callable[[str], None] = print) -> None:
    """Hold `folder` for this process, as FOLDER/lock.json naming the holder (pid,
    host, start time). Holding it already is fine. A holder that is gone (a dead
    process on this host, an earlier Colab runtime) is taken over, saying so; a
    live one is a FolderLockedError naming it."""
    path = Path(folder) / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "colab": "google.colab" in sys.modules,
          "started_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        try:
            with open(path, "x") as f:  # exclusive: of two processes, one creates it
                json.dump(me, f)
            return
        except FileExistsError:
            pass
        holder = _read_holder(path)
        if holder is None:
            continue  # released meanwhile: try again
        if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
            return
        why = _gone(holder, me)
        if why is None:
            raise FolderLockedError(
                f"{folder} is in use by {_holder_text(holder)}: one process at a time trains "
                "a run. Wait for it to finish or stop it; if it is not training (an interrupted "
                f"notebook's kernel, say), restart that kernel, or delete {path}.")
        log(f"{folder}: taking over the lock of {_holder_text(holder)}: {why}")
        path.unlink(missing_ok=True)
    raise FolderLockedError(f"{folder}: could not take its lock ({path}); try again")


def unlock_folder(folder: str | os.PathLike) -> None:
    """Release `folder`'s lock if this process holds it."""
    path = Path(folder) / LOCK_NAME
    holder = _read_holder(path) if path.exists() else None
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, arrays, paths and numpy scalars; NaN/inf become strings so
    the file stays strict JSON."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return str(obj)
    if hasattr(obj, "tolist"):  # torch.Tensor, np.ndarray, numpy scalars
        return to_jsonable(obj.tolist())
    return str(obj)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as indented JSON, atomically."""
    return atomic_write(path, (json.dumps(to_jsonable(data), indent=2) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def settings_digest(settings: Mapping[str, Any], length: int = 8) -> str:
    """`length` hex digits identifying `settings`: equal settings, equal digest, in
    any key order. Used to name run folders, so runs that differ in anything that
    decides their outcome never share one."""
    text = json.dumps(to_jsonable(settings), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=(length + 1) // 2).hexdigest()[:length]
