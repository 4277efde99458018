import os
import subprocess
import sys
import time

import pytest

from pallet.fsutil import LockTimeout, atomic_write, file_lock


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "f.json"
    atomic_write(p, b"one")
    atomic_write(p, b"two", mode=0o600)
    assert p.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f.json"]


def test_lock_excludes_other_processes_and_dies_with_holder(tmp_path):
    lock = tmp_path / "l.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys,time; from pallet.fsutil import file_lock\n"
        f"with file_lock({str(lock)!r}):\n print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout, match="waiting for the lock"), file_lock(lock, timeout=0.2):
            pass
        holder.kill()  # kill -9 releases the lock: no stale lock file blocks us
        holder.wait()
        t = time.monotonic()
        with file_lock(lock, timeout=5):
            pass
        assert time.monotonic() - t < 2
    finally:
        holder.kill()
        holder.wait()


def test_shared_locks_coexist(tmp_path):
    lock = tmp_path / "l.lock"
    with file_lock(lock, shared=True), file_lock(lock, shared=True, timeout=0.2):
        pass
