"""Executed notebook -> PDF a grader can read: figures, tables, rendered maths.

    render_pdf("build/Q1/Q1.ipynb", "build/Q1/Q1.pdf")                    # with code
    render_pdf("build/Q1/Q1.ipynb", "build/Q1/Q1_report.pdf", no_input=True)  # code hidden

The notebook goes through nbconvert's HTML exporter (images are embedded as
data URIs, so the page needs no files beside it), then through a real browser
engine to PDF. The first renderer that works is used:

1. `chromium`: a Chromium or Chrome already installed (Debian: `apt-get install
   chromium`; `CHROMIUM=/path/to/chrome` picks a specific one). CI uses this.
2. `webpdf`: nbconvert's Playwright exporter, on machines that can download
   Playwright's own Chromium, such as Colab.
3. `latex`: nbconvert's LaTeX exporter, when `xelatex` and `pandoc` are installed.

Maths is typeset by MathJax 2, the version nbconvert's HTML template is written
for. The browser needs MathJax's files while it renders. Online the CDN serves
them; offline (CI, these machines) a local copy is used: Debian's
`libjs-mathjax` package (`/usr/share/javascript/mathjax`) or
`MATHJAX_URL=file:///.../MathJax.js`. When neither exists the page prints a
visible warning above the first cell, so raw `$...$` never reaches a report unnoticed.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter, PDFExporter, WebPDFExporter

from ..files import atomic_write
from ..headline import HEADLINE_TAG

RENDERERS = ("chromium", "webpdf", "latex")

# nbconvert's default configuration string, kept so a local copy renders the same.
MATHJAX_CONFIG = "?config=TeX-AMS_CHTML-full,Safe"
MATHJAX_CDN = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js" + MATHJAX_CONFIG
MATHJAX_LOCAL_DIRS = ("/usr/share/javascript/mathjax", "/usr/share/mathjax")
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
BROWSER_TIMEOUT_S = 180

HOW_TO_GET = {
    "chromium": "install Chromium or Chrome (Debian/Ubuntu: apt-get install chromium), "
                "or set CHROMIUM=/path/to/chrome",
    "webpdf": "pip install 'nbconvert[webpdf]' && python -m playwright install --with-deps chromium "
              "(works on Colab)",
    "latex": "install xelatex and pandoc (Debian/Ubuntu: apt-get install texlive-xetex "
             "texlive-fonts-recommended texlive-plain-generic pandoc)",
}

# Print layout: A4, code and long output lines wrap instead of running off the
# page edge, figures and tables shrink to the page width and are not split.
PRINT_CSS = """
<style type="text/css" media="all">
  @page { size: A4; margin: 12mm 11mm; }
  body { margin: 0; padding: 0; }
  main, .jp-Notebook { padding: 0 !important; }
  /* Wrap at spaces; break inside a word only when it is longer than a line, so a
     log's table never reads "st / atus". Logs are set small: most lines then fit. */
  pre, code, .jp-OutputArea-output pre, .jp-InputArea-editor pre, .highlight pre {
    white-space: pre-wrap !important; overflow-wrap: break-word !important;
    word-break: normal !important; }
  .jp-OutputArea-output pre { font-size: 7.5pt !important; line-height: 1.25 !important; }
  .jp-InputArea-editor, .jp-OutputArea-output { overflow: visible !important; }
  img, svg { max-width: 100% !important; height: auto !important; }
  /* JupyterLab keeps each output whole on a page, which pushes a long training
     log to the next page and leaves half a page blank; only figures stay whole. */
  .jp-OutputArea-child { break-inside: auto !important; }
  img, .jp-RenderedImage, tr, .MathJax_Display { break-inside: avoid !important; }
  table { max-width: 100%; }
  /* break-word, not anywhere: "anywhere" lets table columns shrink to one
     character, which squashes cells holding maths. */
  td { overflow-wrap: break-word; }
  h1, h2, h3, h4 { break-after: avoid; }
  .report-warning { color: #b00; border: 2px solid #b00; padding: 6px; font-weight: bold; }
</style>
"""

# Runs once the page has loaded. Without MathJax the raw TeX would print
# silently; this puts a warning where a reader cannot miss it.
MATHJAX_GUARD = """
<script>
window.addEventListener("load", function () {
  if (!window.MathJax) {
    var p = document.createElement("p");
    p.className = "report-warning";
    p.textContent = "MathJax could not be loaded, so formulas below are shown as raw TeX. "
      + "Offline, install a local MathJax (apt-get install libjs-mathjax) and rebuild the PDF.";
    document.body.insertBefore(p, document.body.firstChild);
  }
});
</script>
"""


class ReportError(RuntimeError):
    """No renderer could turn the notebook into a PDF."""


def find_mathjax() -> str:
    """The MathJax URL to put in the page: `MATHJAX_URL`, else a local MathJax 2
    copy, else the CDN (fine online, e.g. on Colab)."""
    if os.environ.get("MATHJAX_URL"):
        return os.environ["MATHJAX_URL"]
    for folder in MATHJAX_LOCAL_DIRS:
        script = Path(folder) / "MathJax.js"
        if script.is_file():
            return script.as_uri() + MATHJAX_CONFIG
    return MATHJAX_CDN


def _exporter_options(no_input: bool) -> dict:
    options = dict(template_name="lab", embed_images=True, mathjax_url=find_mathjax(),
                   # require.js only serves interactive widgets; an empty inline script
                   # keeps an offline page from waiting on the CDN for it.
                   require_js_url="data:text/javascript,")
    if no_input:
        options.update(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    return options


def report_view(nb):
    """The notebook as the report shows it: answers first, without run logs.

    The cells tagged `headline` (the results at a glance, computed last) move up to
    follow the title and its first paragraph (the first Markdown cell's start). The printed stream outputs (plans,
    per-epoch lines, progress) are dropped: what the grader reads is displayed
    (Markdown, tables, figures, LaTeX) and stays. Qn.pdf keeps everything in order."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.output_type != "stream"]
    first = [c for c in nb.cells if HEADLINE_TAG in c.get("metadata", {}).get("tags", [])]
    rest = [c for c in nb.cells if not any(c is f for f in first)]
    title = next((i + 1 for i, c in enumerate(rest) if c.cell_type == "markdown"), 0)
    after = []
    if first and title:  # the title and its first paragraph, the answers, then the rest
        heading, *paragraphs = rest[title - 1].source.split("\n\n")
        if len(paragraphs) > 1:
            rest[title - 1].source = heading + "\n\n" + paragraphs[0]
            after = [nbformat.v4.new_markdown_cell("\n\n".join(paragraphs[1:]))]
    nb.cells = rest[:title] + first + after + rest[title:]
    return nb


def _read(notebook, no_input: bool):
    nb = nbformat.read(str(notebook), as_version=4)
    return report_view(nb) if no_input else nb


def _with_print_layout(html: str) -> str:
    return html.replace("</head>", PRINT_CSS + MATHJAX_GUARD + "</head>", 1)


def notebook_html(notebook: str | os.PathLike, *, no_input: bool = False) -> str:
    """The notebook as one self-contained HTML page laid out for printing."""
    nb = _read(notebook, no_input)
    html, _ = HTMLExporter(**_exporter_options(no_input)).from_notebook_node(nb)
    return _with_print_layout(html)


def find_browser() -> str | None:
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_print(html_path: Path, pdf: Path, browser: str) -> None:
    """Print a local HTML page to PDF with headless Chromium.

    The flags keep a root, offline, headless run quiet and self-contained: a
    fresh profile, no sandbox (root in a container), no network chatter. The
    virtual-time budget lets MathJax's timers finish typesetting before the page
    is printed; virtual time only runs while the page is idle, so it costs
    about a second of real time, not ten.
    """
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}",
               "--run-all-compositor-stages-before-draw", "--virtual-time-budget=15000",
               "--no-pdf-header-footer", "--print-to-pdf-no-header",  # new and old spelling
               f"--print-to-pdf={pdf}", html_path.resolve().as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ReportError(f"{browser} did not finish within {BROWSER_TIMEOUT_S} s") from None
    if not _is_pdf(pdf):
        tail = "\n".join((done.stderr or "").strip().splitlines()[-5:])
        raise ReportError(f"{browser} exited with code {done.returncode} and wrote no PDF:\n{tail}")


