"""common.plan: FLOP counts against hand formulas, and the plan's arithmetic."""
from __future__ import annotations

import json
import math

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
    assert t4_estimate(65e12 * costs.DEFAULT_FRACTION_OF_PEAK) == pytest.approx(1.0)
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
    assert "T4 estimate, not a measurement" in text and "3x forward" in text
    assert all(r["name"] in text for r in rows)
    assert costs.format_seconds(total["t4_seconds"]) in text


# --- measured speeds and the measured plan ---------------------------------------------

def test_measured_speeds_time_each_model_once_per_device_and_cache_it(tmp_path):
    from common.speed import device_label, key, measured_speeds

    calls = []

    def timer(model, size, batch, device):
        calls.append((model, size, batch))
        return {"alexnet": 0.001, "vgg16": 0.004}[model]

    cache = tmp_path / "speeds.json"
    wanted = [("alexnet", 32, 128), ("vgg16", 32, 128), ("alexnet", 32, 128)]
    speeds = measured_speeds(wanted, "cpu", cache=cache, timer=timer, log=lambda _: None)
    assert speeds == {key("alexnet", 32, 128): 0.001, key("vgg16", 32, 128): 0.004}
    assert calls == [("alexnet", 32, 128), ("vgg16", 32, 128)]
    # Cached under this device: a second plan measures only what is new.
    again = measured_speeds([("vgg16", 32, 128), ("alexnet", 32, 64)], "cpu", cache=cache,
                            timer=timer, log=lambda _: None)
    assert calls[2:] == [("alexnet", 32, 64)] and again[key("vgg16", 32, 128)] == 0.004
    stored = json.loads(cache.read_text())
    assert set(stored) == {device_label("cpu")} and len(stored[device_label("cpu")]) == 3


def test_a_training_step_is_timed_on_the_device():
    from common.speed import time_training_step

    seconds = time_training_step("alexnet", 32, 4, "cpu", steps=1)
    assert seconds > 0 and math.isfinite(seconds)  # a measurement, not a speed target


def test_the_plan_times_each_run_and_warns_beyond_one_session(tmp_path):
    from common.speed import EVAL_COST

    speeds = {"alexnet": 0.002, "vgg16": 0.01}
    runs = [{"name": "a", "model": "alexnet", "input_size": 32, "epochs": 10, "train_images": 1000,
             "test_images": 300, "batch_size": 64},
            {"name": "b", "model": "vgg16", "input_size": 32, "epochs": 4, "train_images": 5000,
             "test_images": 600, "batch_size": 64}]
    lines = []
    totals = costs.plan(runs, device="cpu", log=lines.append, cache=None,
                        timer=lambda model, *_: speeds[model])
    expected = [10 * (1000 + EVAL_COST * 300) * 0.002, 4 * (5000 + EVAL_COST * 600) * 0.01]
    assert totals["seconds_measured"] == pytest.approx(sum(expected))
    assert totals["seconds_left"] == pytest.approx(sum(expected))
    row_b = [line for line in lines if line.startswith("b ")][-1]  # the cost table's row
    assert costs.format_seconds(expected[1]) in row_b
    assert not any("WARNING" in line for line in lines)
    # The same runs, far slower: a warning that points to a GPU and to make quick.
    lines.clear()
    totals = costs.plan(runs, device="cpu", log=lines.append, cache=None,
                        timer=lambda model, *_: 100 * speeds[model])
    assert totals["seconds_left"] > costs.SESSION_HOURS * 3600
    warning = next(line for line in lines if line.startswith("WARNING"))
    assert "beyond one Colab session" in warning and "make quick" in warning and "GPU" in warning


def test_make_plan_prints_each_notebook_without_data(monkeypatch, capsys):
    from common.config import ROOT
    from common.speed import key
    from common.tools import plan as tool

    monkeypatch.setattr(costs, "measured_speeds",
                        lambda planned, device, **_: {key(*p): 1e-3 for p in planned})
    assert tool.main(["--profile", str(ROOT / "profiles" / "smoke.yaml"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "=== Q2/Q2.ipynb (smoke.yaml)" in out and "=== Q3/Q3.ipynb (smoke.yaml)" in out
    assert "all planned notebooks: about" in out and "WARNING" not in out
    assert tool.main(["--profile", str(ROOT / "profiles" / "smoke.yaml"), "Q9.ipynb"]) == 2


def test_the_footprint_is_what_final_checkpoints_weigh(tmp_path):
    from common.batches import DeviceBatches
    from common.models import build_model
    from common.train import fit

    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    batches = DeviceBatches(x, torch.arange(16) % 10, batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3)
    fit(build_model("lenet5"), batches, batches, run_dir=tmp_path / "kept", epochs=1, lr=0.01,
        device="cpu", log=lambda _: None)
    fit(build_model("lenet5"), batches, batches, run_dir=tmp_path / "none", epochs=1, lr=0.01,
        device="cpu", log=lambda _: None, keep_weights=False)
    weights = costs.weights_bytes("lenet5")
    kept, training = costs.footprint([{"model": "lenet5"}, {"model": "lenet5", "keep_weights": False}])
    assert kept == weights and training == 4 * weights
    # The files: the weights plus a few kB of history and settings; none without weights.
    assert 0 < (tmp_path / "kept" / "last.pt").stat().st_size - weights < 50_000
    assert (tmp_path / "none" / "last.pt").stat().st_size < 50_000


def test_the_readme_time_table_is_the_plan_of_the_full_profile():
    """readme.txt's estimates are the plan's, for the runs the notebooks define now."""
    from common.config import ROOT
    from common.tools.plan import estimate_table

    readme = (ROOT / "readme.txt").read_text()
    table = "\n".join(estimate_table(ROOT / "profiles" / "full.yaml"))
    assert table in readme, ("readme.txt's time table is stale: replace it with the output of "
                             "python -m common.tools.plan --readme")


def test_time_left_counts_only_the_runs_still_to_train():
    left = {"a": 0.0, "b": 120.0, "c": 60.0}  # a: finished, reused
    assert costs.time_left(left, "b") == "notebook: 2 of 3 runs to train, about 3.0 min left"
    assert costs.time_left(left, "c", "this part") == "this part: 1 of 3 runs to train, about 1.0 min left"


def test_a_plan_beyond_one_session_says_which_notebook_runs_in_which():
    from common.tools.plan import session_plan
    hour = 3600.0
    lines = session_plan({"Q2/Q2.ipynb": 5 * hour, "Q3/Q3.ipynb": 2 * hour}, hours=4)
    assert lines[1:] == ["  Q2/Q2.ipynb: sessions 1 to 2 (5h00m)", "  Q3/Q3.ipynb: session 2 (2h00m)"]
    full = session_plan({"Q2/Q2.ipynb": 4 * hour, "Q3/Q3.ipynb": 2 * hour}, hours=4)
    assert full[1:] == ["  Q2/Q2.ipynb: session 1 (4h00m)", "  Q3/Q3.ipynb: session 2 (2h00m)"]
    # Days on a CPU: no plan of dozens of sessions, the advice instead.
    [advice] = session_plan({"Q2/Q2.ipynb": 300 * hour}, hours=4)
    assert "75 Colab sessions" in advice and "make quick" in advice
