"""Q1: the LaTeX helpers, and the notebook run through papermill with the
assignment's values and with other sizes, checked against torch autograd and
with every emitted formula parsed by matplotlib's mathtext."""
from __future__ import annotations

import json
import math
import re
from decimal import Decimal

import nbformat
import numpy as np
import papermill as pm
import pytest
import torch
import torch.nn.functional as F

from common import latex
from common.gradcheck import rel_error
from common.latex import FormulaError, check_formula, eq, fmt, formulas_in, matrix, parse_number
from common.config import ROOT
from conftest import assert_submittable, bundle_kernel

NOTEBOOK = ROOT / "Q1" / "Q1.ipynb"


# --- number formatting ----------------------------------------------------------------

@pytest.mark.parametrize("value, sig, shown", [
    (0.15, 3, "0.150"),             # trailing zeros are significant
    (1.2, 3, "1.20"),
    (-0.28864, 3, "-0.289"),
    (2.675, 3, "2.68"),             # half away from zero on the printed value, 2.675
    (-1.15, 2, "-1.2"),
    (9.9996, 3, "10.0"),            # rounding carries into a new digit
    (-0.0, 3, "0"),
    (1234.5, 3, r"1.23 \times 10^{3}"),
    (1.2345e-5, 3, r"1.23 \times 10^{-5}"),
    (0.000123456, 3, "0.000123"),
    (-1.0, None, "-1"),             # inputs as given
    (0.5, None, "0.5"),
    (1e-5, None, r"1 \times 10^{-5}"),
])
def test_fmt_follows_the_stated_rounding_rule(value, sig, shown):
    assert fmt(value, sig) == shown
    assert parse_number(shown) == pytest.approx(float(latex.round_sig(value, sig or 17)), rel=1e-15)


@pytest.mark.parametrize("sig", [1, 2, 3, 5])
def test_displayed_value_is_within_half_a_unit_of_the_last_digit(sig):
    values = np.random.default_rng(sig).normal(size=300) * 10.0 ** np.random.default_rng(9).integers(
        -7, 7, size=300)
    for v in values:
        text = fmt(v, sig)
        shown = parse_number(text)
        digits = re.sub(r"\s*\\times.*|[-.]", "", text).lstrip("0")
        assert len(digits) == sig, (v, text)
        assert_rounds_to(text, v, sig)
        assert float(fmt(v, sig, latex=False)) == shown  # the plain-text form used in JSON


def test_round_sig_matches_the_display():
    values = np.random.default_rng(1).normal(size=(4, 5))
    rounded = latex.round_sig(values, 3)
    assert rounded.shape == values.shape
    for v, r in zip(values.ravel(), rounded.ravel()):
        assert r == float(Decimal(fmt(v, 3)))


# --- matrices and the formula checker -------------------------------------------------

@pytest.mark.parametrize("shape", [(3,), (4, 3), (1, 4), (2, 1)])
def test_matrix_grid_has_the_array_shape_and_its_entries(shape):
    arr = np.random.default_rng(2).normal(size=shape)
    grids = check_formula(eq(r"\mathbf{A} =", arr, sig=3))
    assert len(grids) == 1
    grid = np.array(grids[0])
    assert grid.shape == (arr.reshape(arr.shape[0], -1).shape)
    np.testing.assert_array_equal(np.vectorize(parse_number)(grid), latex.round_sig(arr, 3).reshape(grid.shape))


def test_nested_and_aligned_environments_are_checked():
    inner = matrix(np.eye(2))
    grids = check_formula(r"\begin{aligned} \mathbf{I} &= " + inner + r" \\ &= \mathbf{I}^{\top} \end{aligned}")
    assert [len(g) for g in grids] == [2, 2]


