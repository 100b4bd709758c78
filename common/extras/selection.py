"""Choosing settings on a validation split, and reading a classifier's mistakes.

    out = run_grid(baseline_grid(), make_model, train_batches, val_batches,
                   runs_dir=runs_dir / "grid", seed=0, device=device, fit_options={...})
    best = out["rows"][out["best"]]                  # chosen on validation accuracy
    model, history = train_run(best["name"], ...)    # reuses the finished run's weights
    result = evaluate(model, test_batches, device, predictions=True)   # the test set, once
    analysis = confusion_analysis(confusion_matrix(...), classes)

`run_grid` and `train_run` take no test data at all, and the choice is
common.experiments.select_best of the validation accuracies: it can only depend
on the training and validation splits.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from ..experiments import select_best, train_or_reuse
from ..plots import save_figure
from .tb import write_history

__all__ = ["train_run", "run_grid", "plot_grid_heatmap", "confusion_analysis",
           "describe_confusions", "SIMILAR_GROUPS"]


def train_run(name: str, make_model: Callable[[], Any], train_batches, val_batches, *,
              runs_dir: str | os.PathLike, seed: int, device, fit_options: Mapping[str, Any],
              config: Mapping[str, Any] | None = None, tb_dir: str | os.PathLike | None = None,
              log: Callable[[str], None] = print):
    """`train_or_reuse` of one model in runs_dir/name, evaluated on the validation
    batches each epoch; a finished run is reused (weights loaded, nothing trained).
    With tb_dir, the history is also written as TensorBoard events in tb_dir/name.
    Returns (model, history)."""
    log(f"--- {name}")
    model, history = train_or_reuse(make_model, train_batches, val_batches,
                                    run_dir=Path(runs_dir) / name, seed=seed, eval_split="validation",
                                    config={**(config or {}), "run": name}, log=log, device=device,
                                    **fit_options)
    if tb_dir is not None:
        write_history(history, Path(tb_dir) / name, eval_name="val")
    return model, history


def run_grid(grid: Sequence[Mapping[str, Any]], make_model: Callable[[Mapping[str, Any]], Any],
             train_batches, val_batches, *, runs_dir: str | os.PathLike, seed: int, device,
             fit_options: Mapping[str, Any], label: Callable[[Mapping[str, Any]], str],
             config: Mapping[str, Any] | None = None, tb_dir: str | os.PathLike | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Train every grid point (same seed, same batches) and choose on validation.

    grid: option dicts; make_model(options) builds a fresh model; label(options)
    names its run folder. Each run's final-epoch validation accuracy is its score.
    Returns {"rows": [{"name", "options", "val_accuracy", "val_loss", "epochs",
    "stopped"}, ...] in grid order, "best": index of the chosen row}.
    """
    names = [label(options) for options in grid]
    if len(set(names)) != len(names):
        raise ValueError(f"grid labels must be unique, got {names}")
    rows = []
    for options, name in zip(grid, names):
        _, history = train_run(name, lambda: make_model(options), train_batches, val_batches,
                               runs_dir=runs_dir, seed=seed, device=device, fit_options=fit_options,
                               config={**(config or {}), "options": dict(options)}, tb_dir=tb_dir,
                               log=log)
        done = len(history["epoch"]) > 0
        rows.append({"name": name, "options": dict(options),
                     "val_accuracy": history["eval_accuracy"][-1] if done else float("nan"),
                     "val_loss": history["eval_loss"][-1] if done else float("nan"),
                     "epochs": len(history["epoch"]), "stopped": history.get("stopped")})
    return {"rows": rows, "best": select_best([r["val_accuracy"] for r in rows])}


def _shown(text: str) -> str:
    """An option value as a label: lists as tuples, booleans as on/off."""
    return {"True": "on", "False": "off"}.get(text, text.replace("[", "(").replace("]", ")"))