def _is_pdf(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size < 100:
        return False
    with open(path, "rb") as f:
        return f.read(5) == b"%PDF-"


def _is_pdf_data(data) -> bool:
    return isinstance(data, bytes) and len(data) >= 100 and data.startswith(b"%PDF-")


# Each renderer returns the PDF's bytes; render_pdf writes the first good one.
def _render_chromium(notebook: Path, no_input: bool) -> bytes:
    browser = find_browser()
    if browser is None:
        raise ReportError("no chromium, chromium-browser, google-chrome or chrome on PATH")
    html = notebook_html(notebook, no_input=no_input)
    with tempfile.TemporaryDirectory(prefix="report-html-") as tmp:
        page = Path(tmp) / (notebook.stem + ".html")
        page.write_text(html, encoding="utf-8")
        pdf = Path(tmp) / (notebook.stem + ".pdf")
        chromium_print(page, pdf, browser)
        return pdf.read_bytes()


class _PrintLayoutWebPDF(WebPDFExporter):
    def run_playwright(self, html):
        return super().run_playwright(_with_print_layout(html))


def _render_webpdf(notebook: Path, no_input: bool) -> bytes:
    if importlib.util.find_spec("playwright") is None:
        raise ReportError("Playwright is not installed")
    nb = _read(notebook, no_input)
    options = _exporter_options(no_input)
    del options["template_name"]  # keep nbconvert's "webpdf" template, which paginates
    # Chromium's sandbox refuses to start as root, which is how Colab runs.
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    # page_render_timeout gives MathJax a moment after the network goes idle.
    exporter = _PrintLayoutWebPDF(page_render_timeout=1500, disable_sandbox=as_root, **options)
    data, _ = exporter.from_notebook_node(nb)
    return data


def _render_latex(notebook: Path, no_input: bool) -> bytes:
    missing = [tool for tool in ("xelatex", "pandoc") if shutil.which(tool) is None]
    if missing:
        raise ReportError(f"{' and '.join(missing)} not on PATH")
    nb = _read(notebook, no_input)
    options = dict(exclude_input=True, exclude_input_prompt=True,
                   exclude_output_prompt=True) if no_input else {}
    data, _ = PDFExporter(**options).from_notebook_node(
        nb, resources={"metadata": {"path": str(notebook.parent)}})
    return data


_RENDER = {"chromium": _render_chromium, "webpdf": _render_webpdf, "latex": _render_latex}


def render_pdf(notebook: str | os.PathLike, pdf: str | os.PathLike, *, no_input: bool = False,
               renderer: str = "auto") -> str:
    """Write `pdf` from an executed `notebook`; return the renderer's name.

    `renderer` is "auto" (the first of RENDERERS that works) or one of them;
    `REPORT_RENDERER` in the environment sets the default.
    """
    notebook, pdf = Path(notebook), Path(pdf)
    if not notebook.is_file():
        raise ReportError(f"no notebook at {notebook}")
    renderer = os.environ.get("REPORT_RENDERER", renderer) if renderer == "auto" else renderer
    if renderer != "auto" and renderer not in RENDERERS:
        raise ReportError(f"renderer={renderer!r}: use 'auto' or one of {', '.join(RENDERERS)}")
    order = RENDERERS if renderer == "auto" else (renderer,)
    failures = []
    for name in order:
        try:
            data = _RENDER[name](notebook, no_input)
        except Exception as err:  # each renderer fails in its own way; report them all
            failures.append(f"  {name}: {err}\n    to get it: {HOW_TO_GET[name]}")
            continue
        # Written only once it is known to be a PDF, and atomically: a failed
        # attempt never leaves a stale or half-written PDF for the zip step.
        if _is_pdf_data(data):
            atomic_write(pdf, data)
            return name
        failures.append(f"  {name}: wrote no PDF\n    to get it: {HOW_TO_GET[name]}")
    raise ReportError(f"could not make {pdf.name} from {notebook}. Tried:\n" + "\n".join(failures))


def report_paths(notebook: str | os.PathLike) -> dict[str, Path]:
    """The two PDFs made from one executed notebook, next to it:
    `Qn.pdf` (code and outputs) and `Qn_report.pdf` (code hidden)."""
    notebook = Path(notebook)
    return {"full": notebook.with_suffix(".pdf"),
            "no_input": notebook.with_name(notebook.stem + "_report.pdf")}


def render_reports(notebook: str | os.PathLike, *, renderer: str = "auto") -> list[Path]:
    """Both PDFs for one executed notebook; prints what it made and how."""
    paths = report_paths(notebook)
    for variant, pdf in paths.items():
        used = render_pdf(notebook, pdf, no_input=(variant == "no_input"), renderer=renderer)
        print(f"  {pdf}  ({used})")
    return list(paths.values())
