"""common.train: optimisers, schedules, fit's history, resumable runs, checkpoints,
divergence and the plan printout. Tiny models on synthetic 8x8 images, CPU only.

Oracles: a hand-written training loop with torch's own optimiser, lr formulas,
closed-form weight-decay steps, and an uninterrupted run for resumed ones.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.checkpoints import RunDir, rng_state
from common.batches import DeviceBatches
from common.config import ConfigError
from common.hardware import hardware_for
from common.train import (HISTORY_KEYS, OPTIMIZERS, SCHEDULES, CheckpointError,
                          ConfigMismatchError, evaluate, fit, load_history,
                          make_optimizer, make_scheduler, run_status)
from common.plan import plan

STATS = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
HELPER = Path(__file__).with_name("fit_subprocess.py")


def synthetic(n=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen)
    return images, torch.randint(0, 10, (n,), generator=gen)


def make_batches(n=32, batch_size=8, seed=0):
    images, labels = synthetic(n, seed)
    train = DeviceBatches(images, labels, batch_size=batch_size, train=True, crop_padding=1,
                          seed=seed, **STATS)
    test = DeviceBatches(images[:16], labels[:16], batch_size=batch_size, **STATS)
    return train, test


def tiny_model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(16, 10))


class CountingBatches:
    """Batches that count how many they hand out (0 proves nothing was trained)."""

    def __init__(self, batches):
        self.batches, self.count = batches, 0
        self.num_samples = batches.num_samples

    def __len__(self):
        return len(self.batches)

    def set_epoch(self, epoch):
        self.batches.set_epoch(epoch)

    def __iter__(self):
        for batch in self.batches:
            self.count += 1
            yield batch


def quiet(_line):
    pass


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def metrics(history):
    """Everything but wall time, which no two runs share."""
    return {k: v for k, v in history.items() if k != "seconds"}


# checkpoint_overhead=None: a checkpoint after every epoch, which the resume and damage
# tests below count on (the default spaces them out by timing; see "spaced checkpoints").
FIT = dict(epochs=3, lr=0.05, device="cpu", log=quiet, checkpoint_overhead=None)


# --- optimisers -----------------------------------------------------------------------

@pytest.mark.parametrize("name, lr", [("sgd", 0.5), ("rmsprop", 0.01), ("adam", 0.05),
                                      ("adamw", 0.05)])
def test_each_optimizer_reduces_the_loss(name, lr):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=gen)
    y = (x @ torch.randn(5, 3, generator=gen)).argmax(1)  # linearly separable labels
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    opt = make_optimizer(name, model.parameters(), lr=lr, weight_decay=1e-4)
    first = F.cross_entropy(model(x), y).item()
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    assert F.cross_entropy(model(x), y).item() < 0.5 * first


def test_optimizer_settings_reach_torch():
    params = [nn.Parameter(torch.ones(2))]
    sgd = make_optimizer("sgd", params, lr=0.1, momentum=0.8, nesterov=True, weight_decay=1e-3)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (
        0.1, 0.8, True, 1e-3)
    rms = make_optimizer("rmsprop", params, lr=0.01, momentum=0.9, weight_decay=0.1)
    assert isinstance(rms, torch.optim.RMSprop) and rms.param_groups[0]["momentum"] == 0
    assert rms.param_groups[0]["weight_decay"] == 0  # decoupled instead: see the closed form
    assert isinstance(make_optimizer("adam", params, lr=1e-3), torch.optim.AdamW)
    assert isinstance(make_optimizer("adamw", params, lr=1e-3), torch.optim.AdamW)
    # On a GPU fit asks for fused steps (no host sync for the GradScaler's inf check).
    assert make_optimizer("sgd", params, lr=0.1, fused=True).defaults["fused"] is True
    assert make_optimizer("adam", params, lr=0.1, fused=True).defaults["fused"] is True
    assert not make_optimizer("sgd", params, lr=0.1).defaults.get("fused")
    with pytest.raises(ConfigError, match="nesterov=True needs momentum"):
        make_optimizer("sgd", params, lr=0.1, momentum=0.0, nesterov=True)


@pytest.mark.parametrize("name", ["sgd", "adamw", "adam", "rmsprop"])
def test_weight_decay_step_in_closed_form(name):
    # A loss with zero gradient isolates the decay: every optimiser shrinks the weights
    # by the factor (1 - lr * wd). A coupled L2 term in Adam or RMSProp would instead be
    # normalised by the gradient's RMS into a step of about lr against the sign of w.
    lr, wd = 0.1, 0.5
    w0 = torch.tensor([2.0, -3.0])
    w = nn.Parameter(w0.clone())
    opt = make_optimizer(name, [w], lr=lr, momentum=0.9, weight_decay=wd)
    # (Two steps for the adaptive ones: decoupled decay does not go through their momentum,
    # whereas SGD's momentum buffer carries the first step's decay into the second.)
    for step in range(1, 2 if name == "sgd" else 3):
        (0 * w).sum().backward()
        opt.step()
        assert torch.allclose(w.detach(), w0 * (1 - lr * wd) ** step, rtol=1e-6, atol=1e-6)


def test_unknown_names_list_the_valid_ones():
    params = [nn.Parameter(torch.ones(1))]
    with pytest.raises(ConfigError) as err:
        make_optimizer("lbfgs", params, lr=0.1)
    assert all(name in str(err.value) for name in OPTIMIZERS)
    with pytest.raises(ConfigError) as err:
        make_scheduler("linear", torch.optim.SGD(params, lr=0.1), epochs=2, steps_per_epoch=2)
    assert all(name in str(err.value) for name in SCHEDULES)
    with pytest.raises(ConfigError, match="step_size, gamma"):
        make_scheduler("step", torch.optim.SGD(params, lr=0.1), epochs=2, steps_per_epoch=2,
                       options={"milestones": [1]})


# --- schedules ------------------------------------------------------------------------

def lr_trajectory(name, epochs, steps, lr=0.1, options=None, optimizer="sgd"):
    """The lr used by every batch, stepping the scheduler as fit does."""
    opt = make_optimizer(optimizer, [nn.Parameter(torch.ones(1))], lr=lr)
    scheduler, per_batch = make_scheduler(name, opt, epochs=epochs, steps_per_epoch=steps,
                                          options=options)
    lrs = []
    for _ in range(epochs):
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            if per_batch:
                scheduler.step()
        if scheduler is not None and not per_batch:
            scheduler.step()
    return lrs


def test_constant_schedule():
    assert lr_trajectory("none", 3, 4) == [0.1] * 12


def test_step_schedule_formula():
    lrs = lr_trajectory("step", 6, 3, options={"step_size": 2, "gamma": 0.5})
    expected = [0.1 * 0.5 ** (t // 3 // 2) for t in range(18)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    # Default step size: a third of the epochs.
    assert lr_trajectory("step", 6, 1) == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_cosine_schedule_formula_per_batch():
    epochs, steps = 3, 5
    total = epochs * steps
    expected = [0.1 * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total)]
    assert lr_trajectory("cosine", epochs, steps) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_cosine_with_warmup_formula_per_batch():
    epochs, steps, warm = 4, 5, 5  # one warm-up epoch of 5 batches, then 15 of decay
    total = epochs * steps
    expected = [0.1 * (t + 1) / warm for t in range(warm)]
    expected += [0.1 * (1 + math.cos(math.pi * (t - warm) / (total - warm))) / 2
                 for t in range(warm, total)]
    got = lr_trajectory("cosine", epochs, steps, options={"warmup_epochs": 1})
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    with pytest.raises(ConfigError, match="whole run"):
        lr_trajectory("cosine", 1, steps, options={"warmup_epochs": 1})


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_onecycle_schedule_formula(optimizer):
    epochs, steps, peak, pct, div, final = 4, 5, 0.1, 0.3, 25.0, 1e4
    total = epochs * steps
    start, low = peak / div, peak / div / final
    warm_end = pct * total - 1  # torch counts the phases from step 0 to total - 1

    def cos_anneal(a, b, frac):
        return b + (a - b) / 2 * (math.cos(math.pi * frac) + 1)

    expected = [cos_anneal(start, peak, t / warm_end) if t <= warm_end
                else cos_anneal(peak, low, (t - warm_end) / (total - 1 - warm_end))
                for t in range(total)]
    assert lr_trajectory("onecycle", epochs, steps, lr=peak, optimizer=optimizer) == pytest.approx(
        expected, rel=1e-9)


def test_onecycle_cycles_momentum_for_sgd_but_not_rmsprop():
    for name, cycles in (("sgd", True), ("rmsprop", False)):
        opt = make_optimizer(name, [nn.Parameter(torch.ones(1))], lr=0.1)
        scheduler, _ = make_scheduler("onecycle", opt, epochs=2, steps_per_epoch=2)
        assert scheduler.cycle_momentum is cycles
        if not cycles:
            assert opt.param_groups[0]["momentum"] == 0


@pytest.mark.parametrize("schedule, options",
                         [("cosine", None), ("step", {"step_size": 1, "gamma": 0.5})])
def test_fit_history_lr_follows_the_schedule(tmp_path, schedule, options):
    train, test = make_batches()
    history = fit(tiny_model(), train, test, run_dir=tmp_path / "r", schedule=schedule,
                  schedule_options=options, **FIT)
    steps = len(train)
    expected = lr_trajectory(schedule, 3, steps, lr=0.05, options=options)[::steps]
    assert history["lr"] == pytest.approx(expected, rel=1e-12)


# --- fit and evaluate against hand-written loops --------------------------------------

def manual_evaluate(model, batches):
    model.eval()
    loss = hits = n = 0
    with torch.no_grad():
        for x, y in batches:
            out = model(x)
            loss += F.cross_entropy(out, y, reduction="sum").item()
            hits += (out.argmax(1) == y).sum().item()
            n += len(y)
    return loss / n, hits / n


def test_fit_matches_a_hand_written_training_loop(tmp_path):
    train, test = make_batches()
    model = tiny_model()
    history = fit(model, train, test, run_dir=tmp_path / "r", optimizer="sgd", momentum=0.9,
                  nesterov=True, weight_decay=1e-3, label_smoothing=0.1, **FIT)

    reference = tiny_model()
    opt = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=1e-3)
    for epoch in range(3):
        train.set_epoch(epoch)
        reference.train()
        loss_sum = hits = n = 0
        for x, y in train:
            out = reference(x)
            loss = F.cross_entropy(out, y, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            hits += (out.argmax(1) == y).sum().item()
            n += len(y)
        test_loss, test_acc = manual_evaluate(reference, test)
        assert history["train_loss"][epoch] == pytest.approx(loss_sum / n, rel=1e-6)
        assert history["train_accuracy"][epoch] == hits / n
        assert history["eval_loss"][epoch] == pytest.approx(test_loss, rel=1e-6)
        assert history["eval_accuracy"][epoch] == test_acc
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_history_files_and_epoch_lines(tmp_path):
    train, test = make_batches()
    lines = []
    model = tiny_model(dropout=0.3)
    history = fit(model, train, test, run_dir=tmp_path / "run",
                  config={"model": "tiny", "seed": 0}, **{**FIT, "log": lines.append})
    assert set(history) == set(HISTORY_KEYS) | {"stopped", "eval_split"}
    assert history["stopped"] is None and history["eval_split"] == "test"
    assert history["epoch"] == [1, 2, 3]
    assert all(len(history[k]) == 3 for k in HISTORY_KEYS)
    for key in ("train_accuracy", "eval_accuracy"):
        assert all(0 <= a <= 1 for a in history[key])
    assert all(s > 0 for s in history["seconds"])
    assert load_history(tmp_path / "run") == history
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"] == {"model": "tiny", "seed": 0}
    assert saved["fit"]["lr"] == 0.05 and saved["fit"]["train_samples"] == 32
    assert saved["precision"] == "float32" and "torch" in saved["environment"]
    pattern = re.compile(r"epoch [ \d]\d?/3  train loss \d+\.\d{4} acc [01]\.\d{4}  test loss "
                         r"\d+\.\d{4} acc [01]\.\d{4}  lr \d\.\d\de[-+]\d\d  s \d+\.\d  ETA \d+m\d\ds")
    assert lines[1] == "checkpoints: every epoch", lines  # once, after the first epoch
    del lines[1]
    assert len(lines) == 3 and all(pattern.fullmatch(line) for line in lines), lines
    # The last epoch's test metrics are the returned model's, over the whole test set.
    result = evaluate(model, test, "cpu")
    assert result["loss"] == history["eval_loss"][-1]
    assert result["accuracy"] == history["eval_accuracy"][-1]


def test_evaluate_matches_manual_computation_and_restores_mode():
    _, test = make_batches()
    model = tiny_model(dropout=0.5).train()
    result = evaluate(model, test, "cpu", predictions=True)
    assert model.training  # put back in train mode
    loss, acc = manual_evaluate(model, test)
    assert result["loss"] == pytest.approx(loss, rel=1e-6)
    assert result["accuracy"] == acc and result["num_samples"] == 16
    with torch.no_grad():
        expected = torch.cat([model.eval()(x).argmax(1) for x, _ in test])
    assert torch.equal(result["predictions"], expected)
    assert torch.equal(result["labels"], test.labels)


@pytest.mark.parametrize("side, nhwc", [(None, False), ("t4", True)])
def test_channels_last_is_a_wish_the_hardware_grants(tmp_path, monkeypatch, side, nhwc):
    # channels_last=True asks for NHWC where it pays: a GPU (here emulated), not the CPU.
    if side:
        monkeypatch.setenv("COMP5541_EMULATE", side)
    else:
        monkeypatch.delenv("COMP5541_EMULATE", raising=False)
        assert hardware_for(torch.device("cpu")).autocast_dtype(amp=True) is None
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    train, test = make_batches()
    history = fit(model, train, test, run_dir=tmp_path / "cl", channels_last=True,
                  **{**FIT, "epochs": 1})
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last) is nhwc
    assert model[0].weight.is_contiguous() is not nhwc
    assert math.isfinite(history["train_loss"][0])
    assert json.loads((tmp_path / "cl" / "config.json").read_text())["channels_last"] is nhwc


class Interrupt(Exception):
    pass


class Amplify(nn.Module):
    """x * 100: gradients big enough to overflow float16 at GradScaler's first scale."""

    def forward(self, x):
        return 100 * x


