"""common.transfer and common.weights: torchvision ImageNet models, weights files,
heads and freezing (Q3's runs: tests/test_q3_runs.py).

No real ImageNet weights exist on the test machines (../shared/data/README.md):
the loading tests write random state dicts under the official file names into a
temporary TORCH_HOME. That runs the real loading path and proves nothing about
accuracy.
"""
from __future__ import annotations

import hashlib
import urllib.error

import pytest
import torch
from torch import nn

from common import transfer, weights
from common.batches import DeviceBatches
from common.transfer import (EvalBatchNorm2d, apply_freeze, build_transfer_model, layer_groups,
                             normalisation, param_groups, parameter_counts)
from common.weights import (WeightsNotFoundError, WeightsUnreadableError, checkpoints_dir,
                            fabricate_weights)

ALL = list(transfer.TRANSFER_MODELS)
HEAD_IN = {"tv_alexnet": 4096, "tv_vgg11_bn": 4096, "tv_vgg16": 4096,
           "tv_resnet18": 512, "tv_resnet50": 2048}


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME; torch.hub.get_dir() reads the variable on every call."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home"


@pytest.fixture(scope="module")
def scratch():
    """One randomly initialised model of each kind, for read-only checks."""
    torch.manual_seed(0)
    return {name: build_transfer_model(name, pretrained=False) for name in ALL}


def head_of(model, name):
    return model.get_submodule(transfer.TRANSFER_MODELS[name].head)


@pytest.mark.parametrize("name", ALL)
def test_head_is_replaced_and_the_rest_is_torchvisions(scratch, name):
    model = scratch[name]
    head = head_of(model, name)
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (HEAD_IN[name], 10)
    # Oracle: torchvision's published parameter count of the 1000-class model,
    # minus its 1000-way head, plus a 10-way one.
    published = weights.imagenet_weights(name).meta["num_params"]
    expected = published - (HEAD_IN[name] + 1) * 1000 + (HEAD_IN[name] + 1) * 10
    assert parameter_counts(model) == {"trainable": expected, "total": expected}
    model.eval()
    size = transfer.min_image_size(name)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize("name", ALL)
def test_layer_groups_partition_the_parameters_in_order(scratch, name):
    model = scratch[name]
    seen = []
    for modules in layer_groups(model).values():
        for qual in modules:
            seen += [f"{qual}.{p}" for p, _ in model.get_submodule(qual).named_parameters()]
    # Each parameter in exactly one group, and groups run from input to output.
    assert seen == [n for n, _ in model.named_parameters()]
    assert list(layer_groups(model))[-1] == "head"
    assert layer_groups(model)["head"] == [transfer.TRANSFER_MODELS[name].head]


def test_min_image_size_is_what_the_architecture_accepts(scratch):
    assert transfer.min_image_size("tv_alexnet") == 63
    assert transfer.min_image_size("tv_vgg16") == 32 and transfer.min_image_size("tv_resnet18") == 32
    alexnet = scratch["tv_alexnet"].eval()
    with torch.no_grad():
        alexnet(torch.zeros(1, 3, 63, 63))
        with pytest.raises(RuntimeError, match="too small"):
            alexnet(torch.zeros(1, 3, 62, 62))
    transfer.check_image_size("tv_alexnet", 63)
    with pytest.raises(ValueError, match="at least 63"):
        transfer.check_image_size("tv_alexnet", 62)


def test_names_labels_normalisation_and_unknown_name():
    assert transfer.display_name("tv_alexnet", True) == "AlexNet (torchvision, ImageNet-pretrained)"
    assert transfer.display_name("tv_resnet18", False) == "ResNet18 (torchvision, from scratch)"
    mean, std = transfer.normalisation("tv_vgg16")  # the published ImageNet constants
    assert mean == pytest.approx((0.485, 0.456, 0.406)) and std == pytest.approx((0.229, 0.224, 0.225))
    with pytest.raises(ValueError, match="tv_alexnet, .*tv_resnet18"):
        build_transfer_model("alexnet")
    with pytest.raises(ValueError, match="in_channels=3"):
        build_transfer_model("tv_resnet18", in_channels=1)


# --- weights files -------------------------------------------------------------------

def test_pretrained_loads_the_file_under_torch_home(torch_home):
    assert checkpoints_dir() == torch_home / "hub" / "checkpoints"
    [path] = fabricate_weights(checkpoints_dir(), ["tv_resnet18"], seed=3)
    assert path.name == "resnet18-f37072fd.pth"
    assert weights.weights_source("tv_resnet18") == "unofficial"  # sha256 differs from the name's
    saved = torch.load(path, weights_only=True)
    torch.manual_seed(0)
    model = build_transfer_model("tv_resnet18", pretrained=True)
    counts = parameter_counts(model)
    assert counts["trainable"] == counts["total"] == 11_181_642
    for key, value in model.state_dict().items():
        if key.startswith("fc."):
            assert value.shape[0] == 10  # the new head, not the file's 1000-way one
        else:
            assert torch.equal(value, saved[key]), key
    # Scratch ignores the file: its weights are torchvision's random initialisation.
    scratch = build_transfer_model("tv_resnet18", pretrained=False)
    assert not torch.equal(scratch.conv1.weight, saved["conv1.weight"])


