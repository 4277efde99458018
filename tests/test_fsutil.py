import os
import subprocess
import sys
import time

import pytest

from pallet.fsutil import LockTimeout, atomic_write, atomic_writer, file_lock


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "f.json"
    atomic_write(p, b"one")
    atomic_write(p, b"two", mode=0o600)
    assert p.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f.json"]


def test_atomic_writer_streams_and_replaces_only_on_success(tmp_path):
    p = tmp_path / "big.tar"
    atomic_write(p, b"old")
    with pytest.raises(RuntimeError), atomic_writer(p) as f:
        f.write(b"half of the new")
        assert p.read_bytes() == b"old", "readers see the old content while it is written"
        raise RuntimeError("the producer failed")
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["big.tar"]
    with atomic_writer(p, 0o600) as f:
        for i in range(3):
            f.write(b"chunk%d" % i)
    assert p.read_bytes() == b"chunk0chunk1chunk2" and os.listdir(tmp_path) == ["big.tar"]
    assert p.stat().st_mode & 0o777 == 0o600
    # a killed writer leaves only a .tmp-NAME-* file, never a half-written target
    code = (
        "import os, sys\nfrom pallet.fsutil import atomic_writer\n"
        f"with atomic_writer({str(p)!r}) as f:\n f.write(b'partial'); f.flush(); os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert p.read_bytes() == b"chunk0chunk1chunk2"
    leftovers = [n for n in os.listdir(tmp_path) if n != "big.tar"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-big.tar-")


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
