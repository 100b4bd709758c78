"""common.extras.numpy_mlp: the whole network against finite differences and an
independent torch model, SGD with momentum against torch.optim.SGD, training
that learns, diverges gracefully and is reused; extras/numpy_mlp.ipynb on real
Fashion-MNIST in smoke mode."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import threadpoolctl
import torch
import torch.nn.functional as F

from common import backprop as bp
from common import gradcheck as gc
from common.extras import mlp_checks
from common.extras import numpy_mlp as nm
from common.files import settings_digest
from conftest import bundle_tmpdir
from extras_helpers import cleanup, fashion_data_dir, run_extra


def blobs(n=300, d=10, classes=3, seed=0, spread=0.6):
    """Linearly separable-ish Gaussian blobs: a problem an MLP must learn."""
    r = np.random.default_rng(seed)
    centres = r.normal(scale=3.0, size=(classes, d))
    y = r.integers(0, classes, size=n)
    return centres[y] + r.normal(scale=spread, size=(n, d)), y


@pytest.mark.parametrize("activation", nm.ACTIVATIONS)
def test_whole_network_gradients_against_finite_differences_and_torch(activation):
    r = np.random.default_rng(1)
    sizes = [6, 5, 4, 3]
    params = nm.init_mlp(sizes, activation, seed=2)
    for k in params:
        if k.startswith(("b", "alpha")):
            params[k] = params[k] + r.uniform(0.05, 0.3, size=params[k].shape)
    x, y = r.normal(size=(7, 6)), r.integers(0, 3, size=7)
    loss, grads = nm.mlp_loss(params, x, y, activation)
    assert set(grads) == set(params)
    for k in params:
        fd = gc.numerical_gradient(lambda v, k=k: nm.mlp_loss({**params, k: v}, x, y, activation)[0],
                                   params[k].copy())
        assert gc.rel_error(grads[k], fd) < gc.FD_TOLERANCE, k
    # An independent torch model built layer by layer with nn modules.
    layers = []
    for i in range(1, 4):
        lin = torch.nn.Linear(sizes[i - 1], sizes[i]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(params[f"W{i}"]))
            lin.bias.copy_(torch.tensor(params[f"b{i}"]))
        layers.append(lin)
        if i < 3:
            if activation == "prelu":
                act = torch.nn.PReLU(sizes[i]).double()
                with torch.no_grad():
                    act.weight.copy_(torch.tensor(params[f"alpha{i}"]))
            else:
                act = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}[activation]()
            layers.append(act)
    net = torch.nn.Sequential(*layers)
    ref = F.cross_entropy(net(torch.tensor(x)), torch.tensor(y))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    for i in range(1, 4):
        lin = layers[2 * (i - 1)]
        assert gc.rel_error(grads[f"W{i}"], lin.weight.grad.numpy()) < gc.AUTOGRAD_TOLERANCE
        assert gc.rel_error(grads[f"b{i}"], lin.bias.grad.numpy()) < gc.AUTOGRAD_TOLERANCE
        if activation == "prelu" and i < 3:
            assert gc.rel_error(grads[f"alpha{i}"], layers[2 * i - 1].weight.grad.numpy()) < gc.AUTOGRAD_TOLERANCE


def test_layer_and_network_check_tables_pass_and_would_catch_a_bug(monkeypatch):
    rows = mlp_checks.layer_checks(seed=3) + mlp_checks.network_checks(seed=3)
    assert all(r["fd_error"] < gc.FD_TOLERANCE and r["autograd_error"] < gc.AUTOGRAD_TOLERANCE for r in rows)
    # A wrong tanh derivative (missing the square) must show up in both references.
    monkeypatch.setattr(bp, "tanh_backward", lambda dout, out: dout * (1.0 - out))
    broken = [r for r in mlp_checks.network_checks(seed=3) if r["activation"] == "tanh" and r["param"] == "W1"]
    assert broken[0]["fd_error"] > 1e-3 and broken[0]["autograd_error"] > 1e-3


def test_sgd_momentum_matches_torch_sgd_over_several_steps():
    r = np.random.default_rng(4)
    params = {"w": r.normal(size=(3, 2))}
    tw = torch.tensor(params["w"], requires_grad=True)
    opt = torch.optim.SGD([tw], lr=0.1, momentum=0.8)
    velocity = {}
    for step in range(5):
        g = r.normal(size=(3, 2))
        nm.sgd_momentum_step(params, {"w": g}, velocity, lr=0.1, momentum=0.8)
        tw.grad = torch.tensor(g)
        opt.step()
        np.testing.assert_allclose(params["w"], tw.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_training_learns_a_separable_problem():
    x, y = blobs()
    xv, yv = blobs(n=100, seed=0)  # same centres (same seed), new draws of the labels and noise
    params = nm.init_mlp([10, 16, 3], "relu", seed=0)
    before = nm.evaluate(params, xv, yv, "relu")
    history = nm.train(params, x, y, xv, yv, activation="relu", epochs=5, batch_size=32, lr=0.05,
                       momentum=0.9, log=None)
    assert history["stopped"] is None
    assert len(history["iter_loss"]) == 5 * -(-300 // 32)
    assert history["val_acc"][-1] > 0.9 > before["acc"]
    assert np.mean(history["iter_loss"][-10:]) < 0.5 * np.mean(history["iter_loss"][:10])


def test_diverging_training_stops_and_restores_the_last_good_weights():
    x, y = blobs()
    params = nm.init_mlp([10, 16, 3], "relu", seed=0)
    start = {k: v.copy() for k, v in params.items()}
    history = nm.train(params, x * 1e3, y, x, y, activation="relu", epochs=3, batch_size=32, lr=50.0,
                       momentum=0.99, log=None)
    assert history["stopped"] and "learning rate 50" in history["stopped"]
    done = len(history["val_acc"])
    assert done < 3 and len(history["train_loss"]) == done and np.all(np.isfinite(history["val_loss"]))
    # The weights are those of the last finished epoch (the start, if none finished).
    assert all(np.all(np.isfinite(v)) for v in params.values())
    if done == 0:
        assert all(np.array_equal(params[k], start[k]) for k in params)
    else:
        assert np.isfinite(nm.evaluate(params, x, y, "relu")["loss"])


def counting_train(monkeypatch):
    """Wrap nm.train so a test can tell a reused run (no call) from a trained one."""
    calls = []
    real = nm.train

    def spy(*args, **kwargs):
        calls.append(kwargs["epochs"])
        return real(*args, **kwargs)

    monkeypatch.setattr(nm, "train", spy)
    return calls


def test_train_or_load_reuses_a_finished_run(tmp_path, monkeypatch):
    calls = counting_train(monkeypatch)
    x, y = blobs()
    data = {"train": (x, y), "val": blobs(n=60, seed=0)}
    combo = {"lr": 0.05, "momentum": 0.9, "activation": "tanh", "hidden": 8}
    first = nm.train_or_load(combo, data, runs_dir=tmp_path, epochs=2, batch_size=32, seed=1, log=None)
    again = nm.train_or_load(combo, data, runs_dir=tmp_path, epochs=2, batch_size=32, seed=1, log=None)
    assert not first["reused"] and again["reused"] and calls == [2]
    assert again["run_dir"] == first["run_dir"]
    assert again["history"]["val_acc"] == first["history"]["val_acc"]
    assert all(np.array_equal(first["params"][k], again["params"][k]) for k in first["params"])
    forced = nm.train_or_load(combo, data, runs_dir=tmp_path, epochs=2, batch_size=32, seed=1, force=True,
                              log=None)
    assert not forced["reused"] and calls == [2, 2]


def test_other_settings_get_their_own_run_and_never_overwrite_a_finished_one(tmp_path, monkeypatch):
    """full -> smoke -> full: the second full call reuses the first, untouched."""
    calls = counting_train(monkeypatch)
    x, y = blobs()
    full = {"train": (x, y), "val": blobs(n=60, seed=0)}
    smoke = {"train": (x[:100], y[:100]), "val": blobs(n=30, seed=0)}
    combo = {"lr": 0.05, "momentum": 0.9, "activation": "relu", "hidden": 8}
    first = nm.train_or_load(combo, full, runs_dir=tmp_path, epochs=3, batch_size=32, seed=1, log=None)
    weights = (Path(first["run_dir"]) / "params.npz").read_bytes()
    other = nm.train_or_load(combo, smoke, runs_dir=tmp_path, epochs=1, batch_size=32, seed=1, log=None)
    back = nm.train_or_load(combo, full, runs_dir=tmp_path, epochs=3, batch_size=32, seed=1, log=None)
    assert calls == [3, 1], "the third call must reuse the first run, not train"
    assert not other["reused"] and other["run_dir"] != first["run_dir"]
    assert back["reused"] and back["run_dir"] == first["run_dir"]
    assert (Path(first["run_dir"]) / "params.npz").read_bytes() == weights
    assert back["history"] == first["history"]
    # Same sizes, different images (another split) is a different run too.
    shuffled = {"train": (x[::-1].copy(), y[::-1].copy()), "val": full["val"]}
    moved = nm.train_or_load(combo, shuffled, runs_dir=tmp_path, epochs=3, batch_size=32, seed=1, log=None)
    assert not moved["reused"] and moved["run_dir"] not in (first["run_dir"], other["run_dir"])
    # Every setting that decides the outcome changes the folder.
    base = nm.run_settings(combo, full, epochs=3, batch_size=32, seed=1)
    for change in ({"epochs": 4}, {"batch_size": 16}, {"seed": 2}):
        s = nm.run_settings(combo, full, **{"epochs": 3, "batch_size": 32, "seed": 1, **change})
        assert settings_digest(s) != settings_digest(base), change


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="activation='gelu'"):
        nm.init_mlp([4, 3], "gelu")
    with pytest.raises(ValueError, match="sizes"):
        nm.init_mlp([4], "relu")


def test_numpy_mlp_notebook_smoke_on_real_data(fashion_system_dir):
    tmp = bundle_tmpdir("test-numpy-mlp-")
    try:
        nb, summary = run_extra("numpy_mlp", tmp, data_dir=fashion_data_dir(fashion_system_dir),
                                runs_dir=str(tmp / "runs"), smoke=True)
        res = summary["results"]
        assert summary["smoke"] is True
        assert len(res["combinations"]) >= 3
        scores = [c["val_accuracy"] for c in res["combinations"]]
        assert res["best"]["index"] == int(np.nanargmax(scores))  # chosen on validation
        assert 0 <= res["best"]["test_error"] <= 1
        assert res["best"]["test_error"] == pytest.approx(1 - res["best"]["test_accuracy"])
        for part, names in res["figures"].items():
            for name in names:
                assert (tmp / "results" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert res["sizes"]["train"] > 100 and res["epochs"] == 1
    finally:
        cleanup(tmp)


def blas_thread_counts() -> list[int]:
    return [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]


def test_blas_threads_limits_and_restores_the_blas_pools():
    if not blas_thread_counts():
        pytest.skip("threadpoolctl reports no BLAS thread pool in this process: nothing to limit")
    # Start from 2 threads, so the limit of 1 inside is distinguishable from what is restored.
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_thread_counts()
        if max(before) < 2:
            pytest.skip(f"the BLAS pools cannot run 2 threads here ({before}): a limit of 1 is invisible")
        a = np.random.default_rng(7).normal(size=(50, 40))
        outside = a @ a.T
        with nm.blas_threads(1):
            assert blas_thread_counts() == [1] * len(before)
            inside = a @ a.T
        assert blas_thread_counts() == before
        np.testing.assert_allclose(inside, outside, rtol=1e-12)
        # train runs inside the limit (read at its per-epoch log line) and restores it too.
        seen = []
        x, y = blobs(n=64)
        nm.train(nm.init_mlp([10, 4, 3], "relu"), x, y, x, y, epochs=1,
                 log=lambda line: seen.append(blas_thread_counts()))
        assert seen == [[1] * len(before)] and blas_thread_counts() == before
