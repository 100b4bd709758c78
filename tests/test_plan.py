"""common.plan: FLOP counts against hand formulas, and the plan's arithmetic."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from common import plan as costs
from common.plan import (T4_PEAK_FLOPS, flops_per_image, model_flops, plan_cost, print_plan,
                         t4_estimate)


class Tiny(nn.Module):
    """conv 3->4 (3x3, pad 1) on 8x8, ReLU, max-pool 2, linear 4*4*4 -> 5."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.flatten(torch.max_pool2d(torch.relu(self.conv(x)), 2), 1))


def tiny_flops_by_hand() -> int:
    conv_macs = 4 * 8 * 8 * (3 * 3 * 3)  # out channels x out pixels x (in channels x kernel)
    fc_macs = (4 * 4 * 4) * 5
    return 2 * (conv_macs + fc_macs)  # a multiply-add is 2 FLOPs


def test_flops_of_a_tiny_net_match_the_hand_formula():
    model = Tiny().train()
    assert flops_per_image(model, (3, 8, 8)) == tiny_flops_by_hand()
    assert model.training  # the mode is restored


def test_flops_scale_with_input_size_and_work_on_meta():
    with torch.device("meta"):
        model = Tiny()
        model.fc = nn.Linear(4 * 8 * 8, 5)
    conv_macs = 4 * 16 * 16 * 27
    assert flops_per_image(model, (3, 16, 16)) == 2 * (conv_macs + 4 * 8 * 8 * 5)


def test_bad_input_shape_is_named():
    with pytest.raises(ValueError, match=r"expected \(C, H, W\)"):
        flops_per_image(Tiny(), (1, 3, 8, 8))


@pytest.mark.parametrize("name, gmacs", [("alexnet", 0.714), ("resnet18", 1.814), ("vgg16", 15.47)])
def test_torchvision_models_match_torchvision_published_operation_counts(name, gmacs):
    # torchvision's weight metadata lists multiply-adds ("_ops", in G) at 224x224
    # with 1,000 classes; ours has a 10-class head, which changes the count < 1%.
    assert model_flops("torchvision", name, 224) == pytest.approx(2 * gmacs * 1e9, rel=0.01)


def test_cifar_alexnet_by_hand():
    # common.models' AlexNet docstring gives the shapes; conv MACs = Cout*H*W*Cin*9.
    convs = [(64, 16, 3), (192, 8, 64), (384, 4, 192), (256, 4, 384), (256, 4, 256)]
    macs = sum(cout * hw * hw * cin * 9 for cout, hw, cin in convs)
    macs += 1024 * 4096 + 4096 * 4096 + 4096 * 10
    assert model_flops("common", "alexnet", 32) == 2 * macs


def fake_flops(source, model, input_size):
    return {"a": 100, "b": 1000}[model]


def test_plan_arithmetic():
    runs = [{"name": "r1", "source": "x", "model": "a", "input_size": 32, "epochs": 2,
             "train_images": 10, "test_images": 5},
            {"name": "r2", "source": "x", "model": "b", "input_size": 32, "epochs": 3,
             "train_images": 4, "test_images": 1}]
    rows, total = plan_cost(runs, fraction_of_peak=0.5, flops_of=fake_flops)
    assert [r["train_flops"] for r in rows] == [3 * 100 * 10 * 2, 3 * 1000 * 4 * 3]
    assert [r["eval_flops"] for r in rows] == [100 * 5 * 2, 1000 * 1 * 3]
    assert total["total_flops"] == 6000 + 1000 + 36000 + 3000
    assert total["epochs"] == 5 and total["runs"] == 2
    assert total["t4_seconds"] == pytest.approx(46000 / (T4_PEAK_FLOPS * 0.5))
    assert sum(r["t4_seconds"] for r in rows) == pytest.approx(total["t4_seconds"])


def test_t4_estimate_and_its_checks():
    assert t4_estimate(65e12 * 0.35) == pytest.approx(1.0)
    assert t4_estimate(1e15, fraction_of_peak=1.0) == pytest.approx(1e15 / 65e12)
    with pytest.raises(ValueError, match="fraction_of_peak"):
        t4_estimate(1.0, fraction_of_peak=0)


def test_plan_run_missing_a_key_is_named():
    with pytest.raises(ValueError, match="lacks epochs"):
        plan_cost([{"name": "r", "source": "x", "model": "a", "input_size": 32,
                    "train_images": 1, "test_images": 1}], flops_of=fake_flops)


def test_print_plan_labels_the_estimate():
    lines = []
    runs = [{"name": f"q2a_{m}", "source": "common", "model": m, "input_size": 32, "epochs": 1,
             "train_images": 50_000, "test_images": 10_000} for m in ("vgg16", "resnet18")]
    rows, total = print_plan(runs, log=lines.append)
    text = "\n".join(lines)
    assert "Estimate, not a measurement" in text and "3x forward" in text
    assert all(r["name"] in text for r in rows)
    assert costs.format_seconds(total["t4_seconds"]) in text
