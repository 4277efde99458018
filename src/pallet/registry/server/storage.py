"""The storage seam: a small key/value interface the registry layout is written against.

Keys are relative ``/``-separated paths. The interface is what a blob store needs and no more
(whole small objects, appendable upload objects, an atomic "promote" of a finished upload, listing
one level, and an optional local path for zero-copy responses), so an S3-compatible backend can be
added later: ``put`` is PutObject, ``append_open`` a multipart upload, ``promote`` a server-side
copy or CompleteMultipartUpload, ``list`` a delimiter listing, ``local_path`` returns None.

:class:`FilesystemStorage` is the embedded default. Every object appears by ``rename``, so readers
never see a partial file, and a kill -9 at any point leaves only stray temporary files (which
``pallet registry gc`` sweeps).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pallet.fsutil import atomic_write, fsync_dir


class Busy(Exception):
    """Another request holds the object (an upload being written to)."""


class Appender(ABC):
    """An upload object being written: append at the end, or cut back after a failed request."""

    size: int

    @abstractmethod
    def write(self, data: bytes | memoryview) -> None: ...

    @abstractmethod
    def truncate(self, size: int) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Storage(ABC):
    """What the registry needs from a storage backend."""

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """A small object's bytes, or None if absent."""

    @abstractmethod
    def put(self, key: str, data: bytes, *, durable: bool = True) -> None:
        """Replace ``key`` atomically (readers see old or new, never a mix)."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """Size in bytes, or None if absent."""

    @abstractmethod
    def mtime(self, key: str) -> float | None:
        """Last modification (seconds since the epoch), or None if absent."""

    @abstractmethod
    def touch(self, key: str) -> None:
        """Mark ``key`` as recently used (protects it from a concurrent gc's grace period)."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove one object; False if it was not there."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix``."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (objects and sub-prefixes), unsorted; [] if none."""

    @abstractmethod
    def is_prefix(self, key: str) -> bool:
        """True if ``key`` has objects under it (a directory on a filesystem)."""

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO | None:
        """A binary reader of the object, or None if absent."""

    def local_path(self, key: str) -> str | None:
        """A filesystem path the HTTP server can send without copying through Python, if any."""
        return None

    @abstractmethod
    def append_open(self, key: str, *, create: bool = False) -> Appender:
        """Open an upload object for appending, exclusively: raises :class:`Busy` if in use,
        FileNotFoundError if absent and not ``create``."""

    @abstractmethod
    def promote(self, src: str, dst: str) -> None:
        """Move a finished upload object to its final key, atomically and durably."""


class _FileAppender(Appender):
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.size = os.fstat(fd).st_size

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self.size += n

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self.size = size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock
            self._fd = -1


class FilesystemStorage(Storage):
    """Objects as files under ``root``; ``durable`` fsyncs content and directories before renames."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self._base = str(self.root) + "/"

    def _path(self, key: str) -> str:
        return self._base + key

    def get(self, key: str) -> bytes | None:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def put(self, key: str, data: bytes, *, durable: bool = True) -> None:
        path = self._path(key)
        sync = durable and self.fsync
        try:
            atomic_write(path, data, sync=sync)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write(path, data, sync=sync)

    def size(self, key: str) -> int | None:
        try:
            return os.stat(self._path(key)).st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def mtime(self, key: str) -> float | None:
        try:
            return os.stat(self._path(key)).st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None

    def touch(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.utime(self._path(key))

    def delete(self, key: str) -> bool:
        try:
            os.unlink(self._path(key))
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def list(self, prefix: str) -> list[str]:
        try:
            return [n for n in os.listdir(self._path(prefix)) if not n.startswith(".tmp-")]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def is_prefix(self, key: str) -> bool:
        return os.path.isdir(self._path(key))

    def open_read(self, key: str) -> BinaryIO | None:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def local_path(self, key: str) -> str | None:
        return self._path(key)

    def append_open(self, key: str, *, create: bool = False) -> Appender:
        path = self._path(key)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            if not create:
                raise
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise Busy(key) from None
            raise
        return _FileAppender(fd)

    def promote(self, src: str, dst: str) -> None:
        spath, dpath = self._path(src), self._path(dst)
        if self.fsync:
            fd = os.open(spath, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        parent = os.path.dirname(dpath)
        try:
            os.replace(spath, dpath)
        except FileNotFoundError:
            if not os.path.exists(spath):
                raise
            os.makedirs(parent, exist_ok=True)
            os.replace(spath, dpath)
        if self.fsync:
            fsync_dir(parent)

    def walk_files(self, prefix: str) -> Iterator[tuple[str, float]]:
        """(key, mtime) of every file under ``prefix`` (gc's sweep of stray temporaries)."""
        base = self._path(prefix)
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                full = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    yield full[len(self._base):], os.stat(full).st_mtime
