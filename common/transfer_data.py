"""Q3's images: what only Q3 needs of the data, for common.transfer_runs' specs.

Q3(a)'s fractions are of the training images, as the assignment says: the
training images (or the profile's `train_images` of them, class-stratified) are
the base; fraction f takes round(f x n_c) images of every class c from it, nested
(the 10% subset lies inside the 20% one, which lies inside the 50% one). The
validation images that choose every learning rate are drawn from outside the
largest subset, so no run is ever scored on an image it trained on. Each subset's
digest names the runs trained on it, and proves pretrained and scratch runs saw
the same images.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from .batches import DeviceBatches
from .data import stratified_indices, subset_digest
from .hardware import EVAL_BATCH_MULTIPLE, hardware_for
from .transfer import build_transfer_model, initialise_scratch, shared_normalisation
from .weights import fetch_weights_file, file_sha256, resolve_weights, weights_source

__all__ = ["epochs_for", "Q3Data"]


def epochs_for(steps: int, images: int, batch_size: int) -> int:
    """Whole epochs closest to `steps` optimiser steps on `images` images (at least 1)."""
    return max(1, round(steps / math.ceil(images / batch_size)))


class Q3Data:
    """Q3's images: the nested class-stratified subsets and their digests, the
    validation and test images, each model's weights and normalisation, and the
    batches of each run, made on demand (Experiment's `data`: key -> (train batches,
    held-out batches, split)).

    Built from the labels alone (make plan: sizes and names, no images), or with the
    dataset `ds` to train."""

    def __init__(self, labels, test_labels, config: Mapping[str, Any], *, ds=None):
        c = self.config = dict(config)
        self.ds = ds
        seed, n = c["seed"], len(labels)
        base = (stratified_indices(labels, count=c["train_images"], seed=seed)
                if c["train_images"] else torch.arange(n))
        self.base_size = len(base)
        fractions = sorted({*c["fractions"], c["fraction_b"]})
        self.subsets = {f: stratified_indices(labels, fraction=f, seed=seed, pool=base)
                        for f in fractions}
        self.digests = {f: subset_digest(idx) for f, idx in self.subsets.items()}
        outside = torch.ones(n, dtype=torch.bool)
        outside[self.subsets[fractions[-1]]] = False
        rest = base[outside[base]]
        val_count = c["eval_images"] or round(c["val_fraction"] * self.base_size)
        self.val_idx = stratified_indices(labels, count=val_count, seed=seed, pool=rest)
        self.test_idx = (stratified_indices(test_labels, count=c["eval_images"], seed=seed)
                         if c["eval_images"] else torch.arange(len(test_labels)))
        self.weights_dirs: dict[str, str | None] = {}
        self.mean = self.std = None
        self._sha: dict[str, str] = {}

    def prepare(self, models: Iterable[str], log: Callable[[str], None] = print) -> None:
        """Decide where each model's weights load from (common.weights.resolve_weights:
        a smoke run never downloads) and the input normalisation they share."""
        models = list(dict.fromkeys(models))
        self.mean, self.std = shared_normalisation(models)
        self.weights_dirs = resolve_weights(
            models, smoke=self.config["smoke"], log=log,
            smoke_dir=Path(self.config["data_dir"]) / "fabricated-weights")

    def images_of(self, fraction: float) -> int:
        return len(self.subsets[fraction])

    def epochs_for(self, steps: int, fraction: float) -> int:
        return epochs_for(steps, self.images_of(fraction), self.config["batch_size"])

    def held_out_size(self, split: str) -> int:
        return len(self.val_idx if split == "validation" else self.test_idx)

    def describe(self) -> str:
        lines = [f"training images {self.base_size:,}; validation {len(self.val_idx):,} "
                 f"(outside every training subset), test {len(self.test_idx):,}"]
        lines += [f"  subset {100 * f:g}% of the training images: {len(idx):,} images"
                  for f, idx in self.subsets.items()]
        return "\n".join(lines)

    def batches(self, images, labels, *, train: bool = False) -> DeviceBatches:
        """Device-resident batches, resized to image_size on the device (no per-image PIL)."""
        c, hw = self.config, hardware_for(self.config["device"])
        size = c["batch_size"] if train else hw.eval_batch_size(c["batch_size"],
                                                                EVAL_BATCH_MULTIPLE["Q3"])
        return DeviceBatches(images, labels, batch_size=size, device=c["device"], train=train,
                             mean=self.mean, std=self.std, image_size=c["image_size"],
                             channels_last=hw.use_channels_last(c["channels_last"]),
                             seed=c["seed"])

    def __getitem__(self, key: str) -> tuple:
        """'0.1:test' -> (training batches of the 10% subset, test batches, 'test')."""
        fraction, split = key.split(":")
        ds, idx = self.ds, self.subsets[float(fraction)]
        held = (ds.train_images[self.val_idx], ds.train_labels[self.val_idx]) \
            if split == "validation" else (ds.test_images[self.test_idx], ds.test_labels[self.test_idx])
        return (self.batches(ds.train_images[idx], ds.train_labels[idx], train=True),
                self.batches(*held), split)

    def weights_sha(self, model: str) -> str | None:
        """The sha256 of the weights file a pretrained run starts from: part of its
        settings, so a run trained from other weights is never reused. None in a plan."""
        if self.ds is None:
            return None
        if model not in self._sha:
            self._sha[model] = file_sha256(fetch_weights_file(model, self.weights_dirs.get(model)))
        return self._sha[model]

    def build(self, spec: Mapping[str, Any]):
        """The spec's model: ImageNet weights and frozen layers, or a scratch initialisation."""
        model = build_transfer_model(spec["model"], pretrained=spec["pretrained"],
                                     freeze=spec["freeze"],
                                     weights_dir=self.weights_dirs.get(spec["model"]))
        return model if spec["pretrained"] else initialise_scratch(model, spec["init"])

    def weights_sources(self) -> dict[str, str]:
        """Each model's weights: 'official', 'unofficial' or 'missing'."""
        return {m: weights_source(m, d) for m, d in self.weights_dirs.items()}
