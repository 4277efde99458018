"""Network namespaces: enter one in the calling thread, pin one to a file, release it.

``setns(CLONE_NEWNET)`` changes only the calling thread, so the library opens a netlink socket
inside a container's namespace by stepping in and straight back out; the socket stays bound to
the namespace it was created in. Python 3.11 has no ``os.setns``/``os.unshare``, hence
:mod:`pallet.libc`.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from pallet.errors import NetworkError
from pallet.libc import check, get_errno
from pallet.libc import libc as _libc

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2


def setns(fd: int) -> None:
    check(_libc.setns(fd, CLONE_NEWNET), "setns")


@contextlib.contextmanager
def entered(path: str | os.PathLike[str]) -> Iterator[None]:
    """Run the body with the calling thread inside the network namespace at ``path``."""
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetworkError(f"cannot open network namespace {path}: {e.strerror}") from None
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            setns(target)
        except OSError as e:
            raise NetworkError(f"{path} is not a network namespace: {e.strerror}") from None
        try:
            yield
        finally:
            setns(own)
    finally:
        os.close(target)
        os.close(own)


def open_ns(path: str | os.PathLike[str]) -> int:
    """An fd on the namespace at ``path``, checked to be a network namespace."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetworkError(f"cannot open network namespace {path}: {e.strerror}") from None
    # nsfs files have a fixed st_dev; comparing with our own netns file is the cheap check
    if os.fstat(fd).st_dev != os.stat("/proc/thread-self/ns/net").st_dev:
        os.close(fd)
        raise NetworkError(f"{path} is not a network namespace")
    return fd


def create(path: str | os.PathLike[str]) -> Path:
    """Make a new, empty network namespace and pin it at ``path`` (a bind mount, as `ip netns add`).

    The engine creates the namespace before the container starts and passes the path to the
    runtime and to :func:`pallet.network.setup`, as podman does.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            check(
                _libc.mount(b"/proc/thread-self/ns/net", os.fsencode(path), None, MS_BIND, None),
                f"bind mount on {path}",
            )
        finally:
            setns(own)
    except OSError as e:
        with contextlib.suppress(OSError):
            path.unlink()
        raise NetworkError(f"cannot create network namespace at {path}: {e.strerror}") from None
    finally:
        os.close(own)
    return path


def remove(path: str | os.PathLike[str]) -> None:
    """Unpin and delete a namespace made by :func:`create`; missing is fine."""
    path = Path(path)
    if _libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        err = get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise NetworkError(f"cannot unmount network namespace {path}: {os.strerror(err)}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def ensure_shared_dir(path: str | os.PathLike[str]) -> Path:
    """Make ``path`` a mount point with shared propagation, as ``ip netns`` does for /run/netns.

    A namespace pin is a bind mount, and every mount namespace created while it exists gets a
    copy of it (a runtime's container being set up, a service with PrivateTmp ...). If the pin's
    directory were private, unmounting it here would leave those copies holding the namespace,
    its veth and the host end of the veth. In a shared directory the unmount propagates to every
    copy. Callers serialise this with :func:`remove_pin`'s :func:`release_dir` under one lock.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    target = os.fsencode(path)
    made = False
    while _libc.mount(b"none", target, None, MS_SHARED | MS_REC, None) != 0:
        err = get_errno()
        if err != errno.EINVAL or made:
            raise NetworkError(f"cannot make {path} a shared mount: {os.strerror(err)}")
        # not a mount point yet: bind it onto itself first
        check(_libc.mount(target, target, None, MS_BIND | MS_REC, None), f"bind mount on {path}")
        made = True
    return path


def release_dir(path: str | os.PathLike[str]) -> bool:
    """Unmount a directory made by :func:`ensure_shared_dir` once it pins no namespace any more
    (so nothing stays mounted when no container runs). True if it was unmounted."""
    path = Path(path)
    try:
        if any(not n.startswith(".") for n in os.listdir(path)):
            return False
    except FileNotFoundError:
        return False
    if _libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        err = get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return False
        raise NetworkError(f"cannot unmount {path}: {os.strerror(err)}")
    return True