def loud_model():
    model = tiny_model()
    model.insert(0, Amplify())
    return model


@pytest.mark.parametrize("side, dtype", [("bf16", torch.bfloat16), ("t4", torch.float16)])
def test_mixed_precision_path_trains_and_resumes(tmp_path, monkeypatch, recwarn, side, dtype):
    # No GPU here: emulating one runs the GPU code path on the CPU (autocast on, fused
    # kernels; a GradScaler for float16, whose state must survive a resume).
    monkeypatch.setenv("COMP5541_EMULATE", side)
    train, test = make_batches()
    settings = {**FIT, "schedule": "onecycle"}
    whole_model = loud_model()
    whole = fit(whole_model, train, test, run_dir=tmp_path / "whole", **settings)

    def interrupt(epoch, history):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(loud_model(), train, test, run_dir=tmp_path / "part", on_epoch_end=interrupt,
            **settings)
    scaler_state = torch.load(tmp_path / "part" / "last.pt", weights_only=True)["scaler"]
    if dtype == torch.float16:  # overflowing steps were skipped and the scale lowered
        assert scaler_state["scale"] < 2.0 ** 16
    else:
        assert scaler_state == {}  # bfloat16 needs no loss scaling
    resumed_model = loud_model()
    resumed = fit(resumed_model, train, test, run_dir=tmp_path / "part", **settings)
    assert metrics(resumed) == metrics(whole)
    assert same_weights(resumed_model.state_dict(), whole_model.state_dict())
    saved = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert saved["precision"] == str(dtype).removeprefix("torch.")
    # Skipped float16 steps make torch warn about the schedule's order; fit hides that.
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]


