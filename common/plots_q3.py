"""Q3's figures, drawn from run records and histories as common.plots draws Q2's:
accuracy against the share of the data, what each run trains and costs, and
accuracy against training time."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .plots import check_history, finish_figure, as_percent, held_out_label

__all__ = ["plot_accuracy_vs_fraction", "plot_run_costs", "plot_accuracy_vs_time"]


def plot_accuracy_vs_fraction(fractions: Sequence[float], accuracies: Mapping[str, Sequence[float]],
                              *, title: str | None = None, held_out: str = "test",
                              near_chance_below: float | None = None,
                              save_to: str | os.PathLike | None = None) -> Figure:
    """Final held-out accuracy (%) against the fraction of training data, one line
    per label (e.g. pretrained and scratch), each point labelled with its value.
    `near_chance_below` (a fraction, e.g. 0.15) shades the band where a run counts
    as near chance, so a point inside it is seen as a failed run, not a result."""
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    if near_chance_below is not None:
        ax.axhspan(0, 100 * near_chance_below, color="0.85", zorder=0,
                   label=f"near chance (below {100 * near_chance_below:g}%)")
    x = [100 * f for f in fractions]
    for (label, acc), marker in zip(accuracies.items(), "os^v"):
        y = as_percent(acc)
        ax.plot(x, y, marker + "-", label=label)
        for xi, yi in zip(x, y):
            ax.annotate(f"{yi:.1f}", (xi, yi), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=8)
    ax.margins(y=0.15)  # room for the value labels
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{v:g}%" for v in x])
    ax.minorticks_off()
    ax.set(xlabel="training data used (share of the training split, log scale)",
           ylabel=f"{held_out} accuracy (%)",
           title=title or f"{held_out} accuracy against amount of data")
    ax.grid(alpha=0.3)
    ax.legend()
    return finish_figure(fig, save_to)


def plot_run_costs(runs: Sequence[Mapping[str, Any]], *, title: str | None = None,
                   save_to: str | os.PathLike | None = None) -> Figure:
    """Three bar panels, one bar per run: trainable parameters (millions), mean
    seconds per epoch (training plus the held-out pass, as fit measures it) and
    final held-out accuracy. Each run is a mapping with "label" (or "short_label"),
    "trainable_params" and "history"."""
    for run in runs:
        check_history(run["history"], f"plot_run_costs[{run.get('label')!r}]")
    labels = [run.get("short_label", run.get("label")) for run in runs]
    histories = [run["history"] for run in runs]
    split = held_out_label(histories[0], None) if histories else "test"
    panels = [("trainable parameters (M)", [r["trainable_params"] / 1e6 for r in runs], "{:.2f}"),
              ("seconds per epoch", [np.mean(h["seconds"]) if h["seconds"] else np.nan
                                     for h in histories], "{:.1f}"),
              (f"final {split} accuracy (%)", [100 * h["eval_accuracy"][-1] if h["eval_accuracy"]
                                                else np.nan for h in histories], "{:.1f}")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    for ax, (what, values, fmt) in zip(axes, panels):
        bars = ax.bar(range(len(values)), values, color=[f"C{i}" for i in range(len(values))])
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8)
        ax.set_xticks(range(len(values)), labels, rotation=20, ha="right", fontsize=8)
        ax.set(title=what)
        ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title, fontsize=11)
    return finish_figure(fig, save_to)


def plot_accuracy_vs_time(histories: Mapping[str, Mapping[str, Any]], *, title: str | None = None,
                          save_to: str | os.PathLike | None = None) -> Figure:
    """Held-out accuracy (%) against cumulative wall time: learning speed in
    seconds, not epochs, so a cheaper epoch counts for what it costs."""
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    split = "test"
    for label, history in histories.items():
        check_history(history, f"plot_accuracy_vs_time[{label!r}]")
        split = held_out_label(history, None)
        ax.plot(np.cumsum(history["seconds"]), as_percent(history["eval_accuracy"]), "o-", ms=3,
                label=label)
    ax.set(xlabel="cumulative wall time (s)", ylabel=f"{split} accuracy (%)",
           title=title or f"{split} accuracy against training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return finish_figure(fig, save_to)
