"""What makes and ships the bundle. Notebooks import none of it, except colab
from their first cell.

    run      the papermill runner behind `make smoke` / `make all`
    report   executed notebook -> PDF (`make report`)
    submit   `make check` / `make zip`: the bundle checked, then zipped
    colab    the notebooks' first cell on Colab: checkpoints kept in Google Drive
"""
