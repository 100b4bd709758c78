"""common.batches: DeviceBatches' order, normalisation, augmentation and determinism."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF

from common.batches import DeviceBatches


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


def test_flips_by_mask_as_on_a_gpu_match_flips_by_position():
    # On CUDA the flips stay a boolean mask (positions would need nonzero(), a host
    # sync per batch); on the CPU they are positions. Same draws, same images.
    from common.batches import _crop_flip_torch

    padded = torch.nn.functional.pad(make_images(12), (2, 2, 2, 2))
    g = torch.Generator().manual_seed(3)
    idx = torch.randperm(12, generator=g)
    dy, dx = torch.randint(0, 5, (12,), generator=g), torch.randint(0, 5, (12,), generator=g)
    mask = torch.rand(12, generator=g) < 0.5
    by_mask = _crop_flip_torch(padded, idx, 2, dy, dx, mask)
    by_position = _crop_flip_torch(padded, idx, 2, dy, dx, mask.nonzero().squeeze(1))
    assert 0 < mask.sum() < 12 and torch.equal(by_mask, by_position)
    unflipped = _crop_flip_torch(padded, idx, 2, dy, dx, None)
    assert torch.equal(by_mask[mask], unflipped[mask].flip(3))
    assert torch.equal(by_mask[~mask], unflipped[~mask])


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


def test_cutout_masks_one_mean_coloured_square_and_leaves_the_rest_as_without_it():
    images, labels = make_images(32), torch.arange(32)
    common = dict(batch_size=16, train=True, mean=MEAN, std=STD, seed=3)
    plain = torch.cat([x for x, _ in DeviceBatches(images, labels, **common)])
    cut = torch.cat([x for x, _ in DeviceBatches(images, labels, cutout=8, **common)])
    fill = reference_normalise(torch.tensor([round(255 * m) for m in MEAN],
                                            dtype=torch.uint8).view(3, 1, 1))
    for a, b in zip(plain, cut):
        changed = (a != b).any(0)
        rows, cols = changed.any(1).nonzero().squeeze(1), changed.any(0).nonzero().squeeze(1)
        # Where it differs, the image is the fill colour; the changed pixels form one
        # rectangle (a square clipped by the image's edge) no larger than 8 x 8.
        if len(rows):
            assert torch.allclose(b[:, changed], fill.view(3, 1).expand(3, int(changed.sum())), atol=1e-5)
            assert changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
            assert len(rows) <= 8 and len(cols) <= 8
    masked = (plain != cut).any(1).sum((1, 2)).float()
    assert masked.mean() > 0.5 * 64  # most squares lie mostly inside the image
    # Evaluation batches are never cut, and a bad side is refused with its range.
    evaluation = DeviceBatches(images, labels, batch_size=16, mean=MEAN, std=STD, cutout=8)
    assert torch.allclose(torch.cat([x for x, _ in evaluation]),
                          torch.stack([reference_normalise(i) for i in images]), atol=1e-5)
    with pytest.raises(ValueError, match="cutout=40"):
        DeviceBatches(images, labels, batch_size=16, mean=MEAN, std=STD, cutout=40)
