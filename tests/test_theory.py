"""common.extras.theory (the written problems of the related course tasks) against
independent computations, and extras/theory_checks.ipynb run end to end with
every numeric answer it reports asserted against PyTorch."""
from __future__ import annotations

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common import gradcheck as gc
from common.config import ROOT
from common.extras import theory as th
from common.latex import fmt, matrix
from conftest import bundle_tmpdir
from extras_helpers import cleanup, outputs_text, run_extra

AUTO = gc.AUTOGRAD_TOLERANCE


def rng(seed=0):
    return np.random.default_rng(seed)


def torch_grads(loss, tensors):
    return [g.numpy() for g in torch.autograd.grad(loss, tensors)]


# --- CIS 520 section 1 --------------------------------------------------------------------

@pytest.mark.parametrize("rows", [1, 3])
def test_cis520_gradients_match_autograd_of_the_negated_equation_5(rows):
    r = rng(rows)
    v = {"x": r.normal(size=(rows, 2)), "y": r.integers(0, 2, size=(rows, 2)).astype(float),
         "W1": r.normal(size=(2, 7)), "b1": r.normal(size=7), "W2": r.normal(size=(7, 2)),
         "b2": r.normal(size=2)}
    t = {k: torch.tensor(a, requires_grad=k not in ("x", "y")) for k, a in v.items()}
    y_hat = torch.sigmoid(torch.tanh(t["x"] @ t["W1"] + t["b1"]) @ t["W2"] + t["b2"])
    # Equation (5) as printed, then negated: the loss that is minimised.
    log_likelihood = (t["y"] * torch.log(y_hat) + (1 - t["y"]) * torch.log(1 - y_hat)).sum() / rows
    ref = torch_grads(-log_likelihood, [t["W1"], t["b1"], t["W2"], t["b2"]])
    ours = th.cis520_gradients(**v)
    assert ours["loss"] == pytest.approx(-log_likelihood.item(), rel=1e-12)
    for key, expected in zip(("dW1", "db1", "dW2", "db2"), ref):
        assert gc.rel_error(ours[key], expected) < AUTO, key
    np.testing.assert_allclose(ours["delta2"], (y_hat.detach().numpy() - v["y"]) / rows, rtol=1e-12)


def test_cis520_loss_is_stable_for_large_logits():
    v = {"x": np.array([[50.0, -50.0]]), "y": np.array([[1.0, 0.0]]), "W1": np.eye(2) * 10,
         "b1": np.zeros(2), "W2": np.array([[40.0, -40.0], [-40.0, 40.0]]), "b2": np.zeros(2)}
    out = th.cis520_forward(**v)
    assert np.isfinite(out["loss"]) and out["loss"] == pytest.approx(2 * np.log1p(np.exp(-80.0)), abs=1e-30)


# --- CIS 520 section 2.1 --------------------------------------------------------------------

def test_output_volume_and_parameter_counts_against_torch_layers():
    conv = torch.nn.Conv2d(16, 64, 6, stride=4, padding=2)
    side = th.conv_output_size(98, 6, stride=4, padding=2)
    assert conv(torch.zeros(1, 16, 98, 98)).shape == (1, 64, side, side)
    assert side == 25
    fc = torch.nn.Linear(99 * 99 * 3, 50 * 50 * 6, device="meta")
    assert th.fc_layer_parameters(99 * 99 * 3, 50 * 50 * 6) == sum(p.numel() for p in fc.parameters())
    conv3 = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)
    assert th.conv_layer_parameters(3, 6, 3) == sum(p.numel() for p in conv3.parameters())
    assert conv3(torch.zeros(1, 3, 99, 99)).shape[-1] == th.conv_output_size(99, 3, 2, 1) == 50
    with pytest.raises(ValueError, match="does not fit"):
        th.conv_output_size(3, 5)


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), (3, 2)])
def test_cross_correlate_matches_conv2d(stride, padding):
    r = rng(stride)
    image, kernel = r.normal(size=(9, 8)), r.normal(size=(3, 4))
    expected = F.conv2d(torch.tensor(image)[None, None], torch.tensor(kernel)[None, None],
                        stride=stride, padding=padding)[0, 0].numpy()
    np.testing.assert_allclose(th.cross_correlate(image, kernel, stride, padding), expected, rtol=1e-12)