def test_hash_check_tells_official_files_from_others(tmp_path):
    data = b"not really weights"
    digest = hashlib.sha256(data).hexdigest()
    good, bad = tmp_path / f"model-{digest[:8]}.pth", tmp_path / "model-00000000.pth"
    good.write_bytes(data)
    bad.write_bytes(data)
    assert weights.file_hash_matches(good) and not weights.file_hash_matches(bad)


def test_missing_weights_offline_names_the_file_and_folder(torch_home, monkeypatch):
    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("simulated: no internet")
    # torch.hub looks the function up in its own module at call time.
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    folder = torch_home / "hub" / "checkpoints"
    assert weights.weights_source("tv_alexnet") == "missing"
    with pytest.raises(WeightsNotFoundError) as info:
        build_transfer_model("tv_alexnet", pretrained=True)
    msg = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in msg and str(folder) in msg and "TORCH_HOME" in msg
    assert "simulated: no internet" in msg
    # Raised outside the handler: no chained urllib traceback above ours.
    err = info.value
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    assert not (folder / "alexnet-owt-7be5be79.pth").exists()


def test_unreadable_weights_file_is_named(torch_home):
    path = weights.weights_file("tv_resnet18")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated download")
    with pytest.raises(WeightsUnreadableError, match="resnet18-f37072fd.pth.*delete it"):
        build_transfer_model("tv_resnet18", pretrained=True)


# --- freezing ------------------------------------------------------------------------

