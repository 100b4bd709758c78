"""Q3: the notebook end to end in smoke mode on the real CIFAR-10 copy, through the
same runner and profile as `make smoke`.

There are no ImageNet weights on the test machines: with an empty TORCH_HOME the
smoke run fabricates random stand-ins in its data folder. The test checks the
plumbing and the honesty of the text, never an accuracy.
"""
from __future__ import annotations

import shutil

import pytest
import torch

from common.config import ROOT
from conftest import assert_submittable, bundle_tmpdir, run_smoke_profile, shown_text

NOTEBOOK = ROOT / "Q3" / "Q3.ipynb"


@pytest.fixture(scope="module")
def smoke_run(cifar_data_dir):
    """The smoke profile on the real data, with an empty TORCH_HOME (no weights)."""
    tmp = bundle_tmpdir("test-q3-")
    torch_home = tmp / "torch-home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(torch_home))  # inherited by the papermill kernel
        out = run_smoke_profile(NOTEBOOK, tmp, cifar_data_dir)
    yield {"nb": out["nb"], "nb_path": out["path"], "summary": out["summary"],
           "results": out["results"], "torch_home": torch_home, "runs": tmp / "runs",
           "data_dir": cifar_data_dir}
    shutil.rmtree(tmp, ignore_errors=True)


def test_smoke_run_writes_every_part_and_figure(smoke_run):
    s = smoke_run["summary"]
    assert s["smoke"] is True and s["quick"] is False and s["config"]["device"] == "cpu"
    results = s["results"]
    assert results["parts"] == ["a", "b", "c"]
    assert set(results["figures"]) == {"a", "b", "c"}
    assert_submittable("Q3", smoke_run["nb_path"], smoke_run["results"])
    runs = results["runs"]
    config = s["config"]
    assert len([r for r in runs if r["part"] == "a"]) == 2 * len(config["fractions"])
    assert [r["model"] for r in runs if r["part"] == "b"] == config["models_b"]
    assert [r["freeze"] for r in runs if r["part"] == "c"] == config["freeze_strategies"]
    for r in runs:
        assert {"part", "model", "pretrained", "fraction", "freeze", "trainable_params",
                "total_params", "history"} <= set(r)
        h = r["history"]
        assert len(h["eval_accuracy"]) == r["epochs"] == 1 and h["stopped"] is None
        assert all(0 <= a <= 1 for a in h["eval_accuracy"] + h["train_accuracy"])
        assert r["image_size"] == 64


def test_pretrained_and_scratch_see_the_same_images(smoke_run):
    s = smoke_run["summary"]
    runs_a = [r for r in s["results"]["runs"] if r["part"] == "a"]
    pool = s["config"]["train_images"]
    for f in s["config"]["fractions"]:
        pair = [r for r in runs_a if r["fraction"] == f]
        assert sorted(r["pretrained"] for r in pair) == [False, True]
        assert len({r["subset_digest"] for r in pair}) == 1
        # Stratified: the same share of each of the 10 equally sized classes.
        assert {r["train_images"] for r in pair} == {10 * round(f * pool / 10)}
        assert len({(r["epochs"], r["steps"]) for r in pair}) == 1  # one budget for both sides
    assert len({r["subset_digest"] for r in runs_a}) == len(s["config"]["fractions"])


def test_partial_fine_tuning_counts_and_reuse(smoke_run):
    runs = smoke_run["summary"]["results"]["runs"]
    part_c = {r["freeze"]: r for r in runs if r["part"] == "c"}
    total = part_c["none"]["total_params"]
    assert part_c["head"]["trainable_params"] == 512 * 10 + 10  # ResNet18's new fc only
    assert part_c["none"]["trainable_params"] == total
    assert part_c["head"]["trainable_params"] < part_c["upto:layer3"]["trainable_params"] < total
    # (c)'s all-layers run has (b)'s settings: it is the same run, trained once.
    b_resnet = next(r for r in runs if r["part"] == "b" and r["model"] == "tv_resnet18")
    assert part_c["none"]["run_dir"] == b_resnet["run_dir"]
    assert part_c["none"]["history"] == b_resnet["history"]


def test_learning_rates_are_chosen_on_validation(smoke_run):
    results = smoke_run["summary"]["results"]
    for sel in results["lr_selection"]:
        scores = {c["lr"]: c["val_accuracy"] for c in sel["candidates"] if not c["stopped"]}
        best = max(scores.values())
        assert sel["chosen_lr"] == min(lr for lr, v in scores.items() if v == best)
    chosen = {(s["model"], s["pretrained"], s["freeze"], s["fraction"]): s["chosen_lr"]
              for s in results["lr_selection"]}
    for r in results["runs"]:  # each setting its own rate: (a) one per fraction and side
        assert r["lr"] == chosen[r["model"], r["pretrained"], r["freeze"], r["fraction"]]


