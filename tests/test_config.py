"""common.config: parameter checks, paths, devices and the summary file."""
from __future__ import annotations

import json
import math
import time

import pytest

from common import config as runtime
from common.config import ConfigError


@pytest.mark.parametrize("value", [0, 1.5, -0.1, True, "0.1", None])
def test_check_fraction_rejects(value):
    with pytest.raises(ConfigError, match=r"parameter f=.*expected a fraction in \(0, 1\]"):
        runtime.check_fraction("f", value)


def test_check_fraction_accepts_the_edges():
    runtime.check_fraction("f", 1)
    runtime.check_fraction("f", 1e-6)


@pytest.mark.parametrize("seed", [True, -1, 1.0])
def test_seed_must_be_a_non_negative_int(seed, tmp_path):
    with pytest.raises(ConfigError, match="parameter seed="):
        runtime.make_config({"seed": seed}, notebook="T")


def test_relative_dirs_resolve_against_the_bundle(tmp_path, capsys):
    config = runtime.make_config({"results_dir": "Q9/results", "data_dir": str(tmp_path)},
                                 notebook="T")
    assert config["results_dir"] == str(runtime.ROOT / "Q9" / "results")
    assert config["data_dir"] == str(tmp_path)
    assert "T configuration" in capsys.readouterr().out


def test_cuda_without_a_gpu_is_a_clear_error():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="no CUDA GPU.*device='cpu'"):
        runtime.resolve_device("cuda")
    with pytest.raises(ConfigError, match="use 'auto', 'cpu' or 'cuda'"):
        runtime.resolve_device("tpu")


def test_summary_is_strict_json_with_provenance(tmp_path):
    import numpy as np
    import torch
    config = {"results_dir": str(tmp_path), "notebook": "T", "smoke": True}
    path = runtime.write_summary(config, {"loss": float("nan"), "w": torch.ones(2),
                                          "a": np.float32(0.5)}, started=0.0)
    summary = json.loads(path.read_text())  # strict: NaN would not parse back as a number
    assert summary["results"] == {"loss": "nan", "w": [1.0, 1.0], "a": 0.5}
    assert summary["smoke"] is True and summary["environment"]["torch"] == torch.__version__
    assert not list(tmp_path.glob("*.tmp"))
    assert math.isfinite(summary["wall_time_s"])


def test_summary_keeps_the_training_time_of_reused_runs(tmp_path):
    """A rerun that reuses every run is quick, but summary.json still says what
    the runs took to train: the sum of their histories' seconds, each run once."""
    run = lambda d, s: {"run_dir": d, "history": {"epoch": [1, 2], "seconds": s}}
    results = {"runs": [run("runs/Q2/a", [10.0, 11.5]), run("runs/Q2/b", [3.0])],
               "best": run("runs/Q2/a", [10.0, 11.5]),  # the same run again: counted once
               "trials": [{"lr": 0.1, "nested": run("runs/Q3/t", [0.5])}]}
    assert runtime.training_seconds(results) == (25.0, 3)
    path = runtime.write_summary({"results_dir": str(tmp_path), "notebook": "T"}, results,
                                 started=time.time())
    summary = json.loads(path.read_text())
    assert summary["training_time_s"] == 25.0 and summary["training_runs"] == 3
    assert summary["wall_time_s"] < 25.0  # this execution trained nothing
