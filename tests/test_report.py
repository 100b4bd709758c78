"""The PDF report, rendered for real by headless Chromium and read back with
poppler's pdftotext / pdfimages / pdfinfo.

Needs Debian's `chromium` and `poppler-utils` (and `libjs-mathjax` for the
rendered maths). Without them these tests skip, except under CI=true, where
they fail: CI must prove the report really renders.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from common.tools import report
from conftest import need
from fake_bundle import FIGURE_SIZE_PX, LONG_CODE, LONG_OUTPUT, executed_notebook


def need_tool(found, what: str) -> None:
    need(found, f"{what} is not installed")


@pytest.fixture(scope="module")
def tools():
    need_tool(report.find_browser(), "Chromium (apt-get install chromium)")
    for tool in ("pdftotext", "pdfimages", "pdfinfo"):
        need_tool(shutil.which(tool), f"{tool} (apt-get install poppler-utils)")


@pytest.fixture(scope="module")
def local_mathjax():
    url = report.find_mathjax()
    need_tool(url.startswith("file:"), "a local MathJax (apt-get install libjs-mathjax)")
    return url


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout


def pdf_pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, flags=re.MULTILINE).group(1))


def pdf_images(pdf: Path) -> list[tuple[int, int]]:
    """(width, height) of every image, from `pdfimages -list`."""
    lines = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True,
                           check=True).stdout.splitlines()[2:]
    return [(int(cols[3]), int(cols[4])) for cols in (l.split() for l in lines)
            if cols[2] == "image"]


def squeeze(text: str) -> str:
    """The text with all whitespace removed: a wrapped line reads as one again."""
    return re.sub(r"\s+", "", text)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, tools, local_mathjax):
    """Both variants of one fabricated executed notebook, rendered once."""
    folder = tmp_path_factory.mktemp("report")
    notebook = folder / "Q1.ipynb"
    nbformat.write(executed_notebook("Q1"), notebook)
    pdfs = report.render_reports(notebook, renderer="chromium")
    return dict(zip(("full", "no_input"), pdfs))


def test_report_files_sit_next_to_the_notebook(rendered):
    assert rendered["full"].name == "Q1.pdf"
    assert rendered["no_input"].name == "Q1_report.pdf"
    assert rendered["full"].parent == rendered["no_input"].parent
    assert not list(rendered["full"].parent.glob("*.pdf.tmp"))


def test_full_pdf_has_headings_numbers_code_and_all_pages(rendered):
    text = pdf_text(rendered["full"])
    for expected in ("Q1: Fabricated report heading", "Q1(a) Training log", "Q1(b) Derivation",
                     "final test accuracy 87.65%", "epoch 1/40", "epoch 40/40"):
        assert expected in text, f"{expected!r} not in the PDF text"
    assert "history = fit(model)" in text  # the code is shown
    # A 40-line log, a figure and the maths do not fit on one A4 page.
    assert pdf_pages(rendered["full"]) >= 2


def test_long_lines_wrap_instead_of_being_cut(rendered):
    text = squeeze(pdf_text(rendered["full"]))
    assert squeeze(LONG_OUTPUT) in text, "the long output line was cut at the page edge"
    assert squeeze(LONG_CODE) in text, "the long code line was cut at the page edge"


def test_figure_is_embedded_at_its_size(rendered):
    for pdf in rendered.values():
        assert FIGURE_SIZE_PX in pdf_images(pdf), f"{pdf.name}: the matplotlib figure is missing"


def test_maths_is_typeset_not_raw_tex(rendered):
    text = pdf_text(rendered["full"])
    assert "ReLU" in text and "0.123" in text and "0.456" in text
    for raw in ("$$", r"\mathbf", r"\begin{bmatrix}", r"\frac"):
        assert raw not in text, f"raw TeX {raw!r} reached the PDF: MathJax did not run"


def test_report_variant_hides_code_and_run_logs_but_keeps_what_is_displayed(rendered):
    text = pdf_text(rendered["no_input"])
    assert "history = fit(model)" not in text
    assert "In [" not in text
    for expected in ("Q1: Fabricated report heading", "ReLU"):  # Markdown, LaTeX output
        assert expected in text
    # Printed run logs (plans, per-epoch lines) stay in Qn.pdf, out of the grader's report.
    for log_line in ("epoch 1/40", "epoch 40/40", "final test accuracy 87.65%", "bundle: /tmp/bundle"):
        assert log_line not in text and log_line in pdf_text(rendered["full"])
    assert "$$" not in text


def test_missing_mathjax_is_flagged_in_the_pdf(tmp_path, tools, monkeypatch):
    """The counter-check of the maths test: without MathJax, TeX stays raw and a
    warning says so."""
    monkeypatch.setenv("MATHJAX_URL", (tmp_path / "no-such" / "MathJax.js").as_uri())
    notebook = tmp_path / "Q1.ipynb"
    nbformat.write(executed_notebook("Q1", epochs=3), notebook)
    pdf = tmp_path / "Q1_report.pdf"
    assert report.render_pdf(notebook, pdf, no_input=True, renderer="chromium") == "chromium"
    text = pdf_text(pdf)
    assert "MathJax could not be loaded" in text
    assert r"\mathbf" in text


def test_without_any_renderer_the_error_names_all_three(tmp_path, monkeypatch):
    import importlib.util

    notebook = tmp_path / "Q1.ipynb"
    nbformat.write(executed_notebook("Q1", epochs=2), notebook)
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.delenv("REPORT_RENDERER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "playwright" else real_find_spec(name, *a))
    with pytest.raises(report.ReportError) as err:
        report.render_pdf(notebook, tmp_path / "Q1.pdf")
    message = str(err.value)
    for renderer, hint in (("chromium", "apt-get install chromium"),
                           ("webpdf", "playwright install"), ("latex", "xelatex")):
        assert renderer in message and hint in message
    assert not (tmp_path / "Q1.pdf").exists()
    assert not list(tmp_path.glob("*.pdf.tmp"))


def test_unknown_renderer_is_refused(tmp_path):
    notebook = tmp_path / "Q1.ipynb"
    nbformat.write(executed_notebook("Q1", epochs=2), notebook)
    with pytest.raises(report.ReportError, match="renderer='word'"):
        report.render_pdf(notebook, tmp_path / "Q1.pdf", renderer="word")


def test_a_wide_log_wraps_between_words_in_the_full_pdf(tmp_path, tools, local_mathjax):
    """A plan table wider than the page wraps at spaces: no word is cut in two."""
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    words = [f"w{i:02d}status" for i in range(60)]  # one 600-character line of words
    nb = new_notebook(cells=[new_code_cell("print(plan)", execution_count=1, outputs=[
        new_output("stream", name="stdout", text=" ".join(words) + "\n")])])
    notebook = tmp_path / "Q9.ipynb"
    nbformat.write(nb, notebook)
    pdf = tmp_path / "Q9.pdf"
    report.render_pdf(notebook, pdf, renderer="chromium")
    text = pdf_text(pdf)
    assert all(re.search(rf"\b{w}\b", text) for w in words), text
    assert len([line for line in text.splitlines() if "status" in line]) >= 2  # it did wrap


def test_the_report_opens_with_the_headline_and_drops_the_logs(tmp_path, tools, local_mathjax):
    """The headline cell, computed last, is on the report's first page; Qn.pdf keeps
    the notebook's order."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    log = "".join(f"epoch {i}/40  train loss 1.0\n" for i in range(1, 41))
    cells = [new_markdown_cell("# Q9: title"), *[
        new_code_cell("fit()", execution_count=i, outputs=[new_output("stream", name="stdout", text=log)])
        for i in range(1, 4)], new_markdown_cell("## A later section\n\n" + "Long text. " * 400)]
    headline = new_code_cell("display(q9_headline())", execution_count=9, outputs=[new_output(
        "display_data", data={"text/markdown": "**Q9 at a glance.**\n\n| part | result |\n|---|---|\n"
                                               "| (a) | 93.1% test accuracy |"})])
    headline.metadata["tags"] = ["headline"]
    nbformat.write(new_notebook(cells=[*cells, headline]), tmp_path / "Q9.ipynb")
    full, short = report.render_reports(tmp_path / "Q9.ipynb", renderer="chromium")
    first_page = subprocess.run(["pdftotext", "-f", "1", "-l", "1", "-layout", str(short), "-"],
                                capture_output=True, text=True, check=True).stdout
    assert "Q9 at a glance" in first_page and "93.1% test accuracy" in first_page
    assert "epoch 1/40" not in pdf_text(short) and "epoch 40/40" in pdf_text(full)
    text = pdf_text(full)
    assert text.index("A later section") < text.index("Q9 at a glance")  # in order in Qn.pdf
