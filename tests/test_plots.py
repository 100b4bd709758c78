"""common.plots: figures drawn from histories, confusion matrices against brute-force
counts, and PNG files that really are PNGs."""
from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from common.plots import (confusion_matrix, per_class_accuracy, plot_class_counts,
                          plot_comparison, plot_confusion_matrix, plot_history,
                          plot_per_class_accuracy, plot_samples)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["plane", "car", "bird", "cat"]


def history(n=5, offset=0.0, stopped=None):
    """A history as history.json holds it (through JSON, as plots receive it)."""
    e = np.arange(1, n + 1)
    h = {"epoch": e.tolist(), "train_loss": (2 / e + offset).tolist(),
         "eval_loss": (2.2 / e + offset).tolist(), "train_accuracy": (1 - 0.5 / e).tolist(),
         "eval_accuracy": (0.9 - 0.5 / e).tolist(), "lr": [0.1] * n, "seconds": [1.0] * n,
         "stopped": stopped}
    return json.loads(json.dumps(h))


def assert_png(path, min_side=200):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) >= min_side


def test_history_figure_plots_the_history_and_saves_a_png(tmp_path):
    h = history()
    fig = plot_history(h, title="VGG-16", save_to=tmp_path / "out" / "vgg16.png")
    assert_png(tmp_path / "out" / "vgg16.png")
    ax_loss, ax_acc = fig.axes
    assert [line.get_label() for line in ax_loss.lines] == ["train", "test"]
    np.testing.assert_allclose(ax_loss.lines[0].get_ydata(), h["train_loss"])
    np.testing.assert_allclose(ax_loss.lines[1].get_ydata(), h["eval_loss"])
    np.testing.assert_allclose(ax_acc.lines[1].get_ydata(), 100 * np.array(h["eval_accuracy"]))
    np.testing.assert_allclose(ax_acc.lines[0].get_xdata(), h["epoch"])
    assert fig.get_suptitle() == "VGG-16" and fig.get_supxlabel() == ""
    assert not plt.get_fignums()  # closed in pyplot: shown only where a notebook displays it


def test_stopped_run_says_so(tmp_path):
    fig = plot_history(history(2, stopped="non-finite loss at epoch 3, batch 4/10"), title="Adam")
    assert fig.get_suptitle() == "Adam"
    assert fig.get_supxlabel().startswith("stopped: non-finite loss at epoch 3")
    empty = plot_history(history(0, stopped="non-finite loss at epoch 1, batch 2/10"),
                         save_to=tmp_path / "empty.png")
    assert_png(tmp_path / "empty.png", min_side=100)
    assert "no completed epoch" in [t.get_text() for t in empty.axes[0].texts]


def test_history_missing_keys_is_a_clear_error():
    with pytest.raises(ValueError, match="lacks eval_loss"):
        plot_history({"epoch": [1], "train_loss": [1.0], "train_accuracy": [0.5],
                      "eval_accuracy": [0.5]})


def test_comparison_overlays_runs(tmp_path):
    runs = {"SGD": history(), "Adam": history(4, 0.3), "RMSProp": history(1, stopped="x")}
    fig = plot_comparison(runs, title="optimisers", save_to=tmp_path / "cmp.png")
    assert_png(tmp_path / "cmp.png")
    ax_loss, ax_acc = fig.axes
    labels = [line.get_label() for line in ax_loss.lines]
    assert labels == ["SGD test", "SGD train", "Adam test", "Adam train",
                      "RMSProp (stopped) test", "RMSProp (stopped) train"]
    styles = [line.get_linestyle() for line in ax_acc.lines]
    assert styles == ["-", "--"] * 3
    np.testing.assert_allclose(ax_loss.lines[2].get_ydata(), runs["Adam"]["eval_loss"])
    assert ax_loss.lines[2].get_color() == ax_loss.lines[3].get_color()
    test_only = plot_comparison(runs, show_train=False)
    assert len(test_only.axes[0].lines) == 3
    with pytest.raises(ValueError, match="empty"):
        plot_comparison({})


def test_validation_runs_are_labelled_val():
    fig = plot_history(history(), held_out="val")
    assert [line.get_label() for line in fig.axes[0].lines] == ["train", "val"]
    assert fig.axes[1].texts[0].get_text().startswith("best val ")
    cmp = plot_comparison({"cosine": history()}, held_out="val")
    assert [line.get_label() for line in cmp.axes[1].lines] == ["cosine val", "cosine train"]


