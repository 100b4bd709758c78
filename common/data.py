"""Datasets as uint8 tensors, and class-stratified subsets of them.

    ds = load_dataset("cifar10", "data")
    train_idx, val_idx = train_val_split(ds.train_labels, val_fraction=0.1, seed=0)
    idx = stratified_indices(ds.train_labels, fraction=0.1, seed=0, pool=train_idx)

Images are kept as uint8 (N, C, H, W) end to end: decoded once, cached once,
then moved to the device once by `common.batches.DeviceBatches`, which
augments and normalises each batch there. The places a dataset is read from
are in `common.data_sources`.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data_sources import (DatasetInfo, NotHere, from_image_folder, from_system_idx,
                           from_torchvision, official_files)
from .files import atomic_write

__all__ = ["DATASETS", "ImageDataset", "DatasetNotFoundError", "load_dataset",
           "stratified_indices", "subset_digest", "train_val_split"]

CACHE_VERSION = 1


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        classes=("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"),
        channels=3, size=32,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        torchvision_class="CIFAR10",
        folder_names=("cifar10", "cifar10-jpeg", "CIFAR-10-images", "cifar-10")),
    "fashion_mnist": DatasetInfo(
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        channels=1, size=28, mean=(0.2860,), std=(0.3530,),
        torchvision_class="FashionMNIST",
        folder_names=("fashion_mnist", "fashion-mnist"),
        system_dirs=("/usr/share/datasets/fashion-mnist",)),
    "mnist": DatasetInfo(
        classes=tuple(str(d) for d in range(10)),
        channels=1, size=28, mean=(0.1307,), std=(0.3081,),
        torchvision_class="MNIST",
        folder_names=("mnist",)),
}


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset was found and none could be downloaded."""


@dataclass
class ImageDataset:
    """A whole dataset as tensors. Images are uint8 (N, C, H, W); labels int64 (N,)."""
    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    source: str

    @property
    def mean(self) -> tuple[float, ...]:
        return DATASETS[self.name].mean

    @property
    def std(self) -> tuple[float, ...]:
        return DATASETS[self.name].std

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name}: train {tuple(self.train_images.shape)}, "
                f"test {tuple(self.test_images.shape)}, from {self.source})")


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str, data_dir: str | Path = "data", *, download: bool = True,
                 verbose: bool = True) -> ImageDataset:
    """Load a dataset as uint8 tensors, decoding it at most once.

    Places are tried in this order; local copies come before the download so an
    offline machine never waits on the network when the data is already there:

    1. this module's cache file, `data_dir/<name>.uint8.pt`;
    2. torchvision's official files already in `data_dir` (an official archive
       dropped there, e.g. `cifar-10-python.tar.gz`, is verified and unpacked);
    3. an image-folder copy `data_dir/<folder>/{train,test}/<class>/*`;
    4. OS-installed idx files (Debian's dataset-fashion-mnist);
    5. torchvision's download, when `download=True`.

    The first place that works is decoded and written to the cache. When none
    works, DatasetNotFoundError lists every place tried and how to supply the data.
    """
    info = _info(name)
    data_dir = Path(data_dir).expanduser().resolve()
    if data_dir.exists() and not data_dir.is_dir():
        raise NotADirectoryError(f"data_dir {data_dir} is a file, not a folder: set data_dir "
                                 "(DATA_DIR for make) to the folder that holds the datasets")
    cache = data_dir / f"{name}.uint8.pt"
    tried: list[str] = []
    broken: list[str] = []  # copies found but unreadable: named first if nothing works

    ds = _load_cache(name, cache, tried)
    if ds is not None:
        return ds

    loaders = [
        ("torchvision files", lambda: from_torchvision(info, data_dir, download=False)),
        ("image folder", lambda: from_image_folder(name, info, data_dir)),
        ("system idx files", lambda: from_system_idx(info, data_dir)),
    ]
    if download:
        loaders.append(("torchvision download",
                        lambda: from_torchvision(info, data_dir, download=True)))
    for label, loader in loaders:
        try:
            result = loader()
        except NotHere as miss:
            tried.append(f"{label}: {miss}")
            continue
        except Exception as err:  # a broken copy or a failed download: report, try the next
            tried.append(f"{label}: {type(err).__name__}: {err}")
            if label != "torchvision download":
                broken.append(f"{label}: {err}")
            continue
        ds = ImageDataset(name, *result, classes=info.classes, source=label)
        _validate(ds)
        _save_cache(ds, cache)
        if verbose:
            print(f"{name}: loaded from {label}; cached to {cache}"
                  + "".join(f"\n  (skipped a broken copy: {b})" for b in broken))
        return ds

    raise DatasetNotFoundError(_not_found_message(name, data_dir, tried, download, broken))


def _load_cache(name: str, cache: Path, tried: list[str]) -> ImageDataset | None:
    if not cache.is_file():
        tried.append(f"cache: no file {cache}")
        return None
    try:
        blob = torch.load(cache, weights_only=True)
        if blob.get("version") != CACHE_VERSION:
            raise ValueError(f"cache version {blob.get('version')} != {CACHE_VERSION}")
        ds = ImageDataset(name, blob["train_images"], blob["train_labels"],
                          blob["test_images"], blob["test_labels"],
                          classes=tuple(blob["classes"]), source=f"cache ({blob['source']})")
        _validate(ds)
        return ds
    except Exception as err:
        # A stale or damaged cache is rebuilt from the sources, never trusted.
        warnings.warn(f"ignoring unreadable cache {cache}: {err}; rebuilding it")
        tried.append(f"cache: unreadable ({err})")
        return None


