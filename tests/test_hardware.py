"""common.hardware, and the GPU branch of training run on the CPU under emulation.

COMP5541_EMULATE=t4 gives a CPU run a T4's choices (float16 autocast, an enabled
GradScaler, fused optimiser kernels, channels_last), =bf16 an L4/A100's. The
tests below set it per test (monkeypatch), since hardware_for reads it per call.

Oracles: the stock (unfused) optimiser kernel for a skipped first step; torch's
own load_state_dict for the numbers of a loaded optimiser state. Resumed runs
against uninterrupted ones: test_resume_matrix.
"""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from common.batches import DeviceBatches
from common.config import ConfigError
from common.hardware import EMULATE_VARIABLE, EVAL_BATCH_MULTIPLE, hardware_for
from common.optim import KERNEL_OPTIONS, load_optimizer_state
from common.train import fit, make_optimizer, train_one_epoch
from test_train import (FIT, STATS, Interrupt, loud_model, make_batches, same_weights, synthetic,
                        tiny_model)

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread


@pytest.fixture
def emulate(monkeypatch):
    """emulate("t4") / emulate("bf16") / emulate(None): the side the next fit runs on."""
    def switch(side):
        if side in (None, "cpu"):
            monkeypatch.delenv(EMULATE_VARIABLE, raising=False)
        else:
            monkeypatch.setenv(EMULATE_VARIABLE, side)
    switch(None)
    return switch


# --- the choices ----------------------------------------------------------------------

def test_the_cpu_runs_float32_unfused_in_the_default_layout(emulate):
    hw = hardware_for("cpu")
    assert (hw.autocast_dtype(True), hw.scaler_enabled(True), hw.fused,
            hw.use_channels_last(True), hw.eval_batch_size(128, 4), hw.cudnn_benchmark) == (
        None, False, False, False, 128, False)
    assert not hw.grad_scaler(True).is_enabled()
    assert hw.provenance(True, True) == {"hardware": "cpu", "precision": "float32",
                                         "channels_last": False, "fused": False}


@pytest.mark.parametrize("side, dtype, scaler", [("t4", torch.float16, True),
                                                 ("bf16", torch.bfloat16, False)])
def test_emulation_takes_the_gpus_choices(emulate, side, dtype, scaler):
    emulate(side)
    hw = hardware_for("cpu")
    assert (hw.autocast_dtype(True), hw.scaler_enabled(True), hw.fused,
            hw.use_channels_last(True)) == (dtype, scaler, True, True)
    assert hw.grad_scaler(True).is_enabled() is scaler
    # The user's preferences still rule: amp=False is float32, channels_last=False NCHW.
    assert (hw.autocast_dtype(False), hw.scaler_enabled(False), hw.use_channels_last(False)) == (
        None, False, False)
    assert [hw.eval_batch_size(128, m) for m in EVAL_BATCH_MULTIPLE.values()] == [512, 256]
    assert hw.cudnn_benchmark is False  # the CPU never calls cuDNN
    assert hw.name == f"{side} (emulated on cpu)"


