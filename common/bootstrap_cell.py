# Setup: find the bundle (the folder holding common/) and make it importable.
# Works from any working directory, under papermill, and on Colab when the
# bundle was unzipped in /content or copied into Google Drive.
import sys
from pathlib import Path

def find_bundle():
    here = Path.cwd().resolve()
    places = [here, *here.parents]
    for colab_root in (Path("/content"), Path("/content/drive/MyDrive")):
        if colab_root.is_dir():
            places += sorted(p for p in colab_root.glob("*") if p.is_dir())
    for place in places:
        if (place / "common" / "runtime.py").is_file():
            return place
    raise FileNotFoundError(
        "Cannot find the bundle folder (the one holding common/). Open this notebook "
        "from inside the unzipped bundle; on Colab, unzip the bundle in /content or "
        "copy it into Google Drive first (see readme.txt).")

BUNDLE = find_bundle()
if str(BUNDLE) not in sys.path:
    sys.path.insert(0, str(BUNDLE))
print(f"bundle: {BUNDLE}")
