"""Files on disk: atomic writes, JSON, and the digest that names a run.

Every file the bundle writes goes through `atomic_write`: the bytes land in a
temporary file beside the target, which then replaces it in one step, so a crash
or a Colab disconnect leaves either the old file or the new one, never half of
one. Imports nothing heavier than the standard library.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, IO

__all__ = ["atomic_write", "write_json", "read_json", "to_jsonable", "settings_digest"]


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[IO[bytes]], Any], *,
                 sync: bool = False, keep_previous: str | os.PathLike | None = None) -> Path:
    """Write `data` (bytes, or a function that writes to a binary file) to `path`
    atomically. `sync=True` also flushes it to the disk before the rename, for
    files whose loss would cost training time (checkpoints). `keep_previous`: move
    the file being replaced there first (only once the new one is complete)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    if keep_previous is not None and path.exists():
        os.replace(path, keep_previous)
    os.replace(tmp, path)
    return path


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
