"""The MLP's gradient checks (ECE 449 A2, ECE 421 A3): every layer of
`common.backprop`, and the whole network of `common.extras.numpy_mlp`, against
centred finite differences and torch autograd (mlp_autograd: the same network
in torch, the independent reference).

    rows = layer_checks(seed=0) + network_checks(sizes=(8, 7, 6, 4), n=5, seed=0)

Each row holds the relative errors (common.gradcheck.rel_error) of the analytic
gradient against both references.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import backprop as bp
from ..gradcheck import numerical_gradient, rel_error
from .numpy_mlp import ACTIVATIONS, init_mlp, layer_count, mlp_loss

__all__ = ["mlp_autograd", "layer_checks", "network_checks"]


def mlp_autograd(params: dict, x: np.ndarray, y: np.ndarray, activation: str = "relu"):
    """The independent reference: the same network in torch float64 (F.linear,
    F.prelu, F.cross_entropy), gradients by autograd. Returns (loss, grads)."""
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    acts = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}
    h = torch.tensor(x, dtype=torch.float64)
    L = layer_count(params)
    for i in range(1, L + 1):
        h = F.linear(h, t[f"W{i}"], t[f"b{i}"])
        if i < L:
            h = F.prelu(h, t[f"alpha{i}"]) if activation == "prelu" else acts[activation](h)
    loss = F.cross_entropy(h, torch.as_tensor(np.asarray(y), dtype=torch.int64))
    loss.backward()
    return float(loss.detach()), {k: v.grad.numpy() for k, v in t.items()}


def _away_from_kink(x: np.ndarray, margin: float = 0.05) -> np.ndarray:
    """Move entries off 0, where ReLU/PReLU have no derivative and a centred
    difference straddles both branches."""
    return np.where(np.abs(x) < margin, np.where(x < 0, -1.0, 1.0) * (margin + np.abs(x)), x)


def layer_checks(seed: int = 0, n: int = 4, d: int = 6, m: int = 5) -> list[dict]:
    """Every layer's backward pass against centred finite differences and torch
    autograd, with a random upstream gradient. One row per (layer, input):
    layer, wrt, fd_error, autograd_error (rel_error)."""
    rng = np.random.default_rng(seed)
    x = _away_from_kink(rng.normal(size=(n, d)))
    w, b = rng.normal(size=(m, d)), rng.normal(size=m)
    alpha = rng.uniform(0.05, 0.5, size=d)
    dout_nd, dout_nm = rng.normal(size=(n, d)), rng.normal(size=(n, m))
    labels = rng.integers(0, m, size=n)
    z = rng.normal(size=(n, m))
    rows = []

    def ref(fn, arrays, dout):
        ts = [torch.tensor(a, requires_grad=True) for a in arrays]
        out = fn(*ts)
        out = out if dout is None else (out * torch.tensor(dout)).sum()
        return [g.numpy() for g in torch.autograd.grad(out, ts)]

    def add(layer, wrt, analytic, fd, auto):
        rows.append({"layer": layer, "wrt": wrt, "fd_error": rel_error(analytic, fd),
                     "autograd_error": rel_error(analytic, auto)})

    out, cache = bp.linear_forward(x, w, b)
    dx, dw, db = bp.linear_backward(dout_nm, cache)
    auto = ref(lambda a, c, e: F.linear(a, c, e), [x, w, b], dout_nm)
    for name, analytic, arr, a_ref in (("x", dx, x, auto[0]), ("W", dw, w, auto[1]), ("b", db, b, auto[2])):
        fd = numerical_gradient(
            lambda v, name=name: bp.linear_forward(v if name == "x" else x, v if name == "W" else w,
                                                   v if name == "b" else b)[0],
            arr.copy(), dout_nm)
        add("linear", name, analytic, fd, a_ref)

    for layer, fwd, bwd, tfn in (("relu", bp.relu_forward, bp.relu_backward, torch.relu),
                                 ("sigmoid", bp.sigmoid_forward, bp.sigmoid_backward, torch.sigmoid),
                                 ("tanh", bp.tanh_forward, bp.tanh_backward, torch.tanh)):
        _, cache = fwd(x)
        analytic = bwd(dout_nd, cache)
        fd = numerical_gradient(lambda v, fwd=fwd: fwd(v)[0], x.copy(), dout_nd)
        add(layer, "x", analytic, fd, ref(tfn, [x], dout_nd)[0])

    _, cache = bp.prelu_forward(x, alpha)
    dx, dalpha = bp.prelu_backward(dout_nd, cache)
    auto = ref(F.prelu, [x, alpha], dout_nd)
    add("prelu", "x", dx, numerical_gradient(lambda v: bp.prelu_forward(v, alpha)[0], x.copy(), dout_nd),
        auto[0])
    add("prelu", "alpha", dalpha,
        numerical_gradient(lambda v: bp.prelu_forward(x, v)[0], alpha.copy(), dout_nd), auto[1])

    _, cache = bp.cross_entropy_forward(z, labels)
    dz = bp.cross_entropy_backward(1.0, cache)
    fd = numerical_gradient(lambda v: bp.cross_entropy_forward(v, labels)[0], z.copy())
    auto = ref(lambda a: F.cross_entropy(a, torch.as_tensor(labels)), [z], None)
    add("softmax cross-entropy", "logits", dz, fd, auto[0])
    return rows


def network_checks(sizes: Sequence[int] = (8, 7, 6, 4), n: int = 5, seed: int = 0) -> list[dict]:
    """The whole network's gradients (mlp_loss) against finite differences of the
    loss and against mlp_autograd, for every activation and every parameter.
    One row per (activation, parameter): activation, param, fd_error, autograd_error."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, sizes[0]))
    y = rng.integers(0, sizes[-1], size=n)
    rows = []
    for activation in ACTIVATIONS:
        params = init_mlp(sizes, activation, seed=seed)
        for k in params:  # non-zero biases and slopes exercise every term
            if k.startswith("b") or k.startswith("alpha"):
                params[k] = params[k] + rng.uniform(0.05, 0.3, size=params[k].shape)
        _, grads = mlp_loss(params, x, y, activation)
        _, auto = mlp_autograd(params, x, y, activation)
        for k in params:
            def loss_of(v, k=k):
                return mlp_loss({**params, k: v}, x, y, activation)[0]
            fd = numerical_gradient(loss_of, params[k].copy())
            rows.append({"activation": activation, "param": k,
                         "fd_error": rel_error(grads[k], fd),
                         "autograd_error": rel_error(grads[k], auto[k])})
    return rows
