"""Figures drawn from saved histories and predictions, never from live training state.

    history = load_history(runs_dir / "vgg16")          # common.train
    fig = plot_history(history, title="VGG-16", save_to=results_dir / "vgg16.png")
    fig = plot_comparison({"SGD": h1, "RMSProp": h2, "Adam": h3}, save_to=...)
    fig = plot_confusion_matrix(labels, predictions, classes, save_to=...)
    fig = plot_samples(ds.train_images, ds.train_labels, ds.classes, save_to=...)

Curves of the held-out set are labelled with the split the history was evaluated
on (`history["eval_split"]`: "test" or "validation"), so a run monitored on a
validation split is never shown as a test result.

Every function returns the matplotlib Figure and, given `save_to`, writes it as a
PNG (150 dpi, tight bounding box). Figures are closed in pyplot before they are
returned, so a notebook shows each one exactly once, where it displays it (as a
cell's last expression or with `display(fig)`), and no figure piles up in memory.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["save_figure", "plot_history", "plot_comparison", "confusion_matrix",
           "per_class_accuracy", "plot_confusion_matrix", "plot_per_class_accuracy",
           "plot_samples", "plot_class_counts", "check_history", "finish_figure", "as_percent",
           "held_out_label"]

DPI = 150


def save_figure(fig: Figure, save_to: str | os.PathLike) -> Path:
    """Write `fig` as a PNG at `save_to` (parent folders are created)."""
    path = Path(save_to)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_to={str(path)!r}: give a file name ending in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def finish_figure(fig: Figure, save_to) -> Figure:
    plt.close(fig)  # out of pyplot's list: no duplicate display, no leak across many figures
    if save_to is not None:
        save_figure(fig, save_to)
    return fig


def check_history(history: Mapping[str, Any], who: str) -> None:
    needed = ("epoch", "train_loss", "eval_loss", "train_accuracy", "eval_accuracy")
    missing = [k for k in needed if k not in history]
    if missing:
        raise ValueError(f"{who}: history lacks {', '.join(missing)}; pass a dict from "
                         "common.train.fit or load_history(run_dir)")


def _stopped_note(history: Mapping[str, Any]) -> str:
    if not history.get("stopped"):
        return ""
    return textwrap.fill(f"stopped: {history['stopped']}", width=100)


def _style_epoch_axes(*axes) -> None:
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)


def as_percent(values: Sequence[float]) -> np.ndarray:
    return 100 * np.asarray(values, dtype=float)


def held_out_label(history: Mapping[str, Any], held_out: str | None) -> str:
    """The label of a history's held-out curves: `held_out` when given, else its split."""
    return held_out or {"validation": "val"}.get(history.get("eval_split", "test"),
                                                 history.get("eval_split", "test"))


def plot_history(history: Mapping[str, Any], *, title: str | None = None, held_out: str | None = None,
                 save_to: str | os.PathLike | None = None) -> Figure:
    """Loss (train and test) and accuracy (train and test, in %) against epoch.

    `held_out` overrides the label of the eval_* curves (by default the history's
    eval_split, "val" for the validation split). A run that stopped early (a non-finite loss)
    says why in red under the panels, and shows only the epochs it completed."""
    check_history(history, "plot_history")
    held_out = held_out_label(history, held_out)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    epochs = history["epoch"]
    ax_loss.plot(epochs, history["train_loss"], "o-", ms=3, label="train")
    ax_loss.plot(epochs, history["eval_loss"], "s-", ms=3, label=held_out)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epochs, as_percent(history["train_accuracy"]), "o-", ms=3, label="train")
    ax_acc.plot(epochs, as_percent(history["eval_accuracy"]), "s-", ms=3, label=held_out)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    if epochs:
        best = int(np.argmax(history["eval_accuracy"]))
        ax_acc.annotate(f"best {held_out} {100 * history['eval_accuracy'][best]:.1f}%",
                        (epochs[best], 100 * history["eval_accuracy"][best]),
                        textcoords="offset points", xytext=(0, -14), ha="center", fontsize=8)
    _style_epoch_axes(ax_loss, ax_acc)
    for ax in (ax_loss, ax_acc):
        ax.legend()
        if not epochs:
            ax.text(0.5, 0.5, "no completed epoch", ha="center", va="center",
                    transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=11)
    if history.get("stopped"):
        # Under the panels, in red: the curves end early for a reason.
        fig.supxlabel(_stopped_note(history), fontsize=10, color="tab:red")
    return finish_figure(fig, save_to)