def test_bad_arguments_name_the_parameter(tmp_path):
    train, test = make_batches()
    with pytest.raises(ConfigError, match="epochs"):
        fit(tiny_model(), train, test, run_dir=tmp_path / "a", **{**FIT, "epochs": 0})
    with pytest.raises(ConfigError, match="lr"):
        fit(tiny_model(), train, test, run_dir=tmp_path / "a", **{**FIT, "lr": -1})
    with pytest.raises(ConfigError, match="eta_min"):
        fit(tiny_model(), train, test, run_dir=tmp_path / "a", schedule="cosine",
            schedule_options={"T_max": 3}, **FIT)
    with pytest.raises(ValueError, match="empty"):
        fit(tiny_model(), [], test, run_dir=tmp_path / "a", **FIT)
    for bad in (-0.05, 1.5, "5%", float("nan")):
        with pytest.raises(ConfigError, match="checkpoint_overhead"):
            fit(tiny_model(), train, test, run_dir=tmp_path / "a",
                **{**FIT, "checkpoint_overhead": bad})


# --- reuse, resume, config mismatch ---------------------------------------------------

def test_finished_run_is_reused_without_training(tmp_path):
    train, test = make_batches()
    model = tiny_model()
    first = fit(model, train, test, run_dir=tmp_path / "r", **FIT)
    checkpoint = tmp_path / "r" / "last.pt"
    stamp = checkpoint.stat().st_mtime_ns
    counted_train, counted_test = CountingBatches(train), CountingBatches(test)
    fresh = tiny_model()
    lines = []
    again = fit(fresh, counted_train, counted_test, run_dir=tmp_path / "r",
                **{**FIT, "log": lines.append})
    assert counted_train.count == 0 and counted_test.count == 0
    assert checkpoint.stat().st_mtime_ns == stamp
    assert again == first
    assert same_weights(fresh.state_dict(), model.state_dict())
    assert "reusing" in lines[0]
    # force=True trains again from the model as given.
    fit(tiny_model(), counted_train, test, run_dir=tmp_path / "r", force=True, **FIT)
    assert counted_train.count == 3 * len(train)


