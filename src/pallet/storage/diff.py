"""Container changes as an OCI layer tar (for ``commit`` and builds), and as a change list.

Two sources, one writer:

* overlay: the container's upperdir *is* the diff, in overlayfs' format; 0/0 character devices
  become ``.wh.NAME`` and ``trusted.overlay.opaque=y`` directories get ``.wh..wh..opq``;
* naive (vfs): the container's full copy is compared with its parent's tree; what differs
  (type, mode, owner, size, mtime, link target, device, xattrs) is written, what is gone gets a
  whiteout.

Hardlinks are kept: the first name of an inode is a file, the others link to it; with the naive
source, names of a changed multi-link inode that did not change themselves are linked too, so
applying the diff rebuilds the same link groups. Sockets cannot be archived and are skipped.
Applying the diff on the parent reproduces the container's tree exactly (names, types, modes,
owners, contents, mtimes to the nanosecond, xattrs, links).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pallet.errors import StorageError
from pallet.storage.extract import OPAQUE_XATTR, is_whiteout_device

_SKIP_XATTRS = ("trusted.overlay.", "user.overlay.", "security.selinux")

ADDED, CHANGED, DELETED = "A", "C", "D"


@dataclass(frozen=True)
class Change:
    """One changed path, as ``podman diff`` lists it: A(dded), C(hanged) or D(eleted)."""

    kind: str
    path: str


class _Writer:
    """Writes entries to a PAX tar and remembers hardlink groups."""

    def __init__(self, out: BinaryIO) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,  # noqa: SIM115
                                encoding="utf-8", errors="surrogateescape", bufsize=1 << 16)
        self.links: dict[tuple[int, int], bytes] = {}
        self.pending_links: set[tuple[int, int]] = set()

    def close(self) -> None:
        self.tar.close()

    def whiteout(self, rel: bytes, mtime_ns: int = 0) -> None:
        d, _, b = rel.rpartition(b"/")
        name = (d + b"/" if d else b"") + b".wh." + b
        self._plain(name, mtime_ns)

    def opaque(self, rel_dir: bytes, mtime_ns: int = 0) -> None:
        self._plain(rel_dir + b"/.wh..wh..opq", mtime_ns)

    def _plain(self, name: bytes, mtime_ns: int) -> None:
        ti = tarfile.TarInfo(os.fsdecode(name))
        ti.type, ti.mode, ti.size = tarfile.REGTYPE, 0o600, 0
        ti.mtime = mtime_ns // 1_000_000_000
        self.tar.addfile(ti)

    def entry(self, rel: bytes, path: bytes, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            return
        ti = tarfile.TarInfo(os.fsdecode(rel))
        ti.mode = stat.S_IMODE(mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname = ti.gname = ""
        sec, ns = divmod(st.st_mtime_ns, 1_000_000_000)
        ti.mtime = sec
        pax: dict[str, str] = {}
        if ns:
            pax["mtime"] = f"{sec}.{ns:09d}"
        if not stat.S_ISDIR(mode) and st.st_nlink > 1:
            ino = (st.st_dev, st.st_ino)
            first = self.links.get(ino)
            if first is not None:
                ti.type, ti.linkname = tarfile.LNKTYPE, os.fsdecode(first)
                ti.pax_headers = pax
                self.tar.addfile(ti)
                return
            self.links[ino] = rel
            self.pending_links.add(ino)
        for name, value in _xattrs(path):
            pax["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
        ti.pax_headers = pax
        if stat.S_ISREG(mode):
            ti.type, ti.size = tarfile.REGTYPE, st.st_size
            with open(path, "rb", buffering=0) as f:
                self.tar.addfile(ti, io.BufferedReader(f, 1 << 20))  # type: ignore[arg-type]
            return
        if stat.S_ISDIR(mode):
            ti.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            ti.type, ti.linkname = tarfile.SYMTYPE, os.fsdecode(os.readlink(path))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            ti.type = tarfile.FIFOTYPE
        else:
            return
        self.tar.addfile(ti)

    def link(self, rel: bytes, ino: tuple[int, int]) -> None:
        ti = tarfile.TarInfo(os.fsdecode(rel))
        ti.type, ti.linkname = tarfile.LNKTYPE, os.fsdecode(self.links[ino])
        self.tar.addfile(ti)


def _xattrs(path: bytes) -> list[tuple[str, bytes]]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return []
        raise
    out = []
    for n in sorted(names):
        if n.startswith(_SKIP_XATTRS):
            continue
        with contextlib.suppress(OSError):
            out.append((n, os.getxattr(path, n, follow_symlinks=False)))
    return out


def _scandir(path: bytes) -> list[tuple[bytes, os.stat_result]]:
    with os.scandir(path) as it:
        items = [(e.name, e.stat(follow_symlinks=False)) for e in it]
    items.sort(key=lambda x: x[0])
    return items


#: markers fuse-overlayfs keeps in an opaque upper directory besides the xattr
_FUSE_OPAQUE = (b".wh..wh..opq", b".wh..opq")


def _is_opaque(path: bytes, names: Iterable[bytes] = ()) -> bool:
    if any(n in _FUSE_OPAQUE for n in names):
        return True
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _upper_entries(d: bytes) -> list[tuple[bytes, os.stat_result, bool]]:
    """An upper dir's entries as (name, stat, is_whiteout), with overlayfs' and fuse-overlayfs'
    markers decoded: 0/0 char devices and (rootless fuse-overlayfs) ``.wh.NAME`` files."""
    out = []
    for name, st in _scandir(d):
        if name in _FUSE_OPAQUE:
            continue
        if name.startswith(b".wh.") and not name.startswith(b".wh..wh."):
            out.append((name[4:], st, True))
        else:
            out.append((name, st, is_whiteout_device(st)))
    return out


# ---------------------------------------------------------------------- overlay upperdir


def write_overlay_diff(upper: str | os.PathLike[str], out: BinaryIO) -> None:
    """Write the diff held by an overlay upper directory as an OCI layer tar."""
    w = _Writer(out)
    _overlay_walk(w, os.fsencode(upper), b"")
    w.close()


def _overlay_walk(w: _Writer, base: bytes, rel: bytes) -> None:
    d = base + b"/" + rel if rel else base
    for name, st, whiteout in _upper_entries(d):
        r = rel + b"/" + name if rel else name
        p = d + b"/" + name
        if whiteout:
            w.whiteout(r, st.st_mtime_ns)
            continue
        w.entry(r, p, st)
        if stat.S_ISDIR(st.st_mode):
            if _is_opaque(p, os.listdir(p)):
                w.opaque(r, st.st_mtime_ns)
            _overlay_walk(w, base, r)


def overlay_changes(upper: str | os.PathLike[str], lower_exists: Callable[[bytes], bool]) -> list[Change]:
    """``podman diff`` for an overlay container: what the upper dir adds, changes and deletes."""
    out: list[Change] = []

    def walk(base: bytes, rel: bytes) -> None:
        d = base + b"/" + rel if rel else base
        for name, st, whiteout in _upper_entries(d):
            r = rel + b"/" + name if rel else name
            shown = "/" + os.fsdecode(r)
            if whiteout:
                out.append(Change(DELETED, shown))
                continue
            existed = lower_exists(r)
            out.append(Change(CHANGED if existed else ADDED, shown))
            if stat.S_ISDIR(st.st_mode):
                p = d + b"/" + name
                if existed and not _is_opaque(p, os.listdir(p)):
                    walk(base, r)
                else:
                    walk_new(base, r)

    def walk_new(base: bytes, rel: bytes) -> None:
        d = base + b"/" + rel
        for name, st, _ in _upper_entries(d):
            r = rel + b"/" + name
            out.append(Change(ADDED, "/" + os.fsdecode(r)))
            if stat.S_ISDIR(st.st_mode):
                walk_new(base, r)

    walk(os.fsencode(upper), b"")
    return out


# ---------------------------------------------------------------------- naive (full copies)


def _same(a: os.stat_result, b: os.stat_result, pa: bytes, pb: bytes) -> bool:
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode) or a.st_mode != b.st_mode:
        return False
    if a.st_uid != b.st_uid or a.st_gid != b.st_gid or a.st_mtime_ns != b.st_mtime_ns:
        return False
    if stat.S_ISREG(a.st_mode) and a.st_size != b.st_size:
        return False
    if stat.S_ISLNK(a.st_mode) and os.readlink(pa) != os.readlink(pb):
        return False
    if (stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode)) and a.st_rdev != b.st_rdev:
        return False
    return _xattrs(pa) == _xattrs(pb)


def naive_walk(lower: bytes | None, upper: bytes, emit: Callable[[str, bytes, bytes, os.stat_result], None],
               rel: bytes = b"") -> None:
    """Compare ``upper`` with ``lower``; call ``emit(kind, rel, path, st)`` for each difference
    (kind A/C/D; for D, ``path``/``st`` describe the lower entry). Directories come before their
    contents; a new directory's whole subtree is reported as added."""
    du = upper + b"/" + rel if rel else upper
    dl = (lower + b"/" + rel if rel else lower) if lower is not None else None
    ups = _scandir(du)
    lows = dict(_scandir(dl)) if dl is not None else {}
    for name, st in ups:
        r = rel + b"/" + name if rel else name
        p = du + b"/" + name
        lst = lows.pop(name, None)
        if lst is None:
            emit(ADDED, r, p, st)
            if stat.S_ISDIR(st.st_mode):
                naive_walk(None, upper, emit, r)
            continue
        lp = dl + b"/" + name  # type: ignore[operator]
        if stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(lst.st_mode):
            if not _same(st, lst, p, lp):
                emit(CHANGED, r, p, st)
            naive_walk(lower, upper, emit, r)
        elif stat.S_ISDIR(st.st_mode):  # a file became a directory: all of it is new
            emit(CHANGED, r, p, st)
            naive_walk(None, upper, emit, r)
        elif not _same(st, lst, p, lp):
            emit(CHANGED, r, p, st)
    for name, lst in sorted(lows.items()):
        r = rel + b"/" + name if rel else name
        emit(DELETED, r, (dl or b"") + b"/" + name, lst)


