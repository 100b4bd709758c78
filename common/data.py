"""Datasets -> uint8 tensors -> stratified subsets -> augmented batches on the device.

    ds = load_dataset("cifar10", "data")
    train_idx, val_idx = train_val_split(ds.train_labels, val_fraction=0.1, seed=0)
    idx = stratified_indices(ds.train_labels, fraction=0.1, seed=0, pool=train_idx)
    batches = DeviceBatches(ds.train_images[idx], ds.train_labels[idx], batch_size=128,
                            device=device, train=True, mean=ds.mean, std=ds.std, seed=0)
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        for x, y in batches: ...

Images are kept as uint8 (N, C, H, W) end to end: decoded once, cached once,
moved to the device once. Each batch is augmented on the device and only then
turned into normalised floats. There are no DataLoader worker processes: on
Colab's two vCPUs, per-image PIL transforms in workers are what starves a GPU.
"""
from __future__ import annotations

import gzip
import math
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DATASETS", "ImageDataset", "DatasetNotFoundError", "load_dataset",
           "stratified_indices", "train_val_split", "DeviceBatches"]

CACHE_VERSION = 1


@dataclass(frozen=True)
class DatasetInfo:
    classes: tuple[str, ...]
    channels: int
    size: int
    mean: tuple[float, ...]  # per-channel, of the training set, in [0, 1] units
    std: tuple[float, ...]
    torchvision_class: str
    folder_names: tuple[str, ...]  # image-folder copies are looked for under these
    system_dirs: tuple[str, ...] = ()  # idx .gz files installed by an OS package


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

# The four idx files of the MNIST family, as torchvision names them in raw/.
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


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


# --- loading -----------------------------------------------------------------

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
    cache = data_dir / f"{name}.uint8.pt"
    tried: list[str] = []

    ds = _load_cache(name, cache, tried)
    if ds is not None:
        return ds

    loaders = [
        ("torchvision files", lambda: _from_torchvision(name, data_dir, download=False)),
        ("image folder", lambda: _from_image_folder(name, data_dir)),
        ("system idx files", lambda: _from_system_idx(name, data_dir)),
    ]
    if download:
        loaders.append(("torchvision download",
                        lambda: _from_torchvision(name, data_dir, download=True)))
    for label, loader in loaders:
        try:
            result = loader()
        except _NotHere as miss:
            tried.append(f"{label}: {miss}")
            continue
        except Exception as err:  # a broken copy or a failed download: report, try the next
            tried.append(f"{label}: {type(err).__name__}: {err}")
            continue
        ds = ImageDataset(name, *result, classes=info.classes, source=label)
        _validate(ds)
        _save_cache(ds, cache)
        if verbose:
            print(f"{name}: loaded from {label}; cached to {cache}")
        return ds

    raise DatasetNotFoundError(_not_found_message(name, data_dir, tried, download))


class _NotHere(Exception):
    """This place holds no copy of the dataset (as opposed to a broken copy)."""


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
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp")
    torch.save({"version": CACHE_VERSION, "train_images": ds.train_images,
                "train_labels": ds.train_labels, "test_images": ds.test_images,
                "test_labels": ds.test_labels, "classes": list(ds.classes),
                "source": ds.source}, tmp)
    tmp.replace(cache)


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


def _as_nchw(images, channels: int) -> torch.Tensor:
    """torchvision keeps CIFAR as numpy (N, H, W, C) and MNIST as a tensor (N, H, W)."""
    x = torch.as_tensor(np.asarray(images))
    if x.ndim == 3:
        return x.unsqueeze(1).contiguous()
    if x.shape[-1] == channels:
        return x.permute(0, 3, 1, 2).contiguous()
    return x.contiguous()


def _from_torchvision(name: str, data_dir: Path, *, download: bool):
    import torchvision.datasets as tvd

    info = DATASETS[name]
    cls = getattr(tvd, info.torchvision_class)
    if not download:
        archive = getattr(cls, "filename", None)
        # An official archive dropped into data_dir is verified (md5) and unpacked
        # by torchvision's own download path, which then needs no network.
        if archive and (data_dir / archive).is_file():
            download = True
    splits = []
    for train in (True, False):
        try:
            d = cls(root=str(data_dir), train=train, download=download)
        except RuntimeError as err:
            if not download and "not found" in str(err).lower():
                raise _NotHere(f"no official files under {data_dir}") from None
            raise
        splits += [_as_nchw(d.data, info.channels),
                   torch.as_tensor(np.asarray(d.targets), dtype=torch.int64)]
    return splits