def test_config_mismatch_names_the_differing_keys(tmp_path):
    train, test = make_batches()
    fit(tiny_model(), train, test, run_dir=tmp_path / "r", config={"seed": 0, "model": "t"},
        **{**FIT, "epochs": 1})
    saved = (tmp_path / "r" / "config.json").read_text()
    with pytest.raises(ConfigMismatchError) as err:
        fit(tiny_model(), train, test, run_dir=tmp_path / "r", config={"seed": 1, "model": "t"},
            **{**FIT, "epochs": 1, "lr": 0.01})
    message = str(err.value)
    assert "fit.lr: saved 0.05, now 0.01" in message and "config.seed: saved 0, now 1" in message
    assert "config.model" not in message and "fit.epochs" not in message
    assert (tmp_path / "r" / "config.json").read_text() == saved  # nothing overwritten
    # Tuples and lists describe the same setting once saved as JSON.
    fit(tiny_model(), train, test, run_dir=tmp_path / "t", config={"hidden": (4, 2)},
        **{**FIT, "epochs": 1})
    fit(tiny_model(), train, test, run_dir=tmp_path / "t", config={"hidden": [4, 2]},
        **{**FIT, "epochs": 1})


def run_helper(run_dir, out, *extra):
    return subprocess.run([sys.executable, str(HELPER), str(run_dir), str(out), *extra],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    base = tmp_path_factory.mktemp("uninterrupted")
    done = run_helper(base / "run", base / "out.pt")
    assert done.returncode == 0, done.stderr
    return torch.load(base / "out.pt", weights_only=True)


@pytest.mark.parametrize("damage", ["none", "truncated last.pt"])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted, damage):
    run_dir = tmp_path / "run"
    # SIGKILL in the middle of epoch 3, after epoch 2's checkpoint.
    killed = run_helper(run_dir, tmp_path / "never.pt", "--kill-at", "3", "2")
    assert killed.returncode == -9, killed.stderr
    assert "epoch 2/4" in killed.stdout and "epoch 3/4" not in killed.stdout
    assert len(load_history(run_dir)["epoch"]) == 2
    if damage != "none":
        last = run_dir / "last.pt"
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])

    resumed = run_helper(run_dir, tmp_path / "out.pt")
    assert resumed.returncode == 0, resumed.stderr
    if damage == "none":
        assert "resuming after epoch 2/4" in resumed.stdout
        assert re.findall(r"^epoch (\d)/4", resumed.stdout, re.M) == ["3", "4"]
    else:  # prev.pt holds epoch 1: epoch 2 is trained again
        assert "falling back to prev.pt (epoch 1)" in resumed.stdout
        assert re.findall(r"^epoch (\d)/4", resumed.stdout, re.M) == ["2", "3", "4"]
    result = torch.load(tmp_path / "out.pt", weights_only=True)
    assert metrics(result["history"]) == metrics(uninterrupted["history"])
    assert same_weights(result["model"], uninterrupted["model"])


