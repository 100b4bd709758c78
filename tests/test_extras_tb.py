"""common.extras.tb: histories written as TensorBoard event files and read back with
TensorBoard's own EventAccumulator."""
from __future__ import annotations

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common.extras.tb import history_tags, plot_scalars, read_scalars, write_history

HISTORY = {"epoch": [1, 2, 3], "train_loss": [2.1, 1.2, 0.8], "eval_loss": [1.9, 1.3, 1.1],
           "train_accuracy": [0.3, 0.6, 0.75], "eval_accuracy": [0.35, 0.55, 0.7],
           "lr": [0.1, 0.05, 0.01], "seconds": [1.0, 1.0, 1.0], "stopped": None}


def test_event_files_hold_every_epoch_of_every_metric(tmp_path):
    write_history(HISTORY, tmp_path / "run")
    acc = EventAccumulator(str(tmp_path / "run"))
    acc.Reload()
    tags = history_tags("val")
    assert set(acc.Tags()["scalars"]) == set(tags.values())
    for key, tag in tags.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == HISTORY["epoch"]
        np.testing.assert_allclose([e.value for e in events], HISTORY[key], rtol=1e-6)


def test_rewriting_replaces_rather_than_duplicates(tmp_path):
    write_history(HISTORY, tmp_path / "run")
    shorter = {k: (v[:2] if isinstance(v, list) else v) for k, v in HISTORY.items()}
    write_history(shorter, tmp_path / "run")
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1
    steps, values = read_scalars(tmp_path / "run")["loss/val"]
    assert steps.tolist() == [1, 2] and values == pytest.approx(HISTORY["eval_loss"][:2])


def test_read_scalars_and_plot(tmp_path):
    write_history(HISTORY, tmp_path / "a", eval_name="test")
    scalars = read_scalars(tmp_path / "a")
    assert "accuracy/test" in scalars
    fig = plot_scalars({"a": scalars, "b": scalars}, save_to=tmp_path / "f.png")
    lines = fig.axes[1].get_lines()
    assert len(lines) == 4  # train and held-out for each of two runs
    by_label = {line.get_label(): line for line in lines}
    np.testing.assert_allclose(by_label["a train"].get_ydata(), 100 * np.array(HISTORY["train_accuracy"]), rtol=1e-6)
    np.testing.assert_allclose(by_label["b test"].get_ydata(), 100 * np.array(HISTORY["eval_accuracy"]), rtol=1e-6)
    assert by_label["a train"].get_linestyle() == "--" and by_label["a test"].get_linestyle() == "-"
    assert (tmp_path / "f.png").is_file()
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        read_scalars(tmp_path / "empty")
    with pytest.raises(ValueError, match="epoch"):
        write_history({"train_loss": [1.0]}, tmp_path / "bad")
