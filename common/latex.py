r"""Typeset computed arrays as LaTeX for a notebook's Markdown outputs, and check
that what was emitted parses.

    show("The hidden pre-activation:",
         eq(r"\mathbf{a} = \mathbf{W}_1\mathbf{x} =", exact(W1), exact(x), "=", a, sig=3))

Arrays become `bmatrix` environments (1-D arrays are column vectors) with
every entry rounded for display only; the arrays themselves stay at full
precision. MathJax renders the result in the notebook and in the PDF report.

Rounding rule (`round_sig`, `fmt`): k significant figures, half away from
zero, applied to the shortest decimal form of the float64 value (what `repr`
prints), i.e. the schoolbook rule applied to the number a calculator shows.

`check_formula` runs emitted LaTeX through matplotlib's mathtext, which has
no matrix environments: each environment is checked for balance and for a
rectangular grid, each cell is parsed on its own, and the environment is then
replaced by a placeholder so the surrounding formula can be parsed too.
"""
from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal
import numpy as np

__all__ = ["round_sig", "fmt", "fmt_array", "matrix", "exact", "eq", "grad", "expand_product",
           "displayed_differences", "markdown_table", "markdown", "show",
           "formulas_in", "check_formula", "parse_number", "Formula", "FormulaError"]


# --- numbers ------------------------------------------------------------------

def _rounded(value: float, sig: int) -> Decimal:
    """value rounded to `sig` significant figures as an exact Decimal (0 for 0)."""
    d = Decimal(repr(float(value)))
    if d == 0:
        return Decimal(0)
    exponent = d.adjusted()
    q = d.quantize(Decimal(1).scaleb(exponent - sig + 1), rounding=ROUND_HALF_UP)
    if q.adjusted() != exponent:  # 9.995 -> 10.0: one more digit before the point
        q = q.quantize(Decimal(1).scaleb(q.adjusted() - sig + 1), rounding=ROUND_HALF_UP)
    return q


def round_sig(values, sig: int) -> np.ndarray:
    """Round every entry to `sig` significant figures by the display rule, returning
    float64 (the float nearest to the rounded decimal). Any shape."""
    arr = np.asarray(values, dtype=np.float64)
    flat = [float(_rounded(v, sig)) for v in arr.ravel()]
    return np.array(flat, dtype=np.float64).reshape(arr.shape)


def fmt(value, sig: int | None = None, *, latex: bool = True) -> str:
    """One number as displayed. sig=None shows the value as given (shortest repr,
    for exact inputs); otherwise `sig` significant figures, trailing zeros kept
    (0.15 -> 0.150), scientific notation outside 1e-4 <= |v| < 10^sig.
    latex=False gives plain text (1.23e-05) for JSON and tables."""
    value = float(value)
    if math.isnan(value):
        return r"\mathrm{NaN}" if latex else "nan"
    if math.isinf(value):
        return ("-" if value < 0 else "") + (r"\infty" if latex else "inf")
    if value == 0:
        return "0"  # also for -0.0, which would otherwise print as "-0.00"
    # Exact inputs keep all their digits; computed values show `sig` of them.
    d = Decimal(repr(value)).normalize() if sig is None else _rounded(value, sig)
    exponent = d.adjusted()
    if -4 <= exponent < (16 if sig is None else sig):
        return format(d, "f")
    mantissa = format(d.scaleb(-exponent), "f")
    return rf"{mantissa} \times 10^{{{exponent}}}" if latex else f"{mantissa}e{exponent:+03d}"


def parse_number(text: str) -> float:
    """Inverse of fmt for LaTeX output: '1.23 \\times 10^{-5}' -> 1.23e-05."""
    text = text.strip()
    m = re.fullmatch(r"(-?[0-9.]+)\s*\\times\s*10\^\{(-?\d+)\}", text)
    if m:
        return float(f"{m.group(1)}e{m.group(2)}")
    return float(text)


# --- formulas -------------------------------------------------------------------

