"""The places a dataset can be read from, each returning uint8 tensors.

`common.data.load_dataset` tries these in order. Each reader takes the
dataset's `DatasetInfo` and returns
[train_images, train_labels, test_images, test_labels], images uint8
(N, C, H, W) and labels int64 (N,), or raises `NotHere` when its place holds no
copy (any other exception means a broken copy).
"""
from __future__ import annotations

import gzip
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["DatasetInfo", "NotHere", "IDX_FILES", "from_torchvision", "from_image_folder",
           "from_system_idx", "official_files"]

@dataclass(frozen=True)
class DatasetInfo:
    """What a reader needs to know of a dataset; common.data.DATASETS holds one each."""

    classes: tuple[str, ...]
    channels: int
    size: int
    mean: tuple[float, ...]  # per-channel, of the training set, in [0, 1] units
    std: tuple[float, ...]
    torchvision_class: str
    folder_names: tuple[str, ...]  # image-folder copies are looked for under these
    system_dirs: tuple[str, ...] = ()  # idx .gz files installed by an OS package


# The four idx files of the MNIST family, as torchvision names them in raw/.
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class NotHere(Exception):
    """This place holds no copy of the dataset (as opposed to a broken copy)."""


def _torchvision_class(info: DatasetInfo):
    # Imported here, not at the top: torchvision takes over a second to import and
    # is only needed when the cache misses.
    import torchvision.datasets as tvd

    return getattr(tvd, info.torchvision_class)


def _as_nchw(images, channels: int) -> torch.Tensor:
    """torchvision keeps CIFAR as numpy (N, H, W, C) and MNIST as a tensor (N, H, W)."""
    x = torch.as_tensor(np.asarray(images))
    if x.ndim == 3:
        return x.unsqueeze(1).contiguous()
    if x.shape[-1] == channels:
        return x.permute(0, 3, 1, 2).contiguous()
    return x.contiguous()


def _set_aside_if_corrupt(cls, data_dir: Path) -> None:
    """An official archive that fails its MD5 check (a download cut short) is renamed
    <name>.corrupt, so that a later download starts afresh, and reported as corrupt:
    torchvision itself would try to download over it, which offline only says that
    the network is down. Archives already unpacked and verified are not read again."""
    from torchvision.datasets.utils import check_integrity

    archive, md5 = data_dir / cls.filename, getattr(cls, "tgz_md5", None)
    unpacked = [data_dir / getattr(cls, "base_folder", "") / name
                for name, _ in getattr(cls, "train_list", []) + getattr(cls, "test_list", [])]
    if not md5 or (unpacked and all(p.is_file() for p in unpacked)) \
            or check_integrity(str(archive), md5):
        return
    corrupt = archive.with_name(archive.name + ".corrupt")
    os.replace(archive, corrupt)
    raise ValueError(f"{archive} is corrupt (its {corrupt.stat().st_size / 1e6:.1f} MB fail the MD5 "
                     f"checksum: a download cut short?); renamed to {corrupt.name}. Online it is "
                     "downloaded again; offline, copy a complete one there")


def from_torchvision(info: DatasetInfo, data_dir: Path, *, download: bool):
    cls = _torchvision_class(info)
    if not download:
        archive = getattr(cls, "filename", None)
        # An official archive dropped into data_dir is verified (md5) and unpacked
        # by torchvision's own download path, which then needs no network.
        if archive and (data_dir / archive).is_file():
            _set_aside_if_corrupt(cls, data_dir)
            download = True
    splits = []
    for train in (True, False):
        try:
            d = cls(root=str(data_dir), train=train, download=download)
        except RuntimeError as err:
            if not download and "not found" in str(err).lower():
                raise NotHere(f"no official files under {data_dir}") from None
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


def from_image_folder(name: str, info: DatasetInfo, data_dir: Path):
    """An image-folder copy `data_dir/<folder>/{train,test}/<class>/*.{jpg,png}`."""
    roots = [data_dir / f for f in info.folder_names]
    root = next((r for r in roots if (r / "train").is_dir() and (r / "test").is_dir()), None)
    if root is None:
        raise NotHere("no folder " + " or ".join(f"{r}/{{train,test}}" for r in roots))
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
    mode = "RGB" if channels == 3 else "L"
    out = np.empty((len(files), size, size, channels), dtype=np.uint8)

    def work(start: int, stop: int) -> None:
        for i in range(start, stop):
            try:
                with Image.open(files[i]) as img:
                    shape, pixels = img.size, np.asarray(img.convert(mode))
            except OSError as err:  # Pillow's errors for a truncated or foreign file
                raise ValueError(f"{files[i]} is corrupt ({err}): replace it with a good copy, "
                                 "or delete it") from None
            if shape != (size, size):
                raise ValueError(f"{files[i]}: {shape[0]}x{shape[1]} pixels, "
                                 f"expected {size}x{size}")
            out[i] = pixels.reshape(size, size, channels)

    chunk = 2048
    with ThreadPoolExecutor(max_workers=max(1, min(4, torch.get_num_threads()))) as pool:
        jobs = [pool.submit(work, s, min(s + chunk, len(files))) for s in range(0, len(files), chunk)]
        for job in jobs:
            job.result()
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def from_system_idx(info: DatasetInfo, data_dir: Path):
    """Debian ships the four idx files gzipped (re-compressed, so torchvision's
    md5 check of the .gz would fail). Unpacked into torchvision's raw/ folder,
    they are read by torchvision's own reader."""
    source = next((Path(d) for d in info.system_dirs
                   if all((Path(d) / f"{f}.gz").is_file() for f in IDX_FILES)), None)
    if source is None:
        raise NotHere("no idx files in " + (", ".join(info.system_dirs) or "any system folder"))
    raw = data_dir / info.torchvision_class / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in IDX_FILES:
        with gzip.open(source / f"{f}.gz", "rb") as src, open(raw / f, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return from_torchvision(info, data_dir, download=False)


def official_files(info: DatasetInfo, data_dir: Path) -> str:
    """Where torchvision's official files for `info` go, for the not-found message."""
    cls = _torchvision_class(info)
    if getattr(cls, "filename", None):  # CIFAR: one archive in data_dir
        return str(data_dir / cls.filename)
    return f"the four {', '.join(IDX_FILES)} .gz files in {data_dir / cls.__name__ / 'raw'}"
