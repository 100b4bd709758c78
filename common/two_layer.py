"""The Q1 network, x -> W1 -> ReLU -> W2 -> softmax -> cross-entropy, computed
three ways: composed from the NumPy layers of `common.backprop`, step by step as
on paper, and with PyTorch autograd as the independent reference, plus the
check that compares them with each other and with finite differences.

    x, y, W1, W2 = network_arrays(x, y, W1, W2)   # validated float64 arrays
    net = two_layer_net(x, y, W1, W2)             # every intermediate, by name
    rows = three_way_check(x, y, W1, W2)          # library vs autograd vs FD
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

# The layers are looked up on the module at call time (bp.linear_forward), so a
# test can swap one for a broken version and see the checks fail.
from . import backprop as bp
from .config import ConfigError
from .gradcheck import AUTOGRAD_TOLERANCE, FD_STEP, FD_TOLERANCE, numerical_gradient, rel_error

__all__ = ["network_arrays", "two_layer_net", "two_layer_steps", "two_layer_autograd",
           "softmax_parts", "three_way_check", "STEP_NAMES"]


def _as_array(name: str, value, ndim: int, expected: str) -> np.ndarray:
    """A finite float64 array of the given rank, or a ConfigError naming `name`."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"parameter {name}={value!r}: expected {expected} "
                          "(rows of equal length, numbers only)") from None
    if arr.ndim != ndim or arr.size == 0:
        raise ConfigError(f"parameter {name}={value!r}: expected {expected}, "
                          f"got an array of shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"parameter {name}: expected finite numbers, got {value!r}")
    return arr


def network_arrays(x, y, W1, W2):
    """Validate Q1's parameters and return them as float64 arrays.

    x: D numbers (the input column vector, as a flat list). W1: H x D nested
    list. W2: C x H nested list. y: C non-negative targets, not all zero.
    Raises ConfigError naming the parameter and the shape it must have.
    """
    x = _as_array("x", x, 1, "a flat list of D numbers, e.g. [0.5, -1.0, 2]")
    D = x.shape[0]
    W1 = _as_array("W1", W1, 2, f"an H x {D} nested list (one row per hidden unit, "
                                f"D = {D} columns to match x)")
    if W1.shape[1] != D:
        raise ConfigError(f"parameter W1 has shape {W1.shape}: expected H x {D}, "
                          f"i.e. {D} columns to match the {D} entries of x")
    H = W1.shape[0]
    W2 = _as_array("W2", W2, 2, f"a C x {H} nested list (one row per output, "
                                f"H = {H} columns to match W1's rows)")
    if W2.shape[1] != H:
        raise ConfigError(f"parameter W2 has shape {W2.shape}: expected C x {H}, "
                          f"i.e. {H} columns to match the {H} rows (hidden units) of W1")
    C = W2.shape[0]
    y = _as_array("y", y, 1, f"a flat list of C = {C} targets, one per row of W2")
    if y.shape[0] != C:
        raise ConfigError(f"parameter y has {y.shape[0]} entries: expected C = {C}, "
                          f"one per output (row of W2)")
    if np.any(y < 0) or not np.any(y > 0):
        raise ConfigError(f"parameter y={y.tolist()}: expected non-negative targets with at "
                          "least one positive entry (each y_i weights the term -ln y_hat_i)")
    return x, y, W1, W2


def two_layer_net(x: np.ndarray, y: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> dict:
    """Forward and backward pass of x -> a = W1 x -> h = ReLU(a) -> z = W2 h ->
    y_hat = softmax(z) -> L = CE(y, y_hat), composed from common.backprop's layers.

    x: (D,) or (N, D); y: (C,) or (N, C) general targets; w1: (H, D); w2: (C, H).
    Returns a dict of every intermediate: a, mask, h (.., H); z, y_hat,
    dL_dz (.., C); dL_dh, dL_da (.., H); loss (mean over the batch);
    dL_dW1 (H, D), dL_dW2 (C, H). A 1-D x gives 1-D intermediates.
    """
    single = np.ndim(x) == 1
    x2, y2 = np.atleast_2d(x), np.atleast_2d(y)
    a, lin1 = bp.linear_forward(x2, w1)
    h, mask = bp.relu_forward(a)
    z, lin2 = bp.linear_forward(h, w2)
    y_hat, _ = bp.softmax_forward(z)
    loss, ce = bp.cross_entropy_forward(z, y2)
    dz = bp.cross_entropy_backward(1.0, ce)
    dh, dw2, _ = bp.linear_backward(dz, lin2)
    da = bp.relu_backward(dh, mask)
    _, dw1, _ = bp.linear_backward(da, lin1)
    out = {"a": a, "mask": mask.astype(np.float64), "h": h, "z": z, "y_hat": y_hat,
           "dL_dz": dz, "dL_dh": dh, "dL_da": da}
    if single:
        out = {k: v[0] for k, v in out.items()}
    out.update(loss=float(loss), dL_dW1=dw1, dL_dW2=dw2)
    return out


def two_layer_steps(x: np.ndarray, y: np.ndarray, w1: np.ndarray, w2: np.ndarray,
                    keep: Callable[[np.ndarray], np.ndarray] = lambda v: v) -> dict:
    """The same network for one example, step by step as written on paper.

    Each intermediate goes through `keep` before the next step uses it. With
    the identity this equals `two_layer_net`; with keep = rounding to k
    significant figures it reproduces a calculation that writes down each
    intermediate rounded and carries on from there. x (D,), y (C,),
    w1 (H, D), w2 (C, H). exp_z and sum_exp are those of `softmax_parts`.
    """
    s = {}
    s["a"] = keep(w1 @ x)
    s["mask"] = (s["a"] > 0).astype(np.float64)
    s["h"] = keep(s["mask"] * s["a"])
    s["z"] = keep(w2 @ s["h"])
    shift, _, _ = softmax_parts(s["z"])  # 0 unless exp would overflow
    s["exp_z"] = keep(np.exp(s["z"] - shift))
    s["sum_exp"] = keep(s["exp_z"].sum())
    s["y_hat"] = keep(s["exp_z"] / s["sum_exp"])
    # ln y_hat_i = z_i - ln sum_j e^{z_j}: finite even where y_hat_i underflows to 0.
    s["ln_y_hat"] = keep(s["z"] - shift - np.log(s["sum_exp"]))
    s["loss"] = float(keep(-(y * s["ln_y_hat"]).sum()))
    s["dL_dz"] = keep(y.sum() * s["y_hat"] - y)
    s["dL_dW2"] = keep(np.outer(s["dL_dz"], s["h"]))
    s["dL_dh"] = keep(w2.T @ s["dL_dz"])
    s["dL_da"] = keep(s["dL_dh"] * s["mask"])
    s["dL_dW1"] = keep(np.outer(s["dL_da"], x))
    return s


# How each key of two_layer_steps (and three_way_check) is named in tables. Plain
# Unicode rather than LaTeX: typeset maths inside table cells upsets the
# browser's column widths in the printed report.
STEP_NAMES = {
    "a": "a", "mask": "m", "h": "h", "z": "z", "exp_z": "exp(z)", "sum_exp": "Σ exp(z_j)",
    "y_hat": "ŷ", "ln_y_hat": "ln ŷ", "loss": "L", "dL_dz": "δ₂ = ∂L/∂z",
    "dL_dW2": "∂L/∂W₂", "dL_dh": "∂L/∂h", "dL_da": "δ₁ = ∂L/∂a", "dL_dW1": "∂L/∂W₁",
}


def softmax_parts(z: np.ndarray, limit: float = 700.0):
    """(shift, exp(z - shift), sum) for displaying a softmax by hand.

    shift is 0, so the exponentials are the plain e^{z_i} a reader expects,
    unless the largest z_i is near float64's exp overflow (e^710 = inf) or
    underflow (e^-746 = 0, which would make the sum 0); then the largest z is
    subtracted, which leaves the softmax unchanged. z: (C,).
    """
    shift = float(z.max()) if abs(z.max()) > limit else 0.0
    exps = np.exp(z - shift)
    return shift, exps, float(exps.sum())


def two_layer_autograd(x: np.ndarray, y: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> dict:
    """The independent reference: the same network in PyTorch float64, with the
    gradients from autograd. Same arguments and keys as `two_layer_net`
    (h, y_hat, loss, dL_dW1, dL_dW2), as NumPy arrays."""
    def t(v, grad=False):
        return torch.tensor(np.asarray(v), dtype=torch.float64, requires_grad=grad)

    single = np.ndim(x) == 1
    xt, yt = t(np.atleast_2d(x)), t(np.atleast_2d(y))
    w1t, w2t = t(w1, grad=True), t(w2, grad=True)
    h = torch.relu(xt @ w1t.T)
    z = h @ w2t.T
    loss = -(yt * torch.log_softmax(z, dim=-1)).sum(dim=-1).mean()
    loss.backward()
    h_out, y_hat = h.detach().numpy(), torch.softmax(z, dim=-1).detach().numpy()
    if single:
        h_out, y_hat = h_out[0], y_hat[0]
    return {"h": h_out, "y_hat": y_hat, "loss": float(loss.detach()),
            "dL_dW1": w1t.grad.numpy(), "dL_dW2": w2t.grad.numpy()}


def three_way_check(x: np.ndarray, y: np.ndarray, w1: np.ndarray, w2: np.ndarray,
                    h: float = FD_STEP) -> list[dict]:
    """Compare the layer library, PyTorch autograd and centred finite differences
    for one example. x (D,), y (C,), w1 (H, D), w2 (C, H), all float64.

    Returns one row per comparison: quantity, pair, error (rel_error), tolerance,
    passed, and a note. Finite differences of dL/dW1 are skipped (passed=None,
    with the reason) when a pre-activation a_i lies within one step of the ReLU
    kink: a perturbation h x_j could then cross it, and at a_i = 0 the
    derivative does not exist at all.
    """
    lib = two_layer_net(x, y, w1, w2)
    ref = two_layer_autograd(x, y, w1, w2)
    rows = []

    def add(quantity, pair, a, b, tol, note=""):
        err = rel_error(a, b)
        rows.append({"quantity": quantity, "pair": pair, "error": err, "tolerance": tol,
                     "passed": bool(err <= tol), "note": note})

    for key in ("h", "y_hat", "loss", "dL_dW1", "dL_dW2"):
        add(key, "library vs autograd", lib[key], ref[key], AUTOGRAD_TOLERANCE)

    def loss_of_w1(w):
        return two_layer_net(x, y, w, w2)["loss"]

    def loss_of_w2(w):
        return two_layer_net(x, y, w1, w)["loss"]

    fd_w2 = numerical_gradient(loss_of_w2, w2.astype(np.float64, copy=True), h=h)
    add("dL_dW2", "library vs finite differences", lib["dL_dW2"], fd_w2, FD_TOLERANCE)
    add("dL_dW2", "autograd vs finite differences", ref["dL_dW2"], fd_w2, FD_TOLERANCE)
    margin = float(np.min(np.abs(lib["a"])))
    reach = h * float(np.max(np.abs(x)))
    if margin > 10 * reach:
        fd_w1 = numerical_gradient(loss_of_w1, w1.astype(np.float64, copy=True), h=h)
        add("dL_dW1", "library vs finite differences", lib["dL_dW1"], fd_w1, FD_TOLERANCE)
        add("dL_dW1", "autograd vs finite differences", ref["dL_dW1"], fd_w1, FD_TOLERANCE)
    else:
        for pair in ("library vs finite differences", "autograd vs finite differences"):
            rows.append({"quantity": "dL_dW1", "pair": pair, "error": None,
                         "tolerance": FD_TOLERANCE, "passed": None,
                         "note": f"skipped: min |a_i| = {margin:.3g} is within 10 steps "
                                 f"(h max|x_j| = {reach:.3g}) of the ReLU kink"})
    return rows