class Formula(str):
    """A LaTeX formula; `markdown`/`show` put it in its own $$ display block."""


class exact:
    """Mark an array (or number) to be shown as given, not rounded: for inputs."""

    def __init__(self, value):
        self.value = value


def matrix(value, sig: int | None = None) -> str:
    """An array as a bmatrix: 2-D as is, 1-D as a column vector, 0-D as a number.
    String entries (e.g. from expand_product) are used verbatim."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        return _entry(arr.item(), sig)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"matrix() renders up to 2-D arrays, got shape {arr.shape}")
    rows = [" & ".join(_entry(v, sig) for v in row) for row in arr]
    return r"\begin{bmatrix} " + r" \\ ".join(rows) + r" \end{bmatrix}"


def _entry(v, sig):
    return v if isinstance(v, str) else fmt(v, sig)


def eq(*parts, sig: int | None = None) -> Formula:
    """Join LaTeX strings and arrays into one formula. Strings pass through;
    arrays and numbers become matrices rounded to `sig`; `exact(a)` is shown
    as given."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, exact):
            out.append(matrix(part.value, None))
        else:
            out.append(matrix(part, sig))
    return Formula(" ".join(out))


def grad(wrt: str, of: str = r"\mathcal{L}") -> str:
    r"""The partial derivative of `of` with respect to `wrt`, as a LaTeX fraction:
    grad(r"\mathbf{W}_2") -> \frac{\partial\mathcal{L}}{\partial\mathbf{W}_2}."""
    return rf"\frac{{\partial{of}}}{{\partial{wrt}}}"


def _factor(v, sig):
    text = fmt(v, sig)
    return f"({text})" if text.startswith("-") or r"\times" in text else text


def expand_product(w, v, sig_w: int | None = None, sig_v: int | None = None) -> np.ndarray:
    """The entries of w @ v written out: row i becomes 'w_i1 \\cdot v_1 + ...'.
    w: (M, K), v: (K,) -> (M,) array of LaTeX strings, for matrix()."""
    w, v = np.asarray(w), np.asarray(v)
    return np.array([" + ".join(rf"{_factor(a, sig_w)} \cdot {_factor(b, sig_v)}"
                                for a, b in zip(row, v)) for row in w], dtype=object)


def fmt_array(values, sig: int | None = None, *, latex: bool = False):
    """fmt applied entrywise; returns nested lists of strings (a str for 0-D),
    e.g. the displayed strings stored beside full-precision results in JSON."""
    arr = np.asarray(values, dtype=np.float64)
    return np.vectorize(lambda v: fmt(v, sig, latex=latex), otypes=[object])(arr).tolist()


def displayed_differences(reference: dict, other: dict, sig: int) -> list[dict]:
    """Entries whose displayed value (at `sig` significant figures) differs between
    two dicts of arrays with the same keys, e.g. an exact calculation and one that
    rounds each intermediate. Rows: key, index (1-based, as in the maths), the two
    displayed strings, and `units`: the difference in units of the last displayed
    digit of the reference."""
    rows = []
    for key, ref in reference.items():
        ref = np.atleast_1d(np.asarray(ref, dtype=np.float64))
        oth = np.atleast_1d(np.asarray(other[key], dtype=np.float64))
        for index in np.ndindex(ref.shape):
            shown, alt = fmt(ref[index], sig, latex=False), fmt(oth[index], sig, latex=False)
            if shown != alt:
                a, b = _rounded(ref[index], sig), _rounded(oth[index], sig)
                last_digit = Decimal(1).scaleb(a.adjusted() - sig + 1) if a != 0 else abs(b)
                rows.append({"key": key, "index": tuple(i + 1 for i in index),
                             "reference": shown, "other": alt,
                             "units": float(abs(a - b) / last_digit)})
    return rows


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A Markdown (GitHub) table; cells are converted with str()."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(*blocks) -> str:
    """Prose strings and Formulas -> one Markdown text; each Formula is a $$ block."""
    return "\n\n".join(f"$$\n{b}\n$$" if isinstance(b, Formula) else str(b) for b in blocks)