# --- final checkpoints ----------------------------------------------------------------

def checkpoint_files(run_dir):
    return sorted(p.name for p in run_dir.glob("*.pt*"))


def test_finished_run_keeps_only_a_final_checkpoint_that_reuse_reads(tmp_path):
    train, test = make_batches()
    model = tiny_model(dropout=0.3)
    full = {}

    def before_finishing(epoch, history):
        if epoch == FIT["epochs"]:  # the last epoch's full checkpoint, before it is slimmed
            full["size"] = (tmp_path / "r" / "last.pt").stat().st_size
            full["files"] = checkpoint_files(tmp_path / "r")

    # SGD with momentum: the optimiser state is as large as the weights.
    history = fit(model, train, test, run_dir=tmp_path / "r", on_epoch_end=before_finishing,
                  **FIT)
    assert full["files"] == ["last.pt", "prev.pt"]
    assert checkpoint_files(tmp_path / "r") == ["last.pt"]
    final = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert final["final"] is True and not {"optimizer", "scheduler", "scaler", "rng"} & set(final)
    assert (tmp_path / "r" / "last.pt").stat().st_size < full["size"]
    params = sum(p.numel() for p in model.parameters())
    assert full["size"] - (tmp_path / "r" / "last.pt").stat().st_size > 4 * params  # the momentum
    # Reuse: same history, same weights, nothing trained.
    counted = CountingBatches(train)
    fresh = tiny_model(seed=1, dropout=0.3)
    again = fit(fresh, counted, test, run_dir=tmp_path / "r", **FIT)
    assert counted.count == 0 and again == history
    assert same_weights(fresh.state_dict(), model.state_dict())
    # More epochs cannot be resumed from weights alone. (A changed `epochs` is already a
    # config mismatch; edit config.json to reach the guard behind it.)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    saved["fit"]["epochs"] = FIT["epochs"] + 1
    (tmp_path / "r" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="final checkpoint.*cannot be resumed for epochs 4-4"):
        fit(tiny_model(), train, test, run_dir=tmp_path / "r", **{**FIT, "epochs": 4})


def test_a_run_kept_without_weights_is_reused_from_its_history(tmp_path):
    train, test = make_batches()
    history = fit(tiny_model(), train, test, run_dir=tmp_path / "r", keep_weights=False, **FIT)
    saved = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert saved["final"] is True and saved["model"] == {} and saved["history"] == history
    with_weights = tmp_path / "w"
    fit(tiny_model(), train, test, run_dir=with_weights, **FIT)
    assert (tmp_path / "r" / "last.pt").stat().st_size < (with_weights / "last.pt").stat().st_size / 2
    # A reuse returns the history, trains nothing and leaves the model as built.
    untouched, counted, lines = tiny_model(seed=1), CountingBatches(train), []
    again = fit(untouched, counted, test, run_dir=tmp_path / "r", keep_weights=False,
                **{**FIT, "log": lines.append})
    assert again == history and counted.count == 0
    assert same_weights(untouched.state_dict(), tiny_model(seed=1).state_dict())
    assert any("reusing its history (force=True" in line for line in lines)


def test_stopped_run_keeps_only_a_final_checkpoint(tmp_path):
    train, test = make_batches()
    history = fit(tiny_model(), train, test, run_dir=tmp_path / "r", **{**FIT, "lr": 1e10})
    assert history["stopped"] and checkpoint_files(tmp_path / "r") == ["last.pt"]
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["final"] is True


def test_reuse_slims_a_full_checkpoint_left_by_older_code(tmp_path):
    train, test = make_batches()
    model = tiny_model()
    history = fit(model, train, test, run_dir=tmp_path / "r", **FIT)
    # What a finished run looked like before final checkpoints: full state in both files.
    last = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    full = {**last, "optimizer": {"state": {}, "param_groups": []}, "scheduler": None,
            "scaler": {}, "rng": rng_state()}
    del full["final"]
    torch.save(full, tmp_path / "r" / "last.pt")
    torch.save(full, tmp_path / "r" / "prev.pt")
    fresh = tiny_model(seed=1)
    assert fit(fresh, train, test, run_dir=tmp_path / "r", **FIT) == history
    assert same_weights(fresh.state_dict(), model.state_dict())
    assert checkpoint_files(tmp_path / "r") == ["last.pt"]
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["final"] is True


def test_unfinished_run_keeps_the_full_state(interrupted_run):
    run_dir, _, _ = interrupted_run
    assert checkpoint_files(run_dir) == ["last.pt", "prev.pt"]
    for name in ("last.pt", "prev.pt"):
        state = torch.load(run_dir / name, weights_only=True)
        assert "final" not in state and {"optimizer", "rng", "scaler"} <= set(state)


