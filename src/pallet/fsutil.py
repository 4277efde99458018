"""Crash-safe file primitives shared by the store, storage and engine.

Writers never expose half-written files: content goes to a temporary file in the same
directory, is fsynced, then renamed over the target. Cross-process exclusion uses ``flock``,
which the kernel releases when a holder dies (kill -9 included), so no stale lock survives.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pallet.errors import PalletError

TYPE_CHECKING = False  # typing costs an import on `pallet run`'s path: annotations are strings
if TYPE_CHECKING:
    from typing import BinaryIO


class LockTimeout(PalletError):
    """Another pallet process held a lock for too long."""


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644, sync: bool = True) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, never a mix."""
    with atomic_writer(path, mode, sync=sync, buffering=0) as f:
        view = memoryview(data)
        while view:
            view = view[f.write(view) :]


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str], mode: int = 0o644, *, sync: bool = True, buffering: int = -1
) -> Iterator[BinaryIO]:
    """A file to stream into that replaces ``path`` only when the block ends without an error
    (then fsynced, renamed over it, the directory fsynced); on an error nothing of it remains.

    The temporary file is ``.tmp-NAME-PID-NS`` beside it: what a sweeper of crash leftovers looks
    for (the registry's gc)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with open(fd, "wb", buffering=buffering) as f:
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, shared: bool = False, timeout: float | None = 300.0,
              what: str = "") -> Iterator[int]:
    """Hold an flock on ``path`` (created if missing). ``timeout=None`` waits forever."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        if timeout is None:
            fcntl.flock(fd, op)
        else:
            deadline = time.monotonic() + timeout
            delay = 0.001
            while True:
                try:
                    fcntl.flock(fd, op | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"timed out after {timeout:.0f}s waiting for the lock on {what or path}"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
        yield fd
    finally:
        os.close(fd)  # closing releases the flock