@pytest.mark.parametrize("bad", [
    r"\begin{bmatrix} 1 & 2 \\ 3 \end{bmatrix}",             # ragged
    r"\mathbf{a} = \begin{bmatrix} 1 \\ 2",                  # no \end
    r"\begin{bmatrix} 1 \end{pmatrix}",                      # mismatched
    r"\begin{bmatrix} 1 & \frac{1}{ \end{bmatrix}",          # broken cell
    r"\begin{cases} 1 \end{cases}",                          # unsupported environment
    r"\mathbf{a} = \notacommand{x}",
    r"\frac{\partial L}{\partial W",
    r"x \end{bmatrix}",
])
def test_broken_formulas_fail(bad):
    with pytest.raises(FormulaError):
        check_formula(bad)


def test_formulas_in_finds_display_and_inline_maths():
    text = r"Given $x_1$ and $$\mathbf{a} = \mathbf{W}x$$ then $y$, costs \$5."
    assert formulas_in(text) == [r"\mathbf{a} = \mathbf{W}x", "x_1", "y"]


# --- the notebook -----------------------------------------------------------------------

def assert_rounds_to(text, value, sig):
    """`text` shows `value` to `sig` significant figures: within half a unit of its
    last digit (plus float slack), and exactly "0" for an exact zero."""
    if value == 0:
        assert text == "0", (text, value)
        return
    shown = parse_number(text)
    unit = 10.0 ** (math.floor(math.log10(abs(shown))) - sig + 1)
    assert abs(shown - value) <= 0.5 * unit * (1 + 1e-9), (text, value)


def torch_reference(x, y, w1, w2):
    """Independent oracle for one example, float64 autograd."""
    xt, yt = torch.tensor([x], dtype=torch.float64), torch.tensor([y], dtype=torch.float64)
    w1t = torch.tensor(w1, dtype=torch.float64, requires_grad=True)
    w2t = torch.tensor(w2, dtype=torch.float64, requires_grad=True)
    h = F.relu(xt @ w1t.T)
    z = h @ w2t.T
    loss = -(yt * F.log_softmax(z, dim=1)).sum()
    loss.backward()
    return {"h": h[0].detach().numpy(), "y_hat": F.softmax(z, dim=1)[0].detach().numpy(),
            "loss": loss.item(), "dL_dW1": w1t.grad.numpy(), "dL_dW2": w2t.grad.numpy()}


@pytest.fixture(scope="module")
def executed_default_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("q1-default-path")
    run_q1(tmp)
    return tmp / "Q1.ipynb", tmp / "results"


def run_q1(tmp_dir, **params):
    out = tmp_dir / "Q1.ipynb"
    params["results_dir"] = str(tmp_dir / "results")
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters=params, kernel_name=bundle_kernel(),
                        cwd=str(NOTEBOOK.parent), progress_bar=False)
    summary = json.loads((tmp_dir / "results" / "summary.json").read_text())
    return nbformat.read(out, as_version=4), summary


def emitted_formulas(nb):
    """Every formula a reader sees: in markdown cells and in Markdown outputs."""
    formulas = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            formulas += formulas_in(cell.source)
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/markdown")
            if text:
                formulas += formulas_in(text)
    return formulas


ANSWERS = {"h": r"\mathbf{h} =", "y_hat": r"\hat{\mathbf{y}} =",
           "dL_dW2": r"\frac{\partial\mathcal{L}_{\mathrm{CE}}}{\partial\mathbf{W}_2} =",
           "dL_dW1": r"\frac{\partial\mathcal{L}_{\mathrm{CE}}}{\partial\mathbf{W}_1} ="}

CASES = {
    "assignment": {},
    "5-6-4": dict(x=[1.5, -0.7, 0.25, 2.0, -1.1], y=[0.5, 0, 2, 0.25], sig_digits=4,
                  W1=np.round(np.random.default_rng(11).normal(size=(6, 5)), 3).tolist(),
                  W2=np.round(np.random.default_rng(12).normal(size=(4, 6)), 3).tolist()),
}


