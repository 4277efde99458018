"""Driving a command on a real pseudo-terminal (``run -it``, prompts), for the tests."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import termios
import time


def spawn(argv: list[str], env: dict[str, str] | None = None, *, cwd: str | None = None,
          size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Start ``argv`` with a new pty as its controlling terminal and stdio: (pid, master fd)."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            if cwd is not None:
                os.chdir(cwd)
            os.execvpe(argv[0], argv, env if env is not None else os.environ)
        finally:
            os._exit(127)
    if size is not None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    return pid, fd


def read_until(fd: int, marker: bytes | None, timeout: float = 15) -> bytes:
    """What the terminal shows until ``marker`` appears (None: until the other side closes)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (marker is None or marker not in buf):
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            buf += chunk
    return buf


def converse(argv: list[str], prompt: bytes, answer: bytes, env: dict[str, str] | None = None,
             timeout: float = 60) -> tuple[bytes, int]:
    """Run ``argv`` on a pty, type ``answer`` once ``prompt`` shows, read to the end: (all it
    showed, exit status)."""
    pid, fd = spawn(argv, env)
    try:
        out = read_until(fd, prompt, timeout)
        if prompt in out:
            os.write(fd, answer)
        out += read_until(fd, None, timeout)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return out, os.waitstatus_to_exitcode(status)