def _save_cache(ds: ImageDataset, cache: Path) -> None:
    blob = {"version": CACHE_VERSION, "train_images": ds.train_images,
            "train_labels": ds.train_labels, "test_images": ds.test_images,
            "test_labels": ds.test_labels, "classes": list(ds.classes), "source": ds.source}
    atomic_write(cache, lambda f: torch.save(blob, f))


def _validate(ds: ImageDataset) -> None:
    info = DATASETS[ds.name]
    for split in ("train", "test"):
        x, y = getattr(ds, f"{split}_images"), getattr(ds, f"{split}_labels")
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != info.channels:
            raise ValueError(f"{split} images: expected uint8 (N, {info.channels}, H, W), "
                             f"got {x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.shape != (x.shape[0],):
            raise ValueError(f"{split} labels: expected int64 ({x.shape[0]},)")
        if len(y) and not (0 <= int(y.min()) and int(y.max()) < len(info.classes)):
            raise ValueError(f"{split} labels outside 0..{len(info.classes) - 1}")
    if tuple(ds.classes) != info.classes:
        raise ValueError(f"class names {ds.classes} differ from the official {info.classes}")


def _not_found_message(name: str, data_dir: Path, tried: list[str], download: bool,
                       broken: list[str]) -> str:
    """What was tried and how to supply the data; headed by the broken copy, if one was
    found (a corrupt file), for then the data is there and that file is the problem."""
    info = DATASETS[name]
    lines = ([f"The {name} dataset in {data_dir} cannot be read: {broken[0]}", "Places tried:"]
             if broken else [f"Could not find the {name} dataset. Places tried:"])
    lines += [f"  - {t}" for t in tried]
    lines += ["How to supply it:",
              f"  - online: load_dataset({name!r}, {str(data_dir)!r}) downloads it through torchvision"
              + ("" if download else " (pass download=True)") + ";",
              f"  - offline: put torchvision's official files there: {official_files(info, data_dir)}, or",
              f"  - an image-folder copy at {data_dir / info.folder_names[0]}/{{train,test}}/<class>/*.jpg"
              f" with class folders {', '.join(info.classes)}."]
    if info.system_dirs:
        lines.append(f"  - on Debian/Ubuntu: apt-get install dataset-{name.replace('_', '-')} "
                     f"(installs into {info.system_dirs[0]}).")
    return "\n".join(lines)


def _as_label_array(labels) -> np.ndarray:
    return np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)


def _class_orders(labels: np.ndarray, pool: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """For each class, the pool's indices of that class in a seeded random order.

    NumPy's PCG64 stream is stable across versions and machines, so a seed gives
    the same order everywhere. Taking prefixes of one order makes subsets nest:
    the 10% subset lies inside the 20% subset of the same seed."""
    rng = np.random.default_rng(seed)
    return {int(c): rng.permutation(pool[labels[pool] == c]) for c in np.unique(labels[pool])}


def stratified_indices(labels, *, fraction: float | None = None, count: int | None = None,
                       seed: int = 0, pool=None) -> torch.Tensor:
    """Class-stratified subset of `pool` (default: all indices), as sorted int64 indices.

    `fraction` keeps round(fraction * n_c) of each class c (10% of CIFAR-10's
    5,000 per class is exactly 500). `count` is the total size, split as evenly as
    the classes allow (the first classes take the remainder).
    """
    y = _as_label_array(labels)
    pool = np.arange(len(y)) if pool is None else _as_label_array(pool)
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction= or count=")
    orders = _class_orders(y, pool, seed)
    sizes = {c: len(o) for c, o in orders.items()}
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"fraction={fraction!r}: expected a number in (0, 1], e.g. 0.1 for 10%")
        take = {c: max(1, math.floor(fraction * n + 0.5)) for c, n in sizes.items()}
    else:
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise ValueError(f"count={count!r}: expected a positive integer")
        k, extra = divmod(count, len(orders))
        take = {c: k + (i < extra) for i, c in enumerate(sorted(orders))}
        short = {c: (t, sizes[c]) for c, t in take.items() if t > sizes[c]}
        if short:
            c, (t, n) = next(iter(short.items()))
            raise ValueError(f"count={count} needs {t} images of class {c}, which has only {n}; "
                             f"the largest balanced count is {min(sizes.values()) * len(sizes)}")
    chosen = np.concatenate([orders[c][:take[c]] for c in sorted(orders)])
    return torch.from_numpy(np.sort(chosen))


def subset_digest(indices) -> str:
    """A short fingerprint of a set of sample indices: equal digests, same images."""
    arr = torch.as_tensor(indices, dtype=torch.int64).sort().values.numpy()
    return hashlib.sha256(arr.tobytes()).hexdigest()[:12]


def train_val_split(labels, *, val_fraction: float = 0.1, seed: int = 0):
    """Carve a class-stratified validation split from the training labels.

    Returns (train_indices, val_indices): disjoint, together all of `labels`.
    Model choices are made on the validation split; the test set is reported once.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r}: expected a number in (0, 1)")
    val = stratified_indices(labels, fraction=val_fraction, seed=seed)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val] = False
    return keep.nonzero().squeeze(1), val
