"""A thin FFI layer over the Linux system calls the runtime needs and Python 3.11 lacks.

Each wrapper raises OSError(errno) like the ``os`` module does, so callers can name the failing
step. This module is on every container's start path, so it is built on :mod:`pallet.libc`
(``_ctypes``, not ``ctypes``: see there).
"""

from __future__ import annotations

import _ctypes
import os

from pallet.libc import Libc as _Libc
from pallet.libc import PyLongFunc as _PyLongFunc
from pallet.libc import c_char, c_int, c_long, c_size_t, c_uint, c_ulong, c_ushort, get_errno  # noqa: F401
from pallet.libc import libc as _libc
from pallet.libc import syscall as _syscall

# x86_64 / aarch64 numbers of the calls glibc 2.36 may not wrap
_MACHINE = os.uname().machine
if _MACHINE == "aarch64":
    SYS_PIVOT_ROOT, SYS_CAPGET, SYS_CAPSET, SYS_SETNS, SYS_KEYCTL = 41, 90, 91, 268, 219
else:
    SYS_PIVOT_ROOT, SYS_CAPGET, SYS_CAPSET, SYS_SETNS, SYS_KEYCTL = 155, 125, 126, 308, 250
SYS_CLOSE_RANGE, SYS_OPENAT2, SYS_MOUNT_SETATTR = 436, 437, 442
SYS_CLONE3, SYS_PIDFD_GETFD = 435, 438
CLONE_INTO_CGROUP = 0x200000000

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_POSIXACL = 1 << 16
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_I_VERSION = 1 << 23
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

CLOSE_RANGE_CLOEXEC = 1 << 2


def buffer(size: int, init: bytes = b"") -> _ctypes.Array:
    """A writable C buffer of ``size`` bytes (ctypes.create_string_buffer)."""
    buf = (c_char * size)()
    if init:
        buf.raw = init
    return buf


def _u32s(*vals: int) -> bytes:
    return b"".join(v.to_bytes(4, "little") for v in vals)


def _u64s(*vals: int) -> bytes:
    return b"".join(v.to_bytes(8, "little") for v in vals)


def _check(ret: int, what: str = "") -> int:
    if ret < 0:
        e = get_errno()
        raise OSError(e, os.strerror(e) + (f": {what}" if what else ""))
    return ret


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(_libc.unshare(c_int(flags)))


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(c_int(fd), c_int(nstype)))


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    ret = _libc.mount(_b(source), _b(target), _b(fstype), c_ulong(flags), _b(data))
    _check(ret, target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), c_int(flags)), target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(c_long(SYS_PIVOT_ROOT), _b(new_root), _b(put_old)))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(
        _libc.prctl(
            c_int(option),
            c_ulong(arg2),
            c_ulong(arg3),
            c_ulong(arg4),
            c_ulong(arg5),
        )
    )


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_libc.sethostname(b, c_size_t(len(b))))


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_libc.setdomainname(b, c_size_t(len(b))))


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of the calling thread, as 64-bit masks."""
    hdr = buffer(8, _u32s(_LINUX_CAPABILITY_VERSION_3, 0))
    data = buffer(24)
    _check(_syscall(c_long(SYS_CAPGET), hdr, data), "capget")
    raw = data.raw
    e0, p0, i0, e1, p1, i1 = (int.from_bytes(raw[i : i + 4], "little") for i in range(0, 24, 4))
    return e0 | e1 << 32, p0 | p1 << 32, i0 | i1 << 32


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = buffer(8, _u32s(_LINUX_CAPABILITY_VERSION_3, 0))
    m = 0xFFFFFFFF
    data = _u32s(
        effective & m,
        permitted & m,
        inheritable & m,
        effective >> 32 & m,
        permitted >> 32 & m,
        inheritable >> 32 & m,
    )
    _check(_syscall(c_long(SYS_CAPSET), hdr, data), "capset")


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    how = _u64s(flags | os.O_CLOEXEC, mode, resolve)
    return _check(
        _syscall(c_long(SYS_OPENAT2), c_int(dirfd), _b(path), how, c_size_t(24)), path
    )


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    _check(
        _syscall(
            c_long(SYS_CLOSE_RANGE), c_uint(first), c_uint(last), c_uint(flags)
        ),
        "close_range",
    )


def join_session_keyring(name: str) -> int:
    """keyctl(KEYCTL_JOIN_SESSION_KEYRING): a new named session keyring for this process."""
    return _check(_syscall(c_long(SYS_KEYCTL), c_int(1), _b(name)), "keyctl")


# the GIL stays held across this call: the child of clone3 resumes inside it and must find the
# interpreter exactly as a fork() child would, with one thread that owns the GIL
_pysyscall = _PyLongFunc(("syscall", _Libc))


def clone3(flags: int = 0, cgroup_fd: int = -1) -> int:
    """fork() through clone3(2): the child in new namespaces (``flags``: CLONE_NEW*; it is pid 1
    of a new pid namespace itself) and born in the cgroup2 directory ``cgroup_fd``
    (CLONE_INTO_CGROUP).

    Moving a live process into a cgroup takes the kernel's global threadgroup lock, whose first
    writer waits for an RCU grace period (5-30 ms here); being born there takes it only for
    reading. Only for a single-threaded caller: glibc and Python are not told about this fork
    (the child's cached TID in glibc is its parent's, no at-fork handlers run), which is harmless
    for code that only makes system calls, forks again through glibc and execs. Returns 0 in the
    child, the pid (in the caller's pid namespace) in the parent; OSError if the kernel refuses.
    """
    if cgroup_fd >= 0:
        flags |= CLONE_INTO_CGROUP
    args = _u64s(flags, 0, 0, 0, 17, 0, 0, 0, 0, 0, max(cgroup_fd, 0))  # 17: SIGCHLD
    return _check(_pysyscall(c_long(SYS_CLONE3), args, c_size_t(len(args))), "clone3")


def fork_into_cgroup(cgroup_fd: int) -> int:
    """clone3() with only CLONE_INTO_CGROUP: a fork born in that cgroup2 cgroup."""
    return clone3(0, cgroup_fd)


MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 1, 2, 4, 8
AT_EMPTY_PATH, AT_RECURSIVE = 0x1000, 0x8000


def mount_setattr_fd(fd: int, attr_set: int, recursive: bool = True) -> None:
    """mount_setattr(2) on the mount ``fd`` refers to (and, recursively, every mount below it):
    one call where remounting each would take one (plus a statfs) per mount."""
    attr = _u64s(attr_set, 0, 0, 0)  # struct mount_attr {set, clr, propagation, userns_fd}
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _check(
        _syscall(c_long(SYS_MOUNT_SETATTR), c_long(fd), b"", c_ulong(flags), attr, c_size_t(len(attr))),
        "mount_setattr",
    )


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """A copy of another process's fd (pidfd_getfd(2)); close-on-exec."""
    return _check(
        _syscall(
            c_long(SYS_PIDFD_GETFD), c_int(pidfd), c_int(targetfd), c_uint(0)
        ),
        "pidfd_getfd",
    )
