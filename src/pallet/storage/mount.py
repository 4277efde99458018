"""Mounts as data, and the small helper that performs them.

Drivers never mount anything themselves: like containerd's snapshotters they return a list of
:class:`Mount` values, and whoever needs a filesystem (the layer store for image views and
container roots, or an OCI runtime via config.json) performs them. This keeps drivers testable
and lets the engine hand the same mounts to a runtime in another mount namespace.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Sequence
from pathlib import Path

from pallet.errors import StorageError
from pallet.libc import c_int, c_ulong, get_errno, libc
from pallet.records import dataclass, field

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MNT_DETACH = 0x2

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class MountError(StorageError):
    """A mount or unmount failed."""


@dataclass(frozen=True)
class Mount:
    """One mount to perform: ``type`` is "bind", "overlay" or "fuse3.<program>" (a FUSE
    filesystem run as a program; ``source`` is then the program's path)."""

    type: str
    source: str
    options: tuple[str, ...] = field(default_factory=tuple)

    @property
    def readonly(self) -> bool:
        return "ro" in self.options

    def option(self, key: str) -> str | None:
        """The value of ``key=value`` among the options (e.g. "upperdir")."""
        prefix = key + "="
        for o in self.options:
            if o.startswith(prefix):
                return o[len(prefix):]
        return None

    def to_oci(self, destination: str = "/") -> dict[str, object]:
        """As an OCI runtime-spec mount entry (for config.json)."""
        typ = "bind" if self.type == "bind" else self.type
        return {"destination": destination, "type": typ, "source": self.source,
                "options": list(self.options) + (["rbind"] if self.type == "bind" else [])}


def _sys_mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    rc = libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, c_ulong(flags),
                    data.encode() if data else None)
    if rc != 0:
        err = get_errno()
        raise OSError(err, os.strerror(err))


def mount_all(mounts: Sequence[Mount], target: str | os.PathLike[str]) -> None:
    """Perform ``mounts`` on ``target`` in order (undoing them all if one fails)."""
    target = os.fspath(target)
    done = 0
    try:
        for m in mounts:
            _mount_one(m, target)
            done += 1
    except BaseException:
        for _ in range(done):
            unmount(target, detach=True)
        raise


