# Setup: find the bundle (the folder holding common/) that holds this notebook, and make it importable.
import os, sys
from pathlib import Path
COLAB = Path(os.environ.get("COMP5541_COLAB_ROOT", "/content"))  # Colab's disk; Google Drive mounts at COLAB/drive
if "google.colab" in sys.modules and not (COLAB / "drive" / "MyDrive").is_dir():
    from google.colab import drive; drive.mount(str(COLAB / "drive"))  # asks for permission once
sys.dont_write_bytecode |= "google.colab" in sys.modules  # on Colab, no compiled .pyc files are written into Drive
# Jupyter and papermill start the kernel in the notebook's folder; Colab always in COLAB, so it looks in Drive, one folder deep too.
places = [COLAB, *sorted(COLAB.glob("*")), *sorted(COLAB.glob("drive/MyDrive/*")), *sorted(COLAB.glob("drive/MyDrive/*/*"))] if "google.colab" in sys.modules else [Path.cwd().resolve(), *Path.cwd().resolve().parents]
if not (found := [p for p in places if (p / "common" / "config.py").is_file()]): raise FileNotFoundError("No bundle (a folder holding common/) holds this notebook. Open Qn/Qn.ipynb from the bundle's own folder; on Colab, unzip the bundle into My Drive (as My Drive/comp5541) and open it there: readme.txt, 'Running on Google Colab'.")
sys.path.insert(0, str(found[0]))  # choose_bundle may switch to another of `found`, and says why
from common.tools.colab import choose_bundle; BUNDLE = choose_bundle(found, COLAB)
