"""Fabricated executed notebooks and results, shaped like what `make all` writes.

The report and submission tests build a bundle from these in a temporary
folder: the real `common/` package and readme, plus `build/Qn/Qn.ipynb` and
`build/Qn/results/` for each question, so they run before (and independently
of) the real notebooks.
"""
from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ("Q1", "Q2", "Q3")
FIGURE_SIZE_PX = (400, 300)  # 4 x 3 inches at 100 dpi

# Parts and figures per question, as the notebooks report them in summary.json.
FIGURES = {
    "Q1": {},
    "Q2": {"a": ["a_vgg_curves.png", "a_resnet_curves.png"], "b": ["b_optimisers.png"],
           "c": ["c_improvements.png"]},
    "Q3": {"a": ["a_fractions.png"], "b": ["b_models.png"], "c": ["c_partial.png"]},
}
PARTS = {"Q1": ["a", "b"], "Q2": ["a", "b", "c"], "Q3": ["a", "b", "c"]}

# Display maths as the Q1 notebook prints it (a Markdown output with MathJax TeX).
MATH = (r"The hidden representation is $$\mathbf{h} = \mathrm{ReLU}(\mathbf{W}_1 \mathbf{x}) = "
        r"\begin{bmatrix} 0.123 \\ 0.456 \end{bmatrix}$$ and the prediction is "
        r"$\hat{y}_1 = \frac{e^{z_1}}{\sum_j e^{z_j}}$.")
LONG_OUTPUT = "LONG-" + "".join(f"{i:03d}abcdefg" for i in range(60)) + "-END"
LONG_CODE = "total = " + " + ".join(f"value_{i:03d}" for i in range(45))


def png_bytes(title: str) -> bytes:
    """A real matplotlib figure of FIGURE_SIZE_PX, as PNG bytes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.plot([1, 2, 3, 4], [2.3, 1.1, 0.7, 0.5], label="train loss")
    ax.set_title(title)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def executed_notebook(question: str, *, epochs: int = 40) -> nbformat.NotebookNode:
    """A small executed notebook: heading, stream output, a figure, LaTeX output,
    a long code line and a long output line."""
    import base64

    png = base64.b64encode(png_bytes(f"{question} training curves")).decode()
    log = "".join(f"epoch {e:2d}/{epochs}  train loss {1 / e:.4f}  test acc {50 + e:.2f}%\n"
                  for e in range(1, epochs + 1))
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["papermill"] = {"exception": None, "parameters": {"smoke": False}}
    nb.cells = [
        new_markdown_cell(f"# {question}: Fabricated report heading\n\nIntroduction text."),
        new_code_cell("print('bundle: /tmp/bundle')", execution_count=1,
                      outputs=[new_output("stream", name="stdout", text="bundle: /tmp/bundle\n")]),
        new_markdown_cell(f"## {question}(a) Training log"),
        new_code_cell(f"# {question}(a)\nhistory = fit(model)\n{LONG_CODE}", execution_count=2,
                      outputs=[new_output("stream", name="stdout",
                                          text=log + LONG_OUTPUT + "\nfinal test accuracy 87.65%\n")]),
        new_code_cell("show(figure)", execution_count=3,
                      outputs=[new_output("display_data",
                                          data={"image/png": png, "text/plain": "<Figure>"})]),
        new_markdown_cell(f"## {question}(b) Derivation"),
        new_code_cell("display(Markdown(derivation))", execution_count=4,
                      outputs=[new_output("display_data",
                                          data={"text/markdown": MATH,
                                                "text/plain": "<IPython.core.display.Markdown>"})]),
        new_code_cell("write_summary(config, results, started=started)", execution_count=5,
                      outputs=[new_output("stream", name="stdout", text="summary written\n")]),
    ]
    return nb


def write_results(results_dir: Path, question: str, *, smoke: bool = False, quick: bool = False,
                  parts=None, figures=None) -> Path:
    """Figures on disk and a summary.json from the real `write_summary`."""
    from common.config import write_summary

    figures = FIGURES[question] if figures is None else figures
    for names in figures.values():
        for name in names:
            (results_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (results_dir / name).write_bytes(png_bytes(name))
    config = {"notebook": question, "smoke": smoke, "quick": quick, "device": "cpu", "seed": 0,
              "results_dir": str(results_dir)}
    results = {"parts": PARTS[question] if parts is None else parts, "figures": figures,
               "test_accuracy": 0.8765}
    return write_summary(config, results, started=time.time())


def fill_declaration(readme: Path) -> None:
    text = readme.read_text()
    readme.write_text(text.replace("[FILL IN: name, student ID]", "Chan Tai Man, 21123456D")
                      .replace("[FILL IN: or None]", "None")
                      .replace("[FILL IN: yes]", "yes")
                      .replace("[FILL IN: hours]", "30"))


def make_bundle(root: Path, *, questions=QUESTIONS, fake_pdfs: bool = True,
                declaration: bool = True) -> Path:
    """A complete, submittable bundle under `root`.

    `fake_pdfs` writes stand-in PDFs newer than the notebooks, so packing does not
    render (tests that need real rendering pass False).
    """
    shutil.copytree(ROOT / "common", root / "common",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("readme.txt", "requirements.txt", "Makefile"):
        shutil.copy(ROOT / name, root / name)
    (root / "profiles").mkdir()
    (root / "profiles" / "full.yaml").write_text("defaults:\n  smoke: false\nnotebooks: {}\n")
    if declaration:
        fill_declaration(root / "readme.txt")
    for q in questions:
        out = root / "build" / q
        out.mkdir(parents=True)
        nbformat.write(executed_notebook(q), out / f"{q}.ipynb")
        write_results(out / "results", q)
        if fake_pdfs:
            for name in (f"{q}.pdf", f"{q}_report.pdf"):
                (out / name).write_bytes(b"%PDF-1.4\n% stand-in for a rendered report\n" * 4)
    return root
