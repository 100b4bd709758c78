"""torchvision's ImageNet models, adapted to CIFAR-10 for Q3: a new head, and
freezing by layer groups.

    model = build_transfer_model("tv_resnet18", pretrained=True, freeze="upto:layer3")
    mean, std = normalisation("tv_resnet18")              # the constants shipped with the weights
    batches = DeviceBatches(..., mean=mean, std=std, image_size=224)
    parameter_counts(model)                               # {'trainable': ..., 'total': ...}

The names carry a `tv_` prefix so they are never confused with the CIFAR-sized
networks of Q2 (`alexnet`, `resnet18`, ... in common.models): `tv_alexnet` is
torchvision's ImageNet AlexNet with its 1000-way head replaced by a 10-way one.
`pretrained=False` builds the same architecture with torchvision's random
initialisation, so "from scratch" differs from "pretrained" in the weights only.
The weights files (where they are, whether they are official) are common.weights'.

Input size. The weights were learned on 224x224 crops, so CIFAR's 32x32 images
are resized on the device (DeviceBatches(image_size=...)). At 224 the objects
appear at roughly the scale the filters were trained on, but every image costs
(224/32)^2 = 49 times the pixels of the native size, and compute grows with
them. Smaller sizes are proportionally cheaper and transfer less well.
AlexNet's convolution and pooling stack needs at least 63 pixels
(min_image_size); the others accept CIFAR's native 32.

Partial fine-tuning: layer_groups names each model's groups (resnet18: stem,
layer1..layer4, head; vgg16: block1..block5, fc6, fc7, head; alexnet:
conv1..conv5, fc6, fc7, head) and `freeze` is 'none', 'head' (a linear probe)
or 'upto:<group>'. Frozen BatchNorm layers stay in eval mode (EvalBatchNorm2d).

The head's own learning rate: head_lr_multipliers(name, 10) is fit's
`lr_multipliers` for a new head at 10x the lr of the layers below it.
initialise_scratch re-draws a from-scratch model's weights (same architecture).
"""
from __future__ import annotations

import functools
import os
from typing import Iterable

import torch
from torch import nn
from torchvision.models import AlexNet, ResNet, VGG, get_model

from .models import register
from .weights import TRANSFER_MODELS, imagenet_weights, load_imagenet_state, model_spec

__all__ = ["TRANSFER_MODELS", "EvalBatchNorm2d", "build_transfer_model", "replace_head",
           "transfer_model_names", "normalisation", "shared_normalisation", "min_image_size", "check_image_size",
           "display_name", "layer_groups", "freeze_strategies", "apply_freeze",
           "parameter_counts", "param_groups", "head_module", "head_lr_multipliers",
           "SCRATCH_INITS", "initialise_scratch"]

CIFAR_SIZE = 32  # we never shrink CIFAR below its native size: that only discards pixels


def transfer_model_names() -> list[str]:
    return list(TRANSFER_MODELS)


def normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel that the weights were trained with (their
    `transforms()` preset). Scratch models use the same, so both see identical inputs."""
    preset = imagenet_weights(name).transforms()
    return tuple(float(m) for m in preset.mean), tuple(float(s) for s in preset.std)


def shared_normalisation(models: Iterable[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) every model's weights were trained with: one for all, so
    every run sees the very same inputs."""
    norms = {normalisation(m) for m in models}
    if len(norms) != 1:
        raise ValueError(f"models with different input normalisations: {norms}")
    return norms.pop()


def min_image_size(name: str) -> int:
    """Smallest input side the model takes: the weights' own `min_size` (63 for
    AlexNet, 32 for VGG, 1 for ResNet), but never below CIFAR's native 32."""
    return max(CIFAR_SIZE, int(imagenet_weights(name).meta["min_size"][0]))


def check_image_size(name: str, image_size: int) -> None:
    smallest = min_image_size(name)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < smallest:
        raise ValueError(f"image_size={image_size!r} is too small for {name}: it needs at least "
                         f"{smallest} pixels (224 matches the ImageNet training crops)")


