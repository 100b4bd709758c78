"""Q3's runs: the data they see (common.transfer_data.Q3Data), the list of runs
(common.transfer_runs.q3_specs), the two recipes, choosing learning rates and the
near-chance flag, all trained through the one runner, common.experiments.Experiment.

No ImageNet weights exist here: the pretrained runs load random stand-ins written
under the official file names into a temporary TORCH_HOME, which runs the real
loading path and proves nothing about accuracy.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from common.checkpoints import ConfigMismatchError
from common.config import ConfigError
from common.experiments import Experiment
from common.tools.plan import cifar10_stand_in_labels
from common.transfer_data import Q3Data, epochs_for
from common.transfer_runs import (annotate, check_q3_config, choose_lr, choose_lrs,
                                  near_chance_runs, q3_settings, q3_specs, summary,
                                  warn_near_chance)
from common.tools.run import notebook_defaults
from common.weights import checkpoints_dir, fabricate_weights
from conftest import ROOT


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home"


def full_config(**changes) -> dict:
    """The Q3 notebook's own defaults (the full run), as make plan reads them."""
    return {**notebook_defaults(ROOT / "Q3" / "Q3.ipynb"), "device": "cpu", **changes}


# --- the data: the assignment's fractions, validation images outside every subset ---------

def test_fractions_are_of_the_training_images_nested_and_never_validated_on():
    c = full_config()
    check_q3_config(c)
    labels, test_labels = cifar10_stand_in_labels()
    data = Q3Data(labels, test_labels, c)
    assert [data.images_of(f) for f in c["fractions"]] == [5_000, 10_000, 25_000]
    subsets = [set(data.subsets[f].tolist()) for f in c["fractions"]]
    assert subsets[0] < subsets[1] < subsets[2]  # nested
    val = set(data.val_idx.tolist())
    assert len(val) == 5_000 and not val & set().union(*map(set, (s.tolist() for s in
                                                                 data.subsets.values())))
    for f, idx in data.subsets.items():  # class-stratified: the same share of every class
        assert torch.bincount(labels[idx], minlength=10).tolist() == [round(f * 5_000)] * 10
    assert data.held_out_size("test") == 10_000


def test_the_validation_images_must_fit_outside_the_largest_subset():
    with pytest.raises(ConfigError, match="fraction_b.*at most 0.9"):
        check_q3_config(full_config(fraction_b=0.95))
    with pytest.raises(ConfigError, match="fractions"):
        check_q3_config(full_config(fractions=[0.5, 0.1]))
    with pytest.raises(ConfigError, match="train_images.*smoke"):
        check_q3_config(full_config(smoke=True))  # smoke sizes come from profiles/smoke.yaml


