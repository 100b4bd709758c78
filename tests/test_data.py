"""common.data: every source of load_dataset, subsets and device batches."""
from __future__ import annotations

import dataclasses
import gzip
import struct

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from common.data import (DATASETS, DatasetNotFoundError, DeviceBatches, load_dataset,
                         stratified_indices, train_val_split)


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


# --- batches --------------------------------------------------------------------------

def make_images(n=64, c=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)


MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def reference_normalise(img_uint8):
    """torchvision's own transforms, as the oracle for our fused normalisation."""
    return TF.normalize(img_uint8.float() / 255, MEAN, STD)


def test_eval_batches_are_ordered_and_normalised_like_torchvision():
    images, labels = make_images(10), torch.arange(10)
    batches = DeviceBatches(images, labels, batch_size=4, mean=MEAN, std=STD)
    assert len(batches) == 3 and batches.num_samples == 10
    xs, ys = zip(*batches)
    assert [len(y) for y in ys] == [4, 4, 2]
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, labels)
    assert torch.allclose(x, torch.stack([reference_normalise(i) for i in images]), atol=1e-5)


def test_augmented_batch_is_a_padded_crop_or_its_flip_of_its_source():
    images = make_images(32)
    labels = torch.arange(32)  # label = index, so each output finds its source
    batches = DeviceBatches(images, labels, batch_size=16, train=True, mean=MEAN, std=STD, seed=5)
    changed = 0
    for x, y in batches:
        for xi, yi in zip(x, y):
            # Zero padding happens on uint8, i.e. before normalisation.
            padded_u8 = torch.nn.functional.pad(images[yi], (4, 4, 4, 4))
            candidates = [reference_normalise(padded_u8[:, dy:dy + 32, dx:dx + 32])
                          for dy in range(9) for dx in range(9)]
            candidates += [c.flip(2) for c in candidates]
            assert any(torch.allclose(xi, c, atol=1e-5) for c in candidates)
            changed += not torch.allclose(xi, candidates[4 * 9 + 4], atol=1e-5)
    assert changed > 16  # 1 in 162 outputs is the identity; most must differ


def test_augmentation_across_several_chunks(monkeypatch):
    # Chunks of 8 images (2 batches of 4): the chunked path must keep the same
    # contract as one chunk: every image once per epoch, each output a padded crop
    # or its flip of its own source, and drop_last dropping only the last partial batch.
    monkeypatch.setattr(DeviceBatches, "_CHUNK_IMAGES", 8)
    images, labels = make_images(30), torch.arange(30)
    for drop_last, expected in ((False, list(range(30))), (True, None)):
        b = DeviceBatches(images, labels, batch_size=4, train=True, mean=MEAN, std=STD, seed=1,
                          drop_last=drop_last)
        out = list(b)
        assert len(out) == len(b) == (7 if drop_last else 8)
        assert all(len(y) == 4 for _, y in out[:7])
        seen = torch.cat([y for _, y in out]).tolist()
        assert len(set(seen)) == len(seen)
        if expected:
            assert sorted(seen) == expected
        for x, y in out:
            for xi, yi in zip(x, y):
                padded_u8 = torch.nn.functional.pad(images[yi], (4, 4, 4, 4))
                crops = [reference_normalise(padded_u8[:, dy:dy + 32, dx:dx + 32])
                         for dy in range(9) for dx in range(9)]
                assert any(torch.allclose(xi, c, atol=1e-5) or torch.allclose(xi, c.flip(2), atol=1e-5)
                           for c in crops)


def test_eval_batches_across_chunks_keep_order_and_values(monkeypatch):
    monkeypatch.setattr(DeviceBatches, "_CHUNK_IMAGES", 8)
    images, labels = make_images(21), torch.arange(21)
    x = torch.cat([x for x, _ in DeviceBatches(images, labels, batch_size=4, mean=MEAN, std=STD)])
    assert torch.allclose(x, torch.stack([reference_normalise(i) for i in images]), atol=1e-5)


@pytest.mark.parametrize("options", [dict(), dict(crop_padding=0), dict(flip=False),
                                     dict(crop_padding=2, train=False, augment=True)])
def test_numpy_and_torch_augmentation_paths_agree(monkeypatch, options):
    # On the CPU the crops are gathered with numpy; every other device uses the
    # torch path. Both must give the same batches from the same draws.
    images, labels = make_images(40), torch.arange(40)
    args = {**dict(batch_size=16, train=True, mean=MEAN, std=STD, seed=4), **options}
    via_numpy = list(DeviceBatches(images, labels, **args))
    monkeypatch.setattr(DeviceBatches, "_numpy_on_cpu", False)
    via_torch = list(DeviceBatches(images, labels, **args))
    assert len(via_numpy) == len(via_torch) == 3
    for (xa, ya), (xb, yb) in zip(via_numpy, via_torch):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)
    plain, _ = next(iter(DeviceBatches(images, labels, **{**args, "augment": False})))
    assert not torch.equal(via_numpy[0][0], plain)  # augmentation changed something
    assert torch.equal(images, make_images(40))  # the source images are never written to