# --- damaged checkpoints --------------------------------------------------------------

@pytest.fixture
def interrupted_run(tmp_path):
    """A 3-epoch run interrupted after epoch 2 (last.pt holds epoch 2, prev.pt epoch 1),
    and the history and weights of the same run trained without interruption."""
    train, test = make_batches()
    whole = tiny_model(dropout=0.3)  # seeds torch: both runs start from the same RNG state
    history = fit(whole, train, test, run_dir=tmp_path / "whole", **FIT)

    def interrupt(epoch, _history):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(tiny_model(dropout=0.3), train, test, run_dir=tmp_path / "r", on_epoch_end=interrupt,
            **FIT)
    return tmp_path / "r", history, whole.state_dict()


def refit(run_dir, log=quiet):
    train, test = make_batches()
    model = tiny_model(dropout=0.3)
    history = fit(model, train, test, run_dir=run_dir, **{**FIT, "log": log})
    return history, model.state_dict()


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_last_checkpoint_falls_back_to_prev(interrupted_run, damage):
    run_dir, history, weights = interrupted_run
    last = run_dir / "last.pt"
    if damage == "truncate":
        last.write_bytes(last.read_bytes()[:1000])
    else:
        last.write_bytes(b"\x00not a checkpoint\xff" * 100)
    with pytest.warns(RuntimeWarning, match="last.pt: cannot be read.*falling back to prev.pt"):
        again, again_weights = refit(run_dir)
    # Epochs 2 and 3 are trained from epoch 1's full state, to the uninterrupted result.
    assert metrics(again) == metrics(history)
    assert same_weights(again_weights, weights)


def test_damaged_final_checkpoint_is_a_clear_error(tmp_path):
    train, test = make_batches()
    fit(tiny_model(), train, test, run_dir=tmp_path / "r", **FIT)
    (tmp_path / "r" / "last.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="last.pt: cannot be read.*force=True"):
        fit(tiny_model(), train, test, run_dir=tmp_path / "r", **FIT)


def test_both_checkpoints_damaged_is_a_clear_error(interrupted_run):
    run_dir, _, _ = interrupted_run
    (run_dir / "last.pt").write_bytes(b"garbage")
    prev = run_dir / "prev.pt"
    prev.write_bytes(prev.read_bytes()[:500])
    with pytest.raises(CheckpointError) as err:
        refit(run_dir)
    message = str(err.value)
    assert "last.pt: cannot be read" in message and "prev.pt: cannot be read" in message
    assert "force=True" in message


def test_foreign_pickles_are_refused(interrupted_run):
    run_dir, _, _ = interrupted_run
    torch.save({"weights": torch.ones(2)}, run_dir / "last.pt")  # loads, but is no checkpoint
    # An arbitrary pickled object is refused by weights_only loading, never executed.
    torch.save(NaNAfter(), run_dir / "prev.pt")
    with pytest.raises(CheckpointError) as err:
        refit(run_dir)
    assert "last.pt: not a checkpoint" in str(err.value)
    assert "prev.pt: cannot be read" in str(err.value)


def test_history_without_checkpoints_is_not_restarted_silently(interrupted_run):
    run_dir, _, _ = interrupted_run
    (run_dir / "last.pt").unlink()
    (run_dir / "prev.pt").unlink()
    with pytest.raises(CheckpointError, match="records 2 finished epoch"):
        refit(run_dir)


# --- divergence -----------------------------------------------------------------------

def test_huge_lr_stops_with_a_clear_message(tmp_path):
    train, test = make_batches()
    model = tiny_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    lines = []
    history = fit(model, train, test, run_dir=tmp_path / "r",
                  **{**FIT, "lr": 1e10, "log": lines.append})
    assert re.match(r"non-finite loss at epoch 1, batch \d/4", history["stopped"])
    assert history["epoch"] == [] and lines[-1].startswith("STOPPED")
    assert same_weights(model.state_dict(), initial)  # back to the last good (initial) weights
    assert load_history(tmp_path / "r")["stopped"] == history["stopped"]
    assert run_status(tmp_path / "r", 3) == "stopped"
    # A re-run reports the stop and trains nothing.
    counted = CountingBatches(train)
    again = fit(tiny_model(), counted, test, run_dir=tmp_path / "r", **{**FIT, "lr": 1e10})
    assert counted.count == 0 and again == history


class NaNAfter(nn.Module):
    """Passes its input through until switched on, then outputs NaN."""

    def __init__(self):
        super().__init__()
        self.on = False

    def forward(self, x):
        return x * float("nan") if self.on else x


def test_nan_in_a_later_epoch_keeps_the_good_epochs(tmp_path):
    train, test = make_batches()
    model = tiny_model()
    switch = NaNAfter()
    model.append(switch)
    epoch_one = {}

    def after_epoch(epoch, history):
        epoch_one.update({k: v.clone() for k, v in model.state_dict().items()})
        switch.on = True

    history = fit(model, train, test, run_dir=tmp_path / "r", on_epoch_end=after_epoch, **FIT)
    assert history["epoch"] == [1]
    assert history["stopped"].startswith("non-finite loss at epoch 2, batch 1/4: loss=nan")
    assert same_weights(model.state_dict(), epoch_one)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# --- plan -----------------------------------------------------------------------------

def test_plan_counts_images_and_reads_run_status(tmp_path):
    train, test = make_batches()
    fit(tiny_model(), train, test, run_dir=tmp_path / "done", **{**FIT, "epochs": 1})
    fit(tiny_model(), train, test, run_dir=tmp_path / "half", **{**FIT, "epochs": 1})
    lines = []
    totals = plan([{"name": "done", "epochs": 1, "train_images": 32, "test_images": 16},
                   {"name": "half", "epochs": 4, "train_images": 32, "test_images": 16},
                   {"name": "new", "epochs": 40, "train_images": 45_000, "test_images": 10_000}],
                  runs_dir=tmp_path, log=lines.append)
    assert totals == {"runs": 3, "epochs": 45, "images": 48 + 4 * 48 + 40 * 55_000,
                      "remaining_epochs": 3 + 40, "remaining_images": 3 * 48 + 40 * 55_000}
    assert lines[1].endswith("finished") and lines[2].endswith("partial 1/4")
    assert lines[3].endswith("new") and "2,200,000" in lines[3]
    with pytest.raises(ValueError, match="train_images"):
        plan([{"name": "x", "epochs": 1}], log=quiet)


def test_plan_adds_the_compute_estimate_when_models_are_named():
    from common.plan import model_flops, t4_estimate

    lines = []
    totals = plan((r for r in [{"name": "a", "model": "alexnet", "input_size": 32, "epochs": 2,
                                "train_images": 100, "test_images": 10}]), log=lines.append)
    forward = model_flops("common", "alexnet", 32)
    assert totals["flops"] == forward * (3 * 100 * 2 + 10 * 2)
    assert totals["t4_seconds_estimate"] == pytest.approx(t4_estimate(totals["flops"]))
    assert any("estimated" in line and "T4" in line for line in lines)


def test_force_removes_only_the_runs_own_files(tmp_path):
    train, test = make_batches()
    fit(tiny_model(), train, test, run_dir=tmp_path / "r", **{**FIT, "epochs": 1})
    keep = tmp_path / "r" / "notes.txt"
    keep.write_text("mine")
    fit(tiny_model(), train, test, run_dir=tmp_path / "r", force=True, **{**FIT, "epochs": 1})
    assert keep.read_text() == "mine"


def test_lr_multipliers_give_the_head_its_own_lr_and_leave_frozen_weights_out(tmp_path):
    from common.optim import parameter_groups

    model = tiny_model()
    head = str(len(model) - 1)  # the last module of the Sequential
    model[1].weight.requires_grad_(False)
    groups = parameter_groups(model, 0.01, {head: 10})
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.1)]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model[-1].parameters()}
    assert id(model[1].weight) not in {id(p) for g in groups for p in g["params"]}
    with pytest.raises(ConfigError, match="no parameter .* under 'fc'"):
        parameter_groups(model, 0.01, {"fc": 10})
    # fit trains with them: the head's lr is 10x the backbone's through a cosine schedule.
    train, test = make_batches()
    seen = []
    fit(model, train, test, run_dir=tmp_path / "r", lr_multipliers={head: 10},
        on_epoch_end=lambda e, h: seen.append(None), **{**FIT, "epochs": 1, "schedule": "cosine"})
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["fit"]["lr_multipliers"] == {head: 10} and seen