def test_fabricated_weights_are_labelled_and_kept_out_of_torch_home(smoke_run):
    results = smoke_run["summary"]["results"]
    assert set(results["weights_source"].values()) == {"unofficial"}
    assert {r["weights_source"] for r in results["runs"] if r["pretrained"]} == {"unofficial"}
    # The stand-ins live with the data (a cache, on Colab's local disk), never in runs/
    # (Drive on Colab) nor in torch.hub's cache, where a later full run would load them
    # as ImageNet weights.
    assert not list(smoke_run["torch_home"].rglob("*.pth"))
    assert not list(smoke_run["runs"].rglob("*.pth"))
    # Q3 reads only the curves: a finished run keeps its history, not its weights.
    finals = list(smoke_run["runs"].rglob("last.pt"))
    assert finals and all(torch.load(p, weights_only=True)["model"] == {} for p in finals)
    assert list((smoke_run["data_dir"] / "fabricated-weights").glob("*.pth"))
    text = shown_text(smoke_run["nb"])
    assert "FABRICATED random weights" in text
    assert "**Not ImageNet weights**" in text and "**Smoke run**" in text
    for part in ("(a)", "(b)", "(c)"):
        assert f"**Observations {part}.**" in text


def test_recipes_and_near_chance_flags_reach_the_summary_and_the_text(smoke_run):
    s = smoke_run["summary"]
    config, results = s["config"], s["results"]
    for r in results["runs"]:
        # Fine-tuning trains the new head at head_lr_multiplier x lr; from scratch one lr for all.
        if r["pretrained"]:
            assert r["head_lr_multiplier"] == config["head_lr_multiplier"]
            assert r["optimizer"] == config["optimizer"] and r["init"] is None
        else:
            assert r["head_lr_multiplier"] == 1 and r["optimizer"] == config["scratch_optimizer"]
            assert r["init"] == config["scratch_init"]
        final = r["history"]["eval_accuracy"][-1]
        assert r["near_chance"] == (final < r["chance_accuracy"] + r["chance_margin"] - 1e-9)
    flagged = [r["run_dir"] for r in results["runs"] if r["near_chance"]]
    assert sorted({n["run_dir"] for n in results["near_chance_runs"]}) == sorted(set(flagged))
    text = shown_text(smoke_run["nb"])
    if flagged:  # the caveats (Markdown) and the training log (stream) both say so
        assert "**WARNING, near chance**" in text and "WARNING: NEAR CHANCE" in text
    void = [f for f in config["fractions"] if any(
        r["near_chance"] for r in results["runs"] if r["part"] == "a" and r["fraction"] == f)]
    for f in void:
        assert f"With {100 * f:g}% of the training images" in text
    assert text.count("the comparison is void") == len(void)
    # The budget notice is generated from the actual sizes.
    assert f"{config['train_images']:,} training images" in text


def test_make_plan_plans_the_runs_the_notebook_trains(smoke_run):
    """`make plan` derives Q3's runs from the parameters alone, without the data: the
    same trials and the same (a), (b), (c) runs, with the same image counts."""
    from common.tools.plan import q3_plan_rows

    s = smoke_run["summary"]
    config, results = s["config"], s["results"]
    rows = q3_plan_rows(config)
    trials = [r for r in rows if r["name"].startswith("select_")]
    assert len(trials) == sum(len(sel["candidates"]) for sel in results["lr_selection"])
    trained = {r["run_dir"]: r for r in results["runs"]}.values()  # a run two parts share, once
    assert sorted((r["model"], r["train_images"], r["epochs"]) for r in rows
                  if not r["name"].startswith("select_")) \
        == sorted((r["model"], r["train_images"], r["epochs"]) for r in trained)
    assert {r["input_size"] for r in rows} == {config["image_size"]}


def test_the_headline_answers_each_part_from_the_results(smoke_run):
    from common.observations import pct

    runs = smoke_run["summary"]["results"]["runs"]
    text = shown_text(smoke_run["nb"])
    headline = text[text.index("**Q3 at a glance.**"):]
    for r in runs:
        assert pct(r["history"]["eval_accuracy"][-1]) in headline
    assert headline.count("| (a) |") == len(smoke_run["summary"]["config"]["fractions"])