def test_augmentation_draws_uniform_offsets_and_fair_flips():
    # Recover each output's (dy, dx, flip) from its pixels and check the
    # distribution: offsets uniform over 0..8 in both directions, flips p=0.5.
    n = 4000
    images = make_images(n, c=1, size=8, seed=3)
    b = DeviceBatches(images, torch.arange(n), batch_size=500, train=True, mean=(0.0,),
                      std=(1.0,), seed=0)
    dys, dxs, flips = [], [], []
    for x, y in b:
        out_u8 = (x * 255).round().to(torch.uint8)  # mean 0, std 1: undo the /255
        padded = torch.nn.functional.pad(images[y], (4, 4, 4, 4))
        for flipped in (False, True):
            src = padded.flip(3) if flipped else padded
            for dy in range(9):
                for dx in range(9):
                    hits = int((out_u8 == src[:, :, dy:dy + 8, dx:dx + 8]).flatten(1).all(1).sum())
                    # A crop of the mirror image at dx is the mirror of the crop at 8 - dx.
                    dys += [dy] * hits
                    dxs += [8 - dx if flipped else dx] * hits
                    flips += [flipped] * hits
    assert len(dys) == n  # every output identified exactly once
    for offsets in (torch.tensor(dys), torch.tensor(dxs)):
        counts = offsets.bincount(minlength=9).float()
        # n/9 = 444 per value; a binomial sd is about 20, so +-25% is far outside noise.
        assert counts.min() > 0.75 * n / 9 and counts.max() < 1.25 * n / 9
    assert abs(sum(flips) / n - 0.5) < 0.04  # sd 0.008


def test_batches_are_deterministic_per_seed_and_epoch():
    images, labels = make_images(40), torch.arange(40)

    def epoch_batches(seed, epoch):
        b = DeviceBatches(images, labels, batch_size=8, train=True, mean=MEAN, std=STD, seed=seed)
        b.set_epoch(epoch)
        return list(b)

    a, b = epoch_batches(0, 3), epoch_batches(0, 3)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    other_epoch = epoch_batches(0, 4)
    assert not torch.equal(a[0][1], other_epoch[0][1])
    other_seed = epoch_batches(1, 3)
    assert not torch.equal(a[0][1], other_seed[0][1])
    # Every image appears exactly once per epoch.
    assert sorted(torch.cat([y for _, y in a]).tolist()) == list(range(40))


def test_augmentation_can_be_turned_off_and_labels_follow_images():
    images, labels = make_images(20), torch.arange(20) % 10
    b = DeviceBatches(images, labels, batch_size=20, train=True, augment=False,
                      mean=MEAN, std=STD, seed=2)
    x, y = next(iter(b))
    order = torch.randperm(20, generator=torch.Generator().manual_seed(2 * 1_000_003))
    assert torch.equal(y, labels[order])
    assert torch.allclose(x, torch.stack([reference_normalise(images[i]) for i in order]), atol=1e-5)


def test_resize_and_channels_last():
    images = make_images(4)
    b = DeviceBatches(images, torch.zeros(4, dtype=torch.int64), batch_size=4, mean=MEAN,
                      std=STD, image_size=224, channels_last=True)
    x, _ = next(iter(b))
    assert x.shape == (4, 3, 224, 224)
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = torch.nn.functional.interpolate(reference_normalise(images), size=224,
                                               mode="bilinear", align_corners=False)
    assert torch.allclose(x, expected, atol=1e-4)


def test_grayscale_batches():
    b = DeviceBatches(make_images(6, c=1, size=28), torch.arange(6), batch_size=3,
                      train=True, mean=(0.3,), std=(0.3,))
    x, _ = next(iter(b))
    assert x.shape == (3, 1, 28, 28)


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_size=4), "image_size=4: expected an integer of at least 8"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(mean=(0.5,)), "mean/std need 3 values"),
])
def test_bad_batch_arguments(kwargs, message):
    args = dict(batch_size=4, mean=MEAN, std=STD)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        DeviceBatches(make_images(4), torch.zeros(4, dtype=torch.int64), **args)


def test_images_must_be_uint8():
    with pytest.raises(ValueError, match="expected uint8"):
        DeviceBatches(make_images(4).float(), torch.zeros(4, dtype=torch.int64),
                      batch_size=2, mean=MEAN, std=STD)