# --- spaced checkpoints (checkpoint_overhead) -----------------------------------------

class ClockedBatches(CountingBatches):
    """Training batches whose every epoch takes `seconds` on the fake clock `now`."""

    def __init__(self, batches, now, seconds):
        super().__init__(batches)
        self.now, self.seconds = now, seconds

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        self.now[0] += self.seconds


@pytest.fixture
def slow_writes(monkeypatch):
    """RunDir on a fake clock on which every checkpoint write takes 1 s. Returns the
    clock (a one-item list, in seconds) and the epochs of the checkpoints written."""
    now, written = [0.0], []
    save = RunDir.save

    def slow_save(self, state):
        save(self, state)
        now[0] += 1.0
        written.append(state["epoch"])

    monkeypatch.setattr(RunDir, "clock", staticmethod(lambda: now[0]))
    monkeypatch.setattr(RunDir, "save", slow_save)
    return now, written


def test_spaced_checkpoints_resume_from_the_last_one_to_the_same_result(tmp_path, slow_writes):
    # 1 s writes in at most 5% of the time: one per 20 s of training, so with 8 s epochs
    # after epochs 0 (the start) and 3; the final checkpoint replaces last.pt at the end.
    now, written = slow_writes
    train, test = make_batches()
    settings = {**FIT, "epochs": 6, "checkpoint_overhead": 0.05}
    whole = tiny_model(dropout=0.3)
    history = fit(whole, ClockedBatches(train, now, 8.0), test, run_dir=tmp_path / "whole",
                  **settings)
    assert written == [0, 3]

    def interrupt(epoch, _history):
        if epoch == 5:
            raise Interrupt

    run_dir, lines = tmp_path / "r", []
    with pytest.raises(Interrupt):
        fit(tiny_model(dropout=0.3), ClockedBatches(train, now, 8.0), test, run_dir=run_dir,
            on_epoch_end=interrupt, **{**settings, "log": lines.append})
    assert written == [0, 3] * 2
    assert re.fullmatch(r"checkpoints: (about every \d+ epochs|only at the end) \(a write takes "
                        r"1 s; at most 5% of training time\)", lines[1]), lines
    assert [torch.load(run_dir / name, weights_only=True)["epoch"]
            for name in ("last.pt", "prev.pt")] == [3, 0]
    assert load_history(run_dir)["epoch"] == [1, 2, 3, 4, 5]  # history.json: every epoch
    assert run_status(run_dir, 6) == "partial 5/6"

    # The resume goes back to epoch 3's checkpoint (history.json with it), trains 4-6.
    lines, seen = [], []

    class Peek(ClockedBatches):  # what history.json holds as each epoch starts
        def set_epoch(self, epoch):
            seen.append(load_history(run_dir)["epoch"])
            super().set_epoch(epoch)

    model = tiny_model(dropout=0.3)
    again = fit(model, Peek(train, now, 8.0), test, run_dir=run_dir,
                **{**settings, "log": lines.append})
    assert lines[0].endswith("resuming after epoch 3/6, its last checkpoint (epochs 4-5 are "
                             "trained again)")
    assert re.findall(r"^epoch (\d)/6", "\n".join(lines), re.M) == ["4", "5", "6"]
    assert seen[0] == [1, 2, 3]
    assert written[4:] == [4]  # no write timed yet in this session: the first epoch's is due
    assert metrics(again) == metrics(history)
    assert same_weights(model.state_dict(), whole.state_dict())
    assert checkpoint_files(run_dir) == ["last.pt"]


