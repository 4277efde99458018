"""The container's terminal: a pty made inside the container's devpts, its master sent to
``--console-socket`` with SCM_RIGHTS (what conmon and containerd's shim expect), the slave made
the process's controlling terminal on fds 0-2."""

from __future__ import annotations

import os

from pallet.errors import RuntimeFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def connect(path: str) -> int:
    """Connect to the console socket (in the runtime, before fork); returns the fd."""
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise RuntimeFailure(f"connecting to console socket {path}: {e.strerror}") from None
    return s.detach()


def setup(sock_fd: int, size: dict[str, Any] | None, uid: int, gid: int) -> None:
    """In the init/exec child after pivot: open a pty, send the master, adopt the slave."""
    import fcntl
    import socket
    import struct
    import termios

    try:
        master, slave = os.openpty()
    except OSError as e:
        raise RuntimeFailure(f"allocating a pty (is /dev/pts mounted?): {e.strerror}") from None
    name = os.ttyname(slave)
    try:
        os.fchown(slave, uid, gid)
    except OSError:
        pass
    if size:
        fcntl.ioctl(
            slave,
            termios.TIOCSWINSZ,
            struct.pack("HHHH", int(size.get("height", 0)), int(size.get("width", 0)), 0, 0),
        )
    s = socket.socket(fileno=sock_fd)
    try:
        socket.send_fds(s, [name.encode()], [master])
    except OSError as e:
        raise RuntimeFailure(f"sending the pty master to the console socket: {e.strerror}") from None
    finally:
        s.close()
        os.close(master)
    try:
        os.setsid()
    except OSError:
        pass
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def receive_master(listen_sock: Any) -> int:
    """Accept one connection on a listening socket and return the received pty master fd."""
    import socket

    conn, _ = listen_sock.accept()
    with conn:
        _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    if not fds:
        raise RuntimeFailure("console socket: no pty master received")
    return fds[0]
