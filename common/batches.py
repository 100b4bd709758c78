"""uint8 image tensors -> shuffled, augmented, normalised batches on the device.

    batches = DeviceBatches(ds.train_images[idx], ds.train_labels[idx], batch_size=128,
                            device=device, train=True, mean=ds.mean, std=ds.std, seed=0)
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        for x, y in batches: ...

The images (from `common.data.load_dataset`) are moved to the device once. Each
batch is augmented there while still uint8 and only then turned into normalised
floats. There are no DataLoader worker processes: on Colab's two vCPUs,
per-image PIL transforms in workers are what starves a GPU.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch

from .hardware import hardware_for
import torch.nn.functional as F

__all__ = ["DeviceBatches", "held_out_batch_size"]


class DeviceBatches:
    """Shuffled, augmented, normalised batches from a uint8 image tensor kept on the device.

    images: uint8 (N, C, H, W); labels: int64 (N,). Each iteration yields
    x: float32 (B, C, S, S) normalised, S = image_size or H; y: int64 (B,), both on `device`.

    `train=True` shuffles every epoch and augments (random crop after zero padding
    by `crop_padding` pixels, horizontal flip, and with `cutout` > 0 a Cutout
    square of that side) unless `augment=False`. Shuffling and
    augmentation come from a generator on `device` seeded by (seed, epoch), so the
    same seed and epoch give the same batches on the same kind of device (the CPU's
    and CUDA's streams differ), and a resumed run sees the batches the interrupted
    one would have. On a GPU nothing is drawn on the host, copied or waited for.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
                 device="cpu", train: bool = False, augment: bool | None = None,
                 mean: Sequence[float], std: Sequence[float], image_size: int | None = None,
                 crop_padding: int = 4, flip: bool = True, cutout: int = 0,
                 channels_last: bool = False, seed: int = 0, drop_last: bool = False):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images: expected uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels: expected shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 8):
            raise ValueError(f"image_size={image_size!r}: expected an integer of at least 8 "
                             "(or None to keep the native size)")
        if isinstance(cutout, bool) or not isinstance(cutout, int) or not 0 <= cutout <= min(images.shape[-2:]):
            raise ValueError(f"cutout={cutout!r}: expected a square side in pixels, from 0 (off) "
                             f"to the image side {images.shape[-1]}")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values, one per channel")
        self.device = torch.device(device)
        self.images = images.to(self.device)  # moved once; never per batch
        self.labels = labels.to(self.device, dtype=torch.int64)
        self.batch_size = batch_size
        self.train = train
        self.augment = train if augment is None else augment
        self.image_size = image_size
        self.crop_padding = crop_padding
        self.flip = flip
        self.cutout = cutout
        # Cutout fills with the mean colour, which normalises to 0 (DeVries and Taylor 2017).
        self._fill = torch.tensor([round(255 * m) for m in mean], dtype=torch.uint8,
                                  device=self.device).view(1, -1, 1, 1)
        self.channels_last = channels_last
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        # (x / 255 - mean) / std folded into one multiply-add.
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    @property
    def num_samples(self) -> int:
        return self.images.shape[0]

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(self.seed * 1_000_003 + self.epoch)

    # Images are shuffled and augmented in chunks of whole batches, about this many
    # images at a time: a few large operations instead of many small ones, whose
    # fixed costs (and, on a busy machine, waits for a second thread) dominate.
    # Chunks stay small enough (3 MB of CIFAR crops) for the C allocator to reuse
    # their memory rather than map fresh pages for every chunk, which measured
    # costly on these VMs, and for the float conversion to run batch by batch in
    # cache (benchmarks/ measures the pipeline).
    _CHUNK_IMAGES = 1024

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, size = self.num_samples, self.batch_size
        gen = self._generator()
        order = torch.randperm(n, generator=gen, device=gen.device) if self.train else None
        end = min(n, len(self) * size)  # drop_last leaves out the final partial batch
        chunk = size * max(1, self._CHUNK_IMAGES // size)
        for first in range(0, end, chunk):
            last = min(first + chunk, end)
            idx = None if order is None else order[first:last]
            y = self.labels[first:last] if idx is None else self.labels.index_select(0, idx)
            if self.augment:
                x = self._augment(torch.arange(first, last, device=self.device) if idx is None else idx, gen)
            else:
                # Slices are views; index_select copies whole images, several times
                # faster than images[idx].
                x = self.images[first:last] if idx is None else self.images.index_select(0, idx)
            for start in range(0, last - first, size):
                yield self._to_float(x[start:start + size]), y[start:start + size]

    def _augment(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The images at `idx`, randomly cropped after zero padding and randomly
        flipped: a new uint8 (B, C, H, W) tensor.

        Per image: offsets dy, dx uniform in 0..2p and a horizontal flip with
        probability 0.5, drawn from `gen` in that order (all dy, then all dx, then
        all flips). The crops come straight from a zero-padded copy of the images,
        made on the first augmented epoch and kept: (H+2p)(W+2p)/(HW) times the
        images' memory (1.56x for CIFAR, 240 MB for 50,000 images).
        """
        b, p, on = len(idx), self.crop_padding, gen.device
        dy = torch.randint(0, 2 * p + 1, (b,), generator=gen, device=on) if p else None
        dx = torch.randint(0, 2 * p + 1, (b,), generator=gen, device=on) if p else None
        flip = torch.rand(b, generator=gen, device=on) < 0.5 if self.flip else None
        if flip is not None and on.type == "cpu":  # positions: nonzero() would sync a GPU
            flip = flip.nonzero().squeeze(1)
        padded = self._padded_images()
        if padded.device.type == "cpu" and self._numpy_on_cpu:
            x = torch.from_numpy(_crop_flip_numpy(padded, idx, p, dy, dx, flip))
        else:
            x = _crop_flip_torch(padded, idx, p, dy, dx, flip)
        return self._cut_out(x, gen) if self.cutout else x

    def _cut_out(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Cutout: one square of side `cutout` per image filled with the mean colour,
        centred uniformly on the image (so it may hang over the edge). The centres are
        drawn after the crops and flips, which therefore stay as without Cutout."""
        b, _, h, w = x.shape
        cy = torch.randint(0, h, (b, 1), generator=gen, device=gen.device).to(x.device)
        cx = torch.randint(0, w, (b, 1), generator=gen, device=gen.device).to(x.device)
        top, left = cy - self.cutout // 2, cx - self.cutout // 2
        rows = torch.arange(h, device=x.device).view(1, h)
        cols = torch.arange(w, device=x.device).view(1, w)
        in_rows = (rows >= top) & (rows < top + self.cutout)  # (B, H)
        in_cols = (cols >= left) & (cols < left + self.cutout)  # (B, W)
        mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]
        return torch.where(mask, self._fill, x)

    # On the CPU, numpy's fancy indexing copies each crop as a block; torch's
    # advanced indexing computes an offset per byte and measured about 5x slower.
    _numpy_on_cpu = True

    def _padded_images(self) -> torch.Tensor:
        p = self.crop_padding
        cached = getattr(self, "_padded_cache", None)
        if cached is None or cached[0] != p:
            cached = (p, F.pad(self.images, (p, p, p, p)) if p else self.images)
            self._padded_cache = cached
        return cached[1]

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> normalised float32 (B, C, S, S), in the requested layout."""
        size = self.image_size
        resize = size is not None and tuple(x.shape[-2:]) != (size, size)
        if self.channels_last and not resize:
            x = x.contiguous(memory_format=torch.channels_last)  # cheap while still uint8
        # (x / 255 - mean) / std as one fused per-channel multiply-add: eval-mode
        # batch_norm with mean 0, variance 1, weight 1 / (255 std), bias -mean / std.
        # Measured faster than addcmul or x.float() * scale + shift.
        weight, bias = self._scale.view(-1), self._shift.view(-1)
        x = F.batch_norm(x.float(), torch.zeros_like(weight), torch.ones_like(weight), weight, bias,
                         training=False, eps=0.0)
        if resize:
            # Bilinear resize of whole batches on the device (Q3's 224x224 input),
            # after normalising: resizing commutes with the per-channel affine map,
            # and the float output is then written once. Resizing the uint8 batch
            # first (torch has a fast uint8 path) measured slower on the CPU: the
            # float conversion and normalisation then run on 49x more pixels.
            # Resizing a channels_last batch measured slower too: the layout changes after.
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > size)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return x


def held_out_batch_size(batch_size: int, device, multiple: int = 4) -> int:
    """The batch size to evaluate with. Evaluation keeps no activations for a backward
    pass, so a GPU takes `multiple` training batches at once: fewer, fuller kernel
    launches. The CPU gains nothing and keeps the training batch size. The choice is
    common.hardware's, so an emulated GPU (COMP5541_EMULATE) takes it too."""
    return hardware_for(device).eval_batch_size(batch_size, multiple)


def _crop_windows(padded_shape, padded_strides, h: int, w: int):
    """Shape and strides of a view of every h x w window of every padded image:
    view[i, dy, dx] is padded image i cropped at (dy, dx), with no copy."""
    n, c, hp, wp = padded_shape
    sn, sc, sh, sw = padded_strides
    return (n, hp - h + 1, wp - w + 1, c, h, w), (sn, sh, sw, sc, sh, sw)


def _crop_flip_torch(padded: torch.Tensor, idx: torch.Tensor, p: int, dy, dx, flip) -> torch.Tensor:
    """Images `idx` of `padded` (N, C, H+2p, W+2p) cropped at (dy, dx) to H x W, then
    those at positions `flip` (or where the boolean mask `flip` is True) mirrored;
    dy, dx, flip: tensors, or None for no crop (p = 0) / no flip. Returns a new
    tensor. Indexing the strided view of all windows with one (i, dy, dx) per image
    copies only the crops kept: no per-pixel index tensors."""
    device = padded.device
    if p:
        h, w = padded.shape[2] - 2 * p, padded.shape[3] - 2 * p
        windows = padded.as_strided(*_crop_windows(padded.shape, padded.stride(), h, w))
        x = windows[idx, dy.to(device), dx.to(device)]
    else:
        x = padded.index_select(0, idx)
    if flip is not None and flip.dtype == torch.bool:  # a mask: no sync to count the flips
        x = torch.where(flip.to(device).view(-1, 1, 1, 1), x.flip(3), x)
    elif flip is not None:
        flip = flip.to(device)
        x.index_copy_(0, flip, x.index_select(0, flip).flip(3))
    return x


def _crop_flip_numpy(padded: torch.Tensor, idx: torch.Tensor, p: int, dy, dx, flip) -> np.ndarray:
    """_crop_flip_torch for CPU tensors, in numpy; returns a new array."""
    images, idx = padded.numpy(), idx.numpy()
    if p:
        h, w = images.shape[2] - 2 * p, images.shape[3] - 2 * p
        shape, strides = _crop_windows(images.shape, images.strides, h, w)  # uint8: bytes = elements
        windows = np.lib.stride_tricks.as_strided(images, shape, strides, writeable=False)
        out = windows[idx, dy.numpy(), dx.numpy()]
    else:
        out = images[idx]
    if flip is not None:
        flip = flip.numpy()
        out[flip] = out[flip, :, :, ::-1]
    return out
