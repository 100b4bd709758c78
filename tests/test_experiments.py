"""common.experiments.Experiment, the one runner of Q2 and Q3: records, a run two
parts share, the plan, and the plan's check against the first epoch trained."""
from __future__ import annotations

import torch

from common.batches import DeviceBatches
from common.experiments import Experiment
from common.models import build_model


def tiny(tmp_path, **options):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.arange(40) % 10

    def batches(train):
        return DeviceBatches(images, labels, batch_size=10, train=train, mean=(0.5,) * 3,
                             std=(0.25,) * 3, crop_padding=0, seed=0)

    data = {"d": (batches(True), batches(False), "validation")}
    return Experiment(tmp_path / "runs", data, seed=0, device="cpu",
                      fit_defaults={"epochs": 2, "amp": False},
                      build=lambda spec: build_model(spec["model"]),
                      **options)


SPEC = {"name": "mlp_run", "model": "mlp", "data": "d", "part": "a", "input_size": 28,
        "fit": {"lr": 0.01}}


def test_a_run_two_parts_share_trains_once_and_each_record_keeps_its_part(tmp_path):
    experiment, logs = tiny(tmp_path), []
    first = experiment.train(SPEC, log=logs.append)
    again = experiment.train({**SPEC, "part": "c"}, log=logs.append)
    assert first["part"] == "a" and again["part"] == "c"
    assert again["history"] == first["history"] and len(first["history"]["epoch"]) == 2
    assert sum(line.startswith("--- mlp_run") for line in logs) == 1
    assert first["eval_split"] == "validation" and first["trainable_params"] == first["params"]
    # The plan counts a shared run once.
    totals = experiment.plan([SPEC, {**SPEC, "part": "c"}], log=logs.append)
    assert totals["runs"] == 1


def test_keep_models_false_keeps_records_only_and_annotate_adds_to_them(tmp_path):
    experiment = tiny(tmp_path, keep_models=False, annotate=lambda r: {**r, "flag": True})
    record = experiment.train(SPEC, log=lambda _: None)
    assert record["flag"] is True and experiment.models == {}


def test_the_plan_is_checked_against_the_first_epoch_trained(tmp_path):
    experiment, logs = tiny(tmp_path), []
    experiment.run_epoch_seconds = {"mlp_run": 1e-6}  # a plan far too optimistic
    experiment.train(SPEC, log=logs.append)
    checks = [line for line in logs if line.startswith("plan check")]
    assert len(checks) == 1 and "the plan said" in checks[0]  # said once, not every epoch
    slow = tiny(tmp_path / "slow")
    slow.run_epoch_seconds = {"mlp_run": 1e9}
    logs.clear()
    slow.train(SPEC, log=logs.append)
    assert any(line.startswith("plan check") for line in logs)  # far off the other way too
    unplanned = tiny(tmp_path / "unplanned")
    logs.clear()
    unplanned.train(SPEC, log=logs.append)
    assert not any(line.startswith("plan check") for line in logs)
