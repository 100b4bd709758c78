"""Closed-form answers to the written problems of the related course tasks
(extras/theory_checks.ipynb), as plain NumPy functions that tests can assert.

    cis520_gradients(x, y, W1, b1, W2, b2)   CIS 520 HW4 section 1 (tanh/sigmoid net)
    conv_output_size / fc_layer_parameters / conv_layer_parameters / cross_correlate
                                             CIS 520 HW4 section 2.1
    conv_sigmoid_avgpool_gradients(X, K, G)  ECE 449 A2 problem 1
    softmax_ce_gradient(z, p)                ECE 449 A2 problem 4
    softmax_layer_sgd_step(W, B, X, P, lr)   ECE 449 A2 problem 5
    relu_grad / fc_grads / softmax_jacobian / cross_entropy_grad
                                             ECE 421 A3 section 1.1

Each function follows the layout its assignment writes: CIS 520 and ECE 421
put examples in rows (z = xW + b, W of shape (in, out)); ECE 449 problem 5
uses column vectors (Z = WX + B); ECE 421's bias b is a 1 x n row vector,
and so is its gradient. `autograd_grads` is the independent reference the
notebook compares against. sigmoid, softmax and the softmax cross-entropy are
common.backprop's layers, reshaped to the problems' single vectors.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch

from .. import backprop as bp
from ..gradcheck import rel_error

__all__ = [
    "sigmoid", "softplus", "cis520_forward", "cis520_gradients",
    "conv_output_size", "fc_layer_parameters", "conv_layer_parameters", "cross_correlate",
    "avg_pool2", "conv_sigmoid_avgpool_forward", "conv_sigmoid_avgpool_gradients",
    "softmax", "softmax_ce_loss", "softmax_ce_gradient", "softmax_layer_sgd_step", "ECE449_P5_PRINTED",
    "relu_grad", "fc_forward", "fc_grads", "softmax_jacobian", "cross_entropy", "cross_entropy_grad",
    "autograd_grads", "check_row",
]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function without overflow: common.backprop's sigmoid_forward, output only."""
    return bp.sigmoid_forward(np.asarray(z, dtype=np.float64))[0]


def softplus(z: np.ndarray) -> np.ndarray:
    """ln(1 + e^z), computed as logaddexp(0, z) so large z does not overflow."""
    return np.logaddexp(0.0, z)


# --- CIS 520 section 1: x -> tanh(x W1 + b1) -> sigmoid(. W2 + b2) -------------------

def cis520_forward(x, y, W1, b1, W2, b2) -> dict:
    """Forward pass and the minimised loss.

    x: (N, D) rows (the assignment's x in R^2 is one row, D = 2); W1: (D, H);
    b1: (H,); W2: (H, K); b2: (K,); y: (N, K) targets in [0, 1].
    The loss is the NEGATED equation (5), binary cross-entropy summed over the
    K outputs and averaged over the N rows:
        L = -(1/N) sum_n sum_k [y ln s(z2) + (1 - y) ln(1 - s(z2))]
          = (1/N) sum [softplus(z2) - y z2]        (the stable form used here)
    Returns z1, a1 (N, H), z2, y_hat (N, K) and loss (a float).
    """
    z1 = x @ W1 + b1
    a1 = np.tanh(z1)
    z2 = a1 @ W2 + b2
    loss = float((softplus(z2) - y * z2).sum() / x.shape[0])
    return {"z1": z1, "a1": a1, "z2": z2, "y_hat": sigmoid(z2), "loss": loss}


def cis520_gradients(x, y, W1, b1, W2, b2) -> dict:
    """The hand-derived gradients of the minimised loss (see cis520_forward).

        delta2 = dL/dz2 = (y_hat - y) / N                      (N, K)
        dL/dW2 = a1^T delta2,  dL/db2 = 1^T delta2            (H, K), (K,)
        delta1 = dL/dz1 = (delta2 W2^T) * (1 - a1^2)          (N, H)
        dL/dW1 = x^T delta1,   dL/db1 = 1^T delta1            (D, H), (H,)

    The sigmoid's s(1 - s) cancels against the cross-entropy's 1 / (s(1 - s)),
    which is why delta2 is simply y_hat - y. Gradients of equation (5) as
    printed (the log-likelihood) are these with the opposite sign.
    """
    f = cis520_forward(x, y, W1, b1, W2, b2)
    delta2 = (f["y_hat"] - y) / x.shape[0]
    delta1 = (delta2 @ W2.T) * (1.0 - f["a1"] ** 2)
    return {**f, "delta2": delta2, "delta1": delta1,
            "dW2": f["a1"].T @ delta2, "db2": delta2.sum(axis=0),
            "dW1": x.T @ delta1, "db1": delta1.sum(axis=0)}


# --- CIS 520 section 2.1: sizes, parameter counts, the toy convolution ----------------

