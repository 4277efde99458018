"""Apply a layer's tar entries to a directory, never touching anything outside it.

Every path is resolved by hand, one component at a time, with ``openat(O_NOFOLLOW)`` from a
directory descriptor: nothing is ever looked up by a host path string. Semantics follow
containerd and umoci (and the OCI image spec):

* names are cleaned lexically; a name that climbs above the root with ``..`` is rejected, as is a
  hardlink whose target does; a leading ``/`` is dropped (the name is relative to the root);
* a symlink met in a parent path (planted by an earlier entry, or by an earlier layer in a full
  copy) is followed *inside* the root, as if the root were ``/`` (filepath-securejoin semantics):
  ``..`` stops at the root and absolute targets restart there, so writes are contained;
* the entry itself is never followed: an existing file, symlink, device or fifo at its name is
  unlinked first, never written through; an existing directory is kept only for a directory;
* hardlinks link to the target *name* (a symlink target is linked, not followed).

Two output formats, because drivers store deletions differently:

``OVERLAY``  the directory is one layer's diff (overlayfs lowerdir/upperdir): a whiteout
             ``.wh.NAME`` becomes a 0/0 character device, ``.wh..wh..opq`` the
             ``trusted.overlay.opaque=y`` xattr; parents are not on disk, so layers of one image
             can be applied concurrently;
``NAIVE``    the directory is a full copy of the parent (vfs): whiteouts delete.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import shutil
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pallet.errors import StorageError, UnsafePathError
from pallet.storage import tarstream as ts

log = logging.getLogger(__name__)

OVERLAY = "overlay"
NAIVE = "naive"

OPAQUE_XATTR = "trusted.overlay.opaque"
WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
#: xattrs a layer may not set: overlayfs' own metadata (opaque comes from .wh..wh..opq only)
_FORBIDDEN_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 255
_CACHE_LIMIT = 2048
#: regular files up to this size are created by the writer pool (bigger ones inline)
_POOL_FILE_MAX = 1 << 20


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@dataclass(frozen=True)
class ApplyResult:
    """What a streamed apply saw: the digests and sizes of both the compressed and tar bytes."""

    diff_id: str
    size: int
    compressed_digest: str | None
    compressed_size: int
    entries: int
    #: bytes of regular-file data written (the diff's disk usage in overlay format)
    file_bytes: int = 0


def clean_name(name: bytes, e: ts.Entry | None, what: str) -> list[bytes]:
    """Lexically clean a member name into components. A relative name that climbs out of the
    root is rejected; an absolute one is relative to the root, where ``..`` stays (as
    containerd's filepath.Clean-then-join does)."""
    if b"\0" in name:
        raise UnsafePathError(f"{what}: entry {_disp(name)!r}: name contains a NUL byte")
    parts: list[bytes] = []
    absolute = name.startswith(b"/")
    for p in name.split(b"/"):
        if not p or p == b".":
            continue
        if p == b"..":
            if not parts and absolute:
                continue
            if not parts:
                shown = e.display if e is not None else _disp(name)
                raise UnsafePathError(f"{what}: entry {shown!r}: path {_disp(name)!r} leads outside "
                                      "the layer root")
            parts.pop()
        else:
            parts.append(p)
    return parts


def _disp(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _join(real: bytes, name: bytes) -> bytes:
    return real + b"/" + name if real else name


def is_whiteout_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class _Job:
    __slots__ = ("data", "display", "gid", "mode", "mtime_ns", "name", "need_chmod", "need_chown", "perm",
                 "pfd", "uid")


class _WriterPool:
    """Creates *new* regular files on worker threads, so that the kernel work of file creation
    (most of an unpack's time) runs on every core while the calling thread parses the tar.

    Only files whose name is known not to exist yet are handed over (in an overlay diff dir
    nothing exists that this layer did not create), so a job never races with another entry;
    the applier waits for the pool (:meth:`wait`) before anything that could: removals, replacing
    or linking a name still being written, closing directory descriptors, finishing."""

    def __init__(self, workers: int, max_bytes: int = 8 << 20) -> None:
        # one queue per worker, a directory always to the same one: creating files in one
        # directory from several threads only contends on its lock
        self._qs: list[queue.SimpleQueue[_Job | None]] = [queue.SimpleQueue() for _ in range(workers)]
        self._cv = threading.Condition()
        self.pending = 0
        self._bytes = 0
        self._max = max_bytes
        self._error: tuple[str, BaseException] | None = None
        self._threads = [threading.Thread(target=self._run, args=(q,), name="pallet-unpack-writer",
                                          daemon=True) for q in self._qs]
        for t in self._threads:
            t.start()

    def submit(self, job: _Job) -> None:
        n = len(job.data)
        with self._cv:
            while self._bytes + n > self._max and self.pending:
                self._cv.wait()
            self.pending += 1
            self._bytes += n
        self._qs[job.pfd % len(self._qs)].put(job)

    def wait(self, what: str) -> None:
        """Block until every job is done; raise the first failure, naming its entry."""
        with self._cv:
            while self.pending:
                self._cv.wait()
            err, self._error = self._error, None
        if err is not None:
            display, exc = err
            if isinstance(exc, StorageError):
                raise exc
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise StorageError(f"{what}: no space left on device while writing entry {display!r}")
            raise StorageError(f"{what}: entry {display!r}: {getattr(exc, 'strerror', None) or exc}")

    def close(self) -> None:
        for q in self._qs:
            q.put(None)
        for t in self._threads:
            t.join()

    def _run(self, q: queue.SimpleQueue[_Job | None]) -> None:
        while (job := q.get()) is not None:
            try:
                _write_job(job)
            except BaseException as e:
                with self._cv:
                    if self._error is None:
                        self._error = (job.display, e)
            finally:
                with self._cv:
                    self.pending -= 1
                    self._bytes -= len(job.data)
                    self._cv.notify_all()


def _write_job(job: _Job) -> None:
    fd = os.open(job.name, _FILE_FLAGS, job.perm, dir_fd=job.pfd)
    try:
        mv = memoryview(job.data)
        while mv:
            mv = mv[os.write(fd, mv):]
        if job.need_chown:
            os.fchown(fd, job.uid, job.gid)
        if job.need_chmod:
            os.fchmod(fd, job.mode)
        os.utime(fd, ns=(job.mtime_ns, job.mtime_ns))
    finally:
        os.close(fd)


def default_writers() -> int:
    """Writer threads per layer: one per core (up to 4); $PALLET_UNPACK_WRITERS overrides (0: none)."""
    env = os.environ.get("PALLET_UNPACK_WRITERS")
    if env is not None and env.strip().isdigit():
        return int(env)
    return min(4, len(os.sched_getaffinity(0)))


class Applier:
    """Applies entries under ``root``. Not thread-safe; one per layer being extracted."""

    def __init__(self, root: str | os.PathLike[str], mode: str, *, what: str = "layer",
                 lowers: Callable[[], Sequence[Path]] | None = None, writers: int | None = None) -> None:
        if mode not in (OVERLAY, NAIVE):
            raise ValueError(f"unknown apply mode {mode!r}")
        self.mode = mode
        self.what = what
        self._lowers_fn = lowers
        self._lowers: Sequence[Path] | None = None
        self.root_fd = os.open(root, _DIR_FLAGS)
        # lexical parent path -> (fd, real path inside the root); the root fd is never closed here
        self._cache: dict[bytes, tuple[int, bytes]] = {b"": (self.root_fd, b"")}
        self._retired: list[int] = []
        self.created: set[bytes] = set()
        self._dir_times: list[tuple[bytes, int]] = []
        self._implicit: dict[bytes, None] = {}  # ordered set: parents before children
        self._sgid: set[bytes] = set()
        # naive format: mtimes of the parent's directories we write into, restored at the end
        # (umoci does the same; an overlay diff gets them from the lower layers)
        self._lower_times: dict[bytes, int] = {}
        if mode == NAIVE:
            self._note_lower_dir(self.root_fd, b"")
        self._is_root = os.geteuid() == 0
        self._uid, self._gid = os.geteuid(), os.getegid()
        self._xattr_warned = False
        self.entries = 0
        self.file_bytes = 0
        if writers is None:
            writers = default_writers()
        # the pool needs a directory where only this layer's entries exist (overlay format),
        # and root (a rootless chown fallback is per entry)
        self._pool = _WriterPool(writers) if writers > 0 and mode == OVERLAY and self._is_root else None

    # ---------------------------------------------------------------- public

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()  # workers finish their jobs before any descriptor goes
            self._pool = None
        for fd, _ in self._cache.values():
            if fd != self.root_fd:
                os.close(fd)
        self._cache = {}
        for fd in self._retired:
            os.close(fd)
        self._retired = []
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def apply(self, feed: ts.Feed) -> None:
        """Apply every member of the tar stream in ``feed``, then finish the directory."""
        for e in ts.read_entries(feed):
            self.entry(e, feed)
        self.finish()

    def entry(self, e: ts.Entry, feed: ts.Feed) -> None:
        """Apply one member (consuming its data from ``feed``)."""
        self.entries += 1
        try:
            self._entry(e, feed)
        except StorageError:
            raise
        except OSError as err:
            raise self._oserror(e, err) from None
        except ValueError as err:  # e.g. a NUL byte in a link target
            raise StorageError(f"{self.what}: entry {e.display!r}: {err}") from None
        finally:
            if self._retired:
                if self._pool is not None and self._pool.pending:
                    self._pool.wait(self.what)
                for fd in self._retired:
                    os.close(fd)
                self._retired = []

    def _settle(self, real: bytes | None = None) -> None:
        """Wait for the writer pool if an operation could race with its jobs (``real`` given:
        only if that path was created by this layer, hence maybe still being written)."""
        pool = self._pool
        if pool is not None and pool.pending and (real is None or real in self.created):
            pool.wait(self.what)

    def finish(self) -> None:
        """Deferred work: directory mtimes, and implicit parents' attributes from lower layers."""
        if self._pool is not None:
            self._pool.wait(self.what)
        if self._implicit and self.mode == OVERLAY:
            self._fix_implicit_dirs()
        by_real = {real: fd for fd, real in self._cache.values()}
        if self._lower_times:
            explicit = {r for r, _ in self._dir_times}
            times = [(r, m) for r, m in self._lower_times.items() if r not in explicit]
        else:
            times = []
        for real, mtime in times + self._dir_times:
            fd = by_real.get(real)
            if fd is not None:
                os.utime(fd, ns=(mtime, mtime))
                continue
            fd = self._open_strict(real)
            if fd is None:
                continue  # replaced by a later entry: its own time was set then
            try:
                os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)

    # ---------------------------------------------------------------- entries

    def _entry(self, e: ts.Entry, feed: ts.Feed) -> None:
        comps = clean_name(e.name, e, self.what)
        typ = e.type
        if not comps:
            if typ != ts.DIR:
                raise UnsafePathError(f"{self.what}: entry {e.display!r}: the layer root can only be "
                                      "a directory")
            self._metadata_fd(self.root_fd, e, b"")
            self._dir_times.append((b"", e.mtime_ns))
            return
        base = comps[-1]
        if base.startswith(WHITEOUT_PREFIX):
            if typ == ts.REG and e.size:
                feed.skip(e.size)
            if base == OPAQUE_MARKER:
                self._opaque(comps[:-1], e)
            elif base.startswith(b".wh..wh."):
                pass  # other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): meaningless here
            else:
                self._whiteout(comps[:-1], base[4:], e)
            return
        pfd, preal = self._parent(comps, e)
        real = _join(preal, base)
        pool = self._pool
        if pool is not None:
            if (
                typ == ts.REG
                and e.size <= _POOL_FILE_MAX
                and not e.xattrs
                and e.sparse is None
                and real not in self.created
            ):
                self._submit(pfd, base, real, e, feed, pool)
                return
            if typ == ts.LNK:
                self._settle()  # the target may be a file still being written
            else:
                self._settle(real)
        if typ == ts.REG:
            self._file(pfd, base, real, e, feed)
        elif typ == ts.DIR:
            self._dir(pfd, base, real, e, b"/".join(comps))
        elif typ == ts.SYM:
            self._symlink(pfd, base, real, e)
        elif typ == ts.LNK:
            self._hardlink(pfd, base, real, e)
        elif typ in (ts.CHR, ts.BLK, ts.FIFO):
            self._special(pfd, base, real, e)
        self.created.add(real)

    def _submit(self, pfd: int, base: bytes, real: bytes, e: ts.Entry, feed: ts.Feed,
                pool: _WriterPool) -> None:
        job = _Job()
        job.pfd, job.name, job.display = pfd, base, e.display
        job.data = feed.take(e.size) if e.size else b""
        if len(job.data) != e.size:
            raise ts.TarFormatError("tar stream ends inside a member")
        perm = e.mode & 0o777
        job.perm, job.mode, job.uid, job.gid, job.mtime_ns = perm, e.mode, e.uid, e.gid, e.mtime_ns
        job.need_chown = bool(e.uid or e.gid or real.rpartition(b"/")[0] in self._sgid)
        job.need_chmod = bool(e.mode & 0o7000 or perm & _UMASK)
        self.file_bytes += e.size
        self.created.add(real)
        pool.submit(job)

    def _file(self, pfd: int, base: bytes, real: bytes, e: ts.Entry, feed: ts.Feed) -> None:
        perm = e.mode & 0o777
        try:
            fd = os.open(base, _FILE_FLAGS, perm, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, base)
            fd = os.open(base, _FILE_FLAGS, perm, dir_fd=pfd)
        try:
            n = e.size
            self.file_bytes += n
            if e.sparse is not None:  # data regions at their offsets; the holes stay holes
                for off, length in e.sparse:
                    os.lseek(fd, off, os.SEEK_SET)
                    for mv in feed.chunks(length):
                        while mv:
                            mv = mv[os.write(fd, mv):]
                os.ftruncate(fd, e.realsize)
            elif n:
                feed_buf = feed.buf
                pos = feed.pos
                if len(feed_buf) - pos >= n:  # whole file already buffered: one write
                    mv = memoryview(feed_buf)[pos:pos + n]
                    feed.pos = pos + n
                    while mv:
                        mv = mv[os.write(fd, mv):]
                else:
                    for mv in feed.chunks(n):
                        while mv:
                            mv = mv[os.write(fd, mv):]
            if self._is_root and (e.uid or e.gid or real.rpartition(b"/")[0] in self._sgid):
                os.fchown(fd, e.uid, e.gid)
            elif not self._is_root and (e.uid != self._uid or e.gid != self._gid):
                self._try_chown_fd(fd, e)
            if e.mode & 0o7000 or perm & _UMASK:
                os.fchmod(fd, e.mode)
            if e.xattrs:
                self._xattrs(fd, e)
            os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        finally:
            os.close(fd)

    def _dir(self, pfd: int, base: bytes, real: bytes, e: ts.Entry, key: bytes) -> None:
        opaque = False
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                # a directory replacing this layer's whiteout hides the lower one entirely
                opaque = self.mode == OVERLAY and is_whiteout_device(st)
                self._remove(pfd, base, st)
                os.mkdir(base, 0o700, dir_fd=pfd)
        fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
        old = self._cache.get(key)
        if old is not None and old[0] != self.root_fd:
            self._retired.append(old[0])
        self._cache[key] = (fd, real)
        if len(self._cache) > _CACHE_LIMIT:
            self._invalidate(keep=key)
        if opaque:
            os.setxattr(fd, OPAQUE_XATTR, b"y")
        self._metadata_fd(fd, e, real, is_dir=True)
        self._implicit.pop(real, None)  # an explicit entry after an implicit creation wins
        if e.mode & stat.S_ISGID:
            self._sgid.add(real)
        else:
            self._sgid.discard(real)
        self._dir_times.append((real, e.mtime_ns))

    def _symlink(self, pfd: int, base: bytes, real: bytes, e: ts.Entry) -> None:
        if not e.linkname:
            raise StorageError(f"{self.what}: entry {e.display!r}: symlink with an empty target")
        try:
            os.symlink(e.linkname, base, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, base)
            os.symlink(e.linkname, base, dir_fd=pfd)
        if self._is_root and (e.uid or e.gid or real.rpartition(b"/")[0] in self._sgid):
            os.chown(base, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
        if e.xattrs:
            self._xattrs(f"/proc/self/fd/{pfd}/{os.fsdecode(base)}", e, follow=False)
        os.utime(base, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _hardlink(self, pfd: int, base: bytes, real: bytes, e: ts.Entry) -> None:
        tcomps = clean_name(e.linkname, e, self.what)
        if not tcomps:
            raise UnsafePathError(f"{self.what}: entry {e.display!r}: hardlink to the layer root")
        try:
            tpfd = self._resolve(tcomps[:-1], e, create=False)[0]
        except FileNotFoundError:
            tpfd = -1
        tbase = tcomps[-1]
        if tpfd >= 0:
            try:
                os.link(tbase, base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
                return
            except FileExistsError:
                tst = os.stat(tbase, dir_fd=tpfd, follow_symlinks=False)
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                if (st.st_dev, st.st_ino) == (tst.st_dev, tst.st_ino):
                    return  # already that file (a repeated link)
                self._remove(pfd, base, st)
                os.link(tbase, base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
                return
            except FileNotFoundError:
                pass
            except PermissionError:
                tst = os.stat(tbase, dir_fd=tpfd, follow_symlinks=False)
                if stat.S_ISDIR(tst.st_mode):
                    raise StorageError(f"{self.what}: entry {e.display!r}: hardlink to directory "
                                       f"{_disp(e.linkname)!r}") from None
                raise
        # not in this layer: in a per-layer diff dir the target may live in a lower layer
        if self.mode == OVERLAY and self._copy_from_lowers(tcomps, pfd, base):
            return
        raise StorageError(f"{self.what}: entry {e.display!r}: hardlink target {_disp(e.linkname)!r} "
                           "does not exist in the layer")

    def _special(self, pfd: int, base: bytes, real: bytes, e: ts.Entry) -> None:
        perm = e.mode & 0o7777
        if e.type == ts.FIFO:
            make = lambda: os.mkfifo(base, perm, dir_fd=pfd)  # noqa: E731
        else:
            if not self._is_root:
                log.warning("%s: skipping device node %s (needs root)", self.what, e.display)
                return
            kind = stat.S_IFCHR if e.type == ts.CHR else stat.S_IFBLK
            dev = os.makedev(e.devmajor, e.devminor)
            make = lambda: os.mknod(base, kind | perm, dev, dir_fd=pfd)  # noqa: E731
        try:
            make()
        except FileExistsError:
            self._remove(pfd, base)
            make()
        if self._is_root and (e.uid or e.gid or real.rpartition(b"/")[0] in self._sgid):
            os.chown(base, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
        if perm & _UMASK or perm & 0o7000:
            os.chmod(base, perm, dir_fd=pfd, follow_symlinks=True)  # just made: not a symlink
        if e.xattrs:
            self._xattrs(f"/proc/self/fd/{pfd}/{os.fsdecode(base)}", e, follow=False)
        os.utime(base, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    # ---------------------------------------------------------------- deletions

    def _whiteout(self, pcomps: list[bytes], name: bytes, e: ts.Entry) -> None:
        if name in (b"", b".", b"..") or b"/" in name:
            raise UnsafePathError(f"{self.what}: entry {e.display!r}: invalid whiteout name")
        try:
            pfd, preal = self._resolve(pcomps, e, create=self.mode == OVERLAY)
        except FileNotFoundError:
            return  # nothing below to delete
        real = _join(preal, name)
        self._settle(real)
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            if self.mode == OVERLAY:
                os.mknod(name, stat.S_IFCHR | 0o000, 0, dir_fd=pfd)
                self.created.add(real)
            return
        if real in self.created:
            # the spec: a whiteout hides lower layers only; this layer's own entry stays
            if stat.S_ISDIR(st.st_mode):
                if self.mode == OVERLAY:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
                    try:
                        os.setxattr(fd, OPAQUE_XATTR, b"y")
                    finally:
                        os.close(fd)
                else:
                    self._prune_lower(pfd, name, real)
            return
        if self.mode == OVERLAY:
            # an entry of this layer that is not ours cannot exist in a fresh diff dir; replace it
            self._remove(pfd, name, st)
            os.mknod(name, stat.S_IFCHR | 0o000, 0, dir_fd=pfd)
            self.created.add(real)
        else:
            self._remove(pfd, name, st)

    def _opaque(self, pcomps: list[bytes], e: ts.Entry) -> None:
        pfd, preal = self._resolve(pcomps, e, create=True)
        if self.mode == OVERLAY:
            os.setxattr(pfd, OPAQUE_XATTR, b"y")
            return
        for child in os.listdir(pfd):
            b = os.fsencode(child)
            real = _join(preal, b)
            if real in self.created:
                st = os.stat(b, dir_fd=pfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    self._prune_lower(pfd, b, real)
            else:
                self._remove(pfd, b)

    def _prune_lower(self, pfd: int, name: bytes, real: bytes) -> None:
        """Delete everything under ``name`` that this layer did not create (naive format)."""
        fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        try:
            for child in os.listdir(fd):
                b = os.fsencode(child)
                creal = _join(real, b)
                if creal in self.created:
                    st = os.stat(b, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        self._prune_lower(fd, b, creal)
                else:
                    self._remove(fd, b)
        finally:
            os.close(fd)

    def _remove(self, pfd: int, name: bytes, st: os.stat_result | None = None) -> None:
        self._settle()
        if st is None:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            self._invalidate()
            shutil.rmtree(name, dir_fd=pfd)
        else:
            if stat.S_ISLNK(st.st_mode):
                self._invalidate()
            os.unlink(name, dir_fd=pfd)

    # ---------------------------------------------------------------- path resolution

    def _invalidate(self, keep: bytes | None = None) -> None:
        """Forget cached directories (a directory or symlink went away); close them after the entry."""
        kept = self._cache.get(keep) if keep is not None else None
        for fd, _ in self._cache.values():
            if fd != self.root_fd and (kept is None or fd != kept[0]):
                self._retired.append(fd)
        self._cache = {b"": (self.root_fd, b"")}
        if kept is not None and keep:
            self._cache[keep] = kept

    def _parent(self, comps: list[bytes], e: ts.Entry) -> tuple[int, bytes]:
        return self._resolve(comps[:-1], e, create=True)

    def _resolve(self, comps: list[bytes], e: ts.Entry, *, create: bool) -> tuple[int, bytes]:
        """The directory ``comps`` inside the root: (fd, real path). Missing ones are created
        (0755, as tar does) when ``create``; symlinks are followed inside the root."""
        key = b"/".join(comps)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        cache = self._cache
        i = len(comps) - 1
        while i > 0:
            hit = cache.get(b"/".join(comps[:i]))
            if hit is not None:
                break
            i -= 1
        else:
            hit = cache[b""]
            i = 0
        fd, real = hit
        for j in range(i, len(comps)):
            c = comps[j]
            nfd = self._open_dir(fd, c, real, e, create)
            if nfd < 0:  # a symlink: expanded on the slow path
                return self._resolve_slow(comps, e, create=create)
            real = _join(real, c)
            if self.mode == NAIVE and real not in self.created:
                self._note_lower_dir(nfd, real)
            fd = nfd
            cache[b"/".join(comps[:j + 1])] = (fd, real)
        if len(cache) > _CACHE_LIMIT:
            self._invalidate(keep=key)
        return fd, real

    def _open_dir(self, fd: int, c: bytes, real: bytes, e: ts.Entry, create: bool) -> int:
        """One step of path resolution: directory ``c`` under ``fd`` (at ``real``), opened, made
        (when missing and ``create``) or got past as ``_through_non_dir`` decides; -1 when it
        is a symlink, which the caller resolves."""
        try:
            return os.open(c, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
            return self._mkdir_implicit(fd, c, _join(real, c), e)
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = os.stat(c, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                return -1
            return self._through_non_dir(fd, c, st, e, create)

    def _resolve_slow(self, comps: list[bytes], e: ts.Entry, *, create: bool) -> tuple[int, bytes]:
        """Component-wise resolution with symlinks expanded inside the root (securejoin)."""
        stack: list[tuple[int, bytes]] = [(self.root_fd, b"")]
        pending = list(reversed(comps))
        links = 0
        try:
            while pending:
                c = pending.pop()
                if not c or c == b".":
                    continue
                if c == b"..":
                    if len(stack) > 1:
                        os.close(stack.pop()[0])
                    continue
                fd, real = stack[-1]
                nfd = self._open_dir(fd, c, real, e, create)
                if nfd < 0:  # a symlink: its target's components are resolved in its place
                    links += 1
                    if links > _MAX_LINKS:
                        raise UnsafePathError(f"{self.what}: entry {e.display!r}: too many levels "
                                              "of symbolic links")
                    target = os.readlink(c, dir_fd=fd)
                    if target.startswith(b"/"):
                        while len(stack) > 1:
                            os.close(stack.pop()[0])
                    pending.extend(reversed(target.split(b"/")))
                    continue
                stack.append((nfd, _join(real, c)))
        except BaseException:
            for fd, _ in stack[1:]:
                os.close(fd)
            raise
        for fd, _ in stack[1:-1]:
            os.close(fd)
        result = stack[-1]
        key = b"/".join(comps)
        if result[0] == self.root_fd:
            result = (os.dup(self.root_fd), b"")
        self._cache[key] = result
        return result

    def _through_non_dir(self, fd: int, c: bytes, st: os.stat_result, e: ts.Entry, create: bool) -> int:
        """A parent component exists but is not a directory."""
        if self.mode == OVERLAY and is_whiteout_device(st) and create:
            # this layer whited out a lower directory and now writes below it: a fresh opaque dir
            os.unlink(c, dir_fd=fd)
            os.mkdir(c, 0o755, dir_fd=fd)
            nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
            os.fchmod(nfd, 0o755)
            os.setxattr(nfd, OPAQUE_XATTR, b"y")
            return nfd
        if not create:
            raise FileNotFoundError(errno.ENOENT, "not a directory")
        raise StorageError(f"{self.what}: entry {e.display!r}: parent {_disp(c)!r} is not a directory")

    def _mkdir_implicit(self, fd: int, c: bytes, real: bytes, e: ts.Entry) -> int:
        if real in self.created:
            # this layer made that name: maybe a file the writer pool has not created yet
            self._settle(real)
            raise StorageError(f"{self.what}: entry {e.display!r}: parent {_disp(c)!r} is not a directory")
        os.mkdir(c, 0o755, dir_fd=fd)
        nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
        if _UMASK & 0o755:
            os.fchmod(nfd, 0o755)
        self._implicit[real] = None
        self.created.add(real)
        return nfd

    def _note_lower_dir(self, fd: int, real: bytes) -> None:
        """A directory from the parent copy: remember its mtime, and setgid ones (new files
        inherit their group)."""
        st = os.fstat(fd)
        if st.st_mode & stat.S_ISGID:
            self._sgid.add(real)
        self._lower_times.setdefault(real, st.st_mtime_ns)

    def _open_strict(self, real: bytes) -> int | None:
        """Open a real path with no symlink anywhere on it; None if it is gone or changed."""
        fd = os.dup(self.root_fd)
        for c in real.split(b"/") if real else []:
            try:
                nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                os.close(fd)
                return None
            os.close(fd)
            fd = nfd
        return fd

    # ---------------------------------------------------------------- metadata

    def _metadata_fd(self, fd: int, e: ts.Entry, real: bytes, is_dir: bool = True) -> None:
        if self._is_root:
            os.fchown(fd, e.uid, e.gid)
        elif e.uid != self._uid or e.gid != self._gid:
            self._try_chown_fd(fd, e)
        os.fchmod(fd, e.mode & 0o7777)
        if e.xattrs:
            self._xattrs(fd, e)

    def _try_chown_fd(self, fd: int, e: ts.Entry) -> None:
        try:
            os.fchown(fd, e.uid, e.gid)
        except PermissionError:
            pass  # rootless without an id mapping: keep our own ids (as podman with ignore_chown_errors)

    def _xattrs(self, target: int | str, e: ts.Entry, follow: bool = True) -> None:
        assert e.xattrs is not None
        for name, value in e.xattrs.items():
            if name.startswith(_FORBIDDEN_XATTR_PREFIXES):
                log.warning("%s: entry %s: ignoring overlay xattr %s", self.what, e.display, name)
                continue
            try:
                os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as err:
                if err.errno in (errno.ENOTSUP, errno.EPERM, errno.EINVAL):
                    if not self._xattr_warned:
                        log.warning("%s: entry %s: cannot set xattr %s: %s", self.what, e.display, name,
                                    err.strerror)
                        self._xattr_warned = True
                    continue
                raise

    # ---------------------------------------------------------------- lower layers (overlay format)

    def _lower_dirs(self) -> Sequence[Path]:
        if self._lowers is None:
            self._lowers = list(self._lowers_fn()) if self._lowers_fn is not None else []
        return self._lowers

    def _fix_implicit_dirs(self) -> None:
        """Directories created only as parents take the attributes they have in lower layers,
        so the upper copy does not change the merged view's mode or owner (containerd: WithParents)."""
        lowers = self._lower_dirs()
        if not lowers:
            return
        timed = {r for r, _ in self._dir_times}
        for real in self._implicit:
            found = lookup_lower(lowers, real.split(b"/"))
            if found is None:
                continue
            path, st = found
            if not stat.S_ISDIR(st.st_mode):
                continue
            fd = self._open_strict(real)
            if fd is None:
                continue
            try:
                if self._is_root:
                    os.fchown(fd, st.st_uid, st.st_gid)
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                for name in os.listxattr(path, follow_symlinks=False):
                    if not name.startswith(_FORBIDDEN_XATTR_PREFIXES):
                        with _suppress_xattr_errors():
                            os.setxattr(fd, name, os.getxattr(path, name, follow_symlinks=False))
                if real not in timed:
                    self._dir_times.append((real, st.st_mtime_ns))
            finally:
                os.close(fd)

    def _copy_from_lowers(self, tcomps: list[bytes], pfd: int, base: bytes) -> bool:
        """A hardlink to a file of a lower layer: overlayfs cannot share inodes across layers, so
        the name gets a copy (what a copy-up in a running container would give)."""
        lowers = self._lower_dirs()
        found = lookup_lower(lowers, tcomps) if lowers else None
        if found is None:
            return False
        path, st = found
        if stat.S_ISDIR(st.st_mode):
            return False
        try:
            os.stat(base, dir_fd=pfd, follow_symlinks=False)
            self._remove(pfd, base)
        except FileNotFoundError:
            pass
        copy_entry(path, st, pfd, base)
        return True

    def _oserror(self, e: ts.Entry, err: OSError) -> StorageError:
        if err.errno == errno.ENOSPC:
            return StorageError(f"{self.what}: no space left on device while writing entry {e.display!r}")
        return StorageError(f"{self.what}: entry {e.display!r}: {err.strerror or err}")


class _suppress_xattr_errors:
    def __enter__(self) -> None:
        return None

    def __exit__(self, typ, value, tb) -> bool:
        return isinstance(value, OSError) and value.errno in (errno.ENOTSUP, errno.EPERM, errno.EINVAL)


def lookup_lower(lowers: Sequence[Path], comps: list[bytes]) -> tuple[bytes, os.stat_result] | None:
    """Find a path in a stack of overlay diff dirs (top first) as the merged view shows it."""
    for lower in lowers:
        cur = os.fsencode(lower)
        stop = False
        for i, c in enumerate(comps):
            cur = cur + b"/" + c
            try:
                st = os.lstat(cur)
            except (FileNotFoundError, NotADirectoryError):
                break
            if is_whiteout_device(st):
                return None
            if i == len(comps) - 1:
                return cur, st
            if not stat.S_ISDIR(st.st_mode):
                return None  # a non-directory hides everything below it
            try:
                if os.getxattr(cur, OPAQUE_XATTR, follow_symlinks=False) == b"y":
                    stop = True
            except OSError:
                pass
        if stop:
            return None
    return None


def copy_entry(src: bytes, st: os.stat_result, dst_dir_fd: int, name: bytes) -> None:
    """Copy one non-directory (file, symlink, device, fifo) with its metadata."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            dfd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=dst_dir_fd)
            try:
                copy_fd(sfd, dfd, st.st_size)
                os.fchown(dfd, st.st_uid, st.st_gid) if os.geteuid() == 0 else None
                os.fchmod(dfd, stat.S_IMODE(mode))
                for x in os.listxattr(sfd):
                    with _suppress_xattr_errors():
                        os.setxattr(dfd, x, os.getxattr(sfd, x))
                os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)
        return
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), name, dir_fd=dst_dir_fd)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(name, stat.S_IMODE(mode), dir_fd=dst_dir_fd)
    else:
        os.mknod(name, mode, st.st_rdev, dir_fd=dst_dir_fd)
    if os.geteuid() == 0:
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_dir_fd, follow_symlinks=False)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir_fd, follow_symlinks=False)


def copy_fd(sfd: int, dfd: int, size: int) -> None:
    """Kernel-side copy (reflinks where the filesystem has them), falling back to sendfile."""
    left = size
    try:
        while left > 0:
            n = os.copy_file_range(sfd, dfd, min(left, 1 << 30))
            if n == 0:
                break
            left -= n
        return
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    off = size - left
    while left > 0:
        n = os.sendfile(dfd, sfd, off, left)
        if n == 0:
            break
        off += n
        left -= n


def apply_stream(root: str | os.PathLike[str], source: BinaryIO, compression: str, *, mode: str,
                 lowers: Callable[[], Sequence[Path]] | None = None, what: str = "layer",
                 hash_compressed: bool = True) -> ApplyResult:
    """Decompress, hash and extract ``source`` into ``root`` in one streaming pass."""
    stream = ts.LayerStream(source, compression, compressed_hasher="sha256" if hash_compressed else None)
    try:
        feed = ts.Feed(iter(stream))
        applier = Applier(root, mode, what=what, lowers=lowers)
        try:
            for e in ts.read_entries(feed):
                applier.entry(e, feed)
            feed.drain()
            applier.finish()
        finally:
            applier.close()
        stream.finish()
    except BaseException:
        stream.close()
        raise
    c = stream.compressed
    return ApplyResult(diff_id=stream.diff.digest(), size=stream.diff.size,
                       compressed_digest=c.digest() if c else None, compressed_size=c.size if c else 0,
                       entries=applier.entries, file_bytes=applier.file_bytes)
