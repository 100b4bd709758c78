"""common.files: atomic writes that never share a temporary file and say "disk full",
and the lock that keeps a run's folder to one process (issue 22, B2)."""
from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
import torch

from common import files
from common.checkpoints import RunDir
from conftest import ROOT

HOLD = """
import sys, time
from common.files import lock_folder
lock_folder(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""


def test_two_writers_of_one_file_never_share_a_temporary(tmp_path):
    """Both write at once (each waits inside its write for the other): with one shared
    temporary name, one truncates the other's file and the second rename fails."""
    target, both = tmp_path / "last.pt", threading.Barrier(2, timeout=10)
    errors, temporaries = [], []

    def writer(payload: bytes) -> None:
        def write(f) -> None:
            temporaries.append(f.name)
            f.write(payload[:10])
            both.wait()
            f.write(payload[10:])
        try:
            files.atomic_write(target, write, keep_previous=tmp_path / "prev.pt")
        except Exception as err:  # noqa: BLE001 - the old failure was a FileNotFoundError
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(bytes([i]) * 100_000,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(temporaries)) == 2
    assert all(name.endswith(".pt.tmp") and "last." in name for name in temporaries)
    assert {target.read_bytes(), (tmp_path / "prev.pt").read_bytes()} == {
        bytes([1]) * 100_000, bytes([2]) * 100_000}
    assert not list(tmp_path.glob("*.tmp"))


def test_a_write_that_fails_removes_its_temporary_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    files.write_json(target, {"kept": True})

    def broken(f):
        f.write(b"half")
        raise ValueError("the writer failed")

    with pytest.raises(ValueError, match="the writer failed"):
        files.atomic_write(target, broken)
    assert files.read_json(target) == {"kept": True} and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("how", ["ENOSPC", "torch"])
def test_a_full_disk_is_called_disk_full(tmp_path, how):
    """ENOSPC, and what it becomes inside torch.save: 'unexpected pos'."""
    class Full:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, data):
            self.n += len(data)
            if self.n > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    if how == "ENOSPC":
        def write(f):
            raise OSError(errno.ENOSPC, "No space left on device")
    else:
        def write(f):
            torch.save({"w": torch.zeros(100_000)}, Full(f))
    with pytest.raises(files.DiskFullError) as err:
        files.atomic_write(tmp_path / "last.pt", write)
    text = str(err.value)
    assert text.startswith(f"disk full: writing {tmp_path / 'last.pt'} failed, and its temporary "
                           "file was removed") and "MB free" in text and "make clean-smoke" in text
    assert ("unexpected pos" in text) == (how == "torch") and "\n" not in text
    assert err.value.errno == errno.ENOSPC and not list(tmp_path.iterdir())


def test_free_space_is_checked_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "free_bytes", lambda path: 40_000_000)
    files.check_free_space(tmp_path, 30_000_000, "a test")
    with pytest.raises(files.DiskFullError, match=r"^the disk holding .* has 40 MB free; this run "
                                                  r"needs 50 MB \(a test\)\. Free some space"):
        files.check_free_space(tmp_path, 50_000_000, "a test")


def test_a_live_holder_is_named_and_a_dead_one_taken_over(tmp_path):
    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(files.FolderLockedError) as err:
            files.lock_folder(folder)
        text = str(err.value)
        for needed in (f"process {holder.pid} on {socket.gethostname()} (since ",
                       "one process at a time", str(folder / "lock.json")):
            assert needed in text
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    said = []
    files.lock_folder(folder, log=said.append)  # that process is gone: taken over, saying so
    assert len(said) == 1 and said[0].startswith(
        f"{folder}: taking over the lock of process {holder.pid} on {socket.gethostname()} (since ")
    assert said[0].endswith("): that process is no longer running")
    files.lock_folder(folder, log=said.append)  # held by this process already: fine, silent
    assert len(said) == 1
    files.unlock_folder(folder)
    assert not (folder / "lock.json").exists()


def test_a_lock_from_an_earlier_colab_runtime_is_taken_over(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "lock.json").write_text('{"pid": 12, "host": "gone-runtime", "colab": true, '
                                      '"started_at": "2025-06-01 10:00:00"}')
    with pytest.raises(files.FolderLockedError, match="in use by process 12 on gone-runtime"):
        files.lock_folder(folder)  # another machine, not Colab: it cannot be told; refused
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    said = []
    files.lock_folder(folder, log=said.append)
    assert "an earlier Colab runtime" in said[0]


def test_a_second_process_cannot_train_a_run_that_is_training(tmp_path):
    run = RunDir(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run.path)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(files.FolderLockedError, match=f"process {holder.pid}"):
            run.resume(torch.nn.Linear(2, 2), 1, print, fresh=dict, snapshot=lambda e, h: {},
                       settings={})
        assert sorted(p.name for p in run.path.iterdir()) == ["lock.json"]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_clear_and_resume_remove_leftover_temporaries(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    for name in ("last.pt.tmp", "last.1a2b3c4d.pt.tmp", "history.json", "last.pt"):
        (run.path / name).write_bytes(b"x" * 10)
    run.clear()
    assert list(run.path.iterdir()) == []
    (run.path / "last.9f8e7d6c.pt.tmp").write_bytes(b"x" * 10)  # a write killed half way
    history = {"epoch": [], "stopped": None}
    run.resume(torch.nn.Linear(2, 2), 1, lambda line: None, fresh=lambda: history,
               snapshot=lambda e, h: {"epoch": e, "history": h}, settings={"fit": {}})
    assert not list(run.path.glob("*.tmp")) and (run.path / "last.pt").is_file()
    assert (run.path / "lock.json").is_file()  # this process's until the run is over
