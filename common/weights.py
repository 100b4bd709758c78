"""The ImageNet models Q3 uses and their weights files: which weights, where the
files are, whether they are the official ones, and loading them.

    path = fetch_weights_file("tv_resnet18")       # downloads once when absent
    weights_source("tv_resnet18")                  # 'official', 'unofficial' or 'missing'
    state = load_imagenet_state("tv_resnet18", None)

The registry of models (TRANSFER_MODELS) lives here, below common.transfer,
because every question about a weights file is asked by model name.

Weights come through torchvision's weights API and torch.hub's cache,
`$TORCH_HOME/hub/checkpoints/` (default `~/.cache/torch/hub/checkpoints/`).
Online, the files are downloaded once. Offline, copy the official files
(`alexnet-owt-7be5be79.pth`, `resnet18-f37072fd.pth`, `vgg16-397923af.pth`, ...)
into that folder; a missing file raises WeightsNotFoundError naming the file,
the folder and the URL.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torchvision.models import get_model, get_model_weights

from .files import atomic_write

__all__ = ["TransferSpec", "TRANSFER_MODELS", "WeightsNotFoundError", "WeightsUnreadableError",
           "model_spec", "imagenet_weights", "checkpoints_dir", "weights_file", "file_sha256",
           "file_hash_matches", "weights_source", "fabricate_weights", "fetch_weights_file",
           "load_imagenet_state", "resolve_weights"]


@dataclass(frozen=True)
class TransferSpec:
    arch: str      # torchvision's model name
    weights: str   # the member of torchvision's weights enum, pinned for reproducibility
    label: str     # for figures and tables
    head: str      # qualified name of the final Linear layer that is replaced


TRANSFER_MODELS: dict[str, TransferSpec] = {
    "tv_alexnet": TransferSpec("alexnet", "IMAGENET1K_V1", "AlexNet", "classifier.6"),
    "tv_vgg11_bn": TransferSpec("vgg11_bn", "IMAGENET1K_V1", "VGG11-BN", "classifier.6"),
    "tv_vgg16": TransferSpec("vgg16", "IMAGENET1K_V1", "VGG16", "classifier.6"),
    "tv_resnet18": TransferSpec("resnet18", "IMAGENET1K_V1", "ResNet18", "fc"),
    "tv_resnet50": TransferSpec("resnet50", "IMAGENET1K_V2", "ResNet50", "fc"),
}


class WeightsNotFoundError(FileNotFoundError):
    """The ImageNet weights are not in the cache folder and could not be downloaded."""


class WeightsUnreadableError(RuntimeError):
    """A weights file is present but cannot be loaded (truncated or not a state dict)."""


def model_spec(name: str) -> TransferSpec:
    if name not in TRANSFER_MODELS:
        raise ValueError(f"unknown transfer model {name!r}; known: {', '.join(TRANSFER_MODELS)}")
    return TRANSFER_MODELS[name]


def imagenet_weights(name: str):
    """torchvision's weights enum member for `name`, e.g. AlexNet_Weights.IMAGENET1K_V1.
    Looking it up downloads nothing."""
    spec = model_spec(name)
    return get_model_weights(spec.arch)[spec.weights]


def checkpoints_dir() -> Path:
    """torch.hub's weights folder: `$TORCH_HOME/hub/checkpoints`, read at call time."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_file(name: str, folder: str | os.PathLike | None = None) -> Path:
    """Where the official weights file of `name` is looked for."""
    url = imagenet_weights(name).url
    return Path(folder or checkpoints_dir()) / url.rsplit("/", 1)[-1]


_SHA_CACHE: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """The file's sha256 in hex, remembered while its size and mtime stay the same
    (VGG16's file is half a gigabyte)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def file_hash_matches(path: str | os.PathLike) -> bool:
    """Does the file's sha256 start with the hex digits in its name (`name-<hex>.pth`)?"""
    path = Path(path)
    match = torch.hub.HASH_REGEX.search(path.name)
    return bool(match and match.group(1)) and file_sha256(path).startswith(match.group(1))


def weights_source(name: str, folder: str | os.PathLike | None = None) -> str:
    """'official', 'unofficial' or 'missing'.

    The official file names carry the first hex digits of the file's sha256
    (`resnet18-f37072fd.pth`). torchvision checks them only while downloading;
    a file put into the folder by hand is loaded unchecked. Checking here tells
    real ImageNet weights from anything else under the same name, such as the
    random ones fabricate_weights writes for tests and smoke runs.
    """
    path = weights_file(name, folder)
    if not path.is_file():
        return "missing"
    return "official" if file_hash_matches(path) else "unofficial"