def _class_index(folder: str, classes: Sequence[str]) -> int | None:
    """Map a class folder name to its label: by name (case and punctuation
    folded) or by a digit folder `0`..`9`."""
    def fold(s: str) -> str:
        return "".join(ch for ch in s.lower() if ch.isalnum())
    names = [fold(c) for c in classes]
    if fold(folder) in names:
        return names.index(fold(folder))
    if folder.isdigit() and int(folder) < len(classes):
        return int(folder)
    return None


def _from_image_folder(name: str, data_dir: Path):
    info = DATASETS[name]
    roots = [data_dir / f for f in info.folder_names]
    root = next((r for r in roots if (r / "train").is_dir() and (r / "test").is_dir()), None)
    if root is None:
        raise _NotHere("no folder " + " or ".join(f"{r}/{{train,test}}" for r in roots))
    splits = []
    for split in ("train", "test"):
        files, labels = [], []
        for folder in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            label = _class_index(folder.name, info.classes)
            if label is None:
                raise ValueError(f"{folder}: not a class of {name}; expected folders named "
                                 f"{', '.join(info.classes)} (or 0..{len(info.classes) - 1})")
            found = sorted(p for p in folder.iterdir()
                           if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            files += found
            labels += [label] * len(found)
        if not files:
            raise ValueError(f"{root / split}: no .jpg/.png images in its class folders")
        splits += [_decode_images(files, info.channels, info.size),
                   torch.tensor(labels, dtype=torch.int64)]
    return splits


def _decode_images(files: list[Path], channels: int, size: int) -> torch.Tensor:
    """Decode image files into one uint8 (N, C, H, W) tensor, in threads
    (Pillow releases the GIL while decoding, so two cores decode twice as fast)."""
    from PIL import Image

    mode = "RGB" if channels == 3 else "L"
    out = np.empty((len(files), size, size, channels), dtype=np.uint8)

    def work(start: int, stop: int) -> None:
        for i in range(start, stop):
            with Image.open(files[i]) as img:
                if img.size != (size, size):
                    raise ValueError(f"{files[i]}: {img.size[0]}x{img.size[1]} pixels, "
                                     f"expected {size}x{size}")
                out[i] = np.asarray(img.convert(mode)).reshape(size, size, channels)

    chunk = 2048
    with ThreadPoolExecutor(max_workers=max(1, min(4, torch.get_num_threads()))) as pool:
        jobs = [pool.submit(work, s, min(s + chunk, len(files))) for s in range(0, len(files), chunk)]
        for job in jobs:
            job.result()
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _from_system_idx(name: str, data_dir: Path):
    """Debian ships the four idx files gzipped (re-compressed, so torchvision's
    md5 check of the .gz would fail). Unpacked into torchvision's raw/ folder,
    they are read by torchvision's own reader."""
    info = DATASETS[name]
    source = next((Path(d) for d in info.system_dirs
                   if all((Path(d) / f"{f}.gz").is_file() for f in IDX_FILES)), None)
    if source is None:
        raise _NotHere("no idx files in " + (", ".join(info.system_dirs) or "any system folder"))
    raw = data_dir / info.torchvision_class / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in IDX_FILES:
        with gzip.open(source / f"{f}.gz", "rb") as src, open(raw / f, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return _from_torchvision(name, data_dir, download=False)


def _official_files(name: str, data_dir: Path) -> str:
    import torchvision.datasets as tvd

    cls = getattr(tvd, DATASETS[name].torchvision_class)
    if getattr(cls, "filename", None):  # CIFAR: one archive in data_dir
        return str(data_dir / cls.filename)
    return f"the four {', '.join(IDX_FILES)} .gz files in {data_dir / cls.__name__ / 'raw'}"


def _not_found_message(name: str, data_dir: Path, tried: list[str], download: bool) -> str:
    info = DATASETS[name]
    lines = [f"Could not find the {name} dataset. Places tried:"]
    lines += [f"  - {t}" for t in tried]
    lines += ["How to supply it:",
              f"  - online: load_dataset({name!r}, {str(data_dir)!r}) downloads it through torchvision"
              + ("" if download else " (pass download=True)") + ";",
              f"  - offline: put torchvision's official files there: {_official_files(name, data_dir)}, or",
              f"  - an image-folder copy at {data_dir / info.folder_names[0]}/{{train,test}}/<class>/*.jpg"
              f" with class folders {', '.join(info.classes)}."]
    if info.system_dirs:
        lines.append(f"  - on Debian/Ubuntu: apt-get install dataset-{name.replace('_', '-')} "
                     f"(installs into {info.system_dirs[0]}).")
    return "\n".join(lines)


# --- subsets -------------------------------------------------------------------

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


# --- batches on the device ----------------------------------------------------------

class DeviceBatches:
    """Shuffled, augmented, normalised batches from a uint8 image tensor kept on the device.

    images: uint8 (N, C, H, W); labels: int64 (N,). Each iteration yields
    x: float32 (B, C, S, S) normalised, S = image_size or H; y: int64 (B,), both on `device`.

    `train=True` shuffles every epoch and augments (random crop after zero padding
    by `crop_padding` pixels, horizontal flip) unless `augment=False`. Shuffling and
    augmentation come from a generator seeded by (seed, epoch), so the same seed and
    epoch give the same batches on any device, and a resumed run sees the batches
    the interrupted one would have.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
                 device="cpu", train: bool = False, augment: bool | None = None,
                 mean: Sequence[float], std: Sequence[float], image_size: int | None = None,
                 crop_padding: int = 4, flip: bool = True, channels_last: bool = False,
                 seed: int = 0, drop_last: bool = False):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images: expected uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels: expected shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 8):
            raise ValueError(f"image_size={image_size!r}: expected an integer of at least 8 "
                             "(or None to keep the native size)")
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
        # Drawn on the CPU: identical streams on every device, and cheap (a few
        # numbers per image).
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

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
        order = torch.randperm(n, generator=gen).to(self.device) if self.train else None
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
        b, p = len(idx), self.crop_padding
        dy = torch.randint(0, 2 * p + 1, (b,), generator=gen) if p else None
        dx = torch.randint(0, 2 * p + 1, (b,), generator=gen) if p else None
        flip = (torch.rand(b, generator=gen) < 0.5).nonzero().squeeze(1) if self.flip else None
        padded = self._padded_images()
        if padded.device.type == "cpu" and self._numpy_on_cpu:
            return torch.from_numpy(_crop_flip_numpy(padded, idx, p, dy, dx, flip))
        return _crop_flip_torch(padded, idx, p, dy, dx, flip)

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


def _crop_windows(padded_shape, padded_strides, h: int, w: int):
    """Shape and strides of a view of every h x w window of every padded image:
    view[i, dy, dx] is padded image i cropped at (dy, dx), with no copy."""
    n, c, hp, wp = padded_shape
    sn, sc, sh, sw = padded_strides
    return (n, hp - h + 1, wp - w + 1, c, h, w), (sn, sh, sw, sc, sh, sw)


def _crop_flip_torch(padded: torch.Tensor, idx: torch.Tensor, p: int, dy, dx, flip) -> torch.Tensor:
    """Images `idx` of `padded` (N, C, H+2p, W+2p) cropped at (dy, dx) to H x W, then
    those at positions `flip` mirrored; dy, dx, flip: CPU tensors, or None for no
    crop (p = 0) / no flip. Returns a new tensor. Indexing the strided view of all
    windows with one (i, dy, dx) per image copies only the crops kept: no
    per-pixel index tensors."""
    device = padded.device
    if p:
        h, w = padded.shape[2] - 2 * p, padded.shape[3] - 2 * p
        windows = padded.as_strided(*_crop_windows(padded.shape, padded.stride(), h, w))
        x = windows[idx, dy.to(device), dx.to(device)]
    else:
        x = padded.index_select(0, idx)
    if flip is not None:
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