def display_name(name: str, pretrained: bool) -> str:
    """'AlexNet (torchvision, ImageNet-pretrained)' or 'AlexNet (torchvision, from scratch)'."""
    how = "ImageNet-pretrained" if pretrained else "from scratch"
    return f"{model_spec(name).label} (torchvision, {how})"


# --- building ---------------------------------------------------------------------

def build_transfer_model(name: str, num_classes: int = 10, in_channels: int = 3, *,
                         pretrained: bool = False, freeze: str = "none",
                         weights_dir: str | os.PathLike | None = None) -> nn.Module:
    """A torchvision ImageNet model with a fresh `num_classes`-way head.

    pretrained: load the ImageNet weights (from `weights_dir`, default torch.hub's
        cache folder, downloading when absent); False keeps torchvision's random
        initialisation of the same architecture (the from-scratch baseline). It
        defaults to False, as torchvision's `weights=None` does, so nothing is
        downloaded unless asked for.
    freeze: 'none', 'head' or 'upto:<group>' (apply_freeze).
    The new head is initialised by the global torch RNG: seed first for repeatable runs.
    """
    spec = model_spec(name)
    if in_channels != 3:
        raise ValueError(f"{name} takes RGB input (in_channels=3), got in_channels={in_channels}; "
                         "the ImageNet weights have three input channels")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r}: expected a positive integer")
    model = _imagenet_model(name, pretrained, weights_dir)
    replace_head(model, spec.head, num_classes)  # Q3(a)(b)(c): head replacement
    model.transfer_name = name  # which registry entry built it; not in the state dict
    apply_freeze(model, freeze)  # Q3(c): freezing
    return model


