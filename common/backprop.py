"""NumPy layers as forward/backward pairs, gradient checks, and the Q1 network.

Every layer follows the CS231n contract:

    out, cache = layer_forward(x, ...)      # cache holds what the backward pass needs
    dx, ... = layer_backward(dout, cache)   # dout = dL/dout, same shape as out

Batches are rows: x has shape (N, D). Weights use PyTorch's `nn.Linear` layout,
w of shape (M, D) and out = x w^T + b, so the assignment's `a = W1 x` for one
column vector x is `linear_forward(x[None, :], W1)` and the weight gradient of a
single example is the outer product `delta x^T` exactly as written on paper.

Everything here is float64-friendly and side-effect free; torch is imported
only inside `two_layer_autograd`, the independent reference for the checks.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .config import ConfigError

__all__ = [
    "linear_forward", "linear_backward", "relu_forward", "relu_backward",
    "prelu_forward", "prelu_backward", "tanh_forward", "tanh_backward",
    "sigmoid_forward", "sigmoid_backward", "log_softmax", "softmax_forward",
    "softmax_backward", "cross_entropy_forward", "cross_entropy_backward",
    "numerical_gradient", "rel_error", "gradient_check",
    "network_arrays", "two_layer_net", "two_layer_steps", "two_layer_autograd",
    "softmax_parts", "three_way_check", "STEP_NAMES", "FD_STEP", "FD_TOLERANCE", "AUTOGRAD_TOLERANCE",
]

# Centred differences in float64: truncation error ~ h^2 |f'''| / 6 and rounding
# error ~ eps |f| / h (eps = 2.2e-16). h = 1e-5 balances the two at ~1e-10 for
# losses and gradients of order one, so 1e-7 leaves three orders of margin while
# still catching any real mistake (a wrong factor or a missing term is >= 1e-2).
FD_STEP = 1e-5
FD_TOLERANCE = 1e-7
# Library and autograd perform the same float64 operations in a different
# order, so they agree to a few ulps (~1e-16 relative); 1e-8 is generous.
AUTOGRAD_TOLERANCE = 1e-8


# --- layers -------------------------------------------------------------------

def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None):
    """Affine layer, out = x w^T + b (the bias is optional).

    x: (N, D) inputs, w: (M, D) weights, b: (M,) bias or None.
    Returns out (N, M) and the cache (x, w, has_bias).
    """
    out = x @ w.T
    if b is not None:
        out = out + b
    return out, (x, w, b is not None)


def linear_backward(dout: np.ndarray, cache):
    """dout: (N, M) -> dx (N, D), dw (M, D), db (M,) or None without a bias.

    dw = dout^T x sums the per-example outer products dout_n x_n^T, so for a
    single example it is exactly delta x^T.
    """
    x, w, has_bias = cache
    dx = dout @ w
    dw = dout.T @ x
    db = dout.sum(axis=0) if has_bias else None
    return dx, dw, db


def relu_forward(x: np.ndarray):
    """ReLU, max(0, x). x: any shape -> out: same shape; the cache is the mask x > 0."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """dout: same shape as x -> dx. The gate passes dout where x > 0 and blocks it
    elsewhere; at x == 0, where ReLU has no derivative, 0 is used (as PyTorch does)."""
    return dout * mask


def prelu_forward(x: np.ndarray, alpha):
    """Parametric ReLU, x if x > 0 else alpha x.

    x: (N, D); alpha: a scalar (one slope shared by all units) or (D,) (one slope
    per unit). Returns out (N, D) and the cache (x, alpha).
    """
    alpha = np.asarray(alpha, dtype=x.dtype)
    if alpha.ndim > 1 or (alpha.ndim == 1 and alpha.shape[0] != x.shape[-1]):
        raise ValueError(f"alpha has shape {alpha.shape}; expected a scalar or ({x.shape[-1]},)")
    return np.where(x > 0, x, alpha * x), (x, alpha)


def prelu_backward(dout: np.ndarray, cache):
    """dout: (N, D) -> dx (N, D), dalpha (same shape as alpha).

    d out / d alpha = x on the negative side, so dalpha sums dout * x there,
    over the batch (and over the units too when the slope is shared).
    """
    x, alpha = cache
    negative = x <= 0
    dx = np.where(negative, alpha * dout, dout)
    per_unit = (dout * x * negative).reshape(-1, x.shape[-1]).sum(axis=0)
    dalpha = per_unit if alpha.ndim == 1 else per_unit.sum()
    return dx, np.asarray(dalpha, dtype=x.dtype).reshape(alpha.shape)


def tanh_forward(x: np.ndarray):
    """tanh, any shape. The cache is the output, since tanh' = 1 - tanh^2."""
    out = np.tanh(x)
    return out, out


