"""Input pipelines compared: `common.data.DeviceBatches` against the standard
torchvision recipe, a DataLoader with worker processes and per-image PIL transforms.

Both contenders produce the same thing from the same uint8 images: shuffled batches
of randomly cropped (4-pixel zero padding), randomly flipped, normalised float32
images, optionally resized to 224x224 (Q3). One call of a contender is one epoch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from benchmarks.timing import interleave, median, spread


class UInt8ImageDataset(torch.utils.data.Dataset):
    """The images as torchvision's CIFAR10 serves them: a numpy (N, H, W, C) uint8
    array, one PIL image per item, then the transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())
        if self.images.shape[-1] == 1:
            self.images = self.images[..., 0]  # PIL wants (H, W) for greyscale
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def standard_transform(mean: Sequence[float], std: Sequence[float], image_size: int | None = None,
                       padding: int = 4):
    """The usual CIFAR training transform, with Q3's resize when image_size is given."""
    import torchvision.transforms as T

    steps = [T.RandomCrop(32, padding=padding), T.RandomHorizontalFlip()]
    if image_size is not None:
        steps.append(T.Resize(image_size))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # what DataLoader workers default to; stated, not assumed


class StandardPipeline:
    """A DataLoader over UInt8ImageDataset with `workers` persistent worker processes
    (each with one torch thread). Persistent workers start once, so worker start-up
    falls in the warm-up, not in the timed epochs. Call it to run one epoch."""

    def __init__(self, images, labels, *, batch_size: int, mean, std,
                 image_size: int | None = None, workers: int = 2, seed: int = 0):
        dataset = UInt8ImageDataset(images, labels, standard_transform(mean, std, image_size))
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
            persistent_workers=workers > 0, worker_init_fn=_one_thread if workers else None,
            generator=torch.Generator().manual_seed(seed))

    def __call__(self) -> int:
        n = 0
        for x, y in self.loader:
            n += len(y)
        return n

    def close(self) -> None:
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()  # stop the persistent workers now, not at exit
        self.loader = None


class OurPipeline:
    """common.data.DeviceBatches on the CPU; each call runs the next epoch."""

    def __init__(self, images, labels, *, batch_size: int, mean, std,
                 image_size: int | None = None, channels_last: bool = False, seed: int = 0):
        from common.batches import DeviceBatches

        self.batches = DeviceBatches(images, labels, batch_size=batch_size, device="cpu",
                                     train=True, mean=mean, std=std, image_size=image_size,
                                     channels_last=channels_last, seed=seed)
        self.epoch = 0

    def __call__(self) -> int:
        self.batches.set_epoch(self.epoch)
        self.epoch += 1
        n = 0
        for x, y in self.batches:
            n += len(y)
        return n

    def close(self) -> None:
        pass


def compare_pipelines(images, labels, *, mean, std, batch_size: int = 128,
                      image_size: int | None = None, channels_last: bool = False,
                      workers: int = 2, repeats: int = 5, warmup: int = 1) -> dict:
    """Images per second of both pipelines, measured in interleaved epochs.

    Returns the medians, the ratio ours/standard, and every repetition."""
    n = len(labels)
    ours = OurPipeline(images, labels, batch_size=batch_size, mean=mean, std=std,
                       image_size=image_size, channels_last=channels_last)
    standard = StandardPipeline(images, labels, batch_size=batch_size, mean=mean, std=std,
                                image_size=image_size, workers=workers)
    try:
        seconds = interleave({"ours": ours, "standard": standard}, repeats=repeats, warmup=warmup)
    finally:
        standard.close()
    rate = {name: n / median(s) for name, s in seconds.items()}
    return {"images": n, "batch_size": batch_size, "image_size": image_size,
            "channels_last": channels_last, "workers": workers, "repeats": repeats,
            "ours_images_per_s": rate["ours"], "standard_images_per_s": rate["standard"],
            "ratio": rate["ours"] / rate["standard"],
            "ours_seconds": seconds["ours"], "standard_seconds": seconds["standard"],
            "ours_spread_s": spread(seconds["ours"]), "standard_spread_s": spread(seconds["standard"])}
