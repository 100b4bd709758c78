"""common.backprop: every layer against centred finite differences, the Q1
network against torch autograd, and the gradient checker itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common import backprop as bp
from common.config import ConfigError

TOL = bp.FD_TOLERANCE


def rng(seed=0):
    return np.random.default_rng(seed)


def away_from_zero(x, margin=1e-2):
    """Keep inputs of piecewise-linear layers off the kink, where finite
    differences straddle two branches and measure neither derivative."""
    return np.where(np.abs(x) < margin, np.sign(x + 1e-300) * margin * 3, x)


# --- the checker itself -------------------------------------------------------------

def test_numerical_gradient_matches_known_derivatives_and_restores_x():
    x = rng().normal(size=(3, 4))
    before = x.copy()
    grad = bp.numerical_gradient(lambda v: np.sin(v).sum(), x)
    assert np.array_equal(x, before)
    assert bp.rel_error(grad, np.cos(x)) < TOL
    # Array output contracted with an upstream gradient: d sum(dout * v**3) = 3 v**2 dout.
    dout = rng(1).normal(size=(3, 4))
    grad = bp.numerical_gradient(lambda v: v ** 3, x, dout=dout)
    assert bp.rel_error(grad, 3 * x ** 2 * dout) < TOL


def test_numerical_gradient_refuses_float32_and_uncontracted_arrays():
    with pytest.raises(TypeError, match="float64"):
        bp.numerical_gradient(lambda v: v.sum(), np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="dout"):
        bp.numerical_gradient(lambda v: v * 2, np.ones(3))


def test_rel_error_is_scale_relative_with_a_floor():
    assert bp.rel_error(np.zeros(4), np.zeros(4)) == 0.0
    assert bp.rel_error([1.0, 0.0], [1.0, 1e-12]) == pytest.approx(1e-12 / 1.0)
    assert bp.rel_error([1e-12], [0.0]) == pytest.approx(1e-12 / 1e-8)  # the floor
    assert bp.rel_error([2.0], [1.0]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shapes"):
        bp.rel_error(np.zeros(2), np.zeros(3))


def test_gradient_check_catches_the_one_hot_shortcut_for_a_general_target():
    """p - y is the gradient only when sum(y) = 1; the checker must notice."""
    z = rng(2).normal(size=(1, 3))
    y = np.array([[1.0, 1.0, 0.0]])
    p, _ = bp.softmax_forward(z)
    wrong = p - y
    err = bp.gradient_check(lambda v: bp.cross_entropy_forward(v, y, "sum")[0], z, wrong)
    assert err > 1e-2


# --- layers ---------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias):
    r = rng(3)
    x, w = r.normal(size=(5, 4)), r.normal(size=(3, 4))
    b = r.normal(size=3) if bias else None
    out, cache = bp.linear_forward(x, w, b)
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out, x @ w.T + (b if bias else 0), rtol=1e-12)
    dout = r.normal(size=out.shape)
    dx, dw, db = bp.linear_backward(dout, cache)
    assert bp.gradient_check(lambda v: bp.linear_forward(v, w, b)[0], x, dx, dout) < TOL
    assert bp.gradient_check(lambda v: bp.linear_forward(x, v, b)[0], w, dw, dout) < TOL
    if bias:
        assert bp.gradient_check(lambda v: bp.linear_forward(x, w, v)[0], b, db, dout) < TOL
    else:
        assert db is None


def test_linear_weight_gradient_of_one_example_is_the_outer_product():
    r = rng(4)
    x, delta = r.normal(size=3), r.normal(size=4)
    _, cache = bp.linear_forward(x[None, :], r.normal(size=(4, 3)))
    _, dw, _ = bp.linear_backward(delta[None, :], cache)
    np.testing.assert_allclose(dw, np.outer(delta, x), rtol=1e-14)


@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_elementwise_activations(name):
    r = rng(5)
    x = away_from_zero(r.normal(size=(4, 6)) * 3)
    forward, backward = getattr(bp, f"{name}_forward"), getattr(bp, f"{name}_backward")
    reference = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[name]
    out, cache = forward(x)
    np.testing.assert_allclose(out, reference(torch.from_numpy(x)).numpy(), rtol=1e-12, atol=1e-15)
    dout = r.normal(size=x.shape)
    assert bp.gradient_check(lambda v: forward(v)[0], x, backward(dout, cache), dout) < TOL


def test_sigmoid_does_not_overflow():
    x = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    with np.errstate(over="raise"):
        out, _ = bp.sigmoid_forward(x)
    np.testing.assert_allclose(out, torch.sigmoid(torch.from_numpy(x)).numpy(), rtol=1e-12)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-slope", "per-unit-slope"])
def test_prelu_input_and_slope_gradients(shared):
    r = rng(6)
    x = away_from_zero(r.normal(size=(5, 4)))
    alpha = np.array(0.2) if shared else r.uniform(0.05, 0.5, size=4)
    out, cache = bp.prelu_forward(x, alpha)
    ref = F.prelu(torch.from_numpy(x), torch.from_numpy(np.atleast_1d(alpha)))
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-12)
    dout = r.normal(size=x.shape)
    dx, dalpha = bp.prelu_backward(dout, cache)
    assert dalpha.shape == alpha.shape
    assert bp.gradient_check(lambda v: bp.prelu_forward(v, alpha)[0], x, dx, dout) < TOL
    alpha_var = alpha.astype(np.float64).copy()
    assert bp.gradient_check(lambda a: bp.prelu_forward(x, a)[0], alpha_var, dalpha, dout) < TOL


def test_prelu_rejects_a_slope_of_the_wrong_size():
    with pytest.raises(ValueError, match="alpha"):
        bp.prelu_forward(np.ones((2, 4)), np.ones(3))


def test_softmax_and_stable_log_softmax():
    r = rng(7)
    z = r.normal(size=(4, 5)) * 3
    p, cache = bp.softmax_forward(z)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(p, torch.softmax(torch.from_numpy(z), -1).numpy(), rtol=1e-12)
    dout = r.normal(size=z.shape)
    assert bp.gradient_check(lambda v: bp.softmax_forward(v)[0], z, bp.softmax_backward(dout, cache),
                             dout) < TOL
    huge = np.array([[1000.0, 0.0, -1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        logp = bp.log_softmax(huge)
    np.testing.assert_allclose(logp, torch.log_softmax(torch.from_numpy(huge), -1).numpy())


@pytest.mark.parametrize("targets", ["one-hot", "integer", "multi-label", "soft", "unnormalised"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_for_general_targets(targets, reduction):
    r = rng(8)
    n, c = 4, 5
    z = r.normal(size=(n, c)) * 2
    labels = r.integers(0, c, size=n)
    y = {"one-hot": np.eye(c)[labels], "integer": labels,
         "multi-label": (r.random((n, c)) < 0.4).astype(float) + np.eye(c)[labels],
         "soft": r.dirichlet(np.ones(c), size=n),
         "unnormalised": r.uniform(0, 3, size=(n, c))}[targets]
    loss, cache = bp.cross_entropy_forward(z, y, reduction)
    torch_y = torch.from_numpy(np.asarray(y))  # probabilities or class indices
    ref = F.cross_entropy(torch.from_numpy(z), torch_y, reduction=reduction)
    assert loss == pytest.approx(float(ref), rel=1e-12)
    dz = bp.cross_entropy_backward(1.0, cache)
    assert bp.gradient_check(lambda v: bp.cross_entropy_forward(v, y, reduction)[0], z, dz) < TOL
    # The general form (sum y) p - y equals the chain through the softmax Jacobian
    # with dL/dp = -y / p, whatever the target sums to.
    y_dense = np.eye(c)[y] if targets == "integer" else y
    p, p_cache = bp.softmax_forward(z)
    scale = 1 / n if reduction == "mean" else 1
    np.testing.assert_allclose(dz, bp.softmax_backward(-y_dense / p * scale, p_cache), rtol=1e-10,
                               atol=1e-15)


def test_cross_entropy_gradient_for_the_assignment_label_is_not_p_minus_y():
    z = np.array([[0.3, -0.2, 0.5]])
    y = np.array([[1.0, 1.0, 0.0]])
    _, cache = bp.cross_entropy_forward(z, y, "sum")
    dz = bp.cross_entropy_backward(1.0, cache)
    p, _ = bp.softmax_forward(z)
    np.testing.assert_allclose(dz, 2 * p - y, rtol=1e-14)
    assert not np.allclose(dz, p - y)


def test_cross_entropy_rejects_mismatched_targets():
    with pytest.raises(ValueError, match="shape"):
        bp.cross_entropy_forward(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="labels"):
        bp.cross_entropy_forward(np.zeros((2, 3)), np.array([0, 3]))


# --- the Q1 network -------------------------------------------------------------------

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
    net, ref = bp.two_layer_net(x, y, w1, w2), torch_two_layer(x, y, w1, w2)
    for key in ("h", "y_hat", "loss", "dL_dW1", "dL_dW2"):
        got = net[key] if n is not None or np.ndim(net[key]) != 1 else net[key][None, :]
        assert bp.rel_error(got, ref[key]) < bp.AUTOGRAD_TOLERANCE, key


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_step_by_step_version_and_library_autograd_reference_agree(sizes):
    x, y, w1, w2 = random_network(*sizes, seed=10 + sum(sizes))
    net, steps = bp.two_layer_net(x, y, w1, w2), bp.two_layer_steps(x, y, w1, w2)
    for key in ("a", "h", "z", "y_hat", "loss", "dL_dz", "dL_dW2", "dL_dh", "dL_da", "dL_dW1"):
        assert bp.rel_error(net[key], steps[key]) < 1e-12, key
    ref, mine = torch_two_layer(x, y, w1, w2), bp.two_layer_autograd(x, y, w1, w2)
    for key in ref:
        assert bp.rel_error(np.reshape(ref[key], np.shape(mine[key])), mine[key]) < 1e-14, key


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_three_way_check_passes_on_random_networks(sizes):
    x, y, w1, w2 = random_network(*sizes, seed=20 + sum(sizes))
    rows = bp.three_way_check(x, y, w1, w2)
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
    rows = bp.three_way_check(x, y * 3, w1, w2)  # targets summing to well above 1
    failed = {(r["quantity"], r["pair"]) for r in rows if r["passed"] is False}
    assert ("dL_dW2", "library vs autograd") in failed
    assert ("dL_dW2", "library vs finite differences") in failed
    assert ("dL_dW2", "autograd vs finite differences") not in failed


def test_three_way_check_skips_finite_differences_at_the_relu_kink():
    x, y, w1, w2 = random_network(3, 4, 3, seed=31)
    w1[2] = 0.0  # a_3 = 0 exactly: ReLU has no derivative there
    rows = bp.three_way_check(x, y, w1, w2)
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
    x, y, w1, w2 = bp.network_arrays(**ASSIGNMENT)
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
        bp.network_arrays(**{**ASSIGNMENT, **change})
    assert f"parameter {name}" in str(err.value) and expected in str(err.value)


def test_softmax_parts_survive_overflow_and_underflow():
    # e^z overflows above ~709 and underflows to 0 below ~-745; the displayed
    # parts must still give the softmax.
    from common.backprop import softmax_parts
    for z in (np.array([800.0, 799.0, 1.0]), np.array([-1000.0, -1000.0, -1001.0]),
              np.array([0.5, -0.2, 0.1])):
        _, exps, total = softmax_parts(z)
        expected = torch.softmax(torch.tensor(z), dim=0).numpy()
        assert np.all(np.isfinite(exps)) and total > 0
        assert np.allclose(exps / total, expected, rtol=1e-12)
