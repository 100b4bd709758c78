"""The plan: the training ahead, what it costs, and what is already done, printed
before any training starts.

    plan(runs, runs_dir=runs_path, device="cuda")   # the runs a notebook will train
    rows, total = plan_cost(runs)                   # FLOPs and T4 estimates as data

A run is a mapping with "name", "epochs", "train_images", optionally
"test_images" (the held-out images evaluated every epoch), "model" (a
common.models name), "input_size" and "batch_size". The notebooks build these
lists from the very run specs they train, so the plan can never count runs that
are not made.

Given the device, the plan's times are measured (common.speed: a few optimiser
steps of each model, cached per device), and a plan far beyond one Colab session
says so before anything trains. The FLOP count and the T4 estimate below stay as
columns: they say what a run costs anywhere.

FLOPs are counted by torch's FlopCounterMode on one image: a multiply-add counts
as 2 FLOPs, and only convolutions and matrix products are counted (BatchNorm,
ReLU, pooling and the optimiser step are a few percent more). Models are built on
PyTorch's "meta" device, so counting needs no memory and no arithmetic.

Accounting, stated once here and printed with every plan:
- training one image costs about 3x its forward pass (the backward pass computes
  gradients for both the activations and the weights, each about as costly as the
  forward); freezing layers makes it less, so 3x is an upper bound there;
- evaluation is one forward pass of every test image, once per epoch;
- time = FLOPs / (T4 peak x fraction of peak): 65 TFLOPS is the T4's float16
  tensor-core peak, and real training reaches a fraction of it (input pipeline,
  small layers, memory-bound operations). The result is an estimate, not a
  measurement.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from .checkpoints import run_status
from . import transfer  # noqa: F401  (registers the tv_ models that build_model builds)
from .models import build_model
from .speed import DEFAULT_CACHE, EVAL_COST, device_label, key, measured_speeds

__all__ = ["TRAIN_FORWARD_MULTIPLE", "T4_PEAK_FLOPS", "DEFAULT_FRACTION_OF_PEAK",
           "CIFAR_TRAIN_IMAGES", "CIFAR_TEST_IMAGES", "plan",
           "flops_per_image", "model_flops", "plan_cost", "t4_estimate", "print_plan",
           "format_flops", "format_seconds", "time_left", "footprint", "weights_bytes",
           "SESSION_HOURS"]

TRAIN_FORWARD_MULTIPLE = 3  # training FLOPs per image = 3 x forward FLOPs
T4_PEAK_FLOPS = 65e12  # NVIDIA T4, float16 tensor cores, dense
# Typical of these networks in mixed precision: ImageNet-sized ones reach 10-20% of
# the peak, the small CIFAR ones less (their layers are too small to fill the GPU).
DEFAULT_FRACTION_OF_PEAK = 0.15
CIFAR_TRAIN_IMAGES = 50_000
CIFAR_TEST_IMAGES = 10_000
# A free Colab session gives a few hours of GPU (12 at most, often fewer); a plan
# beyond this is said to be before training starts.
SESSION_HOURS = 4


def flops_per_image(model: torch.nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs of `model` for one image of shape (C, H, W).

    A multiply-add is 2 FLOPs; only convolutions and matrix products are counted
    (torch.utils.flop_counter.FlopCounterMode). The model may live on any device,
    "meta" included (then nothing is computed)."""
    if len(input_shape) != 3:
        raise ValueError(f"input_shape={tuple(input_shape)}: expected (C, H, W) of one image")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def _build(source: str, name: str, num_classes: int = 10) -> torch.nn.Module:
    """A model by name, built on the meta device: common.models' CIFAR networks
    ("common") or torchvision's ImageNet architectures with a 10-class head
    ("torchvision"). Weights are irrelevant to FLOPs, so none are loaded."""
    with torch.device("meta"):
        if source == "common":
            return build_model(name, num_classes=num_classes)
        if source == "torchvision":
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    raise ValueError(f"model source {source!r}: use 'common' (CIFAR networks in common.models) "
                     "or 'torchvision' (ImageNet architectures)")


_FLOPS_CACHE: dict[tuple[str, str, int], int] = {}


def model_flops(source: str, name: str, input_size: int, channels: int = 3) -> int:
    """flops_per_image of a named model at input_size x input_size, remembered."""
    key = (source, name, input_size)
    if key not in _FLOPS_CACHE:
        _FLOPS_CACHE[key] = flops_per_image(_build(source, name), (channels, input_size, input_size))
    return _FLOPS_CACHE[key]


_BYTES_CACHE: dict[str, int] = {}


def weights_bytes(name: str) -> int:
    """Bytes of a model's state_dict in float32 (what a final checkpoint keeps)."""
    if name not in _BYTES_CACHE:
        state = _build("common", name).state_dict()
        _BYTES_CACHE[name] = sum(t.numel() * t.element_size() for t in state.values())
    return _BYTES_CACHE[name]


