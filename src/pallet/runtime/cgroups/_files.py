"""Reading and writing cgroup interface files, with errors that name the file and the value."""

from __future__ import annotations

import errno
import os

from pallet.runtime.cgroups._layout import CgroupError


def strerror(err: OSError) -> str:
    msg = os.strerror(err.errno) if err.errno else str(err)
    return msg[:1].lower() + msg[1:]


def write(dirpath: str, name: str, value: str | int, what: str) -> None:
    """Write one value with one write(2), as the kernel expects; refusals become CgroupError."""
    value = str(value)
    try:
        fd = os.open(os.path.join(dirpath, name), os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENOENT and not os.path.isdir(dirpath):
            raise CgroupError(f"cgroup {what}: cannot set {name} to {value}: cgroup {dirpath} "
                              "does not exist") from None
        if e.errno == errno.ENOENT:
            raise CgroupError(f"cgroup {what}: cannot set {name} to {value}: this kernel has no "
                              f"{name}") from None
        raise CgroupError(f"cgroup {what}: cannot set {name} to {value}: {strerror(e)}") from None
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise CgroupError(f"cgroup {what}: cannot set {name} to {value}: {strerror(e)}") from None
    finally:
        os.close(fd)


def try_write(dirpath: str, name: str, value: str | int) -> OSError | None:
    """Write, returning the error instead of raising (for the fall-back dances runc also does)."""
    try:
        fd = os.open(os.path.join(dirpath, name), os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        return e
    try:
        os.write(fd, str(value).encode())
    except OSError as e:
        return e
    finally:
        os.close(fd)
    return None


def read(dirpath: str, name: str) -> str:
    with open(os.path.join(dirpath, name)) as f:
        return f.read()


def read_or_none(dirpath: str, name: str) -> str | None:
    try:
        return read(dirpath, name)
    except OSError:
        return None


def read_uint(dirpath: str, name: str) -> int:
    """An unsigned counter; "max" (v2) and the v1 'unlimited' value both read as 2**64-1."""
    text = read(dirpath, name).strip()
    if text == "max":
        return 2**64 - 1
    return int(text)


def uint_or_zero(dirpath: str, name: str) -> int:
    try:
        return read_uint(dirpath, name)
    except (OSError, ValueError):
        return 0


def read_kv(dirpath: str, name: str) -> dict[str, int]:
    """A flat-keyed file ("key value" lines: memory.stat, cpu.stat, memory.events ...)."""
    out: dict[str, int] = {}
    try:
        text = read(dirpath, name)
    except OSError:
        return out
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            continue
    return out


def subdirs(d: str) -> list[str]:
    """The child cgroups of ``d``. A cgroup directory's link count is 2 + its subdirectories
    (kernfs), so the usual leaf costs one stat, not a listing of its dozens of files."""
    if os.stat(d).st_nlink <= 2:
        return []
    return [e.path for e in os.scandir(d) if e.is_dir(follow_symlinks=False)]


def exists(dirpath: str, name: str) -> bool:
    return os.path.exists(os.path.join(dirpath, name))