def test_every_a_run_takes_the_same_optimiser_steps_at_every_fraction():
    c = full_config()
    data = Q3Data(*cifar10_stand_in_labels(), c)
    chosen = {s: 0.001 for s in q3_settings(c)}
    runs_a = q3_specs(c, data, chosen)["a"]
    assert [(r["fraction"], r["pretrained"]) for r in runs_a] == [
        (f, p) for f in c["fractions"] for p in (True, False)]
    per_epoch = {f: -(-data.images_of(f) // c["batch_size"]) for f in c["fractions"]}
    for r in runs_a:  # whole epochs: within half an epoch of steps_a
        assert abs(r["steps"] - c["steps_a"]) <= per_epoch[r["fraction"]] / 2
        assert r["epochs"] == epochs_for(c["steps_a"], data.images_of(r["fraction"]), c["batch_size"])
    assert [r["epochs"] for r in runs_a] == [20, 20, 10, 10, 4, 4]
    # Pretrained and scratch at a fraction: the same images, the same steps.
    for f in c["fractions"]:
        pair = [r for r in runs_a if r["fraction"] == f]
        assert len({r["subset_digest"] for r in pair}) == 1 and len({r["steps"] for r in pair}) == 1


def test_each_setting_has_its_own_trials_on_its_own_subset():
    c = full_config()
    data = Q3Data(*cifar10_stand_in_labels(), c)
    specs = q3_specs(c, data)
    settings = q3_settings(c)
    assert len(settings) == 2 * len(c["fractions"]) + len(c["models_b"]) + len(c["freeze_strategies"]) - 1
    for setting in settings:
        trials = [t for t in specs["trials"] if t["setting"] == setting]
        rates = c["lr_candidates" if setting[1] else "scratch_lr_candidates"]
        assert [t["lr"] for t in trials] == rates
        assert {t["fraction"] for t in trials} == {setting[3]}
        assert {t["data"] for t in trials} == {f"{setting[3]:g}:validation"}
    # Before the rates are chosen, parts (a)-(c) exist for the plan, without an lr.
    assert all(s["lr"] is None for part in "abc" for s in specs[part])
    # (b)'s ResNet18 and (c)'s all-layers run are one run.
    chosen = {s: 0.001 for s in settings}
    named = q3_specs(c, data, chosen)
    b = {s["model"]: s["name"] for s in named["b"]}
    c_none = next(s for s in named["c"] if s["freeze"] == "none")
    assert c_none["name"] == b["tv_resnet18"]
    # A changed rate is another run.
    other = q3_specs(c, data, {**chosen, settings[0]: 0.003})["a"][0]
    assert other["name"] != named["a"][0]["name"]


# --- training through Experiment: the two recipes, reuse, the near-chance flag -------------

def tiny_config(tmp_path, **overrides):
    return {"runs_dir": str(tmp_path / "runs"), "data_dir": str(tmp_path / "data"), "seed": 0,
            "val_fraction": 0.2, "smoke": True, "quick": False, "train_images": 100,
            "eval_images": 20, "channels_last": False, "device": "cpu", "batch_size": 20,
            "image_size": 32, "momentum": 0.9, "schedule": "none", "amp": False, "force": False,
            "optimizer": "sgd", "weight_decay": 5e-4, "lr_candidates": [0.01, 0.001],
            "head_lr_multiplier": 10, "scratch_optimizer": "adamw", "scratch_weight_decay": 0.05,
            "scratch_init": "kaiming", "scratch_lr_candidates": [1e-3, 1e-4],
            "fractions": [0.4], "fraction_b": 0.4, "model_a": "tv_resnet18",
            "models_b": ["tv_resnet18"], "model_c": "tv_resnet18", "freeze_strategies": ["none"],
            "steps_a": 1, "epochs_b": 1, "epochs_c": 1, "select_steps": 1, **overrides}


def tiny_q3(tmp_path, **overrides):
    """Random training images and all-black test images (every prediction the same
    class: exactly chance on the 10 balanced classes)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(100) % 10
    ds = SimpleNamespace(train_images=torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8,
                                                    generator=g),
                         train_labels=labels, test_labels=labels[:50],
                         test_images=torch.zeros(50, 3, 32, 32, dtype=torch.uint8))
    config = tiny_config(tmp_path, **overrides)
    check_q3_config(config)
    data = Q3Data(ds.train_labels, ds.test_labels, config, ds=ds)
    logs: list[str] = []
    data.prepare(["tv_resnet18"], log=logs.append)
    experiment = Experiment(config["runs_dir"], data, seed=0, device="cpu",
                            fit_defaults={"amp": False, "channels_last": False}, build=data.build,
                            keep_models=False, annotate=annotate)
    return SimpleNamespace(config=config, data=data, experiment=experiment, logs=logs)


def saved_fit_settings(record):
    return json.loads((Path(record["run_dir"]) / "config.json").read_text())["fit"]


def test_pretrained_runs_train_the_head_at_the_multiplier_and_scratch_runs_at_one(tmp_path, torch_home):
    q3 = tiny_q3(tmp_path)
    specs = q3_specs(q3.config, q3.data, {s: 0.01 for s in q3_settings(q3.config)})
    pretrained, scratch = (q3.experiment.train(s, log=q3.logs.append) for s in specs["a"])
    fit_p, fit_s = saved_fit_settings(pretrained), saved_fit_settings(scratch)
    assert fit_p["lr_multipliers"] == {"fc": 10.0} and fit_p["optimizer"] == "sgd"
    assert pretrained["head_lr_multiplier"] == 10 and pretrained["init"] is None
    assert fit_s["lr_multipliers"] == {} and fit_s["optimizer"] == "adamw"
    assert fit_s["weight_decay"] == 0.05
    assert scratch["head_lr_multiplier"] == 1 and scratch["init"] == "kaiming"
    assert pretrained["run_dir"] != scratch["run_dir"]
    trials = q3_specs(q3.config, q3.data)["trials"]
    assert [t["lr"] for t in trials if t["pretrained"]][:2] == [0.01, 0.001]
    assert [t["lr"] for t in trials if not t["pretrained"]] == [1e-3, 1e-4]
    # Q3 reads the curves only: the finished runs keep no weights, and none stays in memory.
    assert torch.load(Path(pretrained["run_dir"]) / "last.pt", weights_only=True)["model"] == {}
    assert q3.experiment.models == {}


def test_a_run_is_never_reused_with_other_weights(tmp_path, torch_home):
    fabricate_weights(checkpoints_dir(), ["tv_resnet18"], seed=1)
    q3 = tiny_q3(tmp_path, smoke=False)  # official folder: the stand-in written above
    spec = q3_specs(q3.config, q3.data, {s: 0.01 for s in q3_settings(q3.config)})["b"][0]
    first = q3.experiment.train(spec, log=q3.logs.append)
    assert len(first["history"]["epoch"]) == 1
    again = tiny_q3(tmp_path, smoke=False)
    same = q3_specs(again.config, again.data, {s: 0.01 for s in q3_settings(again.config)})["b"][0]
    assert again.experiment.train(same, log=again.logs.append)["history"] == first["history"]
    fabricate_weights(checkpoints_dir(), ["tv_resnet18"], seed=2, overwrite=True)
    other = tiny_q3(tmp_path, smoke=False)
    changed = q3_specs(other.config, other.data, {s: 0.01 for s in q3_settings(other.config)})["b"][0]
    assert changed["name"] == spec["name"]  # the same settings, other weights:
    with pytest.raises(ConfigMismatchError, match="weights_sha256"):
        other.experiment.train(changed, log=other.logs.append)


def test_near_chance_threshold():
    from common.transfer_runs import near_chance
    assert near_chance(0.149) and not near_chance(0.15) and not near_chance(0.9)
    assert near_chance(None) and near_chance(float("nan"))  # no accuracy: learned nothing shown
    assert near_chance(0.055, num_classes=100) and not near_chance(0.07, num_classes=100)


def test_a_run_near_chance_is_flagged_loudly_and_never_compared(tmp_path, torch_home):
    from common import observations_q3 as text
    q3 = tiny_q3(tmp_path)
    spec = q3_specs(q3.config, q3.data, {s: 1e-6 for s in q3_settings(q3.config)})["a"][1]
    assert spec["pretrained"] is False
    record = {**q3.experiment.train(spec, log=q3.logs.append), "part": "a"}
    assert record["near_chance"] is True and record["chance_accuracy"] == pytest.approx(0.1)
    assert warn_near_chance([record], log=q3.logs.append)
    assert any(line.startswith("WARNING: NEAR CHANCE") for line in q3.logs)
    [listed] = near_chance_runs([record])
    assert listed["run_dir"] == record["run_dir"] and listed["part"] == "a"
    assert summary([record])[0]["near_chance"] is True
    assert "**WARNING, near chance**" in text.caveats([record], smoke=False)
    assert "near chance: not compared" in text.observe_models(
        [record, {**record, "near_chance": False, "history": {**record["history"],
                                                                "eval_accuracy": [0.6]}}])


# --- choosing the learning rates ----------------------------------------------------------

def trial(lr, accuracy, stopped=None, split="validation", setting=("m", True, "none", 0.1)):
    return {"lr": lr, "eval_split": split, "setting": setting, "optimizer": "sgd", "steps": 10,
            "near_chance": False, "history": {"eval_accuracy": [0.1, accuracy], "stopped": stopped}}


def test_choose_lr_ties_go_to_the_smaller_rate_and_diverged_runs_never_win():
    # Listed largest first, as the notebook's candidates are: the tie still goes to 0.001.
    lr, rows = choose_lr([trial(0.1, 0.9, stopped="loss nan"), trial(0.01, 0.5), trial(0.001, 0.5)])
    assert lr == 0.001
    assert [r["lr"] for r in rows] == [0.1, 0.01, 0.001]  # rows keep the order given
    assert {k: rows[0][k] for k in ("lr", "val_accuracy", "stopped", "near_chance")} == {
        "lr": 0.1, "val_accuracy": 0.9, "stopped": "loss nan", "near_chance": False}
    # Each row keeps its trial's history, so summary.json counts the trials' training time.
    assert rows[0]["history"]["stopped"] == "loss nan"
    assert choose_lr([trial(0.01, 0.6), trial(0.001, 0.5)])[0] == 0.01
    with pytest.raises(RuntimeError, match="every learning-rate candidate diverged"):
        choose_lr([trial(0.1, 0.9, stopped="loss nan")])
    with pytest.raises(ValueError, match="validation split only"):
        choose_lr([trial(0.01, 0.6, split="test")])


def test_choose_lrs_chooses_per_setting():
    small, large = ("m", True, "none", 0.1), ("m", True, "none", 0.5)
    chosen, selection = choose_lrs([trial(0.01, 0.6, setting=small), trial(0.001, 0.5, setting=small),
                                    trial(0.01, 0.4, setting=large), trial(0.001, 0.5, setting=large)])
    assert chosen == {small: 0.01, large: 0.001}
    assert [(s["fraction"], s["chosen_lr"]) for s in selection] == [(0.1, 0.01), (0.5, 0.001)]