def footprint(runs: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """(bytes left in runs/ by these runs once finished, bytes more while one trains):
    final checkpoints keep float32 weights unless a run's "keep_weights" is False;
    while training, last.pt and prev.pt hold weights and SGD momentum, twice each."""
    kept = sum(weights_bytes(r["model"]) for r in runs if r.get("keep_weights", True))
    training = max((4 * weights_bytes(r["model"]) for r in runs), default=0)
    return kept, training


def t4_estimate(flops: float, fraction_of_peak: float = DEFAULT_FRACTION_OF_PEAK) -> float:
    """Estimated seconds for `flops` on a T4 running at `fraction_of_peak` of its
    65 TFLOPS float16 peak. An estimate: real speed depends on the model and pipeline."""
    if not 0 < fraction_of_peak <= 1:
        raise ValueError(f"fraction_of_peak={fraction_of_peak!r}: expected a number in (0, 1]")
    if flops < 0:
        raise ValueError(f"flops={flops!r}: expected a non-negative number")
    return flops / (T4_PEAK_FLOPS * fraction_of_peak)


def plan_cost(runs: Iterable[Mapping[str, Any]], *,
              fraction_of_peak: float = DEFAULT_FRACTION_OF_PEAK,
              flops_of: Callable[[str, str, int], int] | None = None) -> tuple[list[dict], dict]:
    """FLOPs and estimated T4 time per run, and the totals: (rows, total).

    Each run needs "name", "source", "model", "input_size", "epochs",
    "train_images" and "test_images". Per run:
        train FLOPs = 3 x forward x train_images x epochs
        eval FLOPs  = forward x test_images x epochs (the test set every epoch)
    `flops_of(source, model, input_size)` replaces the FLOP counter (tests)."""
    flops_of = flops_of or model_flops
    needed = ("name", "source", "model", "input_size", "epochs", "train_images", "test_images")
    rows = []
    for run in runs:
        missing = [k for k in needed if k not in run]
        if missing:
            raise ValueError(f"plan_cost: run {run.get('name', run)!r} lacks {', '.join(missing)}")
        forward = flops_of(run["source"], run["model"], run["input_size"])
        train = TRAIN_FORWARD_MULTIPLE * forward * run["train_images"] * run["epochs"]
        evaluation = forward * run["test_images"] * run["epochs"]
        rows.append({**run, "forward_flops_per_image": forward, "train_flops": train,
                     "eval_flops": evaluation, "total_flops": train + evaluation,
                     "t4_seconds": t4_estimate(train + evaluation, fraction_of_peak)})
    total_flops = sum(r["total_flops"] for r in rows)
    total = {"runs": len(rows), "epochs": sum(r["epochs"] for r in rows),
             "train_flops": sum(r["train_flops"] for r in rows),
             "eval_flops": sum(r["eval_flops"] for r in rows), "total_flops": total_flops,
             "t4_seconds": t4_estimate(total_flops, fraction_of_peak),
             "fraction_of_peak": fraction_of_peak}
    return rows, total


def format_flops(flops: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} "


def format_seconds(seconds: float) -> str:
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{seconds / 60:.1f} min"


def print_plan(runs: Iterable[Mapping[str, Any]], *,
               fraction_of_peak: float = DEFAULT_FRACTION_OF_PEAK,
               measured: Sequence[float] | None = None,
               log: Callable[[str], None] = print) -> tuple[list[dict], dict]:
    """Print the cost of `runs` (per run and in total) before training, with each
    run's `measured` seconds on this device when given; return plan_cost's result."""
    rows, total = plan_cost(runs, fraction_of_peak=fraction_of_peak)
    width = max([len(r["name"]) for r in rows] + [5])
    here = f" {'here':>9}" if measured is not None else ""
    log(f"{'run':<{width}}  {'model':<16} {'epochs':>6} {'train img':>9} {'forward/img':>12} "
        f"{'total':>12}{here}  {'T4 estimate':>11}")
    for i, r in enumerate(rows):
        model = f"{r['model']} @{r['input_size']}"
        here = f" {format_seconds(measured[i]):>9}" if measured is not None else ""
        log(f"{r['name']:<{width}}  {model:<16} {r['epochs']:>6} {r['train_images']:>9,} "
            f"{format_flops(r['forward_flops_per_image']) + 'FLOP':>12} "
            f"{format_flops(r['total_flops']) + 'FLOP':>12}{here}  "
            f"{format_seconds(r['t4_seconds']):>11}")
    here = f", measured {format_seconds(sum(measured))} here" if measured is not None else ""
    log(f"{'total':<{width}}  {total['runs']} runs, {total['epochs']} epochs: "
        f"{format_flops(total['total_flops'])}FLOP{here}, estimated "
        f"{format_seconds(total['t4_seconds'])} on a T4")
    log(f"T4 estimate, not a measurement: training = {TRAIN_FORWARD_MULTIPLE}x forward FLOPs per "
        f"image, evaluation = forward on the test images every epoch, T4 at "
        f"{fraction_of_peak:.0%} of its {T4_PEAK_FLOPS / 1e12:.0f} TFLOPS float16 peak.")
    return rows, total


def measured_seconds(runs: Sequence[Mapping[str, Any]], device, *,
                     cache=DEFAULT_CACHE, log: Callable[[str], None] = print,
                     **timing) -> list[float]:
    """Each run's training and evaluation time on `device`, from measured speeds
    (common.speed): epochs x (train images + EVAL_COST x held-out images) x seconds
    per trained image."""
    planned = [(r["model"], r["input_size"], r.get("batch_size", 128)) for r in runs]
    speeds = measured_speeds(planned, device, cache=cache, log=log, **timing)
    return [r["epochs"] * (r["train_images"] + EVAL_COST * r.get("test_images", 0))
            * speeds[key(*p)] for r, p in zip(runs, planned)]


def plan(runs: Iterable[Mapping[str, Any]], *, runs_dir: str | os.PathLike | None = None,
         device=None, log: Callable[[str], None] = print, **timing) -> dict[str, int]:
    """Print the training ahead, before any of it starts, to budget a Colab session.

    With `runs_dir`, runs already finished there are marked and left out of the
    remaining count. When every run also names its "model" and "input_size", the
    compute is printed too: FLOPs per run and an estimated T4 time, and with
    `device` the time measured there (`timing`: measured_seconds' cache and timer).
    Returns the totals."""
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
    log(f"{'run':<{width}}  epochs  train img/epoch  eval img/epoch  images total  status")
    for name, epochs, train, test, total, status, _, _ in rows:
        log(f"{name:<{width}}  {epochs:>6}  {train:>15,}  {test:>14,}  {total:>12,}  {status}")
    totals = {"runs": len(rows), "epochs": sum(r[1] for r in rows),
              "images": sum(r[4] for r in rows), "remaining_epochs": sum(r[7] for r in rows),
              "remaining_images": sum(r[6] for r in rows)}
    log(f"total: {totals['runs']} runs, {totals['epochs']} epochs, {totals['images']:,} images; "
        f"still to train: {totals['remaining_epochs']} epochs, {totals['remaining_images']:,} images")
    if runs and all("model" in r and "input_size" in r for r in runs):
        log("")
        seconds = measured_seconds(runs, device, log=log, **timing) if device else None
        _, cost = print_plan([{"source": "common", "test_images": 0, **r} for r in runs],
                             measured=seconds, log=log)
        totals["flops"], totals["t4_seconds_estimate"] = cost["total_flops"], cost["t4_seconds"]
        totals["runs_bytes"], training = footprint(runs)
        log(f"disk: these runs leave about {totals['runs_bytes'] / 1e6:,.0f} MB in "
            f"{runs_dir or 'runs/'} once finished (final checkpoints), and need up to "
            f"{training / 1e6:,.0f} MB more while one trains")
        if seconds is not None:
            # Each run's time still to train: its epochs not yet done.
            totals["run_seconds_left"] = {r[0]: s * r[7] / r[1] for s, r in zip(seconds, rows)}
            totals["run_epoch_seconds"] = {r[0]: s / r[1] for s, r in zip(seconds, rows)}
            left = sum(totals["run_seconds_left"].values())
            totals["seconds_measured"], totals["seconds_left"] = sum(seconds), left
            _say_time_left(left, device_label(device), log)
    return totals


def time_left(run_seconds_left: dict[str, float], starting: str, scope: str = "notebook") -> str:
    """A line for the start of run `starting`: the planned runs still to go and their
    measured time (plan's run_seconds_left), `starting` included; the runs before it
    count as done. `scope` names what was planned."""
    names = list(run_seconds_left)
    todo = [n for n in names[names.index(starting) if starting in names else 0:]
            if run_seconds_left[n] > 0]  # finished runs are reused, not trained
    left = sum(run_seconds_left[n] for n in todo)
    return f"{scope}: {len(todo)} of {len(names)} runs to train, about {format_seconds(left)} left"


def _say_time_left(seconds: float, device: str, log: Callable[[str], None]) -> None:
    log(f"time still to train, measured on {device}: about {format_seconds(seconds)}")
    if seconds > SESSION_HOURS * 3600:
        log("WARNING: that is beyond one Colab session (a few hours): it would be cut off "
            "part way, several times. Use a GPU (Colab: Runtime > Change runtime type > T4 "
            "GPU) or the quick profile for a CPU (make quick). A rerun resumes where it "
            "stopped, so nothing is lost, but the wait is long.")
