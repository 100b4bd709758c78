"""What makes and ships the bundle. Notebooks import none of it, except colab
from their first cell.

    run      the papermill runner behind `make smoke` / `make all`
    report   executed notebook -> PDF (`make report`)
    submit   `make check` / `make zip`: the bundle checked, then zipped
    pack     what goes into the zip, under which names
    colab    the notebooks' first cell: which bundle holds the notebook, and why
    bundle   `make bundle`: comp5541-bundle.zip, what a student uploads to Google Drive
    clean    `make clean-smoke`: smoke runs' checkpoints removed
"""