def one_training_run(model, size, steps=2):
    """SGD with momentum and weight decay over ALL parameters, as a careless
    optimiser would be built: frozen ones must still not move (no gradient)."""
    torch.manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    model.train()
    for _ in range(steps):
        x, y = torch.randn(4, 3, size, size), torch.randint(0, 10, (4,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("name, strategy, frozen_prefixes", [
    ("tv_resnet18", "upto:layer3", ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")),
    ("tv_resnet18", "head", ("conv1.", "bn1.", "layer")),
    ("tv_vgg11_bn", "upto:block4", tuple(f"features.{i}." for i in range(22))),
    ("tv_alexnet", "upto:fc6", ("features.", "classifier.0.", "classifier.1.", "classifier.2.")),
])
def test_frozen_weights_and_batchnorm_statistics_do_not_move(name, strategy, frozen_prefixes):
    torch.manual_seed(0)
    model = build_transfer_model(name, pretrained=False, freeze=strategy)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(not n.startswith(frozen_prefixes) for n in trainable)
    one_training_run(model, transfer.min_image_size(name))
    after = model.state_dict()
    for key, value in before.items():
        frozen = key.startswith(frozen_prefixes)
        if frozen:
            assert torch.equal(after[key], value), f"frozen {key} changed"
        elif key in trainable or key.endswith(("running_mean", "running_var")):
            assert not torch.equal(after[key], value), f"trainable {key} did not change"
    for qual, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            frozen = (qual + ".").startswith(frozen_prefixes)
            assert isinstance(module, EvalBatchNorm2d) == frozen, qual
            assert module.training == (not frozen), qual  # after model.train()


def test_frozen_backbone_computes_the_same_function_in_train_mode():
    torch.manual_seed(0)
    model = build_transfer_model("tv_resnet18", freeze="head")
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        train_out = model.train()(x)  # ResNet has no dropout: only BatchNorm could differ
        eval_out = model.eval()(x)
    assert torch.equal(train_out, eval_out)
    apply_freeze(model, "none")  # re-freezing undoes it: batch statistics again
    assert not any(isinstance(m, EvalBatchNorm2d) for m in model.modules())
    with torch.no_grad():
        assert not torch.allclose(model.train()(x), eval_out)


def test_trainable_counts_match_an_independent_count():
    def conv(cin, cout, k):
        return cin * cout * k * k
    bn = 2  # weight and bias per channel
    # ResNet18's layer4: two BasicBlocks, 256 -> 512 with a 1x1 downsample, then 512 -> 512.
    layer4 = (conv(256, 512, 3) + bn * 512 + conv(512, 512, 3) + bn * 512 + conv(256, 512, 1) + bn * 512
              + 2 * (conv(512, 512, 3) + bn * 512))
    fc = 512 * 10 + 10
    resnet = build_transfer_model("tv_resnet18")
    for strategy, expected in [("head", fc), ("upto:layer3", layer4 + fc)]:
        apply_freeze(resnet, strategy)
        assert parameter_counts(resnet)["trainable"] == expected, strategy
    alexnet = build_transfer_model("tv_alexnet", freeze="upto:fc6")
    fc7, head = 4096 * 4096 + 4096, 4096 * 10 + 10
    assert parameter_counts(alexnet)["trainable"] == fc7 + head


def test_bad_freeze_lists_the_valid_strategies():
    model = build_transfer_model("tv_resnet18")
    for bad in ("upto:layer9", "upto:head", "all", "layer3"):
        with pytest.raises(ValueError, match="none, upto:stem, .*upto:layer4, head"):
            apply_freeze(model, bad)


def test_param_groups_give_discriminative_rates_to_trainable_parameters_only():
    model = build_transfer_model("tv_resnet18", freeze="upto:layer2")
    groups = param_groups(model, lr=0.1, decay=0.5)
    assert [g["name"] for g in groups] == ["layer3", "layer4", "head"]
    assert [g["lr"] for g in groups] == pytest.approx([0.025, 0.05, 0.1])
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    opt = torch.optim.SGD(groups, lr=0.1)  # torch keeps the extra 'name' key
    assert [g["name"] for g in opt.param_groups] == ["layer3", "layer4", "head"]


# --- the head's own learning rate -------------------------------------------------------

@pytest.mark.parametrize("name", ["tv_alexnet", "tv_resnet18"])
def test_the_new_head_gets_ten_times_the_backbones_lr(name):
    from common.optim import make_optimizer, parameter_groups
    model = build_transfer_model(name, freeze="none")
    groups = parameter_groups(model, 0.01, transfer.head_lr_multipliers(name, 10))
    opt = make_optimizer("sgd", groups, lr=0.01)
    base, head = opt.param_groups  # the backbone's group first: it is the one histories log
    assert base["lr"] == pytest.approx(0.01) and head["lr"] == pytest.approx(0.1)
    head_ids = {id(p) for p in model.get_submodule(transfer.head_module(name)).parameters()}
    assert {id(p) for p in head["params"]} == head_ids
    assert {id(p) for p in base["params"]} == {id(p) for p in model.parameters()} - head_ids
    assert transfer.head_lr_multipliers(name, 1) == {}  # factor 1: plain fit settings
    with pytest.raises(ValueError, match="positive"):
        transfer.head_lr_multipliers(name, 0)


def test_initialise_scratch_keeps_the_architecture_and_sets_he_scale():
    torch.manual_seed(0)
    model = build_transfer_model("tv_alexnet")
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    transfer.initialise_scratch(model, "kaiming")
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    fc6 = model.classifier[1]
    assert fc6.weight.std().item() == pytest.approx((2 / fc6.in_features) ** 0.5, rel=0.02)
    assert not fc6.bias.any()
    with pytest.raises(ValueError, match="torchvision, kaiming"):
        transfer.initialise_scratch(model, "xavier")


def notebook_defaults(*names):
    """Q3's parameter defaults, read from its parameters cell (the test follows the notebook)."""
    import ast
    import nbformat
    from common.config import ROOT
    nb = nbformat.read(ROOT / "Q3" / "Q3.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values = {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body}
    return [values[n] for n in names]


def test_the_scratch_recipe_leaves_chance_on_real_images(cifar10, tmp_path):
    """torchvision's AlexNet from scratch (PyTorch's default initialisation, no
    BatchNorm) sits at chance under SGD at fine-tuning rates; the notebook's scratch
    recipe must learn on real CIFAR-10 within a small budget: 1,500 images at 64 px,
    about 100 steps, scored on 500 held-out training images."""
    from common.data import stratified_indices, train_val_split
    from common.train import fit
    from common.transfer_runs import near_chance
    optimizer, candidates, decay, init = notebook_defaults(
        "scratch_optimizer", "scratch_lr_candidates", "scratch_weight_decay", "scratch_init")
    lr = 1e-4
    assert lr in candidates
    train_idx, val_idx = train_val_split(cifar10.train_labels, val_fraction=0.1, seed=0)
    mean, std = normalisation("tv_alexnet")

    def batches(count, pool, train):
        idx = stratified_indices(cifar10.train_labels, count=count, seed=0, pool=pool)
        return DeviceBatches(cifar10.train_images[idx], cifar10.train_labels[idx], batch_size=32,
                             train=train, mean=mean, std=std, image_size=64, seed=0)

    torch.manual_seed(0)
    model = transfer.initialise_scratch(build_transfer_model("tv_alexnet"), init)
    history = fit(model, batches(1500, train_idx, True), batches(500, val_idx, False),
                  run_dir=tmp_path / "run", epochs=2, lr=lr, device="cpu", optimizer=optimizer,
                  weight_decay=decay, schedule="cosine", eval_split="validation", log=lambda *_: None)
    assert not near_chance(history["eval_accuracy"][-1]), history["eval_accuracy"]
