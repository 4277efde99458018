"""Resolve a path inside a container's root filesystem without ever leaving it.

A container's files are hostile input: ``/etc/passwd`` may be a symlink to ``/../../etc/shadow``
on the host. :func:`secure_join` walks the path one component at a time, resolving symlinks as
if ``root`` were ``/`` (absolute targets restart at ``root``, ``..`` stops at ``root``), like
github.com/cyphar/filepath-securejoin. The result is a host path under ``root``.
"""

from __future__ import annotations

import errno
import os
import stat

from pallet.errors import UnsafePathError

_MAX_SYMLINKS = 255


def secure_join(root: str | os.PathLike[str], unsafe: str, *, follow_last: bool = True) -> str:
    """``root`` + ``unsafe`` with every symlink resolved inside ``root``.

    Missing components are kept as they are (the caller may create them); ``follow_last=False``
    leaves a final symlink unresolved (for lstat, unlink, or copying the link itself).
    """
    root = os.path.abspath(os.fspath(root))
    pending = [p for p in unsafe.split("/") if p not in ("", ".")]
    pending.reverse()
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if not pending and not follow_last:
            resolved.append(part)
            break
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        except NotADirectoryError:
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        hops += 1
        if hops > _MAX_SYMLINKS:
            raise UnsafePathError(f"too many levels of symbolic links resolving {unsafe!r} in the container")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        more = [p for p in target.split("/") if p not in ("", ".")]
        pending.extend(reversed(more))
    return os.path.join(root, *resolved) if resolved else root


def mkdir_all_in_root(root: str, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> str:
    """Create ``path`` (and missing parents) inside ``root``; returns the host path.

    Every component is re-resolved with :func:`secure_join`, so a symlink planted in the image
    cannot redirect the creation outside ``root``.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    current = "/"
    host = secure_join(root, "/")
    for part in parts:
        current = os.path.join(current, part)
        host = secure_join(root, current)
        try:
            os.mkdir(host, mode)
            os.chown(host, uid, gid)
        except FileExistsError:
            if not os.path.isdir(host):
                raise UnsafePathError(f"{current} exists in the container and is not a directory") from None
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
    return host


def read_in_root(root: str, path: str, limit: int = 16 << 20) -> bytes | None:
    """The bytes of a regular file inside ``root`` (symlinks resolved in root); None if absent."""
    host = secure_join(root, path)
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = []
        total = 0
        while total < limit:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
            total += len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)