@pytest.fixture(scope="module", params=list(CASES))
def executed(request, tmp_path_factory):
    params = dict(CASES[request.param])
    nb, summary = run_q1(tmp_path_factory.mktemp(f"q1-{request.param}"), **params)
    declared = pm.inspect_notebook(str(NOTEBOOK))
    inputs = {k: params.get(k, declared[k]["default"]) for k in ("x", "y", "W1", "W2", "sig_digits")}
    inputs = {k: v if not isinstance(v, str) else json.loads(v) for k, v in inputs.items()}
    return nb, summary, inputs


def test_executed_notebook_passes_make_check(executed_default_path):
    notebook, results_dir = executed_default_path
    assert_submittable("Q1", notebook, results_dir)


def test_summary_matches_autograd(executed):
    _, summary, p = executed
    ref = torch_reference(p["x"], p["y"], p["W1"], p["W2"])
    results = summary["results"]
    for key, value in ref.items():
        got = np.array(results[key])
        assert got.shape == np.shape(value), key
        assert rel_error(got, value) < 1e-8, key
        # The displayed strings are the library's full-precision values rounded by the
        # rule; against autograd they are within half a unit of the last digit (not
        # always equal: at an exact tie a 1e-16 difference can tip the rounding).
        shown = np.array(results[key + "_display"], dtype=object)
        for full, exact_value, text in zip(np.ravel(got), np.ravel(value), np.ravel(shown)):
            assert text == fmt(full, p["sig_digits"], latex=False)
            assert_rounds_to(text, exact_value, p["sig_digits"])
    assert all(c["passed"] is True for c in results["checks"])


def test_every_emitted_formula_parses(executed):
    nb, _, _ = executed
    formulas = emitted_formulas(nb)
    assert len(formulas) > 40
    for tex in formulas:
        check_formula(tex)


def test_displayed_answers_are_the_rounded_autograd_values(executed):
    nb, _, p = executed
    ref = torch_reference(p["x"], p["y"], p["W1"], p["W2"])
    sig = p["sig_digits"]
    formulas = emitted_formulas(nb)
    for key, lhs in ANSWERS.items():
        found = [f for f in formulas if f.startswith(lhs) and len(check_formula(f)) == 1
                 and f.rstrip().endswith(r"\end{bmatrix}")]
        assert len(found) == 1, (key, found)
        grid = np.array(check_formula(found[0])[0])
        expected = np.asarray(ref[key]).reshape(grid.shape[0], -1)
        assert grid.shape == expected.shape, key
        for text, value in zip(grid.ravel(), expected.ravel()):
            assert_rounds_to(text, value, sig)


def test_derivation_shows_every_step(executed):
    nb, _, p = executed
    text = "\n".join(f for f in emitted_formulas(nb))
    for step in (r"\mathbf{a} = \mathbf{W}_1\mathbf{x} =", r"\mathbf{m} = \mathbf{1}[\mathbf{a} > 0] =",
                 r"\mathbf{z} = \mathbf{W}_2\mathbf{h} =", r"e^{\mathbf{z}}", r"\sum_{j} e^{z_j} =",
                 r"\mathcal{L} = -\sum_{i} y_i \ln\hat{y}_i =", r"\boldsymbol{\delta}_2 = ",
                 r"\mathbf{W}_2^{\top}\boldsymbol{\delta}_2 =", r"\boldsymbol{\delta}_1 = ",
                 r"\boldsymbol{\delta}_1\,\mathbf{x}^{\top} ="):
        assert step in text, step
    # Q1(a)/Q1(b) comments mark the sub-questions in the code.
    sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "# Q1(a)" in sources and "# Q1(b)" in sources


def test_bad_shape_stops_the_notebook_naming_the_parameter(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as err:
        run_q1(tmp_path, W2=[[0.1, 0.2, -0.1], [0.2, 0.3, 0.1]])
    assert err.value.ename == "ConfigError"
    assert "parameter W2" in err.value.evalue and "C x 4" in err.value.evalue