def show(*blocks) -> None:
    """Display prose and formulas as one Markdown output (MathJax renders the maths)."""
    from IPython.display import Markdown, display

    display(Markdown(markdown(*blocks)))


# --- checking emitted LaTeX -------------------------------------------------------

class FormulaError(ValueError):
    """A formula would not typeset: unbalanced, ragged, or rejected by mathtext."""


_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)
_INLINE = re.compile(r"(?<![\\$])\$(?!\$)(.+?)(?<![\\$])\$", re.DOTALL)
_ENV = re.compile(r"\\(begin|end)\{([a-zA-Z*]+)\}")
# Environments whose content is a grid: rows split by \\, cells by &.
GRID_ENVS = {"bmatrix", "pmatrix", "vmatrix", "matrix", "aligned"}
_PARSER = None


def formulas_in(text: str) -> list[str]:
    """The $$...$$ and $...$ formulas of a Markdown text, in that order."""
    displays = _DISPLAY.findall(text)
    rest = _DISPLAY.sub(" ", text)
    return [d.strip() for d in displays] + [m.strip() for m in _INLINE.findall(rest)]


def _mathtext(tex: str) -> None:
    global _PARSER
    if _PARSER is None:
        from matplotlib.mathtext import MathTextParser
        _PARSER = MathTextParser("path")
    flat = " ".join(tex.split())
    if not flat:
        return
    try:
        _PARSER.parse(f"${flat}$")
    except ValueError as err:
        first = str(err).strip().splitlines()
        raise FormulaError(f"mathtext cannot parse {flat!r}: {first[-1] if first else err}") from None


def check_formula(tex: str) -> list[list[list[str]]]:
    """Validate one formula; return its grids (each a list of rows of cell strings),
    innermost first. Raises FormulaError for an unbalanced or unknown environment,
    a ragged matrix, or any piece mathtext rejects."""
    grids = []
    work = tex
    while True:
        tokens = list(_ENV.finditer(work))
        if not tokens:
            break
        # The first \end closes the nearest \begin before it: an innermost environment.
        end = next((t for t in tokens if t.group(1) == "end"), None)
        if end is None:
            raise FormulaError(f"\\begin{{{tokens[0].group(2)}}} without \\end in {tex!r}")
        begins = [t for t in tokens if t.group(1) == "begin" and t.start() < end.start()]
        if not begins:
            raise FormulaError(f"\\end{{{end.group(2)}}} without \\begin in {tex!r}")
        begin = begins[-1]
        if begin.group(2) != end.group(2):
            raise FormulaError(f"\\begin{{{begin.group(2)}}} closed by \\end{{{end.group(2)}}} "
                               f"in {tex!r}")
        name = begin.group(2)
        if name not in GRID_ENVS:
            raise FormulaError(f"environment {name!r} is not one of {sorted(GRID_ENVS)}")
        body = work[begin.end():end.start()]
        rows = [r for r in re.split(r"\\\\", body)]
        if rows and not rows[-1].strip():
            rows = rows[:-1]  # a trailing \\ ends the last row
        grid = [[c.strip() for c in row.split("&")] for row in rows]
        if not grid:
            raise FormulaError(f"empty {name} in {tex!r}")
        if name != "aligned":
            widths = {len(r) for r in grid}
            if len(widths) != 1:
                raise FormulaError(f"ragged {name}: rows have {sorted(widths)} cells in {tex!r}")
            for row in grid:
                for cell in row:
                    if not cell:
                        raise FormulaError(f"empty cell in {name} in {tex!r}")
                    _mathtext(cell)
        else:
            for row in grid:
                _mathtext(" ".join(row))
        grids.append(grid)
        # A placeholder symbol keeps the surrounding formula well formed.
        work = work[:begin.start()] + r" \mathcal{M} " + work[end.end():]
    _mathtext(work)
    return grids
