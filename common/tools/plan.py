"""`make plan`: what each notebook will train and how long it takes on this device,
without loading data or training anything.

    python -m common.tools.plan --profile profiles/full.yaml --device auto
    python -m common.tools.plan --profile profiles/quick.yaml Q2/Q2.ipynb

The runs are derived from the notebook's parameters (with the profile's on top)
by the same code the notebooks use: common.recipes.q2_specs for Q2 and
common.transfer_runs.q3_specs for Q3. Image counts come from the same
class-stratified splits, made on balanced stand-in labels: the splits depend only on the class counts (5,000 training and 1,000
test images per class), so the sizes are the real ones. Times are measured on
the device (common.speed), a few optimiser steps per model, and cached.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..config import ROOT, resolve_device
from ..plan import (DEFAULT_FRACTION_OF_PEAK, SESSION_HOURS, format_flops, format_seconds, plan,
                    plan_cost)
from ..recipes import q2_indices, q2_specs
from ..transfer_data import Q3Data
from ..transfer_runs import q3_specs
from .run import RunError, load_profile, notebook_defaults

__all__ = ["cifar10_stand_in_labels", "q2_plan_rows", "q3_plan_rows", "ROWS", "estimate_table",
           "session_plan", "main"]


def cifar10_stand_in_labels() -> tuple[torch.Tensor, torch.Tensor]:
    """Labels with CIFAR-10's class counts: 5,000 per class to train, 1,000 to test."""
    return torch.arange(50_000) % 10, torch.arange(10_000) % 10


def q2_plan_rows(c: Mapping[str, Any]) -> list[dict]:
    """Q2's runs as plan rows, sized by the notebook's own q2_indices."""
    train, split, val, test = map(len, q2_indices(*cifar10_stand_in_labels(), c))
    images = {"test": (train, test), "val": (split, val), "val_cutout": (split, val)}
    specs = q2_specs(c)
    return [{"name": s["name"], "part": f"Q2 ({part})", "model": s["model"], "input_size": 32,
             "epochs": s["fit"].get("epochs", c["epochs"]), "train_images": images[s["data"]][0],
             "test_images": images[s["data"]][1], "batch_size": c["batch_size"]}
            for part in "abc" for s in specs[part]]


def q3_plan_rows(c: Mapping[str, Any]) -> list[dict]:
    """Q3's runs as plan rows, from the notebook's own q3_specs: the learning-rate
    trials, then (a), (b) and (c); a run two parts share is counted once. Names carry
    no digest here: the rates are chosen during the run."""
    data = Q3Data(*cifar10_stand_in_labels(), c)
    rows = {}
    for part, specs in q3_specs(c, data).items():
        for s in specs:
            rows.setdefault(s["name"], {
                "name": s["name"], "part": f"Q3 {part if part == 'trials' else f'({part})'}",
                "model": s["model"], "input_size": s["input_size"], "epochs": s["epochs"],
                "train_images": s["train_images"], "test_images": s["eval_images"],
                "batch_size": s["batch_size"], "keep_weights": False})
    return list(rows.values())


ROWS: dict[str, Callable[[Mapping[str, Any]], list[dict]]] = {
    "Q2/Q2.ipynb": q2_plan_rows, "Q3/Q3.ipynb": q3_plan_rows}


def estimate_table(profile: str | Path) -> list[str]:
    """readme.txt's time table: each part's runs, FLOPs and T4 estimate (plan_cost)
    under `profile`. Estimates, labelled so: the GPU measurement is make gpu-check's."""
    lines, flops, seconds = [], 0.0, 0.0
    for notebook, rows_of in ROWS.items():
        rows = rows_of(notebook_defaults(ROOT / notebook, profile))
        for part in dict.fromkeys(r["part"] for r in rows):
            _, cost = plan_cost([{"source": "common", **r} for r in rows if r["part"] == part])
            flops, seconds = flops + cost["total_flops"], seconds + cost["t4_seconds"]
            lines.append(f"  {part:<12} {cost['runs']:>2} runs {cost['epochs']:>4} epochs "
                         f"{format_flops(cost['total_flops']) + 'FLOP':>11}  "
                         f"~ {format_seconds(cost['t4_seconds']):>7} (estimate)")
    lines.append(f"  {'Q2 and Q3':<12} {'':>19} {format_flops(flops) + 'FLOP':>11}  "
                 f"~ {format_seconds(seconds):>7} (estimate)")
    lines.append(f"  (FLOPs counted by common/plan.py; a T4 at {DEFAULT_FRACTION_OF_PEAK:.0%} "
                 "of its 65 TFLOPS float16 peak)")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m common.tools.plan",
        description="Print what each notebook will train and how long it takes on this "
                    "device (measured: a few optimiser steps per model), without training.")
    parser.add_argument("--profile", default=str(ROOT / "profiles" / "full.yaml"),
                        help="the profile the run would use (default: profiles/full.yaml)")
    parser.add_argument("--device", default="auto",
                        help='"auto" (CUDA when available), "cuda" or "cpu"')
    parser.add_argument("--readme", action="store_true",
                        help="print readme.txt's time table (T4 estimates per part) and stop")
    parser.add_argument("notebooks", nargs="*", default=list(ROWS),
                        help=f"notebooks to plan (default: {' '.join(ROWS)}); the others "
                             "train for minutes and are not planned")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        load_profile(args.profile)  # a missing or malformed profile: one line, no traceback
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.readme:
        print("\n".join(estimate_table(args.profile)))
        return 0
    device = resolve_device(args.device)
    seconds = {}
    for notebook in args.notebooks:
        key = Path(notebook).as_posix()
        if key not in ROWS:
            print(f"{notebook}: not planned (choose from {', '.join(ROWS)})", file=sys.stderr)
            return 2
        config = {**notebook_defaults(ROOT / key, args.profile), "device": str(device)}
        print(f"=== {key} ({Path(args.profile).name})")
        seconds[key] = plan(ROWS[key](config), device=device)["seconds_measured"]
        print()
    total = sum(seconds.values())
    print(f"all planned notebooks: about {format_seconds(total)} on this device")
    if total > SESSION_HOURS * 3600:
        print("\n".join(session_plan(seconds)))
    return 0


def session_plan(seconds: Mapping[str, float], hours: float = SESSION_HOURS,
                 most: int = 3) -> list[str]:
    """Which notebook runs in which Colab session of `hours`, in order, when they do not
    fit one: a notebook runs to the end of a session, and Run all in the next resumes it
    (finished runs are reused, an unfinished one resumes from its last checkpoint). Past
    `most` sessions there is no plan to give, only the advice."""
    budget = hours * 3600
    needed = math.ceil(sum(seconds.values()) / budget)
    if needed > most:
        return [f"That is about {needed} Colab sessions of {hours:g} h on this device: too many "
                "to plan. On a CPU use make quick (a laptop budget); on a GPU, make plan there "
                "gives the plan."]
    lines, session, used = [f"More than one Colab session ({hours:g} h of GPU, often fewer). "
                            "A plan; Run all again after each cut-off:"], 1, 0.0
    for notebook, left in seconds.items():
        first = session if used < budget else session + 1
        session, used = (first, used) if first == session else (first, 0.0)
        used += left
        while used > budget:
            session, used = session + 1, used - budget
        where = f"session {first}" if session == first else f"sessions {first} to {session}"
        lines.append(f"  {notebook}: {where} ({format_seconds(left)})")
    return lines


if __name__ == "__main__":
    sys.exit(main())
