"""common.data: every source of load_dataset, the cache, and subsets."""
from __future__ import annotations

import dataclasses
import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from common.data import (DATASETS, DatasetNotFoundError, load_dataset, stratified_indices,
                         train_val_split)


# --- synthetic sources ----------------------------------------------------------

def write_image_folder(root, classes, per_class, size=32, mode="RGB", seed=0):
    """PNG (lossless) files in root/{train,test}/<class>/; returns the pixel arrays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", per_class), ("test", max(1, per_class // 2))):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                shape = (size, size, 3) if mode == "RGB" else (size, size)
                arr = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(arr, mode).save(folder / f"{i:04d}.png")
                arrays[(split, label, i)] = arr
    return arrays


def write_idx(path, array, gz=False):
    """The idx format the MNIST family uses: magic, dims, raw uint8 data."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def idx_arrays(n_train=30, n_test=10, seed=1):
    rng = np.random.default_rng(seed)
    return {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
            "train-labels-idx1-ubyte": np.arange(n_train) % 10,
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
            "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10}


def test_image_folder_source_is_exact_and_maps_classes_by_name(tmp_path):
    classes = DATASETS["cifar10"].classes
    # Folder names in another case still map to the official label order.
    arrays = write_image_folder(tmp_path / "cifar10", [c.upper() for c in classes], per_class=3)
    ds = load_dataset("cifar10", tmp_path, download=False, verbose=False)
    assert ds.source == "image folder"
    assert ds.train_images.shape == (30, 3, 32, 32) and ds.train_images.dtype == torch.uint8
    assert ds.train_labels.dtype == torch.int64
    assert torch.equal(ds.train_labels.bincount(), torch.full((10,), 3))
    # Files are read in sorted order within each class folder.
    first_cat = int((ds.train_labels == 3).nonzero()[0])
    assert np.array_equal(ds.train_images[first_cat].permute(1, 2, 0).numpy(), arrays[("train", 3, 0)])


def test_image_folder_with_unknown_class_names_the_expected_ones(tmp_path):
    write_image_folder(tmp_path / "cifar10", ["cats", "dogs"], per_class=1)
    with pytest.raises(DatasetNotFoundError, match="not a class of cifar10.*airplane"):
        load_dataset("cifar10", tmp_path, download=False, verbose=False)


def test_torchvision_raw_files_source(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = idx_arrays()
    for name, arr in arrays.items():
        write_idx(raw / name, arr)
    ds = load_dataset("fashion_mnist", tmp_path, download=False, verbose=False)
    assert ds.source == "torchvision files"
    assert ds.train_images.shape == (30, 1, 28, 28)
    assert np.array_equal(ds.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(ds.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_system_idx_source(tmp_path, monkeypatch):
    system = tmp_path / "usr-share"
    system.mkdir()
    arrays = idx_arrays(seed=2)
    for name, arr in arrays.items():
        write_idx(system / name, arr, gz=True)
    patched = dataclasses.replace(DATASETS["fashion_mnist"], system_dirs=(str(system),))
    monkeypatch.setitem(DATASETS, "fashion_mnist", patched)
    ds = load_dataset("fashion_mnist", tmp_path / "data", download=False, verbose=False)
    assert ds.source == "system idx files"
    assert np.array_equal(ds.test_images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert ds.classes == DATASETS["fashion_mnist"].classes


def test_cache_round_trip_and_corrupt_cache_is_rebuilt(tmp_path):
    write_image_folder(tmp_path / "cifar10", DATASETS["cifar10"].classes, per_class=2)
    first = load_dataset("cifar10", tmp_path, download=False, verbose=False)
    cache = tmp_path / "cifar10.uint8.pt"
    assert cache.is_file()
    again = load_dataset("cifar10", tmp_path, download=False, verbose=False)
    assert again.source.startswith("cache")
    assert torch.equal(first.train_images, again.train_images)
    assert torch.equal(first.test_labels, again.test_labels)
    cache.write_bytes(cache.read_bytes()[:100])  # truncated, as after a crash
    with pytest.warns(UserWarning, match="unreadable cache"):
        rebuilt = load_dataset("cifar10", tmp_path, download=False, verbose=False)
    assert rebuilt.source == "image folder"
    assert torch.equal(first.train_images, rebuilt.train_images)


def test_offline_error_lists_every_place_and_the_fix(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", tmp_path, download=False)
    msg = str(err.value)
    for expected in ("cache", "torchvision files", "image folder", "cifar-10-python.tar.gz",
                     str(tmp_path / "cifar10"), "airplane"):
        assert expected in msg
    assert "Traceback" not in msg


def test_one_corrupt_jpeg_is_named_as_such(tmp_path):
    """Not 'Could not find the cifar10 dataset': the copy is there, one file is broken."""
    write_image_folder(tmp_path / "cifar10", DATASETS["cifar10"].classes, per_class=2)
    bad = tmp_path / "cifar10" / "train" / "cat" / "0001.jpg"
    good = tmp_path / "cifar10" / "train" / "cat" / "0001.png"
    bad.write_bytes(good.read_bytes()[:60])  # a truncated image
    good.unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", tmp_path, download=False, verbose=False)
    headline = str(err.value).splitlines()[0]
    assert headline.startswith(f"The cifar10 dataset in {tmp_path} cannot be read: image folder: "
                               f"{bad} is corrupt (")
    assert headline.endswith("replace it with a good copy, or delete it")
    assert "Could not find" not in str(err.value)


def test_a_truncated_cifar_archive_is_called_corrupt_and_set_aside(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b" + b"\0" * 5000)  # a download cut short
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", tmp_path, download=False, verbose=False)
    headline = str(err.value).splitlines()[0]
    assert headline.startswith(f"The cifar10 dataset in {tmp_path} cannot be read: torchvision "
                               f"files: {archive} is corrupt (its 0.0 MB fail the MD5 checksum")
    assert "renamed to cifar-10-python.tar.gz.corrupt" in headline
    assert not archive.exists() and archive.with_name(archive.name + ".corrupt").is_file()


def test_a_data_dir_that_is_a_file_says_so(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"data_dir .*/data is a file, not a folder"):
        load_dataset("cifar10", tmp_path / "data", download=False)


def test_unknown_dataset_lists_known_ones(tmp_path):
    with pytest.raises(ValueError, match="known datasets: cifar10, fashion_mnist, mnist"):
        load_dataset("imagenet", tmp_path)


# --- real copies ------------------------------------------------------------------

def test_real_cifar10_jpeg_copy(cifar10):
    assert cifar10.train_images.shape == (50000, 3, 32, 32)
    assert cifar10.test_images.shape == (10000, 3, 32, 32)
    assert torch.equal(cifar10.train_labels.bincount(), torch.full((10,), 5000))
    assert torch.equal(cifar10.test_labels.bincount(), torch.full((10,), 1000))
    # The stored normalisation constants describe this data (JPEG shifts them a little).
    mean = cifar10.train_images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor(cifar10.mean), atol=0.01)


def test_real_fashion_mnist_from_debian(fashion_system_dir, tmp_path):
    ds = load_dataset("fashion_mnist", tmp_path, download=False, verbose=False)
    assert ds.source in ("system idx files", "torchvision files")
    assert ds.train_images.shape == (60000, 1, 28, 28) and ds.test_images.shape == (10000, 1, 28, 28)
    # The first labels as the data README states them.
    assert ds.train_labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


# --- subsets -------------------------------------------------------------------------

LABELS = torch.arange(1000) % 10  # 100 per class


def test_fraction_subset_is_exact_per_class_and_deterministic():
    idx = stratified_indices(LABELS, fraction=0.1, seed=3)
    assert torch.equal(LABELS[idx].bincount(), torch.full((10,), 10))
    assert torch.equal(idx, stratified_indices(LABELS, fraction=0.1, seed=3))
    assert not torch.equal(idx, stratified_indices(LABELS, fraction=0.1, seed=4))
    assert len(set(idx.tolist())) == len(idx)


def test_real_cifar_ten_percent_is_500_per_class(cifar10):
    idx = stratified_indices(cifar10.train_labels, fraction=0.1, seed=0)
    assert torch.equal(cifar10.train_labels[idx].bincount(), torch.full((10,), 500))


def test_subsets_of_one_seed_nest():
    small = set(stratified_indices(LABELS, fraction=0.1, seed=0).tolist())
    large = set(stratified_indices(LABELS, fraction=0.5, seed=0).tolist())
    assert small < large


def test_same_seed_gives_known_indices():
    # PCG64 is stable across NumPy versions and machines; this pins the stream.
    labels = torch.arange(40) % 4
    rng = np.random.default_rng(7)
    expected = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels.numpy() == c))[:5]
                                       for c in range(4)]))
    assert stratified_indices(labels, fraction=0.5, seed=7).tolist() == expected.tolist()


def test_count_subset_splits_the_remainder():
    idx = stratified_indices(LABELS, count=23, seed=0)
    assert len(idx) == 23
    assert sorted(LABELS[idx].bincount().tolist()) == [2] * 7 + [3] * 3


def test_train_val_split_is_disjoint_complete_and_stratified():
    train, val = train_val_split(LABELS, val_fraction=0.2, seed=1)
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    assert torch.equal(LABELS[val].bincount(), torch.full((10,), 20))
    sub = stratified_indices(LABELS, fraction=0.5, seed=1, pool=train)
    assert set(sub.tolist()) <= set(train.tolist())
    assert torch.equal(LABELS[sub].bincount(), torch.full((10,), 40))


@pytest.mark.parametrize("kwargs, message", [
    (dict(fraction=0.0), r"fraction=0.0: expected a number in \(0, 1\]"),
    (dict(fraction=1.5), r"fraction=1.5: expected a number in \(0, 1\]"),
    (dict(count=2000), "needs 200 images of class 0, which has only 100"),
    (dict(count=-1), "expected a positive integer"),
    (dict(), "exactly one of"),
])
def test_bad_subset_requests(kwargs, message):
    with pytest.raises(ValueError, match=message):
        stratified_indices(LABELS, **kwargs)