def conv_output_size(n: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial output size floor((n + 2p - k) / s) + 1 of a convolution or pooling."""
    span = n + 2 * padding - kernel
    if span < 0:
        raise ValueError(f"kernel {kernel} does not fit an input of {n} with padding {padding}")
    return span // stride + 1


def fc_layer_parameters(inputs: int, neurons: int) -> int:
    """A fully connected layer: one weight per (input, neuron) pair plus one bias per neuron."""
    return inputs * neurons + neurons


def conv_layer_parameters(in_channels: int, filters: int, kernel: int) -> int:
    """A convolution: each filter spans all input channels (k x k x C weights) plus a bias;
    the count does not depend on the input's height and width (weights are shared)."""
    return filters * (kernel * kernel * in_channels + 1)


def cross_correlate(image: np.ndarray, kernel: np.ndarray, stride: int = 1,
                    padding: int = 0) -> np.ndarray:
    """What deep-learning libraries call convolution: the kernel slides unflipped.

    image: (H, W); kernel: (k, l). out[i, j] = sum_{u, v} image[i s + u, j s + v] kernel[u, v]
    over the zero-padded image. Returns (H', W') with H' = conv_output_size(H, k, s, p).
    """
    image = np.pad(np.asarray(image, dtype=np.float64), padding)
    kernel = np.asarray(kernel, dtype=np.float64)
    k, l = kernel.shape
    rows = conv_output_size(image.shape[0], k, stride)
    cols = conv_output_size(image.shape[1], l, stride)
    out = np.empty((rows, cols))
    for i in range(rows):
        for j in range(cols):
            out[i, j] = (image[i * stride:i * stride + k, j * stride:j * stride + l] * kernel).sum()
    return out


# --- ECE 449 problem 1: conv (stride 1, no padding) -> sigmoid -> 2x2 average pool ----

def avg_pool2(S: np.ndarray) -> np.ndarray:
    """2x2 average pooling with stride 2. S: (2n, 2m) -> (n, m)."""
    n, m = S.shape[0] // 2, S.shape[1] // 2
    return S.reshape(n, 2, m, 2).mean(axis=(1, 3))


def conv_sigmoid_avgpool_forward(X: np.ndarray, K: np.ndarray) -> dict:
    """X: (2n + k - 1, 2m + k - 1); K: (k, k). Returns C, S (2n, 2m) and P (n, m)."""
    C = cross_correlate(X, K)
    if C.shape[0] % 2 or C.shape[1] % 2:
        raise ValueError(f"the convolution output {C.shape} must have even sides for 2x2 pooling; "
                         "X must be (2n + k - 1) x (2m + k - 1)")
    S = sigmoid(C)
    return {"C": C, "S": S, "P": avg_pool2(S)}


def conv_sigmoid_avgpool_gradients(X: np.ndarray, K: np.ndarray, G: np.ndarray) -> dict:
    """The closed forms, G = dloss/dP (n, m), 1-based indices as in the problem:

        dloss/dS_ab = g_{ceil(a/2), ceil(b/2)} / 4       (each pooled cell shares its gradient)
        dloss/dC_ab = dloss/dS_ab * s_ab (1 - s_ab)
        dloss/dk_uv = sum_{a<=2n, b<=2m} dloss/dC_ab x_{a+u-1, b+v-1}

    so dS is G upsampled by a 2x2 block of 1/4 (a Kronecker product) and dK is
    the valid cross-correlation of X with dC. Returns the forward dict plus
    dS, dC (2n, 2m) and dK (k, k).
    """
    f = conv_sigmoid_avgpool_forward(X, K)
    if G.shape != f["P"].shape:
        raise ValueError(f"G has shape {G.shape}; expected {f['P'].shape}, the shape of P")
    dS = np.kron(G, np.ones((2, 2))) / 4.0
    dC = dS * f["S"] * (1.0 - f["S"])
    return {**f, "dS": dS, "dC": dC, "dK": cross_correlate(X, dC)}


# --- ECE 449 problems 4 and 5: softmax with cross-entropy ----------------------------------

def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax along the last axis (z: (N,) or (m, N)): common.backprop's softmax_forward,
    which goes through the stable log-softmax."""
    return bp.softmax_forward(np.asarray(z, dtype=np.float64))[0]


def softmax_ce_loss(z: np.ndarray, p: np.ndarray) -> float:
    """E = -sum_i p_i ln q_i with q = softmax(z); z, p: (N,). common.backprop's
    cross_entropy_forward on a batch of one row."""
    return float(bp.cross_entropy_forward(np.asarray(z, dtype=np.float64)[None],
                                          np.asarray(p, dtype=np.float64)[None], reduction="sum")[0])


def softmax_ce_gradient(z: np.ndarray, p: np.ndarray) -> np.ndarray:
    """dE/dz_x = q_x sum_i p_i - p_x, which is q_x - p_x when the targets sum to 1
    (problem 4); z, p: (N,). common.backprop's cross_entropy_backward, whose general
    form (sum_i p_i) q - p is exactly this."""
    _, cache = bp.cross_entropy_forward(np.asarray(z, dtype=np.float64)[None],
                                        np.asarray(p, dtype=np.float64)[None], reduction="sum")
    return bp.cross_entropy_backward(1.0, cache)[0]


# What the extracted text of ECE 449 A2 Problem 5 still prints (B, X and P were lost):
# the notebook compares its parameters with these to say which values it uses.
ECE449_P5_PRINTED = {"W": ((1.0, 0.0), (0.0, -1.0)), "lr": 0.02}


def softmax_layer_sgd_step(W, B, X, P, lr: float) -> dict:
    """One SGD step for Z = W X + B, Q = softmax(Z), E = -sum_i p_i ln q_i (batch size 1).

    W: (K, D); B, P: (K,); X: (D,). With delta = dE/dZ = Q - P (targets summing to 1):
        dE/dW = delta X^T,  dE/dB = delta,  W' = W - lr dE/dW,  B' = B - lr dE/dB.
    Returns every intermediate: Z, Q, E, delta, dW, dB, W_new, B_new.
    """
    W, B, X, P = (np.asarray(a, dtype=np.float64) for a in (W, B, X, P))
    Z = W @ X + B
    Q = softmax(Z)
    delta = softmax_ce_gradient(Z, P)
    dW, dB = np.outer(delta, X), delta
    return {"Z": Z, "Q": Q, "E": softmax_ce_loss(Z, P), "delta": delta, "dW": dW, "dB": dB,
            "W_new": W - lr * dW, "B_new": B - lr * dB}


# --- ECE 421 section 1.1: batched layers, rows are examples -----------------------------------

def relu_grad(dY: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """dL/dZ = dL/dY * 1[Z > 0] for Y = ReLU(Z); Z, dY: (m, n)."""
    return dY * (Z > 0)


def fc_forward(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Z = X W + 1^T b. X: (m, n_in); W: (n_in, n_out); b: (1, n_out), the assignment's
    row vector -> Z (m, n_out). 1 is a (1, m) row of ones, so 1^T b repeats b in every row."""
    b = np.asarray(b)
    if b.shape != (1, W.shape[1]):
        raise ValueError(f"b has shape {b.shape}; ECE 421's bias is a row vector of shape (1, {W.shape[1]})")
    return X @ W + np.ones((X.shape[0], 1)) @ b


def fc_grads(dZ: np.ndarray, X: np.ndarray, W: np.ndarray) -> dict:
    """dL/dW = X^T dZ (n_in, n_out); dL/db = 1 dZ, the column sums as a (1, n_out)
    row, the shape of b; dL/dX = dZ W^T (m, n_in)."""
    return {"dW": X.T @ dZ, "db": np.ones((1, dZ.shape[0])) @ dZ, "dX": dZ @ W.T}


def softmax_jacobian(s: np.ndarray) -> np.ndarray:
    """J_ij = d sigma_i / d s_j = sigma_i (delta_ij - sigma_j), i.e. diag(sigma) - sigma sigma^T,
    for one score vector s: (k,) -> (k, k)."""
    sigma = softmax(s)
    return np.diag(sigma) - np.outer(sigma, sigma)


def cross_entropy(Y: np.ndarray, Y_hat: np.ndarray) -> float:
    """L = -(1/m) sum_ij Y_ij ln Y_hat_ij; Y, Y_hat: (m, k)."""
    return float(-(Y * np.log(Y_hat)).sum() / Y.shape[0])


def cross_entropy_grad(Y: np.ndarray, Y_hat: np.ndarray) -> np.ndarray:
    """dL/dY_hat = -(1/m) Y / Y_hat, elementwise; (m, k)."""
    return -Y / Y_hat / Y.shape[0]


# --- the reference ------------------------------------------------------------------------------

def autograd_grads(fn: Callable, inputs: Mapping[str, np.ndarray], wrt=None,
                   dout: np.ndarray | None = None) -> dict:
    """Gradients by torch autograd in float64, the independent check of a closed form.

    fn(**tensors) -> a torch tensor built from torch operations only. A scalar is
    differentiated as is; an array output is contracted with `dout` (same shape),
    giving the vector-Jacobian product a backward pass computes. `wrt` names the
    inputs to differentiate (default: all). Returns {name: ndarray}.
    """
    wrt = list(inputs) if wrt is None else list(wrt)
    tensors = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=k in wrt)
               for k, v in inputs.items()}
    out = fn(**tensors)
    if dout is None:
        if out.numel() != 1:
            raise ValueError(f"fn returned shape {tuple(out.shape)}; pass dout to contract it")
        out = out.reshape(())
    else:
        out = (out * torch.as_tensor(np.asarray(dout, dtype=np.float64))).sum()
    grads = torch.autograd.grad(out, [tensors[k] for k in wrt])
    return {k: g.numpy() for k, g in zip(wrt, grads)}


def check_row(part: str, quantity: str, comparison: str, analytic, reference,
              tolerance: float) -> dict:
    """One line of a check table: rel_error (common.gradcheck) of `analytic` against
    `reference`, and whether it is within `tolerance`."""
    error = rel_error(analytic, reference)
    return {"part": part, "quantity": quantity, "comparison": comparison, "error": error,
            "tolerance": tolerance, "passed": bool(error <= tolerance)}
