"""Every cross-device resume: {CPU, T4, bf16 GPU} x {sgd, adam, rmsprop}.

A student may start a run on Colab's CPU runtime and resume it on a T4, or go
from an L4 to a T4 when the better GPU is not free. Each run here is interrupted
after epoch 1 on one side and resumed on another (or the same) side, under
COMP5541_EMULATE, with the notebooks' own wishes (amp, channels_last, held-out
batches 4x larger on a GPU), so the saved settings, optimiser kernels, scaler
state and memory layout all cross over.

Oracles: a same-side resume equals the uninterrupted run on that side bit for bit
(on the CPU, emulated or not, every kernel is deterministic). A cross-side resume
cannot equal either side's run (it changes precision in mid-run), so it must
finish with finite losses and keep the epoch it resumed from exactly as saved.
"""
from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn as nn

from common.batches import DeviceBatches
from common.hardware import EMULATE_VARIABLE, EVAL_BATCH_MULTIPLE, hardware_for
from common.train import fit
from test_train import STATS, Interrupt, metrics, quiet, same_weights, synthetic

SIDES = ("cpu", "t4", "bf16")
LR = {"sgd": 0.05, "adam": 0.01, "rmsprop": 0.01}
EPOCHS = 3


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread


def on_side(mp: pytest.MonkeyPatch, side: str) -> None:
    if side == "cpu":
        mp.delenv(EMULATE_VARIABLE, raising=False)
    else:
        mp.setenv(EMULATE_VARIABLE, side)


def tiny_conv() -> nn.Module:
    """A conv net with BatchNorm (running buffers) and a linear head, on 8x8 images."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 10))


def train_on_side(run_dir, optimizer: str, **options) -> tuple[dict, dict]:
    """fit as the Q2 notebook calls it, on the side the environment names: (history,
    weights). 4 training batches of 8; the 16 held-out images in 2 batches on the
    CPU, 1 on a GPU."""
    images, labels = synthetic(32)
    train = DeviceBatches(images, labels, batch_size=8, train=True, crop_padding=1, seed=0,
                          **STATS)
    size = hardware_for("cpu").eval_batch_size(8, EVAL_BATCH_MULTIPLE["Q2"])
    held_out = DeviceBatches(images[:16], labels[:16], batch_size=size, **STATS)
    model = tiny_conv()
    history = fit(model, train, held_out, run_dir=run_dir, epochs=EPOCHS, optimizer=optimizer,
                  lr=LR[optimizer], momentum=0.9, nesterov=True, weight_decay=5e-4,
                  schedule="cosine", label_smoothing=0.1, amp=True, channels_last=True,
                  device="cpu", log=quiet, checkpoint_overhead=None, **options)
    return history, {k: v.clone() for k, v in model.state_dict().items()}


def stop_after_epoch_1(epoch, _history):
    if epoch == 1:
        raise Interrupt


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """For every (side, optimiser): the uninterrupted run's (history, weights), and
    the folder of a run interrupted after epoch 1 (last.pt holds epoch 1)."""
    base = tmp_path_factory.mktemp("matrix")
    whole, interrupted = {}, {}
    with pytest.MonkeyPatch.context() as mp:
        for side in SIDES:
            on_side(mp, side)
            for optimizer in LR:
                whole[side, optimizer] = train_on_side(base / f"whole-{side}-{optimizer}",
                                                       optimizer)
                folder = base / f"part-{side}-{optimizer}"
                with pytest.raises(Interrupt):
                    train_on_side(folder, optimizer, on_epoch_end=stop_after_epoch_1)
                interrupted[side, optimizer] = folder
    return whole, interrupted


@pytest.mark.parametrize("optimizer", list(LR))
@pytest.mark.parametrize("end", SIDES)
@pytest.mark.parametrize("start", SIDES)
def test_a_run_interrupted_on_one_side_resumes_on_another(tmp_path, monkeypatch, runs, start,
                                                          end, optimizer):
    whole, interrupted = runs
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted[start, optimizer], run_dir)
    on_side(monkeypatch, end)
    history, weights = train_on_side(run_dir, optimizer)
    assert history["epoch"] == [1, 2, 3] and history["stopped"] is None
    assert all(math.isfinite(v) for k in ("train_loss", "eval_loss") for v in history[k])
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    started, _ = whole[start, optimizer]
    first = {k: v[:1] for k, v in metrics(history).items() if isinstance(v, list)}
    assert first == {k: v[:1] for k, v in metrics(started).items() if isinstance(v, list)}
    if start == end:
        expected, expected_weights = whole[end, optimizer]
        assert metrics(history) == metrics(expected)
        assert same_weights(weights, expected_weights)
