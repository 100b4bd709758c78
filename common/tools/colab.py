"""Which bundle a notebook belongs to, and why: the second half of its first cell.

The first cell (common/bootstrap_cell.py) lists the folders that hold a bundle
(a `common/config.py`) without importing anything, then imports this module from
the first of them and calls `choose_bundle`. Outside Colab the list holds the
bundles around the working directory, nearest first: Jupyter, VS Code and
papermill start the kernel in the notebook's folder, so the nearest one holds
the notebook. On Colab the kernel always starts in /content, whatever the
notebook, so the list holds every bundle in /content and at the top of My Drive,
and the notebook itself decides: Colab's Jupyter server names the running
notebook by its Drive file id, and Drive's mount gives each file's id as an
extended attribute. A bundle in /content is refused: Colab cannot open its
notebooks, and a disconnect wipes it, with the results.

COMP5541_BUNDLE (a folder) overrides the choice; COMP5541_COLAB_ROOT (the
stand-in for /content) and COMP5541_COLAB_SESSIONS (the session API's URL) let
the tests simulate Colab.
"""
from __future__ import annotations

import json
import os
import sys
import urllib.parse
import urllib.request
from pathlib import Path

DRIVE_ID = "user.drive.id"  # extended attribute of every file in Colab's Drive mount
HOW = "readme.txt, 'Running on Google Colab'"


class BundleError(RuntimeError):
    """No bundle, or more than one, could be this notebook's; the message says what to do."""


def in_colab() -> bool:
    return "google.colab" in sys.modules


def running_notebook() -> dict | None:
    """The notebook Colab is running, as its Jupyter server's session API says:
    {"name": "Q1.ipynb", "file_id": "1AbC..." or None, "path": ...}. None when it
    cannot be asked, or runs several sessions and so cannot say which is this one."""
    url = os.environ.get("COMP5541_COLAB_SESSIONS") or (
        f"http://{os.environ.get('COLAB_JUPYTER_IP', '172.28.0.12')}:9000/api/sessions")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            sessions = json.load(response)
    except (OSError, ValueError):
        return None
    if not isinstance(sessions, list) or len(sessions) != 1:
        return None
    session = sessions[0]
    path = str(session.get("path") or (session.get("notebook") or {}).get("path") or "")
    name = urllib.parse.unquote(str(session.get("name") or Path(path).name))
    file_id = path.split("=", 1)[1] if path.startswith("fileId=") else None
    return {"name": name, "file_id": file_id, "path": path}


def drive_id(path: Path) -> str | None:
    """A file's Google Drive id, from the Drive mount's extended attribute."""
    try:
        return os.getxattr(path, DRIVE_ID).decode()
    except (OSError, AttributeError):  # no such attribute, or no getxattr (macOS)
        return None


def _inside(path: Path, folder: Path) -> bool:
    return (path.absolute().is_relative_to(folder.absolute())
            or path.resolve().is_relative_to(folder.resolve()))


def _copies(bundles: list[Path], name: str) -> dict[Path, list[Path]]:
    """Each bundle's own copies of the notebook called `name` (Q1/Q1.ipynb, extras/x.ipynb)."""
    return {b: sorted(b.glob(f"*/{name}")) for b in bundles}


def _open_instead(copies: dict[Path, list[Path]], notebook: dict) -> str:
    where = "\n".join(f"  {c}" for paths in copies.values() for c in paths)
    return (f"This notebook ({notebook['name']}) is not a bundle's own copy, so Colab would save it, "
            "with its outputs, outside the bundle, where `submit check` and `zip` cannot find it. "
            f"Open the bundle's copy instead (in Google Drive: right click > Open with > Google "
            f"Colaboratory), then Runtime > Run all:\n{where}\n({HOW})")


def _colab_choice(found: list[Path], colab_root: Path) -> tuple[Path, str]:
    """(bundle, why) on Colab; BundleError when the choice is not certain."""
    drive = colab_root / "drive"
    in_drive = [b for b in found if _inside(b, drive)]
    elsewhere = [b for b in found if b not in in_drive]
    if not in_drive:
        raise BundleError(
            f"The only bundle found is in {colab_root} ({', '.join(map(str, elsewhere))}). That is not "
            "supported: Colab cannot open notebooks kept there, and a disconnect wipes it, with the "
            "executed notebooks and results. Unzip the bundle into My Drive instead, as "
            f"{drive}/MyDrive/comp5541, and open its notebook from Drive ({HOW}).")
    notebook = running_notebook()
    copies = _copies(in_drive, notebook["name"]) if notebook else {}
    ids = {c: drive_id(c) for paths in copies.values() for c in paths}
    if notebook and notebook["file_id"] and any(ids.values()):
        holding = [(b, c) for b, paths in copies.items() for c in paths
                   if ids[c] == notebook["file_id"]]
        if len(holding) == 1:
            return holding[0][0], (f"it holds this notebook ({holding[0][1]}): Colab names the "
                                   "running notebook by its Drive file id")
        if not holding:
            raise BundleError(_open_instead(copies, notebook))
    if notebook and "github" in notebook["path"].lower() and any(copies.values()):
        raise BundleError(_open_instead(copies, notebook))
    if len(in_drive) == 1:
        return in_drive[0], ("it is the only bundle in My Drive (Colab did not say which file this "
                             "notebook is, so that it holds the notebook is not confirmed)")
    listed = "\n".join(f"  {b}" for b in in_drive)
    example = next((b for b in in_drive if not b.name.startswith("Copy of")), in_drive[0])
    raise BundleError(
        f"More than one bundle is in My Drive, and which one holds this notebook cannot be told:\n"
        f"{listed}\nKeep one: delete or rename the others so that they no longer hold common/ "
        "(Drive's 'Copy of ...' folders count), or name the one to use in a cell run before this "
        f"one, e.g.  %env COMP5541_BUNDLE={example}")


def _use(bundle: Path, imported_from: Path) -> None:
    """Make `bundle` the one `import common` finds. The first cell imported this
    module from `imported_from`; another choice drops that copy's modules."""
    if bundle == imported_from:
        return
    sys.path[:] = [p for p in sys.path if p != str(imported_from)]
    sys.path.insert(0, str(bundle))
    for name in [m for m in sys.modules if m == "common" or m.startswith("common.")]:
        del sys.modules[name]


def choose_bundle(found: list, colab_root: str | Path = "/content") -> Path:
    """The bundle this notebook belongs to, among the first cell's `found`; print
    which and why, and make it importable."""
    found = [Path(p) for p in found]
    override = os.environ.get("COMP5541_BUNDLE")
    if override:
        bundle, why = Path(override).expanduser(), "COMP5541_BUNDLE names it"
        if not (bundle / "common" / "config.py").is_file():
            raise BundleError(f"COMP5541_BUNDLE={override}: that folder holds no common/config.py. "
                              "Set it to the bundle's folder (the one holding common/ and Q1/), or unset it.")
    elif in_colab():
        bundle, why = _colab_choice(found, Path(colab_root))
        ignored = [b for b in found if not _inside(b, Path(colab_root) / "drive")]
        if ignored:
            why += f"; ignored, as not in Google Drive: {', '.join(map(str, ignored))}"
    else:
        bundle, why = found[0], ("it holds the working directory, which Jupyter and papermill "
                                 "set to the notebook's folder")
    _use(bundle, found[0])
    print(f"bundle: {bundle}\n  because {why}")
    return bundle