def _imagenet_model(name: str, pretrained: bool, weights_dir) -> nn.Module:
    """torchvision's 1000-class model: ImageNet weights, or its random initialisation."""
    arch = model_spec(name).arch
    if not pretrained:
        return get_model(arch, weights=None)
    state = load_imagenet_state(name, weights_dir)
    # Built on the meta device: no memory and no time spent on a random
    # initialisation the weights overwrite at once (seconds for VGG16's 138M).
    with torch.device("meta"):
        model = get_model(arch, weights=None)  # 1000 classes, as the weights expect
    model.load_state_dict(state, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{name}: the weights file holds no values for {', '.join(left)}")
    return model


# Q3(a)(b)(c): head replacement
def replace_head(model: nn.Module, head: str, num_classes: int) -> nn.Linear:
    """Replace the Linear layer at `head` (a qualified name: AlexNet and VGG
    'classifier.6', ResNet 'fc') by a new, randomly initialised one with
    `num_classes` outputs and the same inputs. Everything before it keeps its
    weights: those are the features being transferred."""
    parent_name, _, attr = head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{head} is a {type(old).__name__}, not the Linear classifier")
    new = nn.Linear(old.in_features, num_classes)
    setattr(parent, attr, new)
    return new


def head_module(name: str) -> str:
    """Qualified name of the new head of `name` ('classifier.6' or 'fc'), the last
    of layer_groups' groups: the key under which fit's lr_multipliers gives it its own lr."""
    return model_spec(name).head


def head_lr_multipliers(name: str, factor: float) -> dict[str, float]:
    """fit's `lr_multipliers` training the new head at `factor` times the lr of
    the layers below it ({} for 1, so such a run's settings read as plain fit's)."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
        raise ValueError(f"head lr multiplier {factor!r}: expected a positive number")
    return {} if factor == 1 else {head_module(name): float(factor)}


# Q3(a): the from-scratch baseline's initialisation
SCRATCH_INITS = ("torchvision", "kaiming")


def initialise_scratch(model: nn.Module, init: str = "torchvision") -> nn.Module:
    """Re-initialise a from-scratch model in place; the architecture is untouched.

    'torchvision' keeps the library's own initialisation. For AlexNet that is
    PyTorch's layer default, uniform with variance 1/(3 fan_in): a sixth of the
    2/fan_in that keeps a ReLU network's signal at constant scale (He et al. 2015).
    Through five convolutions and three linear layers without BatchNorm the signal
    shrinks layer by layer, forward and backward: the logits start tiny, and the
    gradients reaching the first layers are tinier still.
    'kaiming' draws every convolution and linear weight from He et al.'s normal
    distribution (fan_in, ReLU gain: variance 2/fan_in, the forward signal keeps
    its scale) and zeroes the biases; BatchNorm layers, where present, keep
    weight 1 and bias 0.
    """
    if init not in SCRATCH_INITS:
        raise ValueError(f"init={init!r}: expected one of {', '.join(SCRATCH_INITS)}")
    if init == "kaiming":
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:  # ResNet's convolutions have none
                    nn.init.zeros_(module.bias)
    return model


# --- layer groups and freezing -------------------------------------------------------

def _split_sequential(seq: nn.Sequential, prefix: str, group: str, *, starts_at=None,
                      ends_at=None) -> dict[str, list[str]]:
    """Cut a Sequential into numbered groups: a new group begins at each
    `starts_at` layer (AlexNet: per convolution) or ends after each `ends_at`
    layer (VGG: per max-pool block)."""
    groups: list[list[str]] = [[]]
    for idx, layer in seq.named_children():
        if starts_at and isinstance(layer, starts_at) and groups[-1]:
            groups.append([])
        groups[-1].append(f"{prefix}.{idx}")
        if ends_at and isinstance(layer, ends_at):
            groups.append([])
    return {f"{group}{i}": g for i, g in enumerate((g for g in groups if g), start=1)}


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Named groups of submodules, input to output, as qualified module names.

    resnet:  stem (conv1, bn1), layer1 .. layer4, head (fc)
    vgg:     block1 .. block5 (one per max-pool), fc6, fc7, head (classifier.6)
    alexnet: conv1 .. conv5 (each with its ReLU and pooling), fc6, fc7, head
    Every parameter belongs to exactly one group.
    """
    if isinstance(model, ResNet):
        return {"stem": ["conv1", "bn1", "relu", "maxpool"],
                **{f"layer{i}": [f"layer{i}"] for i in range(1, 5)},
                "head": ["fc"]}
    if isinstance(model, (VGG, AlexNet)):
        if isinstance(model, VGG):
            features = _split_sequential(model.features, "features", "block", ends_at=nn.MaxPool2d)
        else:
            features = _split_sequential(model.features, "features", "conv", starts_at=nn.Conv2d)
        return {**features,
                "fc6": [f"classifier.{i}" for i in range(0, 3)],
                "fc7": [f"classifier.{i}" for i in range(3, 6)],
                "head": ["classifier.6"]}
    raise TypeError(f"no layer groups for {type(model).__name__}: expected a model from "
                    f"build_transfer_model ({', '.join(TRANSFER_MODELS)})")


def freeze_strategies(model: nn.Module | str) -> list[str]:
    """The valid `freeze` values for a model (or a registry name), from least to
    most frozen."""
    if isinstance(model, str):
        with torch.device("meta"):  # the structure only: no memory, no initialisation
            model = get_model(model_spec(model).arch, weights=None)
    groups = [g for g in layer_groups(model) if g != "head"]
    return ["none", *(f"upto:{g}" for g in groups), "head"]


def _frozen_groups(model: nn.Module, strategy: str) -> list[str]:
    groups = list(layer_groups(model))
    valid = freeze_strategies(model)
    if strategy == "none":
        return []
    if strategy == "head":
        return groups[:-1]
    if isinstance(strategy, str) and strategy.startswith("upto:") and strategy in valid:
        return groups[:groups.index(strategy[len("upto:"):]) + 1]
    raise ValueError(f"freeze={strategy!r}: expected one of {', '.join(valid)} "
                     "('head' trains the head only; 'upto:<group>' freezes that group and "
                     "everything before it)")


# Q3(c): freezing
class EvalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that stays in eval mode: it normalises with its stored
    running statistics and never updates them, whatever `model.train()` says.

    Why: freezing a BatchNorm's weight and bias is not enough. In training mode
    it would normalise with each CIFAR batch's statistics and overwrite the
    ImageNet running statistics, so the "frozen" layers would compute a
    different function during training than at test time, and a different one
    from the pretrained network. In eval mode a frozen block is exactly the
    pretrained feature extractor. Same parameters, buffers and state-dict keys
    as BatchNorm2d, so checkpoints load into either.
    """

    def train(self, mode: bool = True):
        return super().train(False)


def _swap_batchnorm(model: nn.Module, root: str, frozen: bool) -> None:
    """Turn every BatchNorm2d under `root` into EvalBatchNorm2d (frozen) or back,
    keeping the very same parameter and buffer tensors."""
    target = EvalBatchNorm2d if frozen else nn.BatchNorm2d
    for qual, module in list(model.get_submodule(root).named_modules(prefix=root)):
        if not isinstance(module, nn.BatchNorm2d) or type(module) is target:
            continue
        new = target(module.num_features, eps=module.eps, momentum=module.momentum,
                      affine=module.affine, track_running_stats=module.track_running_stats)
        new._parameters = module._parameters  # share, not copy: optimisers keep working
        new._buffers = module._buffers
        new.train(module.training)
        parent_name, _, attr = qual.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


# Q3(c): freezing
def apply_freeze(model: nn.Module, strategy: str = "none") -> nn.Module:
    """Freeze groups of `model` in place and return it.

    'none' trains everything; 'head' trains only the new head (a linear probe on
    the pretrained features); 'upto:<group>' freezes that group and all groups
    before it (freeze_strategies lists them). Frozen parameters get
    requires_grad=False, so autograd computes no gradient for them and stops
    the backward pass at the first trainable group, which is where partial
    fine-tuning saves time. Frozen BatchNorm layers stay in eval mode
    (EvalBatchNorm2d). Calling it again with another strategy re-freezes from scratch.
    """
    frozen = set(_frozen_groups(model, strategy))
    for group, modules in layer_groups(model).items():
        for qual in modules:
            for p in model.get_submodule(qual).parameters():
                p.requires_grad_(group not in frozen)
            _swap_batchnorm(model, qual, group in frozen)
    model.freeze_strategy = strategy
    return model


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """{'trainable': parameters with requires_grad, 'total': all parameters}."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}


def param_groups(model: nn.Module, lr: float, decay: float = 1.0) -> list[dict]:
    """Optimiser parameter groups with discriminative learning rates.

    The head gets `lr`; each group further from it gets `decay` times the lr of
    the next one (layer-wise decay, as in ULMFiT: early, generic filters move
    less than late, task-specific ones). Frozen parameters are left out, so an
    optimiser built from these groups only ever sees trainable ones.
    Each dict: {'params': [...], 'lr': float, 'name': group}.
    """
    if not 0 < decay <= 1:
        raise ValueError(f"decay={decay!r}: expected a number in (0, 1]; 1 gives one lr for all")
    groups = list(layer_groups(model).items())
    out = []
    for depth, (group, modules) in enumerate(reversed(groups)):
        params = [p for q in modules for p in model.get_submodule(q).parameters() if p.requires_grad]
        if params:
            out.append({"params": params, "lr": lr * decay ** depth, "name": group})
    return out[::-1]


# Q3's models in the one registry (common.models.build_model("tv_resnet18", ...)): Q3
# adds them, so Q2's networks never depend on this module. They take `pretrained=`.
for _name in TRANSFER_MODELS:
    register(_name)(functools.partial(build_transfer_model, _name))
