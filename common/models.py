"""A registry of image classifiers, looked up by name.

    model = build_model("resnet18", num_classes=10, in_channels=3)
    count_parameters(model)        # 11,173,962
    list_models()                  # the valid names

Every constructor takes `num_classes` and `in_channels` plus its own keyword
options; `build_model` rejects options a model does not take, naming the ones it
does. The CIFAR networks (alexnet, vgg*, resnet*) are sized for 32x32 inputs;
lenet5 and mlp take `input_size` so they serve 28x28 Fashion-MNIST as well.

A new entry is one decorated function:

    @register("lenet5")
    def _lenet5(num_classes, in_channels, input_size=32): ...

Q3's torchvision ImageNet models (tv_alexnet, tv_resnet18, tv_vgg16) register
themselves when common.transfer is imported, so Q2's networks never depend on
Q3's module.
"""
from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
import torch.nn as nn

__all__ = ["MODEL_NAMES", "build_model", "count_parameters", "list_models", "register",
           "AlexNet", "VGG", "VGG_CFGS", "ResNet", "BasicBlock", "LeNet5", "MLP", "FlipTTA"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable:
    """Decorator: file `constructor(num_classes, in_channels, **options)` under `name`."""
    def add(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = constructor
        return constructor
    return add


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, **options) -> nn.Module:
    """A freshly initialised model. Seed torch first for a reproducible initialisation."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    constructor = _REGISTRY[name]
    accepted = [p for p in inspect.signature(constructor).parameters
                if p not in ("num_classes", "in_channels")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"model {name!r} takes no option {', '.join(unknown)}; "
                        f"its options are: {', '.join(accepted) or 'none'}")
    return constructor(num_classes=num_classes, in_channels=in_channels, **options)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --- Q2(b): AlexNet ---------------------------------------------------------------

# The five conv layers: (output channels, stride, max-pool after it).
ALEXNET_CONVS = ((64, 2, True), (192, 1, True), (384, 1, False), (256, 1, False), (256, 1, True))


class AlexNet(nn.Module):
    """AlexNet scaled down for 32x32 CIFAR images: 5 conv layers, 3 fully connected.

    This is the widely used CIFAR adaptation of Krizhevsky et al. (2012); the
    assignment's start-up code is not available to us, so this is our baseline.
    Shapes for a 3x32x32 input:

        conv1  3x3, 64,  stride 2, pad 1 -> 64x16x16, BN, ReLU, maxpool 2 -> 64x8x8
        conv2  3x3, 192, pad 1           -> 192x8x8,  BN, ReLU, maxpool 2 -> 192x4x4
        conv3  3x3, 384, pad 1           -> 384x4x4,  BN, ReLU
        conv4  3x3, 256, pad 1           -> 256x4x4,  BN, ReLU
        conv5  3x3, 256, pad 1           -> 256x4x4,  BN, ReLU, maxpool 2 -> 256x2x2
        adaptive average pool to 2x2 (the identity at 32x32; lets other sizes through)
        flatten 1024 -> dropout 0.5 -> fc 4096, ReLU -> dropout 0.5 -> fc 4096, ReLU
        -> fc num_classes

    The original's 11x11/5x5 kernels and 224x224 input become 3x3 kernels here, and
    local response normalisation becomes batch normalisation after every conv
    (`batch_norm=True`, the default). Without it, PyTorch's default initialisation
    roughly halves the signal at every layer, the input-dependent part of the
    logits starts near zero, and SGD, RMSProp and Adam all sit at chance (loss
    ln 10) for epochs; Q2's notebook measures this at initialisation. BN rescales
    every layer's output, so every optimiser leaves chance in its first epoch.
    `batch_norm=False` gives the plain network. About 23.3M parameters, 90% of
    them in the first two fc layers.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.5,
                 batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width, stride, pool in ALEXNET_CONVS:
            # A conv followed by BN needs no bias: BN's shift replaces it.
            layers.append(nn.Conv2d(channels, width, kernel_size=3, stride=stride, padding=1,
                                    bias=not batch_norm))
            layers += [nn.BatchNorm2d(width)] if batch_norm else []
            layers.append(nn.ReLU(inplace=True))
            layers += [nn.MaxPool2d(kernel_size=2)] if pool else []
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * 2 * 2, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register("alexnet")
def _alexnet(num_classes: int, in_channels: int, dropout: float = 0.5,
             batch_norm: bool = True) -> nn.Module:
    return AlexNet(num_classes, in_channels, dropout=dropout, batch_norm=batch_norm)


# --- Q2(a): VGG ------------------------------------------------------------------

# Numbers are 3x3 conv widths (each conv -> BatchNorm -> ReLU); "M" is a 2x2 max-pool.
# Five pools take 32x32 down to 1x1, so the classifier is one linear layer on 512
# features (kuangliu/pytorch-cifar), not the 3-layer 4096-wide head used at 224x224.
VGG_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """VGG with BatchNorm for 32x32 inputs, built from a cfg list (see VGG_CFGS)."""

    def __init__(self, cfg: Sequence[int | str], num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1),
                           nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 32:
            # Five 2x2 pools would shrink the map below 1x1, and torch's own error
            # ("Output size is too small") does not say why.
            raise ValueError(f"VGG needs inputs of at least 32x32 (five 2x2 max-pools); got "
                             f"{x.shape[-2]}x{x.shape[-1]}. Resize the images (DeviceBatches "
                             "image_size=32) or pick resnet18/lenet5.")
        return self.classifier(torch.flatten(self.features(x), 1))


def _register_vgg(name: str) -> None:
    @register(name)
    def _vgg(num_classes: int, in_channels: int) -> nn.Module:
        return VGG(VGG_CFGS[name], num_classes, in_channels)


for _name in VGG_CFGS:
    _register_vgg(_name)


# --- Q2(a): ResNet -----------------------------------------------------------------

class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; a 1x1 conv-BN shortcut where the
    shape changes (stride 2 or more channels), the identity otherwise."""
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes * self.expansion:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes * self.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * self.expansion))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet for 32x32 inputs (He et al. 2016, CIFAR variant of kuangliu/pytorch-cifar).

    A 3x3 stride-1 stem with no max-pool keeps 32x32 resolution into stage 1; four
    stages of widths 64/128/256/512 (stages 2-4 halve the resolution: 32, 16, 8, 4),
    global average pooling and one linear layer. `num_blocks` gives each stage's
    block count: (2, 2, 2, 2) is ResNet-18, (3, 4, 6, 3) ResNet-34.
    """

    def __init__(self, block: type[nn.Module], num_blocks: Sequence[int],
                 num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layers = nn.Sequential(*[
            self._make_stage(block, planes, n, stride=1 if i == 0 else 2)
            for i, (planes, n) in enumerate(zip((64, 128, 256, 512), num_blocks))])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_stage(self, block, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = []
        for s in [stride] + [1] * (num_blocks - 1):  # only a stage's first block downsamples
            blocks.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.pool(self.layers(out))
        return self.linear(torch.flatten(out, 1))


@register("resnet18")
def _resnet18(num_classes: int, in_channels: int) -> nn.Module:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels)


@register("resnet34")
def _resnet34(num_classes: int, in_channels: int) -> nn.Module:
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels)


# --- LeNet-5 and MLP (for the Fashion-MNIST extras) ---------------------------------------

class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, the usual modern form.

        conv 5x5, 6 -> act -> maxpool 2 -> conv 5x5, 16 -> act -> maxpool 2
        -> fc 120 -> act -> fc 84 -> act -> fc num_classes

    LeCun fed 32x32 images (28x28 digits padded by 2), so the first conv gets
    padding (32 - input_size) // 2: 2 for 28x28, 0 for 32x32; both give 16x5x5 features.
    `activation="tanh"` gives the original squashing function instead of ReLU.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 32,
                 activation: str = "relu"):
        super().__init__()
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh}
        if activation not in acts:
            raise ValueError(f"activation={activation!r}: use one of {', '.join(acts)}")
        if not isinstance(input_size, int) or input_size < 12:
            raise ValueError(f"input_size={input_size!r}: expected an integer of at least 12")
        pad = max(0, (32 - input_size) // 2)
        side = ((input_size + 2 * pad - 4) // 2 - 4) // 2  # conv5, pool2, conv5, pool2
        act = acts[activation]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=pad), act(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5), act(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120), act(),
            nn.Linear(120, 84), act(),
            nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register("lenet5")
def _lenet5(num_classes: int, in_channels: int, input_size: int = 32,
            activation: str = "relu") -> nn.Module:
    return LeNet5(num_classes, in_channels, input_size=input_size, activation=activation)


class MLP(nn.Module):
    """Flatten, then Linear -> ReLU (-> Dropout) for each hidden width, then a linear output.
    Input (B, C, S, S) with C = in_channels and S = input_size."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 hidden: Sequence[int] = (512, 256), dropout: float = 0.0):
        super().__init__()
        if not all(isinstance(h, int) and h > 0 for h in hidden):
            raise ValueError(f"hidden={hidden!r}: expected a sequence of positive integers")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * input_size * input_size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register("mlp")
def _mlp(num_classes: int, in_channels: int, input_size: int = 28,
         hidden: Sequence[int] = (512, 256), dropout: float = 0.0) -> nn.Module:
    return MLP(num_classes, in_channels, input_size=input_size, hidden=tuple(hidden),
               dropout=dropout)


# --- Q2(c): test-time augmentation -----------------------------------------------------

class FlipTTA(nn.Module):
    """Horizontal-flip test-time augmentation around a trained classifier: each image is
    classified together with its mirror image, and the two softmax outputs averaged. It
    returns their log, so cross-entropy and argmax read it as they read logits. Training
    used random flips, so the mirror image is as familiar to the network as the image."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.model(x).float().softmax(1) + self.model(x.flip(-1)).float().softmax(1)
        return (probs / 2).log()


# Register new models above this line, so the tuple includes them (common.transfer adds
# Q3's tv_ models to the registry, not to this tuple: Q2 chooses among these).
MODEL_NAMES: tuple[str, ...] = tuple(list_models())