# --- ECE 449 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, m, k", [(1, 1, 1), (2, 3, 3), (3, 2, 4)])
def test_conv_sigmoid_avgpool_closed_forms_match_autograd(n, m, k):
    r = rng(n * 10 + m + k)
    X, K, G = r.normal(size=(2 * n + k - 1, 2 * m + k - 1)), r.normal(size=(k, k)), r.normal(size=(n, m))
    Xt, Kt = torch.tensor(X), torch.tensor(K, requires_grad=True)
    C = F.conv2d(Xt[None, None], Kt[None, None])[0, 0]
    C.retain_grad()
    S = torch.sigmoid(C)
    S.retain_grad()
    P = F.avg_pool2d(S[None, None], 2)[0, 0]
    (P * torch.tensor(G)).sum().backward()
    ours = th.conv_sigmoid_avgpool_gradients(X, K, G)
    np.testing.assert_allclose(ours["P"], P.detach().numpy(), rtol=1e-12)
    for key, ref in (("dS", S.grad), ("dC", C.grad), ("dK", Kt.grad)):
        assert gc.rel_error(ours[key], ref.numpy()) < AUTO, key


def test_conv_sigmoid_avgpool_rejects_odd_sizes_and_wrong_G():
    with pytest.raises(ValueError, match="even sides"):
        th.conv_sigmoid_avgpool_forward(np.zeros((4, 5)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shape of P"):
        th.conv_sigmoid_avgpool_gradients(np.zeros((5, 5)), np.zeros((2, 2)), np.zeros((3, 3)))


def test_softmax_ce_gradient_is_q_minus_p_only_for_distributions():
    r = rng(4)
    z = r.normal(size=6)
    for p, expected_short in ((r.dirichlet(np.ones(6)), True), (r.uniform(0.2, 1, size=6), False)):
        zt = torch.tensor(z, requires_grad=True)
        (-(torch.tensor(p) * torch.log_softmax(zt, 0)).sum()).backward()
        assert gc.rel_error(th.softmax_ce_gradient(z, p), zt.grad.numpy()) < AUTO
        assert (gc.rel_error(th.softmax(z) - p, zt.grad.numpy()) < AUTO) == expected_short


def test_sgd_step_matches_torch_optim_sgd():
    W, B, X, P = np.array([[1.0, 0.0], [0.0, -1.0]]), np.array([0.3, -0.2]), np.array([2.0, -1.0]), np.array([0.0, 1.0])
    layer = torch.nn.Linear(2, 2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(W))
        layer.bias.copy_(torch.tensor(B))
    opt = torch.optim.SGD(layer.parameters(), lr=0.02)
    (-(torch.tensor(P) * torch.log_softmax(layer(torch.tensor(X)), 0)).sum()).backward()
    opt.step()
    step = th.softmax_layer_sgd_step(W, B, X, P, 0.02)
    np.testing.assert_allclose(step["W_new"], layer.weight.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(step["B_new"], layer.bias.detach().numpy(), rtol=1e-14)


# --- ECE 421 -------------------------------------------------------------------------------------------

def test_ece421_batched_gradients_match_autograd():
    r = rng(5)
    Z, dY = r.normal(size=(4, 5)), r.normal(size=(4, 5))
    Zt = torch.tensor(Z, requires_grad=True)
    (torch.relu(Zt) * torch.tensor(dY)).sum().backward()
    np.testing.assert_allclose(th.relu_grad(dY, Z), Zt.grad.numpy())

    X, W, b, dZ = r.normal(size=(4, 3)), r.normal(size=(3, 2)), r.normal(size=(1, 2)), r.normal(size=(4, 2))
    t = [torch.tensor(a, requires_grad=True) for a in (X, W, b)]
    ref = torch_grads(((t[0] @ t[1] + t[2]) * torch.tensor(dZ)).sum(), t)
    ours = th.fc_grads(dZ, X, W)
    assert ours["db"].shape == (1, 2)  # the assignment's bias is a 1 x n row vector
    for key, expected in zip(("dX", "dW", "db"), ref):
        assert gc.rel_error(ours[key], expected) < AUTO, key

    s = r.normal(size=5)
    J = torch.autograd.functional.jacobian(lambda v: torch.softmax(v, 0), torch.tensor(s)).numpy()
    assert gc.rel_error(th.softmax_jacobian(s), J) < AUTO

    Y, Y_hat = np.eye(3)[r.integers(0, 3, size=4)], th.softmax(r.normal(size=(4, 3)))
    Yh = torch.tensor(Y_hat, requires_grad=True)
    (-(torch.tensor(Y) * torch.log(Yh)).sum() / 4).backward()
    assert gc.rel_error(th.cross_entropy_grad(Y, Y_hat), Yh.grad.numpy()) < AUTO


def test_ece421_bias_gradient_is_a_1_by_n_row_against_finite_differences_and_autograd():
    """ECE 421 1.1.2 defines b in R^{1 x n} and Z = XW + 1^T b with 1 a (1, m) row of
    ones: dL/db = 1 dL/dZ must have b's shape (1, n), not NumPy's flat (n,)."""
    r = rng(8)
    m, n_in, n_out = 5, 4, 3
    X, W, b = r.normal(size=(m, n_in)), r.normal(size=(n_in, n_out)), r.normal(size=(1, n_out))
    target = r.normal(size=(m, n_out))

    def loss(b_):  # a scalar loss of Z, so dL/dZ = Z - target
        return 0.5 * ((th.fc_forward(X, W, b_) - target) ** 2).sum()

    dZ = th.fc_forward(X, W, b) - target
    db = th.fc_grads(dZ, X, W)["db"]
    assert db.shape == b.shape == (1, n_out)
    fd = gc.numerical_gradient(loss, b.copy())
    assert fd.shape == (1, n_out) and gc.rel_error(db, fd) < gc.FD_TOLERANCE
    bt = torch.tensor(b, requires_grad=True)
    (0.5 * ((torch.tensor(X) @ torch.tensor(W) + torch.ones(m, 1, dtype=torch.float64) @ bt
             - torch.tensor(target)) ** 2).sum()).backward()
    assert gc.rel_error(db, bt.grad.numpy()) < AUTO
    np.testing.assert_allclose(db[0], dZ.sum(axis=0), rtol=1e-12)  # the column sums of dL/dZ
    with pytest.raises(ValueError, match=r"row vector of shape \(1, 3\)"):
        th.fc_forward(X, W, b[0])


def test_autograd_grads_and_check_row():
    x = rng(6).normal(size=3)
    assert gc.rel_error(th.autograd_grads(lambda x: (x ** 3).sum(), {"x": x})["x"], 3 * x ** 2) < AUTO
    with pytest.raises(ValueError, match="dout"):
        th.autograd_grads(lambda x: x * 2, {"x": x})
    row = th.check_row("p", "q", "c", np.array([1.0]), np.array([1.1]), 1e-8)
    assert row["passed"] is False and row["error"] == pytest.approx(0.1 / 2.1)


# --- the notebook ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def theory_run():
    tmp = bundle_tmpdir("test-theory-")
    W, B, X, P = [[0.5, -1.0], [2.0, 0.25]], [0.1, -0.3], [1.5, -2.0], [0.25, 0.75]
    nb, summary = run_extra("theory_checks", tmp, p5_W=W, p5_B=B, p5_X=X, p5_P=P, p5_lr=0.1,
                            cis520_hidden=40, seed=3, smoke=True)
    yield nb, summary, (W, B, X, P)
    cleanup(tmp)


def test_theory_notebook_answers_match_independent_computations(theory_run):
    _, summary, (W, B, X, P) = theory_run
    res = summary["results"]
    assert set(res["parts"]) == {"CIS 520 §1", "CIS 520 §2.1", "ECE 449 P1", "ECE 449 P4", "ECE 449 P5",
                                 "ECE 421 §1.1"}
    assert res["checks"] and all(c["passed"] for c in res["checks"])
    s21 = res["cis520_section2_1"]
    out = torch.nn.Conv2d(16, 64, 6, stride=4, padding=2)(torch.zeros(1, 16, 98, 98)).shape
    assert s21["output_volume"] == [out[2], out[3], out[1]]
    assert s21["fc_parameters"] == (99 * 99 * 3 + 1) * (50 * 50 * 6)  # weights plus one bias per neuron
    assert s21["conv_parameters"] == sum(p.numel() for p in torch.nn.Conv2d(3, 6, 3).parameters())
    image = torch.tensor([[5, 7, 6, 0, 1], [9, 2, 6, 3, 1], [2, 8, 3, 6, 9], [0, 3, 2, 8, 1], [8, 5, 6, 1, 8]],
                         dtype=torch.float64)
    filters = torch.tensor([[[1, -4, 3], [3, -4, -3], [2, 0, 3]], [[0, 2, 1], [-3, 4, -1], [3, 1, 4]]],
                           dtype=torch.float64)
    expected = F.conv2d(image[None, None], filters[:, None])[0].numpy()
    np.testing.assert_array_equal(np.array(s21["toy_convolution"]), expected)
    for row in s21["table1"]:
        assert row["value"] == expected[row["filter"] - 1, row["row"] - 1, row["column"] - 1]
    # Problem 5 with the injected values, against torch.optim.SGD.
    W, B, X, P = (torch.tensor(a, dtype=torch.float64) for a in (W, B, X, P))
    layer = torch.nn.Linear(2, 2).double()
    with torch.no_grad():
        layer.weight.copy_(W)
        layer.bias.copy_(B)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    (-(P * torch.log_softmax(layer(X), 0)).sum()).backward()
    opt.step()
    p5 = res["ece449_p5"]
    np.testing.assert_allclose(p5["W_new"], layer.weight.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(p5["B_new"], layer.bias.detach().numpy(), rtol=1e-12)
    assert res["cis520_section1"]["hidden"] == 40 and res["cis520_section1"]["single_row_loss"] > 0


def test_theory_notebook_text_follows_its_parameters_and_the_tolerance_constants(theory_run):
    """The run injects W and alpha that differ from the printed ones: the text must say so,
    and the tolerance paragraph must quote the constants the checks use."""
    nb, _, (W, B, X, P) = theory_run
    text = outputs_text(nb)
    printed = th.ECE449_P5_PRINTED
    assert f"$W = {matrix(W)}$, **not** the printed $W = {matrix(printed['W'])}$" in text
    assert f"$\\alpha = {fmt(0.1)}$, **not** the printed $\\alpha = {fmt(printed['lr'])}$" in text
    assert f"$B = {matrix(B)}$, $X = {matrix(X)}$, $P = {matrix(P)}$" in text
    for quoted in (f"$h = {fmt(gc.FD_STEP, 1)}$", f"$h^2 = {fmt(gc.FD_STEP ** 2, 1)}$",
                   f"the tolerance is ${fmt(gc.FD_TOLERANCE, 1)}$",
                   f"the tolerance is ${fmt(gc.AUTOGRAD_TOLERANCE, 1)}$"):
        assert quoted in text
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "10^{-" not in prose and str(printed["lr"]) in prose  # only the assignment's own values


def test_theory_notebook_answers_ece449_problem_2_in_words():
    """Problem 2 asks for prose: one markdown cell answers 2.1 (one-stage vs multi-stage
    detectors) and 2.2 (why NMS), naming the mechanisms the answers rest on."""
    nb = nbformat.read(ROOT / "extras" / "theory_checks.ipynb", as_version=4)
    cells = [c.source for c in nb.cells
             if c.cell_type == "markdown" and c.source.startswith("## ECE 449 Problem 2")]
    assert len(cells) == 1
    text = cells[0]
    assert "**2.1" in text and "**2.2" in text
    for phrase in ("single forward pass", "proposal", "end to end", "IoU", "duplicates", "threshold"):
        assert phrase in text, phrase
    assert "ECE 449 P2" in nb.cells[0].source  # listed in the notebook's table of problems


def test_theory_notebook_rejects_a_target_that_is_not_a_distribution():
    tmp = bundle_tmpdir("test-theory-bad-")
    try:
        import papermill as pm
        with pytest.raises(pm.PapermillExecutionError, match="p5_P"):
            run_extra("theory_checks", tmp, p5_P=[1.0, 1.0])
    finally:
        cleanup(tmp)