@pytest.mark.parametrize("native_bf16, dtype", [(False, torch.float16), (True, torch.bfloat16)])
def test_real_cuda_takes_bfloat16_only_where_the_gpu_has_it(emulate, monkeypatch, native_bf16,
                                                             dtype):
    asked = {}

    def is_bf16_supported(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return native_bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    hw = hardware_for("cuda")
    assert asked == {"including_emulation": False}  # a T4 "supports" bf16 only by emulation
    assert (hw.autocast_dtype(True), hw.scaler_enabled(True), hw.fused, hw.channels_last,
            hw.cudnn_benchmark, hw.eval_batch_size(64, 2)) == (
        dtype, dtype == torch.float16, True, True, True, 128)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    hw.set_backend_flags()
    assert torch.backends.cudnn.benchmark is True


def test_an_unknown_emulation_names_the_valid_values(emulate):
    emulate("a100")
    with pytest.raises(ConfigError, match=r"COMP5541_EMULATE='a100'.*valid values: t4, bf16"):
        hardware_for("cpu")


# --- bug 1: a skipped first step and fused SGD ------------------------------------------

def overflowing_steps(name: str, fused: bool, steps: int = 4):
    """The amplified model trained on one batch under float16 autocast and an enabled
    GradScaler, whose first step overflows. Returns (optimiser state after the first
    step, the scale after it, the weights after `steps` steps)."""
    model = loud_model()
    x, y = next(iter(make_batches()[0]))
    opt = make_optimizer(name, model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                         weight_decay=5e-4, fused=fused)
    scaler = torch.amp.GradScaler("cpu")
    step = dict(criterion=torch.nn.CrossEntropyLoss(), scaler=scaler, device=CPU,
                dtype=torch.float16)
    train_one_epoch(model, [(x, y)], opt, **step)
    first = [v.clone() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    scale = scaler.get_scale()
    train_one_epoch(model, [(x, y)] * (steps - 1), opt, **step)
    return first, scale, model.state_dict()


@pytest.fixture
def nan_for_uninitialised_memory():
    """torch.empty and empty_like fill with NaN in deterministic mode
    (torch.utils.deterministic.fill_uninitialized_memory): memory a kernel leaves
    unwritten shows as NaN every time, not only when the allocator hands back junk."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(was)


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_a_skipped_first_step_leaves_the_state_finite_and_the_stock_kernels_result(
        name, nan_for_uninitialised_memory):
    fused_state, scale, fused_weights = overflowing_steps(name, fused=True)
    assert scale == 2.0 ** 15  # the first step overflowed and was skipped
    bad = [tuple(v.shape) for v in fused_state if not torch.isfinite(v).all()]
    assert not bad, f"non-finite optimiser state after the skipped first step: {bad}"
    _, _, stock_weights = overflowing_steps(name, fused=False)
    if name == "adam":  # fused AdamW rounds differently from the stock kernel, skip or not
        for key, weights in fused_weights.items():
            torch.testing.assert_close(weights, stock_weights[key], rtol=1e-6, atol=1e-7)
    else:  # sgd: a zero momentum buffer is the stock first step exactly; rmsprop: no fused kernel
        assert same_weights(fused_weights, stock_weights)


# Small learning rates: the amplified inputs (x100) make large gradients once unscaled.
@pytest.mark.parametrize("optimizer, lr", [("sgd", 5e-4), ("adam", 1e-3), ("rmsprop", 3e-4)])
def test_emulated_t4_trains_an_overflowing_model_to_finite_falling_losses(
        tmp_path, emulate, optimizer, lr):
    emulate("t4")
    train, test = make_batches()
    history = fit(loud_model(), train, test, run_dir=tmp_path / "r", optimizer=optimizer,
                  **{**FIT, "lr": lr, "epochs": 4})
    assert history["stopped"] is None, history["stopped"]
    assert all(math.isfinite(v) for v in history["train_loss"] + history["eval_loss"])
    # Epoch 1 includes the skipped steps of the scaler's calibration; then the loss falls.
    losses = history["train_loss"]
    assert losses[3] < losses[2] < losses[1] and losses[3] < losses[0], losses
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (saved["precision"], saved["fused"], saved["hardware"]) == (
        "float16", True, "t4 (emulated on cpu)")


# --- bugs 2-4: resuming on another kind of device ---------------------------------------

def interrupt_after(epoch):
    def stop(done, _history):
        if done == epoch:
            raise Interrupt
    return stop


def notebook_batches(batch_size=8):
    """Train and test batches as the Q2 notebook builds them on the current side: the
    held-out batches 4x larger on a GPU (2 batches of the 16 test images on the CPU,
    1 on a T4)."""
    images, labels = synthetic(32)
    train = DeviceBatches(images, labels, batch_size=batch_size, train=True, crop_padding=1,
                          seed=0, **STATS)
    size = hardware_for("cpu").eval_batch_size(batch_size, EVAL_BATCH_MULTIPLE["Q2"])
    return train, DeviceBatches(images[:16], labels[:16], batch_size=size, **STATS)


def test_a_run_started_on_the_cpu_resumes_on_a_t4(tmp_path, emulate):
    # Bug 4: Run all on Colab's CPU runtime, then switch to a T4 and run again. The
    # notebook passes channels_last only where it applies, and evaluates in larger
    # batches on the GPU: neither may refuse the resume.
    train, test = notebook_batches()
    with pytest.raises(Interrupt):
        fit(tiny_model(), train, test, run_dir=tmp_path / "r", channels_last=False,
            on_epoch_end=interrupt_after(1), **FIT)
    emulate("t4")
    train, test = notebook_batches()
    history = fit(tiny_model(), train, test, run_dir=tmp_path / "r", channels_last=True, **FIT)
    assert history["epoch"] == [1, 2, 3] and history["stopped"] is None
    assert all(math.isfinite(v) for v in history["train_loss"])
    # How the run started is provenance in config.json, not a setting of the run.
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert {k: saved[k] for k in ("hardware", "precision", "channels_last", "eval_batches")} == {
        "hardware": "cpu", "precision": "float32", "channels_last": False, "eval_batches": 2}
    assert not {"amp", "channels_last", "eval_batches"} & set(saved["fit"])


def test_runs_saved_with_layout_and_precision_as_settings_are_still_reused(tmp_path):
    # Bug 4, older runs: config.json written before they became provenance.
    train, test = make_batches()
    history = fit(tiny_model(), train, test, run_dir=tmp_path / "r", **FIT)
    path = tmp_path / "r" / "config.json"
    saved = json.loads(path.read_text())
    saved["fit"].update(amp=False, channels_last=True, eval_batches=99)
    path.write_text(json.dumps(saved))
    assert fit(tiny_model(seed=1), train, test, run_dir=tmp_path / "r", **FIT) == history


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("start", ["cpu", "bf16"])
def test_a_t4_resumes_a_run_saved_without_a_scaler(tmp_path, emulate, optimizer, start):
    # Bug 2: a disabled scaler saves {}; a T4's enabled one cannot load that.
    emulate(start)
    train, test = make_batches()
    with pytest.raises(Interrupt):
        fit(tiny_model(), train, test, run_dir=tmp_path / "r", optimizer=optimizer,
            channels_last=True, on_epoch_end=interrupt_after(1), **FIT)
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["scaler"] == {}
    emulate("t4")
    history = fit(tiny_model(), train, test, run_dir=tmp_path / "r", optimizer=optimizer,
                  channels_last=True, **FIT)
    assert history["epoch"] == [1, 2, 3] and history["stopped"] is None


@pytest.mark.parametrize("optimizer, kernel", [("sgd", "_fused_sgd_"), ("adam", "_fused_adamw_")])
def test_a_resume_keeps_the_live_optimizers_kernels(tmp_path, emulate, monkeypatch, optimizer,
                                                    kernel):
    # Bug 3: the saved param groups carry the saved kernel options (CPU: fused=None);
    # restored on a T4, the GradScaler hands its scale to an unfused kernel.
    train, test = make_batches()
    with pytest.raises(Interrupt):
        fit(tiny_model(), train, test, run_dir=tmp_path / "r", optimizer=optimizer,
            on_epoch_end=interrupt_after(2), **FIT)
    emulate("t4")
    calls, fused = [], getattr(torch, kernel)
    monkeypatch.setattr(torch, kernel, lambda *a, **k: (calls.append(1), fused(*a, **k))[1])
    history = fit(tiny_model(), train, test, run_dir=tmp_path / "r", optimizer=optimizer, **FIT)
    assert history["epoch"] == [1, 2, 3] and history["stopped"] is None
    assert len(calls) == len(train)  # epoch 3, every step on the fused kernel


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("saved_fused, live_fused", [(False, True), (True, False)])
def test_loaded_state_keeps_the_live_kernel_options_and_the_saved_numbers(
        optimizer, saved_fused, live_fused):
    model = tiny_model()
    saved = make_optimizer(optimizer, model.parameters(), lr=0.1, fused=saved_fused)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    saved.step()
    live = make_optimizer(optimizer, model.parameters(), lr=0.5, fused=live_fused)
    kernels = [{k: g.get(k) for k in KERNEL_OPTIONS} for g in live.param_groups]
    load_optimizer_state(live, saved.state_dict())
    assert [{k: g.get(k) for k in KERNEL_OPTIONS} for g in live.param_groups] == kernels
    assert live.param_groups[0]["lr"] == 0.1  # the rest is the checkpoint's
    for p in model.parameters():
        for key, value in saved.state[p].items():
            assert torch.equal(torch.as_tensor(live.state[p][key]), torch.as_tensor(value))
    two_groups = make_optimizer(optimizer, [{"params": [model[1].weight]},
                                            {"params": [model[1].bias]}], lr=0.1)
    with pytest.raises(ValueError, match="different number of parameter groups"):
        load_optimizer_state(live, two_groups.state_dict())


# --- the plan's timing ------------------------------------------------------------------

def test_the_plans_timing_runs_with_the_runs_own_cudnn_settings(monkeypatch, emulate):
    # The plan times steps as fit will run them: cuDNN's autotuning on before the
    # warm-up step (fit sets it in _training_parts), else the timed kernels are others.
    from common import speed

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    on_cuda = dataclasses.replace(hardware_for("cpu"), cudnn_benchmark=True)  # CUDA's flags
    monkeypatch.setattr(speed, "hardware_for", lambda device: on_cuda)
    monkeypatch.setattr(speed, "build_model", lambda name: tiny_model())
    flags, real = [], speed.train_one_epoch

    def timed(*args, **kwargs):
        flags.append(torch.backends.cudnn.benchmark)
        return real(*args, **kwargs)

    monkeypatch.setattr(speed, "train_one_epoch", timed)
    assert speed.time_training_step("tiny", 8, 4, "cpu", steps=1) > 0
    assert flags == [True, True]  # the warm-up step and the timed one


def test_emulated_timings_are_cached_apart_from_the_cpus(emulate):
    from common.speed import device_label

    plain = device_label("cpu")
    emulate("t4")
    assert device_label("cpu") == plain.replace(", torch", " emulating t4, torch", 1)