def write_naive_diff(lower: str | os.PathLike[str] | None, upper: str | os.PathLike[str],
                     out: BinaryIO) -> None:
    """Write the difference between two full trees as an OCI layer tar."""
    w = _Writer(out)
    lo = os.fsencode(lower) if lower is not None else None
    up = os.fsencode(upper)

    def emit(kind: str, rel: bytes, path: bytes, st: os.stat_result) -> None:
        if kind == DELETED:
            w.whiteout(rel)
            return
        # a changed type needs no whiteout: applying a non-directory over a directory (or the
        # reverse) replaces it whole
        w.entry(rel, path, st)

    naive_walk(lo, up, emit)
    if w.pending_links:
        _complete_links(w, up)
    w.close()


def _complete_links(w: _Writer, upper: bytes) -> None:
    """Link the other names of changed multi-link inodes (they may be unchanged themselves)."""
    stack = [b""]
    while stack:
        rel = stack.pop()
        d = upper + b"/" + rel if rel else upper
        for name, st in _scandir(d):
            r = rel + b"/" + name if rel else name
            if stat.S_ISDIR(st.st_mode):
                stack.append(r)
                continue
            ino = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and ino in w.pending_links and w.links[ino] != r:
                w.link(r, ino)


def naive_changes(lower: str | os.PathLike[str] | None, upper: str | os.PathLike[str]) -> list[Change]:
    out: list[Change] = []
    naive_walk(os.fsencode(lower) if lower is not None else None, os.fsencode(upper),
               lambda kind, rel, p, st: out.append(Change(kind, "/" + os.fsdecode(rel))))
    return out