def _mount_one(m: Mount, target: str) -> None:
    try:
        if m.type == "bind":
            _sys_mount(m.source, target, None, MS_BIND | MS_REC, None)
            if m.readonly:
                try:
                    _sys_mount("none", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
                except OSError:
                    _umount(target, MNT_DETACH)
                    raise
        elif m.type == "overlay":
            flags = MS_RDONLY if m.readonly else 0
            data = ",".join(o for o in m.options if o not in ("ro", "rw"))
            if len(data) >= PAGE_SIZE:
                _mount_overlay_relative(m, target, flags, data)
            else:
                _sys_mount("overlay", target, "overlay", flags, data)
        elif m.type.startswith(("fuse3.", "fuse.")):
            _mount_fuse(m, target)
        else:
            raise MountError(f"unknown mount type {m.type!r}")
    except OSError as err:
        raise MountError(f"cannot mount {m.type} on {target}: {err.strerror or err}") from None


def _mount_overlay_relative(m: Mount, target: str, flags: int, data: str) -> None:
    """Too many layers for one page of options: mount from their common directory with relative
    paths (docker does the same in a re-executed child; a forked child suffices here)."""
    paths = []
    for key in ("lowerdir", "upperdir", "workdir"):
        value = m.option(key)
        if value:
            paths.extend(value.split(":") if key == "lowerdir" else [value])
    base = os.path.commonpath(paths)
    if not os.path.isdir(base):
        base = os.path.dirname(base)
    rel = []
    for o in m.options:
        if o in ("ro", "rw"):
            continue
        key, eq, value = o.partition("=")
        if eq and key in ("lowerdir", "upperdir", "workdir"):
            value = ":".join(os.path.relpath(p, base) for p in value.split(":"))
            o = f"{key}={value}"
        rel.append(o)
    data = ",".join(rel)
    if len(data) >= PAGE_SIZE:
        raise MountError(f"overlay mount options for {target} exceed {PAGE_SIZE} bytes even with short "
                         f"relative paths ({len(paths)} directories)")
    abs_target = os.path.abspath(target)
    pid = os.fork()
    if pid == 0:  # child: change directory, mount, report through the exit status
        code = 1
        try:
            os.chdir(base)
            rc = libc.mount(b"overlay", abs_target.encode(), b"overlay", c_ulong(flags), data.encode())
            code = 0 if rc == 0 else min(get_errno(), 255)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise OSError(code, os.strerror(code) if code > 0 else "mount helper died")


def _mount_fuse(m: Mount, target: str) -> None:
    import shutil
    import subprocess

    program = m.source if os.path.isabs(m.source) else shutil.which(m.source) or m.source
    opts = ",".join(o for o in m.options if o != "rw")
    res = subprocess.run([program, "-o", opts, target], capture_output=True, text=True)
    if res.returncode != 0:
        msg = (res.stderr.strip() or res.stdout.strip()).splitlines()
        raise MountError(f"{os.path.basename(program)} failed to mount {target}: "
                         f"{msg[-1] if msg else 'exit status ' + str(res.returncode)}")


def _umount(target: str, flags: int = 0) -> None:
    if libc.umount2(target.encode(), c_int(flags)) != 0:
        err = get_errno()
        raise OSError(err, os.strerror(err))


def unmount(target: str | os.PathLike[str], *, detach: bool = False, retries: int = 50) -> None:
    """Unmount ``target`` (retrying while busy; lazily with ``detach``). Not mounted is fine."""
    target = os.fspath(target)
    for attempt in range(retries):
        try:
            _umount(target, MNT_DETACH if detach else 0)
            return
        except OSError as err:
            if err.errno == errno.EINVAL:  # not a mount point
                return
            if err.errno == errno.ENOENT:
                return
            if err.errno == errno.EBUSY and attempt < retries - 1:
                time.sleep(0.02)
                continue
            raise MountError(f"cannot unmount {target}: {err.strerror}") from None


def mountpoints_under(path: str | os.PathLike[str],
                      infos: list[tuple[str, str, str, str, str]] | None = None) -> list[str]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo, unescaped; or from ``infos``,
    :func:`_mountinfo`'s, already read)."""
    base = os.path.realpath(path)
    inside = base.rstrip("/") + "/"
    if infos is not None:
        return [mp for _dev, _root, mp, _fstype, _opts in infos if mp == base or mp.startswith(inside)]
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            mp = _unescape(line.split(b" ", 5)[4])
            if mp == base or mp.startswith(inside):
                out.append(mp)
    return out


def _mountinfo() -> list[tuple[str, str, str, str, str]]:
    """(major:minor, root, mount point, fstype, super options) of every mount we can see."""
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            head, _, tail = line.rstrip(b"\n").partition(b" - ")
            h = head.split(b" ")
            t = tail.split(b" ")
            out.append((h[2].decode(), _unescape(h[3]), _unescape(h[4]), t[0].decode(),
                        _unescape(t[2]) if len(t) > 2 else ""))
    return out


def in_use(path: str | os.PathLike[str], data: str | os.PathLike[str], lowers: bool = True) -> bool:
    """Is anything mounted at or below ``path``, or does a mount use ``data`` (see
    :func:`mountpoints_using`)? One read of mountinfo for both questions."""
    infos = _mountinfo()
    return bool(mountpoints_under(path, infos) or mountpoints_using(data, infos, lowers))


def mountpoints_using(path: str | os.PathLike[str],
                      infos: list[tuple[str, str, str, str, str]] | None = None,
                      lowers: bool = True) -> list[str]:
    """Mount points whose filesystem comes from ``path`` or below: bind mounts of it, and
    overlays with it as upper, work or lower directory. (FUSE mounts do not say; not seen.)

    ``lowers=False``: not as a lower directory (a writable snapshot never is one: the drivers
    stack committed snapshots only), which spares resolving every lower directory of every
    overlay on the host (each a symlink: a path walk apiece, per running container)."""
    real = os.path.realpath(path)
    if infos is None:
        infos = _mountinfo()
    inside = real.rstrip("/") + "/"
    # the filesystem holding ``path``: the mount with the longest mount point prefix
    best = None
    for dev, root, mp, _fstype, _opts in infos:
        inside_mp = real == mp or real.startswith(mp.rstrip("/") + "/")
        if inside_mp and (best is None or len(mp) >= len(best[2])):
            best = (dev, root, mp)
    rel_root = None
    if best is not None:
        dev, root, mp = best
        rel_root = os.path.normpath(os.path.join(root, os.path.relpath(real, mp)))
    out = []
    fuse_opts: dict[str, str] | None = None
    resolved: dict[str, str] = {}  # overlays on one host share lowerdirs: resolve each once
    for dev, root, mp, fstype, opts in infos:
        if fstype.startswith("fuse.") and fstype != "fuse.":
            if fuse_opts is None:
                fuse_opts = _fuse_mount_options()
            opts = fuse_opts.get(mp, "")
            fstype = "overlay"
        if best is not None and dev == best[0] and rel_root is not None and mp != best[2] and (
                root == rel_root or root.startswith(rel_root.rstrip("/") + "/")):
            out.append(mp)
            continue
        if fstype == "overlay":
            for o in opts.split(","):
                key, _, value = o.partition("=")
                if key in ("upperdir", "workdir") or (lowers and key == "lowerdir"):
                    for v in value.split(":"):
                        rv = resolved.get(v)
                        if rv is None:
                            rv = resolved[v] = os.path.realpath(v) if v else ""
                        if rv and (rv == real or rv.startswith(inside)):
                            out.append(mp)
                            break
    return out


def _fuse_mount_options() -> dict[str, str]:
    """FUSE overlay mounts do not show their directories in mountinfo; their daemons' argv
    (``prog -o lowerdir=...,upperdir=... TARGET``) does."""
    out: dict[str, str] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"fuse-overlayfs"):
            continue
        args = [a for a in argv[1:] if a]
        opts = [args[i + 1] for i, a in enumerate(args[:-1]) if a == b"-o"]
        if args and opts:
            out[os.path.realpath(os.fsdecode(args[-1]))] = os.fsdecode(b",".join(opts))
    return out


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    return os.path.realpath(path) in mountpoints_under(path)


def _unescape(raw: bytes) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    if b"\\" not in raw:  # nearly every field: no byte-by-byte pass
        return os.fsdecode(raw)
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 3 < len(raw) + 1 and raw[i + 1:i + 4].isdigit():
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path
