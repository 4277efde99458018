"""``cp`` in both directions and ``export``, without ever resolving a path outside the container.

Everything that touches the container's files runs in a forked child that sees only the
container's filesystem: for a running container it joins the container's mount namespace
(``setns``: volumes and tmpfs mounts included, exactly what the container sees); for a stopped
one it mounts the root filesystem, binds the volumes in a private mount namespace and
``chroot``s. Symlinks therefore resolve inside the container whatever they point to, and the
child reads no /etc/passwd and loads no NSS module from the container (uid/gid are numeric:
the lesson of CVE-2019-14271). Archives cross the boundary as tar streams over a pipe;
entries are renamed ("rebased") on extraction as docker's archive.CopyTo does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
import tarfile
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from pallet.engine import containers as C
from pallet.engine import mounts, paths
from pallet.engine.errors import NoSuchImage
from pallet.errors import EngineError, UsageError

if TYPE_CHECKING:
    from pallet.context import Context
    from pallet.engine.state import Container


class CopyError(EngineError):
    """A cp source or destination is unusable (missing, wrong kind)."""


# -- running code inside the container's filesystem view ------------------------------------------------


def _enter(ctx: Context, c: Container, *, with_mounts: bool) -> Callable[[], None]:
    """Prepare to enter the container's filesystem; returns the function the child calls.

    Mounting happens here, in the parent (host mount namespace), so it is visible to the child.
    """
    running = c.status in ("running", "paused") and c.pid
    if running and with_mounts:
        ns_fd = os.open(f"/proc/{c.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)

        def enter_ns() -> None:
            mounts.setns(ns_fd, mounts.CLONE_NEWNS)
            os.chdir("/")

        return enter_ns
    rootfs = c.rootfs if running and c.rootfs else _mount_stopped(ctx, c)
    binds: list[tuple[str, str, bool]] = []
    if with_mounts:
        from pallet.engine import volumes

        for m in c.config["MountSpecs"]:
            if m["Type"] == "volume":
                binds.append(
                    (str(volumes.data_path(ctx, m["Source"])), m["Target"], m.get("ReadOnly", False))
                )
            elif m["Type"] == "bind" and os.path.exists(m["Source"]):
                binds.append((m["Source"], m["Target"], m.get("ReadOnly", False)))

    def enter_root() -> None:
        mounts.unshare(mounts.CLONE_NEWNS)
        mounts.mount("none", "/", None, mounts.MS_REC | mounts.MS_PRIVATE)
        for src, target, ro in sorted(binds, key=lambda b: b[1].count("/")):
            host = paths.secure_join(rootfs, target)
            if os.path.isdir(src):
                paths.mkdir_all_in_root(rootfs, target)
            elif not os.path.exists(host):
                paths.mkdir_all_in_root(rootfs, os.path.dirname(target))
                host = paths.secure_join(rootfs, target)
                with open(host, "a"):
                    pass
            mounts.mount(src, host, None, mounts.MS_BIND | mounts.MS_REC)
            if ro:
                mounts.mount("none", host, None, mounts.MS_BIND | mounts.MS_REMOUNT | mounts.MS_RDONLY)
        os.chroot(rootfs)
        os.chdir("/")

    return enter_root


def _mount_stopped(ctx: Context, c: Container) -> str:
    src = C.image_source(ctx)
    img = src.lookup(c.image_id)
    if img is None:
        raise NoSuchImage(f"the image of container {c.name} no longer exists")
    return src.prepare_rootfs(c.id, img)


def _done_with(ctx: Context, c: Container) -> None:
    """Unmount a stopped container's rootfs again (unless it started meanwhile)."""
    cur = C._state(ctx).find(c.id)
    if cur is not None and cur.status in ("created", "exited"):
        with contextlib.suppress(Exception):
            C.image_source(ctx).release_rootfs(c.id)


