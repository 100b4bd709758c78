"""Which bundle a notebook belongs to, and why: the second half of its first cell.

The first cell (common/bootstrap_cell.py) lists the folders that hold a bundle
(a `common/config.py`) without importing anything, then imports this module from
the first of them and calls `choose_bundle`. Outside Colab the list holds the
bundles around the working directory, nearest first: Jupyter, VS Code and
papermill start the kernel in the notebook's folder, so the nearest one holds
the notebook. On Colab the kernel always starts in /content, whatever the
notebook, so the list holds every bundle in /content, at the top of My Drive and
one folder deeper (My Drive/COMP5541/comp5541, Colab Notebooks/comp5541), and
the notebook itself decides:

- Colab's Jupyter server names the running notebook by its Drive file id, and
  Drive's mount gives each file's id as an extended attribute. When both are
  there, the id alone decides: the bundle holding that very file, or a refusal
  that says which file to open (a "Save a copy in Drive" copy, an upload to Colab
  Notebooks, a notebook opened from GitHub are in no bundle). Drive gives a copy
  a new id, and keeps the id of a file saved in place.
- Without an id, only a notebook's name is known. A name that no bundle holds
  ("Copy of Q2.ipynb") is refused; a name that one bundle holds uses it, and
  says that this is not confirmed; a name that several hold is refused with the
  list, since writing into the wrong one would pair a notebook with another's
  results.

A bundle in /content is refused: Colab cannot open its notebooks, and a
disconnect wipes it, with the results. COMP5541_BUNDLE (a folder) overrides the
choice, and is refused when it does not hold the running notebook.
COMP5541_COLAB_ROOT (the stand-in for /content) and COMP5541_COLAB_SESSIONS (the
session API's URL) let the tests simulate Colab.
"""
from __future__ import annotations

import json
import os
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

DRIVE_ID = "user.drive.id"  # extended attribute of every file in Colab's Drive mount
HOW = "readme.txt, 'Running on Google Colab'"
OPEN_WITH = "in Google Drive: right click > Open with > Google Colaboratory"
BY_ID = "it holds this notebook ({}): Colab names the running notebook by its Drive file id"


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


def _notebooks(bundle: Path) -> list[Path]:
    """A bundle's own notebooks: Q1/Q1.ipynb, extras/numpy_mlp.ipynb, ..."""
    return sorted(bundle.glob("*/*.ipynb"))


def _plain_name(name: str) -> str:
    """The notebook a copy was made from: 'Copy of Q2 (1).ipynb' -> 'Q2.ipynb'."""
    match = re.fullmatch(r"(?:Copy of )*(.*?)(?: \(\d+\))?\.ipynb", name)
    return f"{match.group(1)}.ipynb" if match else name


def _not_in_a_bundle(notebook: dict, bundles: list[Path], why: str) -> str:
    """The refusal for a notebook outside every bundle, naming the files to open."""
    plain = _plain_name(notebook["name"])
    files = [c for b in bundles for c in _notebooks(b) if c.name == plain] or [
        b / q / f"{q}.ipynb" for b in bundles for q in ("Q1", "Q2", "Q3")
        if (b / q / f"{q}.ipynb").is_file()]
    where = "\n".join(f"  {f}" for f in files)
    return (f"This notebook ({notebook['name']}) is not a bundle's own copy: {why}. Colab would "
            "save it, with its outputs, outside the bundle, where `submit check` and `zip` cannot "
            f"find it. Open the bundle's copy instead ({OPEN_WITH}), then Runtime > Run all:\n"
            f"{where}\n({HOW})")


def _by_id(notebook: dict | None, bundles: list[Path]) -> tuple[Path, Path] | None:
    """(bundle, notebook file) when Colab's file id and Drive's mount identify the
    notebook; BundleError when they show it is in no bundle; None without an id."""
    if not notebook or not notebook["file_id"]:
        return None
    ids = {c: drive_id(c) for b in bundles for c in _notebooks(b)}
    if not any(ids.values()):
        return None  # this mount shows no file ids
    holding = [(b, c) for b in bundles for c in _notebooks(b) if ids[c] == notebook["file_id"]]
    if len(holding) == 1:
        return holding[0]
    if not holding:
        raise BundleError(_not_in_a_bundle(notebook, bundles, (
            f"Colab names it by its Drive file id ({notebook['file_id']}), and no bundle in My "
            "Drive (or one folder down) holds that file")))
    raise BundleError("These files share this notebook's Drive file id, so which one is "
                      "running cannot be told:\n" + "\n".join(f"  {c}" for _, c in holding))


