"""Numerical gradient checks: centred finite differences and the relative error
used to compare gradients (Q1, and the extras' NumPy networks).

    err = gradient_check(lambda v: linear_forward(v, w)[0], x, dx, dout)
    assert err < FD_TOLERANCE

NumPy only.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["numerical_gradient", "rel_error", "gradient_check",
           "FD_STEP", "FD_TOLERANCE", "AUTOGRAD_TOLERANCE"]

# Centred differences in float64: truncation error ~ h^2 |f'''| / 6 and rounding
# error ~ eps |f| / h (eps = 2.2e-16). h = 1e-5 balances the two at ~1e-10 for
# losses and gradients of order one, so 1e-7 leaves three orders of margin while
# still catching any real mistake (a wrong factor or a missing term is >= 1e-2).
FD_STEP = 1e-5
FD_TOLERANCE = 1e-7
# Library and autograd perform the same float64 operations in a different
# order, so they agree to a few ulps (~1e-16 relative); 1e-8 is generous.
AUTOGRAD_TOLERANCE = 1e-8


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
