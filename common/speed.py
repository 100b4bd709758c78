"""Measured training speed: seconds per image of each planned model on this device.

    speeds = measured_speeds([("vgg16", 32, 128), ("tv_resnet18", 224, 128)], "cuda")
    speeds[key("vgg16", 32, 128)]   # seconds per trained image

A FLOP count says how much arithmetic a run needs, not how long it takes: on a T4
the small CIFAR networks reach a few percent of the peak, the ImageNet ones tens
of percent. So the plan times a few optimiser steps of every planned model, on
the device it will train on, with the precision and memory layout fit uses. That
takes seconds, and the result is cached per device (DEFAULT_CACHE), so later
plans on the same machine are instant.

On the CPU the steps use at most CPU_BATCH images: beyond that a CPU's time per
image hardly depends on the batch, and a batch of 128 of VGG16 at 224 pixels
takes minutes.
An evaluated image costs about a third of a trained one (a forward pass only):
EVAL_COST. Frozen layers make training cheaper, so a partly frozen run's time is
an upper bound.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from .config import ROOT, in_colab
from .files import read_json, write_json
from .hardware import hardware_for
from . import transfer  # noqa: F401  (registers the tv_ models that build_model builds)
from .models import build_model
from .optim import make_optimizer
from .train import train_one_epoch

__all__ = ["DEFAULT_CACHE", "CPU_BATCH", "EVAL_COST", "device_label", "key",
           "time_training_step", "measured_speeds"]

# On Colab, in the bundle's runs/ in Drive: the home folder does not outlive a disconnect.
DEFAULT_CACHE = Path(os.environ.get("COMP5541_CACHE") or (
    ROOT / "runs" if in_colab() else Path.home() / ".cache" / "comp5541")) / "speeds.json"
CPU_BATCH = 32
EVAL_COST = 1 / 3


def device_label(device) -> str:
    """What the measurements are cached under: the device (and the GPU it emulates,
    if any: common.hardware) and the torch build."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    emulating = hardware_for(device).emulating
    return f"{name}{f' emulating {emulating}' if emulating else ''}, torch {torch.__version__}"


def key(model: str, input_size: int, batch_size: int) -> str:
    return f"{model}@{input_size} batch {batch_size}"


def time_training_step(model: str, input_size: int, batch_size: int, device, *,
                       steps: int = 2) -> float:
    """Seconds per image of fit's own training step (train_one_epoch: SGD, and the
    precision, scaler, kernels, memory layout and cuDNN settings fit uses on
    `device`: common.hardware, with the notebooks' amp and channels_last) for `model`
    at `input_size`, with random weights (speed does not depend on them): one
    warm-up step, then `steps` timed ones."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    batch = batch_size if cuda else min(batch_size, CPU_BATCH)
    hw = hardware_for(device)
    hw.set_backend_flags()  # as fit does: the timed steps run the kernels cuDNN's tuning picks
    nhwc, dtype = hw.use_channels_last(True), hw.autocast_dtype(True)
    torch.manual_seed(0)
    net = build_model(model).to(device)
    if nhwc:
        net = net.to(memory_format=torch.channels_last)
    opt = make_optimizer("sgd", net.parameters(), lr=1e-3, momentum=0.9, fused=hw.fused)
    scaler = hw.grad_scaler(True)
    data = [(torch.randn(batch, 3, input_size, input_size, device=device),
             torch.randint(0, 10, (batch,), device=device))]

    def run(n: int) -> float:
        started = time.perf_counter()
        train_one_epoch(net, data * n, opt, criterion=nn.CrossEntropyLoss(), scaler=scaler,
                        device=device, dtype=dtype, channels_last=nhwc)
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    run(1)  # warm-up: allocation, cuDNN's choice of kernels
    return run(steps) / (steps * batch)


def measured_speeds(planned: Iterable[tuple[str, int, int]], device, *,
                    cache: str | os.PathLike | None = DEFAULT_CACHE,
                    timer: Callable[..., float] = time_training_step,
                    log: Callable[[str], None] = print) -> dict[str, float]:
    """Seconds per trained image for each (model, input_size, batch_size), from the
    cache for this device or measured now (and cached). cache=None: always measure."""
    label = device_label(device)
    stored = read_json(Path(cache)) if cache and Path(cache).is_file() else {}
    known = stored.get(label, {})
    wanted = list(dict.fromkeys(planned))
    missing = [w for w in wanted if key(*w) not in known]
    if missing:
        log(f"timing {len(missing)} model(s) on {label}: a few optimiser steps each ...")
        started = time.perf_counter()
        for model, size, batch in missing:
            known[key(model, size, batch)] = timer(model, size, batch, device)
        log(f"  done in {time.perf_counter() - started:.0f} s; cached in {cache} (delete it to "
            "measure again, e.g. after a busy spell on this machine)")
        if cache:
            write_json(Path(cache), {**stored, label: known})
    return {key(*w): known[key(*w)] for w in wanted}