def _in_child(
    enter: Callable[[], None], work: Callable[[], None], close_in_parent: tuple[int, ...] = ()
) -> tuple[int, str]:
    """Fork; the child enters the container view and runs ``work``. (status, error text).

    ``close_in_parent``: the child's ends of the data pipe, closed here right after the fork so
    the other end sees EOF (or EPIPE) when the child is done."""
    err_r, err_w = os.pipe()
    from pallet.engine.state import close_all

    close_all()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(err_r)
            tarfile.pwd = None  # type: ignore[attr-defined] - never look names up in the container
            tarfile.grp = None  # type: ignore[attr-defined]
            enter()
            work()
        except BaseException as e:
            msg = (
                str(e)
                if isinstance(e, (OSError, EngineError, tarfile.TarError))
                else f"{type(e).__name__}: {e}"
            )
            with contextlib.suppress(OSError):
                os.write(err_w, msg.encode())
            code = 1
        finally:
            os._exit(code)
    os.close(err_w)
    for fd in close_in_parent:
        with contextlib.suppress(OSError):
            os.close(fd)
    chunks = []
    while True:
        b = os.read(err_r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(err_r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", "replace")


def _run_beside(
    ctx: Context,
    c: Container,
    enter: Callable[[], None],
    work: Callable[[], None],
    host_side: Callable[[], None],
    child_end: int,
) -> tuple[int, str, BaseException | None]:
    """Run ``work`` in a child inside the container view while ``host_side`` handles this
    process's end of the data pipe in a thread (the child blocks on a full pipe until it is
    drained, so both must run at once); then unmount a stopped container's rootfs again.

    ``child_end``: the child's end of the pipe, closed here after the fork. Returns the child's
    exit status, its error text and what ``host_side`` raised (None if nothing)."""
    import threading

    raised: list[BaseException] = []

    def guarded() -> None:
        try:
            host_side()
        except BaseException as e:
            raised.append(e)

    t = threading.Thread(target=guarded)
    try:
        t.start()
        status, err = _in_child(enter, work, close_in_parent=(child_end,))
        t.join()
    finally:
        if c.status not in ("running", "paused"):
            _done_with(ctx, c)
    return status, err, raised[0] if raised else None


# -- tar helpers --------------------------------------------------------------------------------------


def _split_trailing(path: str) -> tuple[str, bool, bool]:
    """(clean path, ends with '/.' (contents), ends with '/')."""
    contents = path.endswith("/.") or path == "."
    trailing = path.endswith("/") or contents
    clean = os.path.normpath(path) if path else "."
    return clean, contents, trailing


def _destination(
    dest_clean: str, base: str, contents: bool, where: str = ""
) -> tuple[str, tuple[str, str] | None]:
    """Where to extract and how to rebase the top entry ``base``, as docker's archive.CopyTo does:
    into an existing directory (only its contents for a ``/.`` source), else under the name of the
    destination's last component in its parent directory, which must exist."""
    if os.path.isdir(dest_clean):
        return dest_clean, ((base, ".") if contents else None)
    parent = os.path.dirname(os.path.abspath(dest_clean))
    if not os.path.lexists(dest_clean) and not os.path.isdir(parent):
        raise CopyError(f"destination directory {parent} does not exist{where}")
    return parent, (base, os.path.basename(dest_clean))


def _write_tar(out: IO[bytes], src: str, arc_top: str, *, follow_link: bool) -> None:
    """Tar ``src`` (in the current root) with its top entry named ``arc_top``."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, dereference=False) as tf:
        top = os.path.realpath(src) if follow_link else src
        st = os.stat(top) if follow_link else os.lstat(top)
        ti = tf.gettarinfo(top, arcname=arc_top)
        ti.uname = ti.gname = ""
        if stat.S_ISREG(st.st_mode):
            with open(top, "rb") as f:
                tf.addfile(ti, f)
            return
        tf.addfile(ti)
        if not stat.S_ISDIR(st.st_mode):
            return
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, top)
            for name in sorted(dirnames) + sorted(filenames):
                full = os.path.join(dirpath, name)
                arc = os.path.normpath(os.path.join(arc_top, rel_dir, name))
                try:
                    ti = tf.gettarinfo(full, arcname=arc)
                except OSError:
                    continue
                if ti is None:  # sockets cannot be archived
                    continue
                ti.uname = ti.gname = ""
                if ti.isreg():
                    try:
                        with open(full, "rb") as f:
                            tf.addfile(ti, f)
                    except OSError:
                        continue
                else:
                    tf.addfile(ti)


def _extract(
    stream: IO[bytes], dest_dir: str, *, rebase: tuple[str, str] | None, archive: bool, uid: int, gid: int
) -> None:
    """Extract a tar stream under ``dest_dir``, renaming the top entry per ``rebase`` (old, new).

    Runs chrooted in the container (or on the host for ``cp`` out), so symlinks resolve in the
    right scope. Names lose a leading ``/``, and an entry that would land outside ``dest_dir``
    once existing symlinks are followed (``..``, a planted link) is refused, as tarfile's 'tar'
    filter does (which Python 3.11 has only from 3.11.4); modes are kept as they were (docker cp).
    """
    top = os.path.realpath(dest_dir)
    with tarfile.open(fileobj=stream, mode="r|") as tf:
        tf.extraction_filter = _trusted  # checked here; no filter (or 3.12+'s warning) in tarfile
        for m in tf:
            name = m.name
            if rebase is not None:
                old, new = rebase
                if name == old or name.startswith(old + "/"):
                    name = new + name[len(old) :]
                if name in ("", "."):
                    continue
                m.name = name
                if m.islnk() and rebase and (m.linkname == old or m.linkname.startswith(old + "/")):
                    m.linkname = new + m.linkname[len(old) :]
            m.name = m.name.lstrip("/")
            if os.path.commonpath([top, os.path.realpath(os.path.join(top, m.name))]) != top:
                raise CopyError(f"{m.name!r} would be extracted outside {dest_dir}")
            if not archive:
                m.uid, m.gid = uid, gid
            target = os.path.join(dest_dir, m.name)
            if not m.isdir() and os.path.lexists(target) and not os.path.isdir(target):
                os.unlink(target)
            elif not m.isdir() and os.path.isdir(target) and not os.path.islink(target):
                raise CopyError(f"cannot overwrite directory {m.name!r} with non-directory")
            tf.extract(m, dest_dir, numeric_owner=True)


def _trusted(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    return member


# -- cp from the container -----------------------------------------------------------------------------


def copy_from(
    ref: str,
    src_path: str,
    dest: str,
    ctx: Context | None = None,
    *,
    follow_link: bool = False,
    archive: bool = False,
    out: IO[bytes] | None = None,
) -> None:
    """Copy ``src_path`` from the container to host path ``dest`` ("-": a tar stream on ``out``)."""
    ctx = C._ctx(ctx)
    c = C.get(ref, ctx)
    src_clean, src_contents, _ = _split_trailing(src_path if src_path.startswith("/") else "/" + src_path)
    base = os.path.basename(src_clean) or "."
    # None: a tar stream on ``out``. Whether the source may go to the destination depends on its
    # kind: decided in parent_side when the first tar entry shows it
    plan = None if dest == "-" else _destination(_split_trailing(dest)[0], base, src_contents)

    r, w = os.pipe()
    enter = _enter(ctx, c, with_mounts=True)

    def work() -> None:
        with contextlib.suppress(OSError):
            os.close(r)
        with os.fdopen(w, "wb") as f:
            if not os.path.lexists(src_clean):
                raise CopyError(f"could not find the file {src_path} in container {c.name}")
            if src_contents and not os.path.isdir(src_clean):
                raise CopyError(f"{src_path}: not a directory")
            _write_tar(f, src_clean, base, follow_link=follow_link)

    def parent_side() -> None:
        with os.fdopen(r, "rb") as f:
            if plan is None:
                target = out or sys.stdout.buffer
                shutil.copyfileobj(f, target)
                target.flush()
                return
            target_dir, rebase = plan
            peek = _Peek(f)
            first = peek.first_header()
            if first is None:
                return
            dest_clean = os.path.normpath(dest)
            src_is_dir = first["isdir"]
            if os.path.lexists(dest_clean) and not os.path.isdir(dest_clean) and src_is_dir:
                raise CopyError(f"cannot copy a directory to a file: {dest}")
            if not os.path.lexists(dest_clean) and dest.endswith("/") and not src_is_dir:
                raise CopyError(f"destination directory {dest} does not exist")
            _extract(peek, target_dir, rebase=rebase, archive=archive, uid=os.getuid(), gid=os.getgid())

    status, err, e = _run_beside(ctx, c, enter, work, parent_side, child_end=w)
    if status != 0:
        raise CopyError(err or f"copying from {c.name} failed")
    if e is not None:
        raise e if isinstance(e, EngineError | UsageError) else CopyError(str(e))


class _Peek:
    """A file object that can tell whether a tar stream's first entry is a directory."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.buf = b""

    def first_header(self) -> dict[str, Any] | None:
        while len(self.buf) < 512 * 8:
            chunk = self.f.read(4096)
            if not chunk:
                break
            self.buf += chunk
        if len(self.buf) < 512:
            return None
        import io

        with (
            contextlib.suppress(tarfile.TarError),
            tarfile.open(fileobj=io.BytesIO(self.buf + b"\0" * 10240), mode="r:") as tf,
        ):
            m = tf.next()
            if m is not None:
                return {"isdir": m.isdir(), "name": m.name}
        return {"isdir": False, "name": ""}

    def read(self, n: int = -1) -> bytes:
        if self.buf:
            if n < 0 or n >= len(self.buf):
                out, self.buf = self.buf, b""
                if n < 0:
                    return out + self.f.read()
                return out + self.f.read(n - len(out)) if n - len(out) > 0 else out
            out, self.buf = self.buf[:n], self.buf[n:]
            return out
        return self.f.read(n)


# -- cp into the container ------------------------------------------------------------------------------


def copy_to(
    ref: str,
    src: str,
    dest_path: str,
    ctx: Context | None = None,
    *,
    archive: bool = False,
    follow_link: bool = False,
    stdin: IO[bytes] | None = None,
) -> None:
    """Copy host path ``src`` ("-": a tar stream on ``stdin``) to ``dest_path`` in the container."""
    ctx = C._ctx(ctx)
    c = C.get(ref, ctx)
    if c.config["HostConfig"].get("ReadonlyRootfs") and c.status in ("running", "paused"):
        pass  # docker refuses only when the destination itself is read-only; the child finds out
    dest = dest_path if dest_path.startswith("/") else "/" + dest_path
    dest_clean, _, dest_trailing = _split_trailing(dest)
    if src == "-":
        src_is_dir, base, contents = True, None, False
    else:
        src_clean, contents, _ = _split_trailing(src)
        if not os.path.lexists(src_clean):
            raise CopyError(f"could not find the file {src} on the host")
        src_is_dir = os.path.isdir(os.path.realpath(src_clean) if follow_link else src_clean) and not (
            os.path.islink(src_clean) and not follow_link
        )
        base = os.path.basename(os.path.abspath(src_clean))
        if contents and not src_is_dir:
            raise CopyError(f"{src}: not a directory")
    r, w = os.pipe()
    enter = _enter(ctx, c, with_mounts=True)

    def work() -> None:
        with contextlib.suppress(OSError):  # the feeding thread may have finished (and closed it) already
            os.close(w)
        with os.fdopen(r, "rb") as f:
            if src == "-":
                if not os.path.isdir(dest_clean):
                    raise CopyError(f"destination {dest_path} must be a directory for a tar stream")
                _extract(f, dest_clean, rebase=None, archive=True, uid=0, gid=0)
                return
            assert base is not None
            if os.path.lexists(dest_clean) and not os.path.isdir(dest_clean) and src_is_dir:
                raise CopyError(f"cannot copy a directory to a file: {dest_path}")
            if not os.path.lexists(dest_clean) and dest_trailing and not src_is_dir:
                raise CopyError(f"destination directory {dest_path} does not exist in the container")
            target_dir, rebase = _destination(dest_clean, base, contents, " in the container")
            _extract(f, target_dir, rebase=rebase, archive=archive, uid=0, gid=0)

    def feed() -> None:
        with os.fdopen(w, "wb") as f:
            if src == "-":
                shutil.copyfileobj(stdin or sys.stdin.buffer, f)
            else:
                _write_tar(f, src_clean, base or ".", follow_link=follow_link)

    status, err, e = _run_beside(ctx, c, enter, work, feed, child_end=r)
    if status != 0:
        raise CopyError(err or f"copying into {c.name} failed")
    if e is not None and not isinstance(e, BrokenPipeError):  # the child stopped reading: its status says why
        raise CopyError(str(e))


# -- export -------------------------------------------------------------------------------------------


def export(ref: str, out: IO[bytes], ctx: Context | None = None) -> None:
    """The container's root filesystem (not its volumes) as a tar stream, as docker export."""
    ctx = C._ctx(ctx)
    c = C.get(ref, ctx)
    r, w = os.pipe()
    enter = _enter(ctx, c, with_mounts=False)

    def work() -> None:
        with contextlib.suppress(OSError):
            os.close(r)
        with os.fdopen(w, "wb") as f, tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            for dirpath, dirnames, filenames in os.walk("/"):
                dirnames.sort()
                for name in sorted(dirnames) + sorted(filenames):
                    full = os.path.join(dirpath, name)
                    try:
                        ti = tf.gettarinfo(full, arcname=full.lstrip("/"))
                    except OSError:
                        continue
                    if ti is None:
                        continue
                    ti.uname = ti.gname = ""
                    if ti.isreg():
                        try:
                            with open(full, "rb") as fh:
                                tf.addfile(ti, fh)
                        except OSError:
                            continue
                    else:
                        tf.addfile(ti)

    def drain() -> None:
        with os.fdopen(r, "rb") as f:
            shutil.copyfileobj(f, out)

    status, err, e = _run_beside(ctx, c, enter, work, drain, child_end=w)
    if isinstance(e, BrokenPipeError):
        raise e  # the reader went away (export | head): not an error of ours
    if status != 0:
        raise EngineError(err or f"exporting {c.name} failed")
    if e is not None:
        raise EngineError(f"writing the export of {c.name} failed: {e}")


def _json(obj: Any) -> str:
    return json.dumps(obj)
