"""The networks of the Fashion-MNIST course tasks (extras/fashion_mnist.ipynb) that
the shared registry (common.models) does not hold.

    model = baseline_cnn(pool=(2, 2, 0), dropout=0.3, batchnorm=True)   # CIS 520 Table 2
    for options in baseline_grid(): ...                                  # its 12 settings
    model = get_resnet()                                                 # ECE 449 task 4
    model = get_dnn()                                                    # ECE 449 task 2

All take 1x28x28 inputs and return 10 logits (no softmax layer: the softmax of
Table 2 lives inside the cross-entropy loss, which expects logits).
"""
from __future__ import annotations

import itertools
from typing import Sequence

import torch
import torch.nn as nn

from ..models import MLP

__all__ = ["POOL_OPTIONS", "DROPOUT_OPTIONS", "BATCHNORM_OPTIONS", "BaselineCNN", "baseline_cnn",
           "baseline_grid", "grid_label", "Residual", "resnet_block", "get_resnet", "get_dnn"]

# CIS 520 HW4 Figure 2: the options Table 2 leaves open.
POOL_OPTIONS = ((2, 2, 0), (4, 3, 1))  # max-pool (kernel, stride, padding)
DROPOUT_OPTIONS = (0.1, 0.3, 0.5)
BATCHNORM_OPTIONS = (True, False)


def _pooled(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class BaselineCNN(nn.Module):
    """CIS 520 HW4 Table 2, for 1x28x28 inputs:

        conv 5x5, 32, stride 1, pad 2 (+ BatchNorm) -> ReLU -> maxpool (k, s, p)
        conv 5x5, 32, stride 1, pad 2 (+ BatchNorm) -> ReLU -> maxpool (k, s, p)
        conv 5x5, 64, stride 1, pad 2 (+ BatchNorm) -> ReLU -> maxpool (k, s, p)
        dropout -> fc 64 (+ BatchNorm) -> ReLU -> fc 10

    The convolutions keep the size; each pool maps n to (n + 2p - k) // s + 1:
    28 -> 14 -> 7 -> 3 for (2, 2, 0), 28 -> 9 -> 3 -> 1 for (4, 3, 1), so the
    first fc layer sees 64 x 3 x 3 = 576 or 64 x 1 x 1 = 64 features.
    A layer followed by BatchNorm has no bias of its own (BatchNorm's shift replaces it).
    """

    def __init__(self, pool: Sequence[int] = (2, 2, 0), dropout: float = 0.3,
                 batchnorm: bool = True, num_classes: int = 10, in_channels: int = 1,
                 input_size: int = 28):
        super().__init__()
        if len(pool) != 3 or not all(isinstance(v, int) and v >= 0 for v in pool) or pool[0] < 1 or pool[1] < 1:
            raise ValueError(f"pool={pool!r}: expected (kernel, stride, padding), e.g. (2, 2, 0)")
        if pool[2] > pool[0] // 2:
            raise ValueError(f"pool={pool!r}: padding must be at most half the kernel (torch's rule)")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r}: expected a probability in [0, 1)")
        kernel, stride, padding = pool
        layers: list[nn.Module] = []
        channels, size = in_channels, input_size
        for width in (32, 32, 64):
            layers.append(nn.Conv2d(channels, width, 5, stride=1, padding=2, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(width))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(kernel, stride, padding)]
            channels, size = width, _pooled(size, kernel, stride, padding)
            if size < 1:
                raise ValueError(f"pool={pool!r} shrinks a {input_size}x{input_size} input below 1x1")
        self.features = nn.Sequential(*layers)
        self.flat_features = channels * size * size
        head: list[nn.Module] = [nn.Flatten(), nn.Dropout(dropout),
                                 nn.Linear(self.flat_features, 64, bias=not batchnorm)]
        if batchnorm:
            head.append(nn.BatchNorm1d(64))
        head += [nn.ReLU(inplace=True), nn.Linear(64, num_classes)]
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def baseline_cnn(pool: Sequence[int] = (2, 2, 0), dropout: float = 0.3, batchnorm: bool = True,
                 num_classes: int = 10, in_channels: int = 1) -> BaselineCNN:
    return BaselineCNN(tuple(pool), dropout, batchnorm, num_classes, in_channels)


def baseline_grid() -> list[dict]:
    """The 12 settings of CIS 520 Figure 2: every (pool, dropout, batchnorm) combination,
    in a fixed order (pool slowest, batchnorm fastest)."""
    return [{"pool": list(pool), "dropout": dropout, "batchnorm": bn}
            for pool, dropout, bn in itertools.product(POOL_OPTIONS, DROPOUT_OPTIONS, BATCHNORM_OPTIONS)]


def grid_label(options: dict) -> str:
    """A run name for a grid point, e.g. 'pool2-2-0_drop0.3_bn'."""
    pool = "-".join(str(v) for v in options["pool"])
    return f"pool{pool}_drop{options['dropout']:g}_{'bn' if options['batchnorm'] else 'nobn'}"


# --- ECE 449 task 4: ResNet-18 as in Dive into Deep Learning (d2l.ai, section 8.6) ---------

class Residual(nn.Module):
    """d2l's residual block: 3x3 conv-BN-ReLU, 3x3 conv-BN, plus the input, then ReLU.
    With use_1x1conv a 1x1 convolution (stride `strides`) reshapes the shortcut to
    the new channel count and resolution."""

    def __init__(self, input_channels: int, num_channels: int, use_1x1conv: bool = False,
                 strides: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(input_channels, num_channels, 3, padding=1, stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, 3, padding=1)
        self.conv3 = nn.Conv2d(input_channels, num_channels, 1, stride=strides) if use_1x1conv else None
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return torch.relu(y + x)


def resnet_block(input_channels: int, num_channels: int, num_residuals: int,
                 first_block: bool = False) -> nn.Sequential:
    """A stage: its first block halves the resolution and changes the width, except
    in the first stage, which follows the stem's max-pool at the same width."""
    blocks = []
    for i in range(num_residuals):
        if i == 0 and not first_block:
            blocks.append(Residual(input_channels, num_channels, use_1x1conv=True, strides=2))
        else:
            blocks.append(Residual(num_channels, num_channels))
    return nn.Sequential(*blocks)


def get_resnet(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """ResNet-18 (d2l): stem 7x7/2 conv 64 -> BN -> ReLU -> 3x3/2 max-pool, four stages of
    two blocks (64, 128, 256, 512), global average pool, linear. 18 weighted layers:
    1 + 4 x 2 x 2 + 1. On 28x28 the map goes 28 -> 14 -> 7 (stem), 7 -> 4 -> 2 -> 1."""
    stem = nn.Sequential(nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3),
                         nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                         nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    return nn.Sequential(stem,
                         resnet_block(64, 64, 2, first_block=True),
                         resnet_block(64, 128, 2),
                         resnet_block(128, 256, 2),
                         resnet_block(256, 512, 2),
                         nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                         nn.Linear(512, num_classes))


# --- ECE 449 task 2 --------------------------------------------------------------------------------

def get_dnn(hidden: Sequence[int] = (512, 256), num_classes: int = 10, in_channels: int = 1,
            input_size: int = 28) -> MLP:
    """get_DNN: flatten, fully connected ReLU layers of the given widths, linear output.
    The task's template (its layer widths) did not survive in the assignment text, so
    the widths are a parameter; the registry's MLP does the work."""
    return MLP(num_classes, in_channels, input_size=input_size, hidden=tuple(hidden))
