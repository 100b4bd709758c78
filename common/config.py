"""Parameters -> one validated config: paths, device, seeding, checks, and
`results_dir/summary.json`.

A notebook's flow is: parameters cell -> `make_config(...)` (validated, printed)
-> work -> `write_summary(...)`. Relative paths in the parameters are resolved
against the bundle root, so a notebook behaves the same from any working
directory, from papermill and from Colab.
"""
from __future__ import annotations

import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from .files import write_json

ROOT = Path(__file__).resolve().parent.parent  # the folder holding common/


class ConfigError(ValueError):
    """A notebook parameter has a value the notebook cannot use."""


def resolve_path(path: str | os.PathLike, root: Path = ROOT) -> Path:
    """Absolute paths pass through; relative ones are taken from the bundle root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (root / p)


def data_root() -> Path:
    """Where a relative `data_dir` lives: the bundle root, except on Colab. There
    the bundle sits in Google Drive, which is slow and small, so datasets go to
    the runtime's own disk (/content, or COMP5541_COLAB_ROOT) and are downloaded
    again after a disconnect; Drive keeps what cannot be recomputed."""
    if in_colab():
        return Path(os.environ.get("COMP5541_COLAB_ROOT", "/content"))
    return ROOT


def resolve_device(device: str = "auto"):
    """'auto' -> CUDA when present, else CPU. Asking for CUDA without one is an error."""
    import torch

    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ConfigError(f"device={device!r}: use 'auto', 'cpu' or 'cuda'")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r} but torch sees no CUDA GPU. On Colab choose "
            "Runtime > Change runtime type > GPU, or pass device='cpu'.")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices). Batches have their own seeded
    generators (common.data), so this only covers weight initialisation and the like."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- parameter validation ---------------------------------------------------

def check(name: str, value: Any, ok: bool | Callable[[Any], bool], expected: str) -> None:
    """Raise ConfigError naming the parameter, its value and what it should be."""
    passed = ok(value) if callable(ok) else ok
    if not passed:
        raise ConfigError(f"parameter {name}={value!r}: expected {expected}")


def check_fraction(name: str, value: Any) -> None:
    check(name, value, isinstance(value, (int, float)) and not isinstance(value, bool)
          and 0 < value <= 1,
          "a fraction in (0, 1], e.g. 0.1 for 10%")


def check_positive_int(name: str, value: Any) -> None:
    check(name, value, isinstance(value, int) and not isinstance(value, bool) and value > 0,
          "a positive integer")


def check_choice(name: str, value: Any, choices) -> None:
    check(name, value, value in choices, f"one of {sorted(choices)}")


# --- config and summary ------------------------------------------------------

# IPython's own names in a notebook's namespace; every other public constant is a parameter.
_IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython"})


def _is_constant(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_constant(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_constant(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def notebook_parameters(namespace: Mapping[str, Any]) -> dict:
    """A notebook's parameters, gathered by name rather than retyped (nanoGPT's
    `config_keys`): every public name of `namespace` (the notebook's globals()) bound
    to a plain constant (a bool, number, string or None, or a list or dict of them),
    in the order defined. The first cell binds only modules, functions and paths, so
    what remains is the parameters cell with papermill's overrides applied. Call it
    right after the parameters cell, before any cell binds a constant of its own."""
    return {name: value for name, value in namespace.items()
            if not name.startswith("_") and name not in _IPYTHON_NAMES and _is_constant(value)}


def make_config(params: Mapping[str, Any], *, notebook: str) -> dict:
    """Gather a notebook's parameters into one validated dict and print it.

    Validates the parameters every notebook shares (`device`, `seed`, `smoke`)
    and resolves the path parameters (`*_dir`) against the bundle root
    (`data_dir` against `data_root()`). The question-specific checks stay in
    the notebook, next to the parameters.
    """
    config = dict(params)
    config["notebook"] = notebook
    if "seed" in config:
        seed = config["seed"]
        check("seed", seed, isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0,
              "a non-negative integer")
    for flag in ("smoke", "quick"):
        if flag in config:
            check(flag, config[flag], isinstance(config[flag], bool), "True or False")
    if "device" in config:
        config["device"] = str(resolve_device(config["device"]))
    for key, value in list(config.items()):
        if key.endswith("_dir") and isinstance(value, (str, os.PathLike)):
            config[key] = str(resolve_path(value, data_root() if key == "data_dir" else ROOT))
    width = max(len(k) for k in config)
    print(f"{notebook} configuration")
    for key, value in config.items():
        print(f"  {key:<{width}} = {value!r}")
    return config


def environment_info() -> dict:
    """Library versions and hardware, stored with every result for provenance."""
    import numpy as np
    import torch

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    return info


def training_seconds(results: Any) -> tuple[float, int]:
    """(seconds, runs): the training time of every run found in `results`, the
    sum of its history's per-epoch "seconds". A reused run keeps the time it took
    when it trained; a run listed twice (same run_dir) counts once."""
    seen: dict[str, float] = {}

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            history = node.get("history")
            if isinstance(history, Mapping) and isinstance(history.get("seconds"), list):
                key = str(node.get("run_dir") or id(node))
                seen[key] = float(sum(history["seconds"]))
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    walk(results)
    return round(sum(seen.values()), 3), len(seen)


def write_summary(config: Mapping[str, Any], results: Mapping[str, Any], *,
                  started: float) -> Path:
    """Write `config['results_dir']/summary.json`: config, versions, device, the
    question's results and two times. `wall_time_s` is this execution's, from
    `started` (a `time.time()` stamp): short when finished runs were reused.
    `training_time_s` is what the runs in `results` took to train, whenever they
    trained, so a rerun that reuses them all does not hide it."""
    training, runs = training_seconds(results)
    summary = {
        "notebook": config.get("notebook"),
        "smoke": bool(config.get("smoke", False)),
        "quick": bool(config.get("quick", False)),
        "config": dict(config),
        "environment": environment_info(),
        "device": config.get("device"),
        "wall_time_s": round(time.time() - started, 3),
        "training_time_s": training,
        "training_runs": runs,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": dict(results),
    }
    path = write_json(Path(config["results_dir"]) / "summary.json", summary)
    print(f"summary written to {path} (this execution: {summary['wall_time_s']:.1f} s; "
          f"training of its {runs} run(s): {training:.1f} s)")
    return path


def in_colab() -> bool:
    return "google.colab" in sys.modules
