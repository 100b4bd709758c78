"""common.models: the registry, output shapes and parameter counts.

Parameter counts are checked against numbers published for these architectures
(kuangliu/pytorch-cifar's ResNet/VGG, LeNet-5's 61,706) and against hand formulas
written out here, independently of the model code.
"""
from __future__ import annotations

import pytest
import torch

from common import models
from common import transfer  # noqa: F401  (Q3 registers its tv_ models when imported)
from common.models import MODEL_NAMES, build_model, count_parameters, list_models

CIFAR = ("alexnet", "vgg11", "vgg13", "vgg16", "resnet18", "resnet34")


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def linear(cin: int, cout: int) -> int:
    return cin * cout + cout


def test_registry_lists_every_model():
    assert set(list_models()) == {"alexnet", "vgg11", "vgg13", "vgg16", "resnet18", "resnet34",
                                  "lenet5", "mlp", "tv_alexnet", "tv_resnet18", "tv_vgg16",
                                  "tv_vgg11_bn", "tv_resnet50"}
    # Q2 chooses among its own networks; Q3's torchvision models join the registry when
    # common.transfer (which registers them) is imported, as it is in this session.
    assert MODEL_NAMES == tuple(n for n in list_models() if not n.startswith("tv_"))


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        build_model("vgg19")
    for name in list_models():
        assert name in str(err.value)


def test_torchvision_models_come_through_the_registry():
    model = build_model("tv_resnet18", num_classes=7)  # random weights: nothing downloads
    assert model.fc.out_features == 7
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 7)


def test_unknown_option_names_the_accepted_ones():
    with pytest.raises(TypeError, match="hidden"):
        build_model("vgg11", hidden=(10,))
    with pytest.raises(TypeError, match="input_size, hidden, dropout"):
        build_model("mlp", width=3)


def test_register_adds_a_model_in_a_few_lines(monkeypatch):
    # The shape a later tv_* entry takes: a constructor with its own options.
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))

    @models.register("tiny")
    def _tiny(num_classes, in_channels, pretrained=False):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

    assert "tiny" in list_models()
    assert build_model("tiny", num_classes=4, pretrained=True)(torch.zeros(2, 3, 8, 8)).shape == (2, 4)
    with pytest.raises(ValueError, match="already registered"):
        models.register("tiny")(_tiny)


@pytest.mark.parametrize("name", CIFAR + ("lenet5", "mlp"))
def test_cifar_shapes_and_backward(name):
    kwargs = {"input_size": 32} if name == "mlp" else {}
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=3, **kwargs)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ("lenet5", "mlp", "resnet18", "alexnet"))
def test_grayscale_28x28_shapes(name):
    kwargs = {"input_size": 28} if name in ("lenet5", "mlp") else {}
    model = build_model(name, num_classes=10, in_channels=1, **kwargs)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_vgg_rejects_inputs_its_pools_cannot_take():
    with pytest.raises(ValueError, match="at least 32x32"):
        build_model("vgg11", in_channels=1)(torch.randn(2, 1, 28, 28))


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = build_model("resnet18")
    torch.manual_seed(3)
    b = build_model("resnet18")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("name, published", [
    ("resnet18", 11_173_962), ("resnet34", 21_282_122),
    ("vgg11", 9_231_114), ("vgg13", 9_416_010), ("vgg16", 14_728_266)])
def test_published_cifar_parameter_counts(name, published):
    assert count_parameters(build_model(name)) == published


@pytest.mark.parametrize("name", ("vgg11", "vgg16"))
def test_vgg_count_by_hand(name):
    widths = {"vgg11": [64, 128, 256, 256, 512, 512, 512, 512],
              "vgg16": [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]}[name]
    total, cin = 0, 3
    for w in widths:
        total += conv(cin, w, 3) + 2 * w  # conv with bias, BatchNorm weight and bias
        cin = w
    total += linear(512, 10)
    assert count_parameters(build_model(name)) == total


def test_alexnet_count_by_hand():
    plain = (conv(3, 64, 3) + conv(64, 192, 3) + conv(192, 384, 3) + conv(384, 256, 3)
             + conv(256, 256, 3) + linear(1024, 4096) + linear(4096, 4096) + linear(4096, 10))
    assert count_parameters(build_model("alexnet", batch_norm=False)) == plain
    # With BN: each conv loses its bias (BN's shift replaces it) and gains BN's scale and shift.
    widths = (64, 192, 384, 256, 256)
    assert count_parameters(build_model("alexnet")) == plain - sum(widths) + 2 * sum(widths)


def test_alexnet_with_batchnorm_carries_the_input_signal_at_initialisation():
    # The reason the default AlexNet has BN: without it the input-dependent part of the
    # logits starts orders of magnitude below the logits' scale.
    x = torch.randn(64, 3, 32, 32)

    def signal(batch_norm):
        torch.manual_seed(0)
        # Train mode, as in the first steps: BN normalises with the batch's statistics.
        model = build_model("alexnet", batch_norm=batch_norm, dropout=0.0).train()
        with torch.no_grad():
            logits = model(x)
        return (logits - logits.mean(0)).std().item()

    plain, normalised = signal(False), signal(True)
    assert plain < 2e-3 and normalised > 20 * plain


def test_lenet5_counts():
    # 61,706: the count usually quoted for LeNet-5 with full C3 connections.
    assert count_parameters(build_model("lenet5", in_channels=1, input_size=28)) == 61_706
    assert count_parameters(build_model("lenet5", in_channels=1, input_size=32)) == 61_706
    three = conv(3, 6, 5) + conv(6, 16, 5) + linear(400, 120) + linear(120, 84) + linear(84, 10)
    assert count_parameters(build_model("lenet5", in_channels=3)) == three


def test_lenet5_tanh_is_an_option():
    model = build_model("lenet5", in_channels=1, input_size=28, activation="tanh")
    assert any(isinstance(m, torch.nn.Tanh) for m in model.modules())
    with pytest.raises(ValueError, match="relu, tanh"):
        build_model("lenet5", activation="gelu")


def test_mlp_count_by_hand_and_dropout():
    model = build_model("mlp", in_channels=1, input_size=28, hidden=(100, 50), dropout=0.2)
    assert count_parameters(model) == linear(784, 100) + linear(100, 50) + linear(50, 10)
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 2
    assert count_parameters(build_model("mlp", hidden=())) == linear(3 * 28 * 28, 10)


def test_count_trainable_only():
    model = build_model("vgg11")
    for p in model.features.parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == linear(512, 10)
    assert count_parameters(model) == 9_231_114