def _by_name(notebook: dict | None, bundles: list[Path]) -> tuple[Path, str]:
    """(bundle, why) without a file id: only a notebook's name is known."""
    if notebook and "github" in notebook["path"].lower():
        raise BundleError(_not_in_a_bundle(notebook, bundles, "it was opened from GitHub"))
    name = notebook["name"] if notebook else None
    holding = [b for b in bundles if not name or any(c.name == name for c in _notebooks(b))]
    if not holding:
        raise BundleError(_not_in_a_bundle(notebook, bundles, "no bundle holds a notebook of "
                                           "that name"))
    unsure = ("Colab did not give this notebook's Drive file id" if notebook else
              "Colab's session list did not answer")
    if len(holding) == 1:
        return holding[0], (f"it is the only bundle in My Drive that holds "
                            f"{name or 'notebooks'} ({unsure}, so that it holds this very file is "
                            "not confirmed)")
    options = "\n".join(f"  %env COMP5541_BUNDLE={b}" for b in holding)
    raise BundleError(
        f"More than one bundle in My Drive holds {name or 'notebooks'}, and which one holds this "
        f"notebook cannot be told ({unsure}):\n" + "\n".join(f"  {b}" for b in holding)
        + "\nKeep one: delete or rename the others so that they no longer hold common/ (Drive's "
        "'Copy of ...' folders count). Or name this notebook's own bundle (Colab's File > Locate "
        "in Drive shows its folder) in a cell run before this one, one of:\n" + options)


def _drive_bundles(found: list[Path], colab_root: Path) -> list[Path]:
    """The bundles in My Drive and one folder down: those the first cell found, and any
    it missed (an older first cell looked only at the top of My Drive)."""
    drive = colab_root / "drive"
    deeper = [p.parent.parent for p in sorted((drive / "MyDrive").glob("*/*/common/config.py"))]
    return list(dict.fromkeys(b for b in [*found, *deeper] if _inside(b, drive)))


def _colab_choice(found: list[Path], colab_root: Path) -> tuple[Path, str]:
    """(bundle, why) on Colab; BundleError when the choice is not certain."""
    drive = colab_root / "drive"
    in_drive = _drive_bundles(found, colab_root)
    if not in_drive:
        elsewhere = ", ".join(map(str, found))
        raise BundleError(
            f"The only bundle found is in {colab_root} ({elsewhere}). That is not supported: "
            "Colab cannot open notebooks kept there, and a disconnect wipes it, with the executed "
            f"notebooks and results. Unzip the bundle into My Drive instead, as {drive}/MyDrive/"
            f"comp5541, and open its notebook from Drive ({HOW}).")
    notebook = running_notebook()
    if identified := _by_id(notebook, in_drive):
        return identified[0], BY_ID.format(identified[1])
    return _by_name(notebook, in_drive)


def _check_override(bundle: Path, found: list[Path], colab_root: Path) -> str:
    """Why COMP5541_BUNDLE may be used; BundleError when it does not hold the notebook."""
    setting = f"COMP5541_BUNDLE={bundle}"
    if not (bundle / "common" / "config.py").is_file():
        raise BundleError(f"{setting}: that folder holds no common/config.py. Set it to the "
                          "bundle's folder (the one holding common/ and Q1/), or unset it.")
    if not in_colab():
        if not _inside(Path.cwd(), bundle):
            raise BundleError(f"{setting} does not hold this notebook (its folder is "
                              f"{Path.cwd()}): open the bundle's own copy, or unset it.")
        return "COMP5541_BUNDLE names it, and it holds this notebook's folder"
    notebook = running_notebook()
    candidates = list(dict.fromkeys([bundle, *_drive_bundles(found, colab_root)]))
    try:
        chosen = _by_id(notebook, candidates)
    except BundleError as err:
        raise BundleError(f"{setting}: {err}") from None
    if chosen is None:
        if notebook and not any(c.name == notebook["name"] for c in _notebooks(bundle)):
            raise BundleError(f"{setting} holds no notebook called {notebook['name']}: "
                              f"{_not_in_a_bundle(notebook, [bundle], 'no such file there')}")
        return "COMP5541_BUNDLE names it (without a file id from Colab, not confirmed)"
    if chosen[0].resolve() != bundle.resolve():
        raise BundleError(f"{setting} does not hold this notebook: {chosen[0]} does ({chosen[1]}"
                          f", by its Drive file id). Set COMP5541_BUNDLE={chosen[0]}, or unset "
                          "it, then run this cell again.")
    return "COMP5541_BUNDLE names it, and " + BY_ID.format(chosen[1])


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
    found, colab_root = [Path(p) for p in found], Path(colab_root)
    override = os.environ.get("COMP5541_BUNDLE")
    if in_colab():
        # Compiled modules stay off Drive, here and in `!python -m ...` cells alike.
        sys.dont_write_bytecode = True
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    if override:
        bundle = Path(override).expanduser()
        why = _check_override(bundle, found, colab_root)
    elif in_colab():
        bundle, why = _colab_choice(found, colab_root)
        ignored = [b for b in found if not _inside(b, colab_root / "drive")]
        if ignored:
            why += f"; ignored, as not in Google Drive: {', '.join(map(str, ignored))}"
    else:
        bundle, why = found[0], ("it holds the working directory, which Jupyter and papermill "
                                 "set to the notebook's folder")
    _use(bundle, found[0])
    print(f"bundle: {bundle}\n  because {why}")
    return bundle
