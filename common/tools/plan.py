"""`make plan`: what each notebook will train and how long it takes on this device,
without loading data or training anything.

    python -m common.tools.plan --profile profiles/full.yaml --device auto
    python -m common.tools.plan --profile profiles/quick.yaml Q2/Q2.ipynb

The runs are derived from the notebook's parameters (with the profile's on top)
by the same code the notebooks use: common.recipes for Q2; for Q3 the parts as
its cells list them (q3_rows; a test checks them against a notebook run). Image
counts come from the same class-stratified splits, made on balanced stand-in
labels: the splits depend only on the class counts (5,000 training and 1,000
test images per class), so the sizes are the real ones. Times are measured on
the device (common.speed), a few optimiser steps per model, and cached.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..config import ROOT, resolve_device
from ..data import stratified_indices
from ..plan import (DEFAULT_FRACTION_OF_PEAK, SESSION_HOURS, format_flops, format_seconds, plan,
                    plan_cost)
from ..recipes import q2_indices, q2_specs
from ..transfer_runs import split_pool
from .run import load_profile, notebook_defaults

__all__ = ["cifar10_stand_in_labels", "q2_rows", "q3_rows", "ROWS", "estimate_table", "main"]


def cifar10_stand_in_labels() -> tuple[torch.Tensor, torch.Tensor]:
    """Labels with CIFAR-10's class counts: 5,000 per class to train, 1,000 to test."""
    return torch.arange(50_000) % 10, torch.arange(10_000) % 10


def q2_rows(c: Mapping[str, Any]) -> list[dict]:
    """Q2's runs as plan rows, sized by the notebook's own q2_indices."""
    if c["smoke"]:  # as the notebook's setup cell does
        c = {**c, "epochs": min(c["epochs"], 2), "batch_size": min(c["batch_size"], 50)}
    train, split, val, test = map(len, q2_indices(*cifar10_stand_in_labels(), c))
    images = {"test": (train, test), "val": (split, val), "val_cutout": (split, val)}
    specs = q2_specs(c)
    return [{"name": s["name"], "part": f"Q2 ({part})", "model": s["model"], "input_size": 32,
             "epochs": s["fit"].get("epochs", c["epochs"]), "train_images": images[s["data"]][0],
             "test_images": images[s["data"]][1], "batch_size": c["batch_size"]}
            for part in "abc" for s in specs[part]]


def q3_rows(c: Mapping[str, Any]) -> list[dict]:
    """Q3's runs as plan rows: the learning-rate trials, then (a), (b) and (c) as the
    notebook's cells list them; a run two parts share is counted once."""
    if c["smoke"]:  # as the notebook's setup cell does
        c = {**c, "image_size": 64, "batch_size": min(c["batch_size"], 50), "epochs_a": 1,
             "epochs_b": 1, "epochs_c": 1, "select_epochs": 1,
             "lr_candidates": c["lr_candidates"][:2],
             "scratch_lr_candidates": c["scratch_lr_candidates"][:2]}
    labels, test_labels = cifar10_stand_in_labels()
    pool, val_idx, test_idx = split_pool(labels, test_labels, c)
    held = {"validation": len(val_idx),
            "test": len(test_labels) if test_idx is None else len(test_idx)}
    settings = [(c["model_a"], True, "none"), (c["model_a"], False, "none"),
                *[(m, True, "none") for m in c["models_b"]],
                *[(c["model_c"], True, s) for s in c["freeze_strategies"]]]
    runs = {(m, p, f, c["select_fraction"], c["select_epochs"], "validation", lr): "trials"
            for m, p, f in dict.fromkeys(settings)
            for lr in c["lr_candidates" if p else "scratch_lr_candidates"]}
    for f in c["fractions"]:
        runs |= {(c["model_a"], p, "none", f, c["epochs_a"], "test", None): "(a)"
                 for p in (True, False)}
    for m in c["models_b"]:
        runs.setdefault((m, True, "none", c["fraction_b"], c["epochs_b"], "test", None), "(b)")
    for s in c["freeze_strategies"]:  # a run (b) made already is not trained again
        runs.setdefault((c["model_c"], True, s, c["fraction_b"], c["epochs_c"], "test", None), "(c)")
    rows = []
    for (model, pretrained, freeze, fraction, epochs, split, lr), part in runs.items():
        kind = "pretrained" if pretrained else "scratch"
        name = (f"select_{model}_{kind}_{freeze}_lr{lr:g}" if lr else
                f"{model}_{kind}_{freeze}_f{fraction:g}")
        train = len(stratified_indices(labels, fraction=fraction, seed=c["seed"], pool=pool))
        rows.append({"name": name, "part": f"Q3 {part}", "model": model,
                     "input_size": c["image_size"], "epochs": epochs,
                     "train_images": train, "test_images": held[split],
                     "batch_size": c["batch_size"], "keep_weights": False})
    return rows


ROWS: dict[str, Callable[[Mapping[str, Any]], list[dict]]] = {
    "Q2/Q2.ipynb": q2_rows, "Q3/Q3.ipynb": q3_rows}


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
    load_profile(args.profile)  # a clear error for a missing or malformed profile
    if args.readme:
        print("\n".join(estimate_table(args.profile)))
        return 0
    device = resolve_device(args.device)
    total = 0.0
    for notebook in args.notebooks:
        key = Path(notebook).as_posix()
        if key not in ROWS:
            print(f"{notebook}: not planned (choose from {', '.join(ROWS)})", file=sys.stderr)
            return 2
        config = {**notebook_defaults(ROOT / key, args.profile), "device": str(device)}
        print(f"=== {key} ({Path(args.profile).name})")
        totals = plan(ROWS[key](config), device=device)
        total += totals["seconds_measured"]
        print()
    print(f"all planned notebooks: about {format_seconds(total)} on this device"
          + (f"; more than one Colab session ({SESSION_HOURS} h)" if total > SESSION_HOURS * 3600
             else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
