"""common.two_layer: the Q1 network against torch autograd, the three-way
check, and the validation of Q1's parameters."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common import backprop as bp
from common import two_layer as tl
from common.config import ConfigError
from common.gradcheck import AUTOGRAD_TOLERANCE, rel_error


def rng(seed=0):
    return np.random.default_rng(seed)


def torch_two_layer(x, y, w1, w2):
    """Independent oracle: torch float64, autograd gradients."""
    xt, yt = torch.from_numpy(np.atleast_2d(x)), torch.from_numpy(np.atleast_2d(y))
    w1t = torch.from_numpy(w1.copy()).requires_grad_()
    w2t = torch.from_numpy(w2.copy()).requires_grad_()
    h = F.relu(xt @ w1t.T)
    z = h @ w2t.T
    loss = F.cross_entropy(z, yt)  # probability-style targets: -sum y log softmax, batch mean
    loss.backward()
    return {"h": h.detach().numpy(), "y_hat": torch.softmax(z, -1).detach().numpy(),
            "loss": loss.item(), "dL_dW1": w1t.grad.numpy(), "dL_dW2": w2t.grad.numpy()}


def random_network(d, h, c, n=None, seed=0):
    r = rng(seed)
    shape = (d,) if n is None else (n, d)
    x = r.normal(size=shape)
    y = r.uniform(0, 2, size=shape[:-1] + (c,)) * (r.random(shape[:-1] + (c,)) < 0.7)
    y[..., 0] += 0.5  # at least one positive entry per row
    return x, y, r.normal(size=(h, d)), r.normal(size=(c, h))


SIZES = [(3, 4, 3), (1, 1, 2), (5, 7, 4), (10, 16, 10)]


@pytest.mark.parametrize("n", [None, 6], ids=["one-example", "batch-of-6"])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_two_layer_net_matches_autograd(sizes, n):
    x, y, w1, w2 = random_network(*sizes, n=n, seed=sum(sizes))
    net, ref = tl.two_layer_net(x, y, w1, w2), torch_two_layer(x, y, w1, w2)
    for key in ("h", "y_hat", "loss", "dL_dW1", "dL_dW2"):
        got = net[key] if n is not None or np.ndim(net[key]) != 1 else net[key][None, :]
        assert rel_error(got, ref[key]) < AUTOGRAD_TOLERANCE, key


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_step_by_step_version_and_library_autograd_reference_agree(sizes):
    x, y, w1, w2 = random_network(*sizes, seed=10 + sum(sizes))
    net, steps = tl.two_layer_net(x, y, w1, w2), tl.two_layer_steps(x, y, w1, w2)
    for key in ("a", "h", "z", "y_hat", "loss", "dL_dz", "dL_dW2", "dL_dh", "dL_da", "dL_dW1"):
        assert rel_error(net[key], steps[key]) < 1e-12, key
    ref, mine = torch_two_layer(x, y, w1, w2), tl.two_layer_autograd(x, y, w1, w2)
    for key in ref:
        assert rel_error(np.reshape(ref[key], np.shape(mine[key])), mine[key]) < 1e-14, key


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_three_way_check_passes_on_random_networks(sizes):
    x, y, w1, w2 = random_network(*sizes, seed=20 + sum(sizes))
    rows = tl.three_way_check(x, y, w1, w2)
    assert {(r["quantity"], r["pair"]) for r in rows} >= {
        ("dL_dW1", "library vs finite differences"), ("dL_dW2", "autograd vs finite differences")}
    assert all(r["passed"] is True for r in rows), rows


def test_three_way_check_fails_when_the_library_gradient_is_wrong(monkeypatch):
    """Swap in the one-hot shortcut p - y: library-vs-autograd and library-vs-FD must fail."""
    x, y, w1, w2 = random_network(3, 4, 3, seed=30)

    def one_hot_shortcut(dout, cache):
        p, targets, scale = cache
        return dout * scale * (p - targets)

    monkeypatch.setattr(bp, "cross_entropy_backward", one_hot_shortcut)
    rows = tl.three_way_check(x, y * 3, w1, w2)  # targets summing to well above 1
    failed = {(r["quantity"], r["pair"]) for r in rows if r["passed"] is False}
    assert ("dL_dW2", "library vs autograd") in failed
    assert ("dL_dW2", "library vs finite differences") in failed
    assert ("dL_dW2", "autograd vs finite differences") not in failed


def test_three_way_check_skips_finite_differences_at_the_relu_kink():
    x, y, w1, w2 = random_network(3, 4, 3, seed=31)
    w1[2] = 0.0  # a_3 = 0 exactly: ReLU has no derivative there
    rows = tl.three_way_check(x, y, w1, w2)
    skipped = [r for r in rows if r["passed"] is None]
    assert {r["pair"] for r in skipped} == {"library vs finite differences",
                                            "autograd vs finite differences"}
    assert all(r["quantity"] == "dL_dW1" and "kink" in r["note"] for r in skipped)
    assert all(r["passed"] is True for r in rows if r["passed"] is not None)


# --- parameter validation -----------------------------------------------------------

ASSIGNMENT = dict(x=[0.5, -1.0, 2], y=[1, 1, 0],
                  W1=[[0.2, -0.3, 0.4], [0.1, 0.2, -0.5], [-0.3, 0.1, 0.2], [0.4, -0.1, 0.3]],
                  W2=[[0.1, 0.2, -0.1, 0.1], [-0.2, 0.3, 0.1, -0.3], [0.2, -0.1, 0.3, 0.2]])


def test_network_arrays_accepts_the_assignment_values():
    x, y, w1, w2 = tl.network_arrays(**ASSIGNMENT)
    assert (x.shape, y.shape, w1.shape, w2.shape) == ((3,), (3,), (4, 3), (3, 4))
    assert x.dtype == w1.dtype == np.float64


@pytest.mark.parametrize("change, name, expected", [
    (dict(x=[[0.5], [-1.0], [2]]), "x", "flat list"),
    (dict(W1=[[0.2, -0.3], [0.1, 0.2], [-0.3, 0.1], [0.4, -0.1]]), "W1", "H x 3"),
    (dict(W1=[[0.2, -0.3, 0.4], [0.1, 0.2]]), "W1", "rows of equal length"),
    (dict(W2=[[0.1, 0.2, -0.1], [-0.2, 0.3, 0.1], [0.2, -0.1, 0.3]]), "W2", "C x 4"),
    (dict(y=[1, 0]), "y", "C = 3"),
    (dict(y=[0, 0, 0]), "y", "at least one positive"),
    (dict(y=[1, -1, 1]), "y", "non-negative"),
    (dict(x=[0.5, float("nan"), 2]), "x", "finite"),
])
def test_network_arrays_names_the_parameter_and_shape(change, name, expected):
    with pytest.raises(ConfigError) as err:
        tl.network_arrays(**{**ASSIGNMENT, **change})
    assert f"parameter {name}" in str(err.value) and expected in str(err.value)


def test_softmax_parts_survive_overflow_and_underflow():
    # e^z overflows above ~709 and underflows to 0 below ~-745; the displayed
    # parts must still give the softmax.
    from common.two_layer import softmax_parts
    for z in (np.array([800.0, 799.0, 1.0]), np.array([-1000.0, -1000.0, -1001.0]),
              np.array([0.5, -0.2, 0.1])):
        _, exps, total = softmax_parts(z)
        expected = torch.softmax(torch.tensor(z), dim=0).numpy()
        assert np.all(np.isfinite(exps)) and total > 0
        assert np.allclose(exps / total, expected, rtol=1e-12)
