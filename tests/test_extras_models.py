"""common.extras.models: the CIS 520 baseline CNN and its grid, d2l's ResNet-18
and get_DNN, checked for shapes and parameter counts computed by hand."""
from __future__ import annotations

import pytest
import torch

from common.extras import models as xm
from common.models import count_parameters


def conv_params(cin, cout, k, bias=True):
    return cout * cin * k * k + (cout if bias else 0)


def expected_baseline_params(pool, batchnorm):
    """Table 2 counted layer by layer; BatchNorm adds a scale and a shift per channel
    and replaces the bias of the layer before it."""
    side = {(2, 2, 0): 3, (4, 3, 1): 1}[tuple(pool)]
    bias = not batchnorm
    n = conv_params(1, 32, 5, bias) + conv_params(32, 32, 5, bias) + conv_params(32, 64, 5, bias)
    n += 64 * side * side * 64 + (64 if bias else 0) + 64 * 10 + 10
    if batchnorm:
        n += 2 * (32 + 32 + 64 + 64)
    return n


def test_grid_has_the_twelve_settings_of_figure_2():
    grid = xm.baseline_grid()
    assert len(grid) == 12
    keys = {(tuple(o["pool"]), o["dropout"], o["batchnorm"]) for o in grid}
    assert len(keys) == 12
    assert {k[0] for k in keys} == {(2, 2, 0), (4, 3, 1)}
    assert {k[1] for k in keys} == {0.1, 0.3, 0.5} and {k[2] for k in keys} == {True, False}
    assert len({xm.grid_label(o) for o in grid}) == 12


@pytest.mark.parametrize("options", xm.baseline_grid(), ids=xm.grid_label)
def test_baseline_cnn_shapes_and_parameters(options):
    model = xm.baseline_cnn(**options).eval()
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert count_parameters(model) == expected_baseline_params(options["pool"], options["batchnorm"])
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 1 and drops[0].p == options["dropout"]
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 3 and all((p.kernel_size, p.stride, p.padding) == tuple(options["pool"]) for p in pools)
    has_bn = any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in model.modules())
    assert has_bn == options["batchnorm"]


def test_baseline_cnn_rejects_bad_options():
    with pytest.raises(ValueError, match="pool"):
        xm.baseline_cnn(pool=(2, 2))
    with pytest.raises(ValueError, match="padding must be at most half"):
        xm.baseline_cnn(pool=(2, 2, 2))
    with pytest.raises(ValueError, match="dropout"):
        xm.baseline_cnn(dropout=1.0)


def test_d2l_resnet18_shapes_and_blocks():
    net = xm.get_resnet(in_channels=1, num_classes=10).eval()
    x = torch.zeros(2, 1, 28, 28)
    sides = []
    for layer in net:
        x = layer(x)
        if x.dim() == 4:
            sides.append((x.shape[1], x.shape[-1]))
    assert sides == [(64, 7), (64, 7), (128, 4), (256, 2), (512, 1), (512, 1)]
    assert x.shape == (2, 10)
    residuals = [m for m in net.modules() if isinstance(m, xm.Residual)]
    assert len(residuals) == 8
    assert [r.conv3 is not None for r in residuals] == [False, False, True, False, True, False, True, False]
    # 18 weighted layers: the stem conv, 16 block convs, the final linear (1x1 shortcuts aside).
    convs3 = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs3) + len(linears) == 18


def test_residual_block_is_identity_plus_branch():
    block = xm.Residual(4, 4).eval()
    x = torch.randn(2, 4, 5, 5)
    branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
    assert torch.allclose(block(x), torch.relu(branch + x))
    down = xm.Residual(4, 8, use_1x1conv=True, strides=2).eval()
    assert down(x).shape == (2, 8, 3, 3)


def test_get_dnn_widths():
    net = xm.get_dnn(hidden=(32, 16))
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert count_parameters(net) == (784 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10)
