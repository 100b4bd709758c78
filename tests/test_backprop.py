"""common.backprop and common.gradcheck: every layer against centred finite
differences, and the gradient checker itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common import backprop as bp
from common.gradcheck import FD_TOLERANCE, gradient_check, numerical_gradient, rel_error

TOL = FD_TOLERANCE


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
    grad = numerical_gradient(lambda v: np.sin(v).sum(), x)
    assert np.array_equal(x, before)
    assert rel_error(grad, np.cos(x)) < TOL
    # Array output contracted with an upstream gradient: d sum(dout * v**3) = 3 v**2 dout.
    dout = rng(1).normal(size=(3, 4))
    grad = numerical_gradient(lambda v: v ** 3, x, dout=dout)
    assert rel_error(grad, 3 * x ** 2 * dout) < TOL


def test_numerical_gradient_refuses_float32_and_uncontracted_arrays():
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(lambda v: v.sum(), np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="dout"):
        numerical_gradient(lambda v: v * 2, np.ones(3))


def test_rel_error_is_scale_relative_with_a_floor():
    assert rel_error(np.zeros(4), np.zeros(4)) == 0.0
    assert rel_error([1.0, 0.0], [1.0, 1e-12]) == pytest.approx(1e-12 / 1.0)
    assert rel_error([1e-12], [0.0]) == pytest.approx(1e-12 / 1e-8)  # the floor
    assert rel_error([2.0], [1.0]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shapes"):
        rel_error(np.zeros(2), np.zeros(3))


def test_gradient_check_catches_the_one_hot_shortcut_for_a_general_target():
    """p - y is the gradient only when sum(y) = 1; the checker must notice."""
    z = rng(2).normal(size=(1, 3))
    y = np.array([[1.0, 1.0, 0.0]])
    p, _ = bp.softmax_forward(z)
    wrong = p - y
    err = gradient_check(lambda v: bp.cross_entropy_forward(v, y, "sum")[0], z, wrong)
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
    assert gradient_check(lambda v: bp.linear_forward(v, w, b)[0], x, dx, dout) < TOL
    assert gradient_check(lambda v: bp.linear_forward(x, v, b)[0], w, dw, dout) < TOL
    if bias:
        assert gradient_check(lambda v: bp.linear_forward(x, w, v)[0], b, db, dout) < TOL
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
    assert gradient_check(lambda v: forward(v)[0], x, backward(dout, cache), dout) < TOL


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
    assert gradient_check(lambda v: bp.prelu_forward(v, alpha)[0], x, dx, dout) < TOL
    alpha_var = alpha.astype(np.float64).copy()
    assert gradient_check(lambda a: bp.prelu_forward(x, a)[0], alpha_var, dalpha, dout) < TOL


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
    assert gradient_check(lambda v: bp.softmax_forward(v)[0], z, bp.softmax_backward(dout, cache),
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
    assert gradient_check(lambda v: bp.cross_entropy_forward(v, y, reduction)[0], z, dz) < TOL
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