@pytest.mark.parametrize("overhead, expected", [(None, [0, 1, 2, 3]), (0, [0, 1, 2, 3]),
                                                (1e-9, [0])])
def test_the_final_checkpoint_is_always_written(tmp_path, monkeypatch, overhead, expected):
    written = []
    save = RunDir.save
    monkeypatch.setattr(RunDir, "save", lambda self, state: (written.append(state["epoch"]),
                                                             save(self, state)))
    train, test = make_batches()
    settings = {**FIT, "checkpoint_overhead": overhead}  # 1e-9: none due between start and end
    model = tiny_model()
    history = fit(model, train, test, run_dir=tmp_path / "r", **settings)
    assert written == expected
    final = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert final["final"] is True and final["epoch"] == 3 and final["history"] == history
    assert checkpoint_files(tmp_path / "r") == ["last.pt"]
    fresh = tiny_model(seed=1)
    assert fit(fresh, train, test, run_dir=tmp_path / "r", **settings) == history  # reused
    assert same_weights(fresh.state_dict(), model.state_dict())
    if overhead != 1e-9:
        return
    # A run that stops (diverges) is over too: a final checkpoint of its last checkpoint.
    switch, lines = NaNAfter(), []
    model = tiny_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    model.append(switch)
    stopped = fit(model, train, test, run_dir=tmp_path / "s",
                  on_epoch_end=lambda epoch, h: setattr(switch, "on", epoch == 2),
                  **{**settings, "log": lines.append})
    assert stopped["stopped"].startswith("non-finite loss at epoch 3") and stopped["epoch"] == []
    assert lines[-1].endswith("(kept as of epoch 0, its last checkpoint)")
    assert same_weights(model.state_dict(), initial)
    assert load_history(tmp_path / "s") == stopped
    assert checkpoint_files(tmp_path / "s") == ["last.pt"]
    assert torch.load(tmp_path / "s" / "last.pt", weights_only=True)["final"] is True


def test_killed_run_with_spaced_checkpoints_resumes_to_the_uninterrupted_result(
        tmp_path, uninterrupted):
    run_dir, spaced = tmp_path / "run", ("--checkpoint-overhead", "1e-9")  # only epoch 0's
    killed = run_helper(run_dir, tmp_path / "never.pt", "--kill-at", "3", "2", *spaced)
    assert killed.returncode == -9, killed.stderr
    assert load_history(run_dir)["epoch"] == [1, 2]
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 0
    resumed = run_helper(run_dir, tmp_path / "out.pt", *spaced)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 0/4, its last checkpoint (epochs 1-2 are trained again)" in \
        resumed.stdout
    assert re.findall(r"^epoch (\d)/4", resumed.stdout, re.M) == ["1", "2", "3", "4"]
    result = torch.load(tmp_path / "out.pt", weights_only=True)
    assert metrics(result["history"]) == metrics(uninterrupted["history"])
    assert same_weights(result["model"], uninterrupted["model"])


def test_the_checkpoint_plan_line(tmp_path):
    run = RunDir(tmp_path)
    assert run.checkpoint_plan(None, 8.0, 5) == "checkpoints: every epoch"
    run.save_seconds = 1.0  # 5% of the time: a write per 20 s of training
    assert run.checkpoint_plan(0.05, 8.0, 5) == (
        "checkpoints: about every 3 epochs (a write takes 1 s; at most 5% of training time)")
    assert run.checkpoint_plan(0.05, 30.0, 5).startswith("checkpoints: every epoch (")
    assert run.checkpoint_plan(0.05, 2.0, 5).startswith("checkpoints: only at the end (")
