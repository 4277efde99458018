"""Content-addressed blobs on disk: ``blobs/<algorithm>/<encoded>``, written through verified temp files.

A blob becomes visible only by an atomic ``rename`` of a fully written, hashed, size-checked and
fsynced temporary file, so a reader never sees partial content and a writer killed with ``kill -9``
leaves nothing but a temp file in ``ingest/``. A live writer holds an ``flock`` on its temp file;
garbage collection deletes only temp files it can lock itself, i.e. those whose writer died.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pallet.content.digest import Digest, Hasher
from pallet.errors import DigestMismatch, NotFound, StoreError
from pallet.fsutil import fsync_dir

TYPE_CHECKING = False  # no typing import at start-up (pallet run)
if TYPE_CHECKING:
    from typing import BinaryIO

CHUNK = 1 << 20
NEW_SUFFIX = ".new"
NEW_GRACE = 600.0  # seconds: an unlocked ".new" temp older than this was left by a writer that died
ALGORITHMS = ("sha256", "sha512")


class BlobUnknown(StoreError, NotFound):
    """The store holds no blob with that digest."""


class BlobStore:
    """Blobs under ``root/blobs``, temporary ingests under ``root/ingest``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.ingest_dir = self.root / "ingest"

    # -- reading -------------------------------------------------------------------------------
    def path(self, digest: str) -> Path:
        d = Digest(digest)
        if d.algorithm not in ALGORITHMS:
            raise StoreError(f"unsupported digest algorithm in {d} (the store keeps sha256 and sha512)")
        return self.blobs_dir / d.algorithm / d.encoded

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobUnknown(f"blob {digest} is not in the image store") from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobUnknown(f"blob {digest} is not in the image store") from None

    def read(self, digest: str, limit: int = 64 << 20) -> bytes:
        """Whole small blob (manifests, configs), refused if larger than ``limit``."""
        with self.open(digest) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise StoreError(f"blob {digest} is larger than {limit} bytes; refusing to read it into memory")
        return data

    def walk(self) -> Iterator[Digest]:
        """Every blob digest on disk (unordered)."""
        for alg in ALGORITHMS:
            try:
                names = os.listdir(self.blobs_dir / alg)
            except FileNotFoundError:
                continue
            for name in names:
                try:
                    yield Digest(f"{alg}:{name}")
                except ValueError:
                    continue  # a stray file: not ours to judge

    # -- writing -------------------------------------------------------------------------------
    def writer(
        self,
        expected: str | None = None,
        size: int | None = None,
        *,
        before_publish: Callable[[Digest], None] | None = None,
    ) -> BlobWriter:
        """A writer for one blob; ``expected``/``size`` are verified at commit when given.

        ``before_publish(digest)`` runs after verification and before the rename that makes the
        blob visible (the store uses it to lease the digest against a concurrent gc).
        """
        return BlobWriter(self, expected, size, before_publish)

    def ingest(
        self,
        stream: BinaryIO,
        expected: str | None = None,
        size: int | None = None,
        *,
        before_publish: Callable[[Digest], None] | None = None,
    ) -> Digest:
        """Copy ``stream`` to EOF into the store, verifying it; returns the digest."""
        with self.writer(expected, size, before_publish=before_publish) as w:
            read = getattr(stream, "read1", None) or stream.read
            while chunk := read(CHUNK):
                w.write(chunk)
            return w.commit()

    def delete(self, digest: str) -> bool:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            return False
        return True

    def clean_ingests(self) -> int:
        """Delete temp files whose writer is gone (we can take their lock). Returns how many."""
        removed = 0
        try:
            names = os.listdir(self.ingest_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            p = self.ingest_dir / name
            if name.endswith(NEW_SUFFIX):
                try:
                    if time.time() - p.stat().st_mtime < NEW_GRACE:
                        continue  # maybe a writer between open and flock
                except FileNotFoundError:
                    continue
            try:
                fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                        continue  # a live writer
                    raise
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
                    removed += 1
            finally:
                os.close(fd)
        return removed


class BlobWriter:
    """Streams one blob into the store: ``write(chunk)``... then ``commit()`` (or ``abort()``).

    Bytes go to a locked temp file in ``ingest/`` and through a hasher; ``commit`` checks digest
    and size, fsyncs, and renames into ``blobs/``. Writing a blob that already exists is fine (the
    content is the same by definition; the temp file is dropped).
    """

    def __init__(
        self,
        store: BlobStore,
        expected: str | None,
        size: int | None,
        before_publish: Callable[[Digest], None] | None,
    ) -> None:
        self._store = store
        self.expected = Digest(expected) if expected else None
        if self.expected is not None and self.expected.algorithm not in ALGORITHMS:
            raise StoreError(f"cannot verify {self.expected}: unsupported digest algorithm")
        self.expected_size = size if size is not None and size >= 0 else None
        self._hasher = Hasher(self.expected.algorithm if self.expected else "sha256")
        self._before_publish = before_publish
        try:
            store.ingest_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot write to the image store at {store.root}: {e.strerror}") from None
        self.temp_path = store.ingest_dir / f"blob-{os.getpid()}-{os.urandom(8).hex()}"
        # Created under a name gc leaves alone, locked, then renamed: gc only ever sees temp files
        # that are locked (live) or whose writer died (lockable), never one between open and flock.
        fresh = self.temp_path.with_name(self.temp_path.name + NEW_SUFFIX)
        self._fd: int | None = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.rename(fresh, self.temp_path)
        self.digest: Digest | None = None

    @property
    def written(self) -> int:
        return self._hasher.size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._fd is None:
            raise StoreError("write to a closed blob writer")
        n = len(data)
        if self.expected_size is not None and self._hasher.size + n > self.expected_size:
            what = self.expected or "blob"
            self.abort()
            raise DigestMismatch(f"blob {what}: more than the expected {self.expected_size} bytes")
        self._hasher.update(data)
        view = memoryview(data)
        while view:
            try:
                k = os.write(self._fd, view)
            except OSError as e:
                self.abort()
                raise StoreError(f"writing blob to {self._store.root}: {e.strerror}") from None
            view = view[k:]
        return n

    def commit(self) -> Digest:
        """Verify, persist and publish the blob; returns its digest."""
        if self._fd is None:
            if self.digest is not None:
                return self.digest
            raise StoreError("commit of an aborted blob writer")
        try:
            if self.expected is not None:
                got = self._hasher.verify(self.expected, self.expected_size, what="blob")
            else:
                if self.expected_size is not None and self._hasher.size != self.expected_size:
                    raise DigestMismatch(
                        f"blob: size {self._hasher.size} does not match expected {self.expected_size}"
                    )
                got = self._hasher.digest()
            os.fsync(self._fd)
            if self._before_publish is not None:
                self._before_publish(got)
            target = self._store.path(got)
            if target.is_file():
                os.unlink(self.temp_path)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(self.temp_path, target)
                fsync_dir(target.parent)
        except OSError as e:
            self.abort()
            raise StoreError(f"storing blob in {self._store.root}: {e.strerror or e}") from None
        except BaseException:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = None
        self.digest = got
        return got

    def abort(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.temp_path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()  # a no-op after commit