def plot_grid_heatmap(rows: Sequence[Mapping[str, Any]], *, row_keys: Sequence[str],
                      col_key: str, title: str | None = None,
                      save_to: str | os.PathLike | None = None):
    """Validation accuracy (%) of a grid as a heatmap: one row per combination of
    `row_keys`, one column per value of `col_key`, the best cell outlined."""
    def key(options, keys):
        return tuple(str(options[k]) for k in keys)

    row_vals = list(dict.fromkeys(key(r["options"], row_keys) for r in rows))
    col_vals = list(dict.fromkeys(str(r["options"][col_key]) for r in rows))
    grid = np.full((len(row_vals), len(col_vals)), np.nan)
    for r in rows:
        grid[row_vals.index(key(r["options"], row_keys)), col_vals.index(str(r["options"][col_key]))] = \
            100 * r["val_accuracy"]
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(col_vals), 1.2 + 0.6 * len(row_vals)),
                           layout="constrained")
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="validation accuracy (%)")
    finite = np.isfinite(grid)
    mid = np.nanmean(grid) if finite.any() else 0
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            text = f"{grid[i, j]:.1f}" if finite[i, j] else "n/a"
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="black" if finite[i, j] and grid[i, j] > mid else "white")
    if finite.any():
        bi, bj = np.unravel_index(np.nanargmax(grid), grid.shape)
        ax.add_patch(plt.Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    ax.set_xticks(range(len(col_vals)), [_shown(v) for v in col_vals])
    ax.set_yticks(range(len(row_vals)), [", ".join(f"{k} {_shown(v)}" for k, v in zip(row_keys, rv))
                                         for rv in row_vals])
    ax.set_xlabel(col_key)
    if title:
        ax.set_title(title, fontsize=10)
    plt.close(fig)
    if save_to is not None:
        save_figure(fig, save_to)
    return fig


# Classes that look alike at 28x28 in greyscale, with the reason why; used to explain
# a confusion between two members of the same group.
SIMILAR_GROUPS = (
    ({"T-shirt/top", "Shirt", "Pullover", "Coat", "Dress"},
     "upper-body garments share one silhouette (a torso, with or without sleeves); what tells "
     "them apart (collars, buttons, zips, fabric texture, sleeve length) is a few pixels wide "
     "at 28x28 in greyscale, and 'Shirt' overlaps every other class of this group"),
    ({"Sandal", "Sneaker", "Ankle boot"},
     "footwear seen from the side differs mainly in height and in the open straps of "
     "sandals, which low resolution blurs"),
)


def _reason(a: str, b: str) -> str | None:
    for group, reason in SIMILAR_GROUPS:
        if a in group and b in group:
            return reason
    return None


def confusion_analysis(cm: np.ndarray, classes: Sequence[str], *, top: int = 3) -> dict:
    """The weak classes and what they are mistaken for, from a confusion matrix
    (cm[i, j] = images of true class i predicted as j).

    Returns overall accuracy, per-class accuracy, "problem" classes (accuracy below
    the overall accuracy, worst first), each with its `top` most frequent wrong
    predictions (count and share of the class's images), and the most confused
    unordered pairs (both directions summed).
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = len(classes)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix has shape {cm.shape}; expected ({k}, {k})")
    support = cm.sum(axis=1)
    acc = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    overall = float(np.trace(cm) / max(cm.sum(), 1))
    problems = []
    for i in sorted((i for i in range(k) if support[i] and acc[i] < overall), key=lambda i: acc[i]):
        wrong = [(j, int(cm[i, j])) for j in np.argsort(-cm[i], kind="stable") if j != i and cm[i, j]]
        problems.append({"class": classes[i], "accuracy": float(acc[i]), "support": int(support[i]),
                         "confused_with": [{"class": classes[j], "count": n,
                                            "share": n / support[i]} for j, n in wrong[:top]]})
    pairs = [(int(cm[i, j] + cm[j, i]), i, j) for i in range(k) for j in range(i + 1, k)
             if cm[i, j] + cm[j, i]]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return {"overall_accuracy": overall,
            "per_class_accuracy": {c: float(a) for c, a in zip(classes, acc)},
            "problem_classes": problems,
            "confused_pairs": [{"classes": [classes[i], classes[j]], "count": n,
                                "reason": _reason(classes[i], classes[j])} for n, i, j in pairs[:top + 2]]}


def describe_confusions(analysis: Mapping[str, Any]) -> str:
    """Markdown prose for `confusion_analysis`: every number comes from it."""
    overall = 100 * analysis["overall_accuracy"]
    problems = analysis["problem_classes"]
    if not problems:
        return f"Every class reaches the overall accuracy of {overall:.1f}%; no class stands out."
    lines = [f"Classes below the overall test accuracy of {overall:.1f}%, worst first:", ""]
    for p in problems:
        confused = ", ".join(f"{c['class']} ({c['count']} images, {100 * c['share']:.1f}%)"
                             for c in p["confused_with"]) or "no single class"
        lines.append(f"- **{p['class']}**: {100 * p['accuracy']:.1f}% of its {p['support']} test "
                     f"images correct; mistaken most often for {confused}.")
    lines += ["", "The most confused pairs (both directions counted):", ""]
    for pair in analysis["confused_pairs"]:
        a, b = pair["classes"]
        why = f" Likely reason: {pair['reason']}." if pair["reason"] else ""
        lines.append(f"- {a} / {b}: {pair['count']} test images.{why}")
    return "\n".join(lines)
