"""The attach protocol between a container's monitor and its clients, and the client side of it.

A client (``run`` without ``-d``, ``start -a``, ``attach``, ``wait``) connects to the monitor's
unix socket ``RUNROOT/engine/<id>/attach`` and exchanges frames: a 1-byte type and a 4-byte
big-endian length, then the payload. Clients send HELLO (which streams they want), STDIN,
STDIN_EOF, RESIZE and SIGNAL; the monitor sends STDOUT, STDERR, and EXIT when the container
exits (after --rm removal, so a client that sees EXIT sees the final state) — or, for an
attached ``run --rm``, EXIT asking the client to remove the container, which it acknowledges
with DONE before the monitor exits.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import signal
import socket
import struct
from collections.abc import Iterator

TYPE_CHECKING = False  # typing costs an import on the hot path: annotations are strings
if TYPE_CHECKING:
    from typing import Any

HEADER = struct.Struct(">BI")
STDIN, STDOUT, STDERR, EXIT, RESIZE, STDIN_EOF, SIGNAL, HELLO, ERROR, DONE = range(1, 11)
#: docker's default detach sequence: ctrl-p ctrl-q
DEFAULT_DETACH_KEYS = b"\x10\x11"


def frame(kind: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def jframe(kind: int, obj: Any) -> bytes:
    return frame(kind, json.dumps(obj, separators=(",", ":")).encode())


class FrameReader:
    """Incremental frame parser over bytes read from a socket."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        self.buf += data
        while len(self.buf) >= HEADER.size:
            kind, length = HEADER.unpack_from(self.buf)
            if len(self.buf) < HEADER.size + length:
                break
            payload = bytes(self.buf[HEADER.size : HEADER.size + length])
            del self.buf[: HEADER.size + length]
            yield kind, payload


def unix_path(path: str) -> tuple[str, int | None]:
    """A connectable path for ``path``: itself, or via /proc/self/fd when it exceeds sun_path."""
    if len(path.encode()) < 100:
        return path, None
    d, base = os.path.split(path)
    fd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{base}", fd


