"""The blob store: verified streaming writes, atomic publication, crash leftovers and their cleanup."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pallet.content import Digest
from pallet.errors import DigestMismatch
from pallet.store import BlobUnknown, Store


def test_writer_streams_verifies_and_publishes(store: Store) -> None:
    data = os.urandom(3 << 20)
    expected = Digest.of(data)
    w = store.writer(expected, len(data))
    for i in range(0, len(data), 100_000):
        w.write(data[i : i + 100_000])
        assert not store.has_blob(expected), "a blob must not be visible before commit"
    assert w.commit() == expected
    assert store.has_blob(expected)
    assert store.blob_size(expected) == len(data)
    with store.open_blob(expected) as f:
        assert hashlib.sha256(f.read()).hexdigest() == expected.encoded
    assert os.listdir(store.blobs.ingest_dir) == []


def test_digest_mismatch_leaves_nothing(store: Store) -> None:
    wrong = Digest.of(b"something else")
    with pytest.raises(DigestMismatch, match="hashes to"):
        store.ingest(io.BytesIO(b"payload"), wrong, 7)
    assert not store.has_blob(wrong)
    assert not store.has_blob(Digest.of(b"payload"))
    assert os.listdir(store.blobs.ingest_dir) == []


def test_size_mismatch_both_ways(store: Store) -> None:
    d = Digest.of(b"12345")
    with pytest.raises(DigestMismatch, match="more than the expected 3 bytes"):
        store.ingest(io.BytesIO(b"12345"), d, 3)
    with pytest.raises(DigestMismatch, match="size 5 does not match expected 9"):
        store.ingest(io.BytesIO(b"12345"), d, 9)
    assert list(store.blobs.walk()) == []


def test_sha512_and_unknown_digest(store: Store) -> None:
    data = b"sha512 content"
    d = Digest(f"sha512:{hashlib.sha512(data).hexdigest()}")
    assert store.ingest(io.BytesIO(data), d, len(data)) == d
    assert store.blobs.path(d).parent.name == "sha512"
    assert store.read_blob(d) == data
    with pytest.raises(BlobUnknown, match="not in the image store"):
        store.blob_size(Digest.of(b"absent"))


def test_writing_an_existing_blob_is_idempotent(store: Store) -> None:
    d1 = store.put(b"same")
    d2 = store.put(b"same")
    assert d1 == d2 and store.read_blob(d1) == b"same"
    assert os.listdir(store.blobs.ingest_dir) == []


def test_abort_and_context_manager_clean_up(store: Store) -> None:
    with store.writer() as w:
        w.write(b"half")
        tmp = w.temp_path
        assert tmp.exists()
    assert not tmp.exists(), "leaving the block without commit aborts"


def test_clean_ingests_spares_live_writers(store: Store) -> None:
    live = store.writer()
    live.write(b"in progress")
    # a temp file nobody holds (its writer died): this is what kill -9 leaves behind
    dead = store.blobs.ingest_dir / "blob-99999-deadbeef"
    dead.write_bytes(b"partial")
    assert store.blobs.clean_ingests() == 1
    assert not dead.exists() and live.temp_path.exists()
    live.write(b" and done")
    d = live.commit()
    assert store.read_blob(d) == b"in progress and done"


_SLOW_WRITER = textwrap.dedent("""
    import os, sys, time
    from pallet.store import Store
    s = Store(sys.argv[1])
    w = s.writer()
    chunk = os.urandom(1 << 20)
    for i in range(64):
        w.write(chunk)
    print(w.temp_path, flush=True)
    while True:          # a big blob still arriving
        w.write(chunk)
        time.sleep(0.01)
""")


def test_kill_9_mid_ingest_leaves_no_visible_blob(tmp_path: Path) -> None:
    root = tmp_path / "images"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        temp = Path(proc.stdout.readline().strip())  # type: ignore[union-attr]
        assert temp.exists() and temp.stat().st_size >= 64 << 20
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Store(root) as s:
        assert list(s.blobs.walk()) == [], "no partial blob may be visible"
        assert [p.name for p in s.blobs.ingest_dir.iterdir()] == [temp.name]
        data = os.urandom(5 << 20)  # the next ingest works
        d = s.ingest(io.BytesIO(data), Digest.of(data), len(data))
        report = s.gc()
        assert report.removed_temp_files == 1
        assert not temp.exists()
        assert report.removed_blobs == [] and s.has_blob(d), "our own lease protects what we just wrote"
    with Store(root) as s:
        assert s.gc().removed_blobs == [d], "unreferenced once its writer closed the store"


_LEASE_HOLDER = textwrap.dedent("""
    import io, sys, time
    from pallet.store import Store
    s = Store(sys.argv[1])
    d = s.put(b"pulled but not yet registered")
    print(d, flush=True)
    time.sleep(120)
""")


def test_gc_respects_live_leases_and_drops_dead_ones(tmp_path: Path) -> None:
    root = tmp_path / "images"
    proc = subprocess.Popen(
        [sys.executable, "-c", _LEASE_HOLDER, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        digest = proc.stdout.readline().strip()  # type: ignore[union-attr]
        with Store(root) as s:
            report = s.gc()
            assert report.removed_blobs == [] and s.has_blob(digest), "a live lease protects the blob"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    with Store(root) as s:
        while True:  # the kernel releases the flock as the process is reaped
            report = s.gc()
            if report.removed_leases or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert report.removed_leases == 1
        assert digest in report.removed_blobs
        assert not s.has_blob(digest)
        assert list((root / "leases").iterdir()) == []
