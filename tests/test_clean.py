"""`make clean-smoke` (common.tools.clean): smoke runs' checkpoints go, full runs stay, and a
run a live process is training is left alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common.tools import clean
from conftest import ROOT


def run_folder(path: Path, smoke: bool | None) -> Path:
    path.mkdir(parents=True)
    if smoke is not None:
        (path / "config.json").write_text(json.dumps({"fit": {}, "config": {"smoke": smoke}}))
    (path / "last.pt").write_bytes(b"\0" * 1_000_000)
    return path


def test_smoke_runs_go_wherever_they_are_and_full_runs_stay(tmp_path):
    runs = tmp_path / "runs"
    smoke = [run_folder(runs / "smoke" / "Q2" / "smoke" / "vgg16_1", True),  # make smoke
             run_folder(runs / "smoke" / "extras" / "numpy_mlp" / "mlp", None),
             run_folder(runs / "Q2" / "smoke" / "resnet18_2", True),  # Colab: Q2's smoke folder
             run_folder(runs / "Q3" / "tv_alexnet_3", True)]  # Colab: Q3's, among the full ones
    full = [run_folder(runs / "full" / "Q2" / "vgg16_4", False),
            run_folder(runs / "Q3" / "tv_alexnet_5", False), run_folder(runs / "Q2" / "odd", None)]
    said = []
    assert 4_000_000 <= clean.clean_smoke(runs, log=said.append) < 4_001_000  # + config.json
    assert not any(p.exists() for p in smoke) and all((p / "last.pt").is_file() for p in full)
    assert said == [f"removed {runs / 'smoke'} (2 MB)", f"removed {runs / 'Q2' / 'smoke'} (1 MB)",
                    f"removed {runs / 'Q3' / 'tv_alexnet_3'} (1 MB)"]
    assert clean.main(["--runs", str(runs)]) == 0  # nothing left to remove: says so


def test_a_smoke_run_being_trained_is_kept(tmp_path):
    run = run_folder(tmp_path / "runs" / "Q3" / "tv_vgg16_6", True)
    hold = ("import sys, time; from common.files import lock_folder; lock_folder(sys.argv[1]); "
            "print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        said = []
        assert clean.clean_smoke(tmp_path / "runs", log=said.append) == 0
        assert (run / "last.pt").is_file()
        assert said[0].startswith(f"kept {run}: {run} is in use by process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