def test_sample_grid_shows_the_first_images_of_each_class_unchanged(tmp_path):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=gen)
    labels = torch.tensor([3, 0, 1, 0, 2, 1] * 6 + [0, 0, 0, 0])  # class 3 has 6 images
    fig = plot_samples(images, labels, CLASSES, per_class=7, save_to=tmp_path / "s.png")
    assert_png(tmp_path / "s.png")
    grid = np.array(fig.axes).reshape(len(CLASSES), 7)
    for c in range(len(CLASSES)):
        expected = [i for i in range(len(labels)) if labels[i] == c][:7]  # dataset order
        for j in range(7):
            shown = grid[c, j].images
            if j < len(expected):
                # Pixel for pixel: the image drawn in row c, column j is that input image.
                assert np.array_equal(shown[0].get_array(),
                                      images[expected[j]].permute(1, 2, 0).numpy())
            else:
                assert not shown  # class 3 has only 6 images: the 7th cell stays empty
        assert grid[c, 0].get_ylabel() == CLASSES[c]
    gray = plot_samples(images[:, :1], labels, CLASSES, per_class=2)
    assert np.array_equal(gray.axes[0].images[0].get_array(), images[1, 0].numpy())
    with pytest.raises(ValueError, match="uint8"):
        plot_samples(images.float(), labels, CLASSES)


def test_class_counts_are_the_label_counts(tmp_path):
    rng = np.random.default_rng(2)
    train, test = rng.integers(0, 4, 300), rng.integers(0, 4, 80)
    fig = plot_class_counts(torch.from_numpy(train), test, CLASSES, save_to=tmp_path / "c.png")
    assert_png(tmp_path / "c.png")
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    assert heights == list(np.bincount(train, minlength=4)) + list(np.bincount(test, minlength=4))
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["train (300)", "test (80)"]
    with pytest.raises(ValueError, match="0..3"):
        plot_class_counts([0, 4], [0], CLASSES)


def brute_force_confusion(labels, preds, k):
    cm = [[0] * k for _ in range(k)]
    for t, p in zip(labels, preds):
        cm[t][p] += 1
    return np.array(cm)


def test_confusion_matrix_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 500)
    preds = np.where(rng.random(500) < 0.6, labels, rng.integers(0, 4, 500))
    expected = brute_force_confusion(labels, preds, 4)
    assert np.array_equal(confusion_matrix(labels, preds, 4), expected)
    # Torch tensors (as evaluate returns them) give the same matrix.
    assert np.array_equal(confusion_matrix(torch.from_numpy(labels), torch.from_numpy(preds), 4),
                          expected)
    acc = per_class_accuracy(expected)
    for c in range(4):
        mask = labels == c
        assert acc[c] == pytest.approx(np.mean(preds[mask] == c))


def test_confusion_matrix_edge_cases():
    # Class 3 never occurs: its row is zero and its accuracy undefined, not a crash.
    cm = confusion_matrix([0, 1, 2, 2], [0, 2, 2, 3], 4)
    assert cm[3].sum() == 0 and np.isnan(per_class_accuracy(cm)[3])
    with pytest.raises(ValueError, match="0..3"):
        confusion_matrix([0, 4], [0, 1], 4)
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix([0, 1], [0], 4)


def test_confusion_and_per_class_figures(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 200)
    preds = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 4, 200))
    expected = brute_force_confusion(labels, preds, 4)

    fig = plot_confusion_matrix(labels, preds, CLASSES, title="ResNet-18",
                                save_to=tmp_path / "cm.png")
    assert_png(tmp_path / "cm.png")
    panels = {ax.get_title(): ax for ax in fig.axes}  # the colour bars have no title
    counts, normalised = panels["counts"], panels["row-normalised"]
    assert np.array_equal(counts.images[0].get_array(), expected)
    rows = expected / expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(normalised.images[0].get_array(), rows)
    assert [t.get_text() for t in counts.get_xticklabels()] == CLASSES
    assert counts.texts[0].get_text() == str(expected[0, 0])

    bars_fig = plot_per_class_accuracy(labels, preds, CLASSES, save_to=tmp_path / "per_class.png")
    assert_png(tmp_path / "per_class.png")
    heights = [bar.get_height() for bar in bars_fig.axes[0].patches]
    np.testing.assert_allclose(heights, 100 * np.diag(expected) / expected.sum(axis=1))
    overall = bars_fig.axes[0].lines[0].get_ydata()[0]
    assert overall == pytest.approx(100 * np.mean(labels == preds))


def test_save_to_must_be_a_png(tmp_path):
    with pytest.raises(ValueError, match=".png"):
        plot_history(history(), save_to=tmp_path / "figure.pdf")
