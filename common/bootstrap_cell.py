# Setup: find the bundle (the folder holding common/) and make it importable; on Colab keep runs in Drive.
import os, sys
from pathlib import Path
KEEP_RUNS_IN_DRIVE = True  # Colab only: checkpoints go to Google Drive and survive a disconnect
COLAB = Path(os.environ.get("COMP5541_COLAB_ROOT", "/content"))  # Colab's disk; Drive mounts at COLAB/drive
find = lambda: next((p for p in [Path.cwd().resolve(), *Path.cwd().resolve().parents, COLAB, *sorted(COLAB.glob("*")),
                                 *sorted(COLAB.glob("drive/MyDrive/*"))] if (p / "common" / "config.py").is_file()), None)
if find() is None and "google.colab" in sys.modules and not (COLAB / "drive" / "MyDrive").is_dir():
    from google.colab import drive; drive.mount(str(COLAB / "drive"))  # asks for permission once
if (BUNDLE := find()) is None:
    raise FileNotFoundError("Cannot find the bundle (the folder holding common/). On Colab put it in Google Drive or /content (git clone or unzip), then run this cell again: readme.txt, 'Running on Google Colab'.")
sys.path.insert(0, str(BUNDLE)); from common.tools.colab import setup_bundle; setup_bundle(BUNDLE, COLAB, KEEP_RUNS_IN_DRIVE)