# ---------------------------------------------------------------------- as a readable stream


class DiffReader(io.RawIOBase):
    """A readable tar stream produced by a writer thread through a pipe.

    A failure in the writer surfaces as :class:`StorageError` from ``read`` at the point the
    stream would have ended, so a consumer never mistakes a truncated diff for a whole one.
    """

    def __init__(self, produce: Callable[[BinaryIO], None], what: str) -> None:
        super().__init__()
        r, wfd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r, True)
        self._r = r
        self._what = what
        self._error: BaseException | None = None
        self._wfile = open(wfd, "wb", buffering=1 << 16)  # noqa: SIM115

        def run() -> None:
            try:
                produce(self._wfile)
                self._wfile.flush()
            except BrokenPipeError:
                pass  # the reader went away
            except BaseException as e:
                self._error = e
            finally:
                with contextlib.suppress(OSError):
                    self._wfile.close()

        self._thread = threading.Thread(target=run, name="pallet-diff", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def,override]
        n = os.readv(self._r, [b])
        if n == 0:
            self._thread.join()
            if self._error is not None:
                err = self._error
                raise StorageError(f"{self._what}: {err}") from err
        return n

    def close(self) -> None:
        if not self.closed:
            os.close(self._r)
            self._thread.join()
        super().close()


def diff_stream(produce: Callable[[BinaryIO], None], what: str) -> BinaryIO:
    """A buffered readable over :class:`DiffReader`."""
    return io.BufferedReader(DiffReader(produce, what), 1 << 20)  # type: ignore[return-value]


def iter_chunks(f: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk
