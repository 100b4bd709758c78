"""TensorBoard event files from a saved training history, and back.

    write_history(history, results_dir / "tensorboard" / "baseline")   # after fit
    scalars = read_scalars(results_dir / "tensorboard" / "baseline")   # tag -> (steps, values)
    fig = plot_scalars({"baseline": scalars})                          # the same curves inline

The events are written from the history dict `common.train.fit` returns (or
`common.train.load_history` reads), not from inside the training loop, so a
resumed or reused run gets complete event files too. `tensorboard --logdir
<results_dir>/tensorboard` shows them; the inline figure is drawn from the files
as read back, so it shows exactly what TensorBoard shows.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from ..plots import save_figure

__all__ = ["history_tags", "write_history", "read_scalars", "plot_scalars"]


def history_tags(eval_name: str = "val") -> dict[str, str]:
    """History key -> TensorBoard tag. Grouping by metric ("loss/train", "loss/val")
    puts the train and held-out curves of a run in one TensorBoard section.
    `eval_name` names the split of the history's eval_* columns (the validation
    split in the extras, hence "val")."""
    return {"train_loss": "loss/train", "eval_loss": f"loss/{eval_name}",
            "train_accuracy": "accuracy/train", "eval_accuracy": f"accuracy/{eval_name}",
            "lr": "lr"}


def write_history(history: Mapping, log_dir: str | os.PathLike, *, eval_name: str = "val") -> Path:
    """Write one scalar per epoch for each metric of `history` into `log_dir`.

    Earlier event files in `log_dir` are removed first, so rewriting the same run
    (a re-run of the notebook) never leaves two copies of its curves. Steps are
    the 1-based epoch numbers of history["epoch"]. Returns log_dir.
    """
    log_dir = Path(log_dir)
    if "epoch" not in history:
        raise ValueError("history has no 'epoch' list; pass the dict common.train.fit returns")
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("events.out.tfevents.*"):
        old.unlink()
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for key, tag in history_tags(eval_name).items():
            for step, value in zip(history["epoch"], history.get(key) or []):
                writer.add_scalar(tag, float(value), global_step=int(step))
    finally:
        writer.close()
    return log_dir


def read_scalars(log_dir: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar series in the event files of `log_dir`, read with TensorBoard's own
    EventAccumulator: tag -> (steps int array, values float array), in step order."""
    log_dir = Path(log_dir)
    if not any(log_dir.glob("events.out.tfevents.*")):
        raise FileNotFoundError(f"no TensorBoard event files in {log_dir}")
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = sorted(acc.Scalars(tag), key=lambda e: e.step)
        out[tag] = (np.array([e.step for e in events], dtype=np.int64),
                    np.array([e.value for e in events], dtype=np.float64))
    return out


def plot_scalars(runs: Mapping[str, Mapping[str, tuple]], *, title: str | None = None,
                 save_to: str | os.PathLike | None = None):
    """Loss and accuracy panels, as TensorBoard draws them, for one or more runs read by
    `read_scalars`. Held-out curves solid, training curves dashed; one colour per run
    (per split when there is a single run)."""
    if not runs:
        raise ValueError("plot_scalars: runs is empty; pass {label: read_scalars(log_dir)}")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    palette = "tab10" if len(runs) <= 10 else "tab20"  # one distinct colour per run
    colours = matplotlib.colormaps[palette]
    ncolours = colours.N
    for i, (label, scalars) in enumerate(runs.items()):
        for ax, metric, scale in ((axes[0], "loss", 1.0), (axes[1], "accuracy", 100.0)):
            for tag, (steps, values) in sorted(scalars.items()):
                group, _, split = tag.partition("/")
                if group != metric:
                    continue
                train = split == "train"
                if len(runs) > 1:
                    colour, name = colours(i % ncolours), label
                else:  # a single run: one colour per split, as TensorBoard shows two runs
                    colour, name = ("tab:blue" if train else "tab:orange"), ""
                ax.plot(steps, values * scale, "--" if train else "-", marker="o" if train else "s",
                        ms=3, color=colour, label=f"{name} {split}".strip())
    axes[0].set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    axes[1].set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    plt.close(fig)  # shown once, where the notebook displays it
    if save_to is not None:
        save_figure(fig, save_to)
    return fig