def tanh_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """dout: same shape as x -> dx = dout (1 - tanh(x)^2)."""
    return dout * (1.0 - out * out)


def sigmoid_forward(x: np.ndarray):
    """Logistic sigmoid, any shape. Computed without overflow for large |x|: for
    x < 0 it uses e^x / (1 + e^x), so exp never sees a large positive argument."""
    e = np.exp(-np.abs(x))
    out = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out, out


def sigmoid_backward(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """dout: same shape as x -> dx = dout s (1 - s)."""
    return dout * out * (1.0 - out)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log softmax of z (N, C): z - max - ln sum exp(z - max).

    Subtracting the row maximum changes nothing mathematically (it cancels
    between numerator and denominator) but keeps exp from overflowing.
    """
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_forward(z: np.ndarray):
    """Row-wise softmax. z: (N, C) -> p (N, C), rows summing to 1; the cache is p."""
    p = np.exp(log_softmax(z))
    return p, p


def softmax_backward(dout: np.ndarray, p: np.ndarray) -> np.ndarray:
    """dout = dL/dp (N, C) -> dz (N, C).

    The softmax Jacobian is diag(p) - p p^T, so per row
    dz = p * (dout - <dout, p>), without forming the C x C matrix.
    """
    return p * (dout - (dout * p).sum(axis=-1, keepdims=True))


def _targets(y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Integer labels (N,) become one-hot rows; float targets (N, C) pass through."""
    y = np.asarray(y)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        if y.shape[0] != shape[0] or y.min() < 0 or y.max() >= shape[1]:
            raise ValueError(f"integer labels must have shape ({shape[0]},) and lie in "
                             f"[0, {shape[1]}); got shape {y.shape}, range [{y.min()}, {y.max()}]")
        onehot = np.zeros(shape)
        onehot[np.arange(shape[0]), y] = 1.0
        return onehot
    if y.shape != shape:
        raise ValueError(f"targets have shape {y.shape}; expected {shape} like the logits, "
                         "or integer labels of shape (N,)")
    return y.astype(np.float64, copy=False)


def cross_entropy_forward(z: np.ndarray, y: np.ndarray, reduction: str = "mean"):
    """Softmax cross-entropy from logits, for a general target vector.

    z: (N, C) logits. y: (N, C) targets (any non-negative weights: one-hot,
    soft labels, or the assignment's multi-label [1, 1, 0]) or (N,) integer
    labels. Per example L_n = -sum_i y_ni ln softmax(z_n)_i, computed with the
    stable log-softmax. reduction: "mean" over the batch (training) or "sum".
    Returns the scalar loss and the cache.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r}: use 'mean' or 'sum'")
    y = _targets(y, z.shape)
    logp = log_softmax(z)
    per_example = -(y * logp).sum(axis=-1)
    scale = 1.0 / z.shape[0] if reduction == "mean" else 1.0
    return per_example.sum() * scale, (np.exp(logp), y, scale)


def cross_entropy_backward(dout, cache) -> np.ndarray:
    """dout: scalar dL/dloss (1.0 for the loss itself) -> dz (N, C).

    With ln p_i = z_i - ln sum_j e^{z_j}, the loss of one example is
    L = -sum_i y_i z_i + (sum_i y_i) ln sum_j e^{z_j}, hence
    dL/dz = (sum_i y_i) p - y. The familiar p - y is the special case
    sum_i y_i = 1 (one-hot or probability targets).
    """
    p, y, scale = cache
    return dout * scale * (p * y.sum(axis=-1, keepdims=True) - y)


# --- gradient checking ----------------------------------------------------------

def numerical_gradient(f: Callable[[np.ndarray], object], x: np.ndarray,
                       dout: np.ndarray | None = None, h: float = FD_STEP) -> np.ndarray:
    """Centred finite differences of f at x, (f(x + h e_i) - f(x - h e_i)) / 2h.

    x: float64 array, perturbed in place one entry at a time and restored, so
    f may close over it. f(x) returns a scalar, or an array that is contracted
    with `dout` (same shape as f(x)): the result is then the gradient of
    sum(dout * f(x)), i.e. what a backward pass returns for upstream gradient
    dout. Returns an array shaped like x.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise TypeError("numerical_gradient needs a float64 ndarray: in float32 the "
                        "rounding error eps/h swamps the derivative; use x.astype(np.float64)")

    def scalar(value) -> float:
        value = np.asarray(value, dtype=np.float64)
        if dout is None:
            if value.size != 1:
                raise ValueError(f"f returned shape {value.shape}; pass dout to contract it")
            return float(value.reshape(()))
        return float((value * dout).sum())

    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        original = x[i]
        x[i] = original + h
        plus = scalar(f(x))
        x[i] = original - h
        minus = scalar(f(x))
        x[i] = original
        grad[i] = (plus - minus) / (2.0 * h)
    return grad


def rel_error(a, b, floor: float = 1e-8) -> float:
    """max|a - b| / max(floor, max(|a| + |b|)).

    Relative to the array's largest magnitude rather than entry by entry:
    zero entries (a dead ReLU unit's row, say) would otherwise divide rounding
    noise by nearly nothing. The floor keeps two all-zero arrays at error 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(floor, float(np.max(np.abs(a) + np.abs(b)))))


def gradient_check(f: Callable[[np.ndarray], object], x: np.ndarray, analytic,
                   dout: np.ndarray | None = None, h: float = FD_STEP) -> float:
    """rel_error between `analytic` and the centred-difference gradient of f at x
    (see numerical_gradient). Returns the error; callers assert the threshold."""
    return rel_error(analytic, numerical_gradient(f, x, dout=dout, h=h))


# --- the Q1 network: x -> W1 -> ReLU -> W2 -> softmax -> cross-entropy -----------

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
    y_hat = softmax(z) -> L = CE(y, y_hat), composed from the layers above.

    x: (D,) or (N, D); y: (C,) or (N, C) general targets; w1: (H, D); w2: (C, H).
    Returns a dict of every intermediate: a, mask, h (.., H); z, y_hat,
    dL_dz (.., C); dL_dh, dL_da (.., H); loss (mean over the batch);
    dL_dW1 (H, D), dL_dW2 (C, H). A 1-D x gives 1-D intermediates.
    """
    single = np.ndim(x) == 1
    x2, y2 = np.atleast_2d(x), np.atleast_2d(y)
    a, lin1 = linear_forward(x2, w1)
    h, mask = relu_forward(a)
    z, lin2 = linear_forward(h, w2)
    y_hat, _ = softmax_forward(z)
    loss, ce = cross_entropy_forward(z, y2)
    dz = cross_entropy_backward(1.0, ce)
    dh, dw2, _ = linear_backward(dz, lin2)
    da = relu_backward(dh, mask)
    _, dw1, _ = linear_backward(da, lin1)
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
    import torch

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
