"""mount(2), umount2(2), setns(2), unshare(2) through :mod:`pallet.libc`: no /bin/mount process per call."""

from __future__ import annotations

import errno
import os

from pallet.libc import c_ulong, check, get_errno
from pallet.libc import libc as _libc

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 0x2
CLONE_NEWNS = 0x00020000

def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} on {target}",
    )


def umount(target: str, flags: int = 0, missing_ok: bool = True) -> None:
    ret = _libc.umount2(target.encode(), flags)
    if ret != 0:
        e = get_errno()
        if missing_ok and e in (errno.EINVAL, errno.ENOENT):  # not a mount point / gone
            return
        raise OSError(e, f"umount {target}: {os.strerror(e)}")


def setns(fd: int, nstype: int = 0) -> None:
    check(_libc.setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    check(_libc.unshare(flags), "unshare")


def is_mountpoint(path: str) -> bool:
    """True if ``path`` is a mount point in this mount namespace (by /proc/self/mountinfo)."""
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                fields = line.split(b" ", 5)
                if len(fields) > 4 and _unescape(fields[4]) == path:
                    return True
    except OSError:
        return False
    return False


def _unescape(raw: bytes) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    text = raw.decode("utf-8", "surrogateescape")
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 3 < len(text) + 1 and text[i + 1 : i + 4].isdigit():
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