def plot_comparison(histories: Mapping[str, Mapping[str, Any]], *, title: str | None = None,
                    show_train: bool = True, held_out: str | None = None,
                    save_to: str | os.PathLike | None = None) -> Figure:
    """Several runs on one loss panel and one accuracy panel: held-out curves solid,
    train curves dashed in the same colour. `histories` maps a label to a history;
    runs that stopped early are marked "(stopped)" in the legend. `held_out` names
    the set in the eval_* columns, as in plot_history."""
    if not histories:
        raise ValueError("plot_comparison: histories is empty; pass {label: history, ...}")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    colours = matplotlib.colormaps["tab10"]
    for i, (label, history) in enumerate(histories.items()):
        check_history(history, f"plot_comparison[{label!r}]")
        colour = colours(i % 10)
        name = label + (" (stopped)" if history.get("stopped") else "")
        split = held_out_label(history, held_out)
        epochs = history["epoch"]
        ax_loss.plot(epochs, history["eval_loss"], "-", color=colour, label=f"{name} {split}")
        ax_acc.plot(epochs, as_percent(history["eval_accuracy"]), "-", color=colour,
                    label=f"{name} {split}")
        if show_train:
            ax_loss.plot(epochs, history["train_loss"], "--", color=colour, label=f"{name} train")
            ax_acc.plot(epochs, as_percent(history["train_accuracy"]), "--", color=colour,
                        label=f"{name} train")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    _style_epoch_axes(ax_loss, ax_acc)
    for ax in (ax_loss, ax_acc):
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return finish_figure(fig, save_to)


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """Counts C[i, j] = number of samples of true class i predicted as class j (int64)."""
    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels, dtype=np.int64).ravel()
    p = np.asarray(predictions.cpu() if hasattr(predictions, "cpu") else predictions,
                   dtype=np.int64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and predictions ({p.size}) differ in length")
    for name, a in (("labels", y), ("predictions", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must lie in 0..{num_classes - 1}; found {a.min()}..{a.max()}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class: diagonal over row sums (NaN for a class with no samples)."""
    rows = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(cm) / np.maximum(rows, 1), np.nan)


def plot_confusion_matrix(labels, predictions, class_names: Sequence[str], *,
                          title: str | None = None,
                          save_to: str | os.PathLike | None = None) -> Figure:
    """Two panels: counts, and the same matrix row-normalised (each true class's row
    sums to 1, so the diagonal is that class's accuracy)."""
    k = len(class_names)
    cm = confusion_matrix(labels, predictions, k)
    rows = cm.sum(axis=1, keepdims=True)
    norm = cm / np.maximum(rows, 1)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6), layout="constrained")
    for ax, matrix, what, fmt in ((axes[0], cm, "counts", "d"),
                                  (axes[1], norm, "row-normalised", ".2f")):
        image = ax.imshow(matrix, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, shrink=0.8)
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, format(matrix[i, j], fmt), ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > threshold else "black")
        ax.set_xticks(range(k), class_names, rotation=45, ha="right")
        ax.set_yticks(range(k), class_names)
        ax.set(xlabel="predicted class", ylabel="true class", title=what)
    if title:
        fig.suptitle(title, fontsize=11)
    return finish_figure(fig, save_to)


def plot_per_class_accuracy(labels, predictions, class_names: Sequence[str], *,
                            title: str | None = None,
                            save_to: str | os.PathLike | None = None) -> Figure:
    """A bar per class with its accuracy (%) and a dashed line at the overall accuracy."""
    cm = confusion_matrix(labels, predictions, len(class_names))
    accuracy = 100 * per_class_accuracy(cm)
    overall = 100 * np.trace(cm) / max(cm.sum(), 1)
    fig, ax = plt.subplots(figsize=(9, 4), layout="constrained")
    bars = ax.bar(range(len(class_names)), np.nan_to_num(accuracy), color="tab:blue")
    ax.bar_label(bars, labels=[f"{a:.1f}" if np.isfinite(a) else "n/a" for a in accuracy],
                 fontsize=8)
    ax.axhline(overall, color="tab:red", ls="--", label=f"overall {overall:.1f}%")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set(ylabel="accuracy (%)", ylim=(0, 105), title=title or "accuracy per class")
    ax.legend(loc="lower right")
    return finish_figure(fig, save_to)


# --- the data ---------------------------------------------------------------------------

def _as_numpy(x) -> np.ndarray:
    return np.asarray(x.cpu() if hasattr(x, "cpu") else x)


def sample_indices(labels, num_classes: int, per_class: int) -> np.ndarray:
    """(num_classes, per_class) indices: row c holds the first `per_class` images of
    class c, in dataset order (-1 where a class has fewer)."""
    y = _as_numpy(labels).astype(np.int64).ravel()
    grid = np.full((num_classes, per_class), -1, dtype=np.int64)
    for c in range(num_classes):
        found = np.flatnonzero(y == c)[:per_class]
        grid[c, :len(found)] = found
    return grid


def plot_samples(images, labels, class_names: Sequence[str], *, per_class: int = 8,
                 title: str | None = None,
                 save_to: str | os.PathLike | None = None) -> Figure:
    """A grid of example images: one row per class, named on the left.

    images: uint8 (N, C, H, W) with C = 1 or 3, as common.data keeps them; labels (N,).
    Row c shows the first `per_class` images of class c in dataset order (see
    `sample_indices`), drawn pixel for pixel (no smoothing)."""
    x = _as_numpy(images)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"plot_samples: expected uint8 images (N, C, H, W) with C = 1 or 3, got "
                         f"{x.dtype} {x.shape}")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"plot_samples: per_class={per_class!r}; expected a positive integer")
    k = len(class_names)
    grid = sample_indices(labels, k, per_class)
    height = 0.9 * k + (0.4 if title else 0.0)
    fig, axes = plt.subplots(k, per_class, figsize=(0.9 * per_class + 1.2, height), squeeze=False,
                             gridspec_kw={"wspace": 0.05, "hspace": 0.05,
                                          "top": 1 - (0.4 if title else 0.05) / height,
                                          "bottom": 0.05 / height})
    for c in range(k):
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if grid[c, j] >= 0:
                image = x[grid[c, j]].transpose(1, 2, 0)  # (H, W, C) for imshow
                if image.shape[2] == 1:
                    ax.imshow(image[:, :, 0], cmap="gray", vmin=0, vmax=255,
                              interpolation="nearest")
                else:
                    ax.imshow(image, interpolation="nearest")
        axes[c, 0].set_ylabel(class_names[c], rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.1 / height)
    return finish_figure(fig, save_to)


def plot_class_counts(train_labels, test_labels, class_names: Sequence[str], *,
                      title: str | None = None,
                      save_to: str | os.PathLike | None = None) -> Figure:
    """Images per class in the training and test sets, as grouped bars with their counts."""
    k = len(class_names)
    counts = {}
    for split, labels in (("train", train_labels), ("test", test_labels)):
        y = _as_numpy(labels).astype(np.int64).ravel()
        if y.size and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"plot_class_counts: {split} labels must lie in 0..{k - 1}; "
                             f"found {y.min()}..{y.max()}")
        counts[split] = np.bincount(y, minlength=k)
    fig, ax = plt.subplots(figsize=(10, 4), layout="constrained")
    width = 0.4
    positions = np.arange(k)
    for i, (split, n) in enumerate(counts.items()):
        bars = ax.bar(positions + (i - 0.5) * width, n, width, label=f"{split} ({n.sum():,})")
        ax.bar_label(bars, labels=[f"{v:,}" for v in n], fontsize=7)
    ax.set_xticks(positions, class_names, rotation=45, ha="right")
    ax.set(ylabel="images", title=title or "images per class")
    ax.margins(y=0.12)
    ax.legend()
    return finish_figure(fig, save_to)