def fabricate_weights(folder: str | os.PathLike, names: Iterable[str], *, seed: int = 0,
                      overwrite: bool = False) -> list[Path]:
    """Write random weights of the right shapes under the official file names.

    Each file is the state dict of a freshly initialised 1000-class torchvision
    model, so the real loading path runs and a network built from it behaves
    like any random initialisation. For tests and offline smoke runs only: the
    values are not ImageNet weights and no accuracy conclusion can follow from
    them (weights_source() reports them as 'unofficial'). Existing files are
    kept unless `overwrite`.
    """
    written = []
    for name in names:
        path = weights_file(name, folder)
        if overwrite or not path.is_file():
            torch.manual_seed(seed)
            state = get_model(model_spec(name).arch, weights=None).state_dict()
            atomic_write(path, lambda f: torch.save(state, f))
        written.append(path)
    return written


def fetch_weights_file(name: str, folder: str | os.PathLike | None = None) -> Path:
    """The weights file of `name`, downloaded into `folder` (default torch.hub's)
    when absent, with the hash in its name checked as torchvision does."""
    path = weights_file(name, folder)
    if path.is_file():
        return path
    url = imagenet_weights(name).url
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"Downloading {url} to {path}")
    try:
        # Looked up on torch.hub at call time (tests replace it to simulate no network);
        # it writes to a temporary file, so a failed download leaves nothing behind.
        torch.hub.download_url_to_file(url, str(path), torch.hub.HASH_REGEX.search(path.name).group(1),
                                       progress=False)
        return path
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad hash a RuntimeError
        reason = f"{type(err).__name__}: {err}"
    # Raised outside the handler, so no urllib traceback is chained above it.
    raise WeightsNotFoundError(
        f"ImageNet weights for {name} not found: expected the file {path.name} in the folder "
        f"{path.parent}, and downloading it failed ({reason}).\n"
        f"Fixes: run online once (torchvision downloads {url} into that folder); or "
        f"download that URL elsewhere and copy the file into {path.parent} (set TORCH_HOME to "
        f"use another folder: files go in $TORCH_HOME/hub/checkpoints); or pass "
        f"pretrained=False to train from scratch.")


def load_imagenet_state(name: str, folder: str | os.PathLike | None = None) -> dict:
    """The ImageNet state dict of `name` (1000 classes), fetched first when absent;
    a file that does not load raises WeightsUnreadableError naming it."""
    path = fetch_weights_file(name, folder)
    try:
        # weights_only: a file copied in by hand is never unpickled as code.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged pickle can raise almost anything
        reason = f"{type(err).__name__}: {err}"
    raise WeightsUnreadableError(
        f"cannot load the weights file {path} ({reason}). It may be truncated or not "
        f"the official file; delete it and run again online, or replace it with a copy "
        f"of {imagenet_weights(name).url}.")


def resolve_weights(names: Iterable[str], *, smoke: bool, smoke_dir: str | os.PathLike,
                    log: Callable[[str], None] = print) -> dict[str, str | None]:
    """Decide, before any training, which folder each model's weights load from
    (None: torch.hub's folder, downloading when the file is missing).

    Full runs use torch.hub's folder. Smoke runs never download (hundreds of MB
    for a plumbing check): they use official files already in torch.hub's folder,
    and otherwise fabricate random stand-ins in `smoke_dir`. Never in torch.hub's
    folder: a later full run would load them from there as if they were ImageNet's.
    """
    chosen: dict[str, str | None] = {}
    for name in dict.fromkeys(names):
        source = weights_source(name)
        if not smoke or source == "official":
            chosen[name] = None
            if source == "unofficial":
                log(f"WARNING: {weights_file(name)} is not the official {name} weights file "
                    "(its sha256 does not match its name); results are not ImageNet transfer.")
            continue
        [path] = fabricate_weights(smoke_dir, [name])
        log(f"SMOKE RUN: {name} uses FABRICATED random weights ({path}), not ImageNet weights; "
            "no conclusion about transfer learning can be drawn from this run.")
        chosen[name] = str(smoke_dir)
    return chosen
