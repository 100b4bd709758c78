# Setup: find the bundle (the folder holding common/) and make it importable.
# Works from any working directory, under papermill, and on Colab with the
# bundle in /content or in Google Drive (readme.txt, "Running on Google Colab").
# It installs nothing: Colab already has every library the notebooks use.
import os
import sys
from pathlib import Path

KEEP_RUNS_IN_DRIVE = True  # Colab only: checkpoints go to Google Drive and survive a disconnect

COLAB = Path(os.environ.get("COMP5541_COLAB_ROOT", "/content"))  # Colab's file area
MY_DRIVE = COLAB / "drive" / "MyDrive"  # Google Drive, once mounted


def find_bundle():
    here = Path.cwd().resolve()
    places = [here, *here.parents]
    for base in (COLAB, MY_DRIVE):
        if base.is_dir():
            places += [base, *sorted(p for p in base.glob("*") if p.is_dir())]
    return next((p for p in places if (p / "common" / "config.py").is_file()), None)


IN_COLAB = "google.colab" in sys.modules
BUNDLE = find_bundle()
if BUNDLE is None and IN_COLAB and not MY_DRIVE.is_dir():
    from google.colab import drive
    drive.mount(str(COLAB / "drive"))  # asks for permission, then the bundle may be in Drive
    BUNDLE = find_bundle()
if BUNDLE is None:
    raise FileNotFoundError(
        "Cannot find the bundle (the folder holding common/). Open this notebook from inside "
        "the unzipped bundle. On Colab, put the bundle in Google Drive (My Drive/<folder>) or "
        "in /content first, by uploading it or with one of\n"
        "  !git clone https://github.com/OWNER/REPO.git /content/drive/MyDrive/comp5541\n"
        "  !unzip -q bundle.zip -d /content/comp5541\n"
        "then run this cell again. See readme.txt, 'Running on Google Colab'.")
if str(BUNDLE) not in sys.path:
    sys.path.insert(0, str(BUNDLE))
if IN_COLAB and KEEP_RUNS_IN_DRIVE:
    from common.colab import keep_runs_in_drive
    keep_runs_in_drive(BUNDLE, COLAB)
print(f"bundle: {BUNDLE}")
