"""NumPy layers as forward/backward pairs, and the losses (Q1).

Every layer follows the CS231n contract:

    out, cache = layer_forward(x, ...)      # cache holds what the backward pass needs
    dx, ... = layer_backward(dout, cache)   # dout = dL/dout, same shape as out

Batches are rows: x has shape (N, D). Weights use PyTorch's `nn.Linear` layout,
w of shape (M, D) and out = x w^T + b, so the assignment's `a = W1 x` for one
column vector x is `linear_forward(x[None, :], W1)` and the weight gradient of a
single example is the outer product `delta x^T` exactly as written on paper.

Everything here is float64-friendly, side-effect free and NumPy only. The
numerical checks of these layers are in `common.gradcheck`; the Q1 network
composed from them is in `common.two_layer`.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "linear_forward", "linear_backward", "relu_forward", "relu_backward",
    "prelu_forward", "prelu_backward", "tanh_forward", "tanh_backward",
    "sigmoid_forward", "sigmoid_backward", "log_softmax", "softmax_forward",
    "softmax_backward", "cross_entropy_forward", "cross_entropy_backward",
]


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