def connect(path: str, timeout: float | None = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    p, fd = unix_path(path)
    try:
        sock.settimeout(timeout)
        sock.connect(p)
        sock.settimeout(None)
    except OSError:
        sock.close()
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return sock


def bind(sock: socket.socket, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    p, fd = unix_path(path)
    try:
        sock.bind(p)
    finally:
        if fd is not None:
            os.close(fd)


def terminal_size(fd: int) -> tuple[int, int] | None:
    try:
        cols, rows = os.get_terminal_size(fd)
    except OSError:
        return None
    return rows, cols


def _sendall(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


#: the reader of our output went away (`pallet run ... | head -1`): the status a shell reports for
#: docker's CLI, which dies of SIGPIPE then; the container keeps running
OUTPUT_CLOSED_STATUS = 128 + 13


def relay(
    sock: socket.socket,
    *,
    stdin_fd: int | None,
    stdout_fd: int,
    stderr_fd: int,
    tty: bool,
    detach_keys: bytes | None = DEFAULT_DETACH_KEYS,
    sig_proxy: bool = True,
) -> dict[str, Any] | None:
    """Pump stdio between this process and the monitor until EXIT (returned), detach (None) or
    the reader of our output going away (``OutputClosed``, with :data:`OUTPUT_CLOSED_STATUS` as
    the status to end with).

    With ``tty`` and a terminal on stdin, the terminal is put in raw mode (restored on return)
    and SIGWINCH is forwarded as RESIZE; without it, catchable signals are forwarded to the
    container (docker's --sig-proxy).
    """
    sel = selectors.DefaultSelector()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    pending: list[int] = []
    old_handlers: dict[int, Any] = {}
    old_wakeup = -1
    restore_term = None
    stdin_is_tty = stdin_fd is not None and os.isatty(stdin_fd)

    def on_signal(signum: int, _frame: Any) -> None:
        pending.append(signum)

    try:
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        watched = [signal.SIGWINCH] if tty else []
        if sig_proxy and not tty:
            watched += [
                signal.SIGINT,
                signal.SIGTERM,
                signal.SIGHUP,
                signal.SIGQUIT,
                signal.SIGUSR1,
                signal.SIGUSR2,
            ]
        for s in watched:
            old_handlers[s] = signal.signal(s, on_signal)
    except ValueError:  # not the main thread: no signal handling
        old_wakeup = None  # type: ignore[assignment]
    if tty and stdin_is_tty:
        import termios
        import tty as ttymod

        assert stdin_fd is not None
        saved = termios.tcgetattr(stdin_fd)
        ttymod.setraw(stdin_fd)
        restore_term = (stdin_fd, saved)
        size = terminal_size(stdin_fd)
        if size:
            _sendall(sock, jframe(RESIZE, {"h": size[0], "w": size[1]}))

    reader = FrameReader()
    sel.register(sock, selectors.EVENT_READ, "sock")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    if stdin_fd is not None:
        try:
            sel.register(stdin_fd, selectors.EVENT_READ, "stdin")
        except (ValueError, PermissionError, OSError):  # a regular file: read it all now
            while True:
                chunk = os.read(stdin_fd, 65536)
                if not chunk:
                    break
                _sendall(sock, frame(STDIN, chunk))
            _sendall(sock, frame(STDIN_EOF))
            stdin_fd = None
    matched = 0
    try:
        while True:
            for key, _ in sel.select():
                what = key.data
                if what == "wake":
                    with contextlib.suppress(OSError):
                        wake_r.recv(512)
                    while pending:
                        s = pending.pop(0)
                        if s == signal.SIGWINCH and stdin_is_tty:
                            assert stdin_fd is not None
                            size = terminal_size(stdin_fd)
                            if size:
                                _sendall(sock, jframe(RESIZE, {"h": size[0], "w": size[1]}))
                        elif s != signal.SIGWINCH:
                            _sendall(sock, jframe(SIGNAL, {"signal": s}))
                elif what == "stdin":
                    assert stdin_fd is not None
                    try:
                        data = os.read(stdin_fd, 65536)
                    except OSError as e:
                        if e.errno in (errno.EAGAIN, errno.EINTR):
                            continue
                        data = b""
                    if not data:
                        sel.unregister(stdin_fd)
                        _sendall(sock, frame(STDIN_EOF))
                        continue
                    if tty and detach_keys:
                        out = bytearray()
                        for b in data:
                            if b == detach_keys[matched]:
                                matched += 1
                                if matched == len(detach_keys):
                                    if out:
                                        _sendall(sock, frame(STDIN, bytes(out)))
                                    return None
                                continue
                            if matched:
                                out += detach_keys[:matched]
                                matched = 0
                            out.append(b)
                        data = bytes(out)
                        if not data:
                            continue
                    if not _sendall(sock, frame(STDIN, data)):
                        sel.unregister(stdin_fd)
                else:
                    try:
                        data = sock.recv(262144)
                    except OSError:
                        data = b""
                    if not data:
                        return {"ExitCode": None, "Error": "the container's monitor went away"}
                    for kind, payload in reader.feed(data):
                        if kind in (STDOUT, STDERR):
                            if not _write_all(stdout_fd if kind == STDOUT else stderr_fd, payload):
                                # the reader went away (`pallet run ... | head -1`): as docker's
                                # CLI, which dies of SIGPIPE, stop here and leave the container
                                # running (its monitor applies --rm when it exits)
                                return {"ExitCode": OUTPUT_CLOSED_STATUS, "OutputClosed": True}
                        elif kind == EXIT:
                            return json.loads(payload)
                        elif kind == ERROR:
                            return {"ExitCode": None, "Error": json.loads(payload).get("error", "")}
    finally:
        if restore_term is not None:
            import termios

            termios.tcsetattr(restore_term[0], termios.TCSADRAIN, restore_term[1])
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if old_wakeup is not None:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(old_wakeup)
        sel.close()
        wake_r.close()
        wake_w.close()


def _write_all(fd: int, data: bytes) -> bool:
    """Write all of ``data``; False when the reader has gone (EPIPE)."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [])
            continue
        except BrokenPipeError:
            return False
        view = view[n:]
    return True
