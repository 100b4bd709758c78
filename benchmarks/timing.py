"""Timing on a shared, noisy machine: interleaved repetitions, medians, ratios.

Other jobs share these two cores, so a burst of load can slow any single
repetition. Contenders therefore take turns (A B A B ...), so a burst hits both,
and we compare medians, which ignore a few outliers.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Mapping


def interleave(contenders: Mapping[str, Callable[[], object]], *, repeats: int,
               warmup: int = 1) -> dict[str, list[float]]:
    """Run each contender `warmup` untimed times, then `repeats` timed rounds in
    turn; return the wall seconds of every timed call per contender."""
    for _ in range(warmup):
        for run in contenders.values():
            run()
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def median(values) -> float:
    return statistics.median(values)


def spread(values) -> str:
    """min..max of the repetitions, to show how noisy the machine was."""
    return f"{min(values):.3g}..{max(values):.3g}"


def cpu_description() -> dict:
    """The CPU the figures came from: model name, logical cores, torch threads."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            model = names[0]
    except OSError:
        pass
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {"cpu_model": model, "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average_1min": load,
            "torch": torch.__version__, "python": platform.python_version()}
