"""A small, fully seeded training run in its own process, for the kill-and-resume test.

    python tests/fit_subprocess.py RUN_DIR OUT_FILE [--kill-at EPOCH BATCH]
                                   [--checkpoint-overhead FRACTION]

Trains a tiny conv net (BatchNorm and dropout, so buffers and the torch RNG
matter) with Adam, a one-cycle schedule and label smoothing on synthetic images,
and saves the returned history and final weights to OUT_FILE. With --kill-at the
process SIGKILLs itself while fetching batch BATCH (1-based) of epoch EPOCH,
mid-epoch, as a crashed or disconnected Colab runtime would stop. Checkpoints
are written after every epoch unless --checkpoint-overhead is given (fit's
checkpoint_overhead).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from common.batches import DeviceBatches  # noqa: E402
from common.train import fit  # noqa: E402

EPOCHS = 4


class KillingBatches:
    """Wraps batches; kills this process on reaching (epoch, batch)."""

    def __init__(self, batches, epoch: int, batch: int):
        self.batches, self.kill_epoch, self.kill_batch = batches, epoch, batch
        self.num_samples = batches.num_samples
        self.epoch = 0

    def __len__(self):
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches.set_epoch(epoch)

    def __iter__(self):
        for i, batch in enumerate(self.batches, start=1):
            if self.epoch + 1 == self.kill_epoch and i == self.kill_batch:
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch


def tiny_net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Dropout(0.5),
        torch.nn.Linear(8 * 4 * 4, 10))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("out")
    parser.add_argument("--kill-at", nargs=2, type=int, metavar=("EPOCH", "BATCH"))
    parser.add_argument("--checkpoint-overhead", type=float, default=None)
    args = parser.parse_args()

    torch.set_num_threads(1)  # one thread: the same reduction order in every process
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (40,), generator=gen)
    stats = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    train = DeviceBatches(images, labels, batch_size=8, train=True, crop_padding=1, seed=5, **stats)
    test = DeviceBatches(images[:16], labels[:16], batch_size=8, **stats)
    if args.kill_at:
        train = KillingBatches(train, *args.kill_at)

    torch.manual_seed(0)
    model = tiny_net()
    history = fit(model, train, test, run_dir=args.run_dir, epochs=EPOCHS, optimizer="adam",
                  lr=0.01, weight_decay=1e-4, schedule="onecycle", label_smoothing=0.1,
                  device="cpu", config={"model": "tiny_net", "seed": 0},
                  checkpoint_overhead=args.checkpoint_overhead)
    torch.save({"history": history, "model": model.state_dict()}, args.out)


if __name__ == "__main__":
    main()
