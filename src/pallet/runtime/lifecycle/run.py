"""``run``: create + start; without ``--detach`` wait for the container and exit with its status.

The runtime makes itself a child subreaper first, so the init (a grandchild, whose parent the
intermediate exits) is reparented to us and we can wait for it, forward signals to it, and
relay its terminal when it has one and no --console-socket was given.
"""

from __future__ import annotations

import os

from pallet.errors import RuntimeFailure
from pallet.runtime import syscalls as sc
from pallet.runtime.lifecycle.create import CreateOptions, create

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FORWARDED = (1, 2, 3, 10, 12, 14, 15, 18, 20, 21, 22, 23, 26, 27, 28, 29, 30)


def run(opts: CreateOptions, detach: bool = False, keep: bool = False) -> int:
    from pallet.runtime import spec

    tty_proxy: Any = None
    opts.config = spec.load(os.path.abspath(opts.bundle))
    terminal = bool((opts.config.get("process") or {}).get("terminal"))
    if not detach:
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        opts.foreground = True
        if terminal and not opts.console_socket:
            tty_proxy = _TTYProxy()
            opts.console_socket = tty_proxy.path
    elif not opts.console_socket and terminal:
        raise RuntimeFailure("cannot allocate tty if runtime will detach without setting console socket")
    # what start and delete need is imported while the container sets up (create calls this right
    # after forking), not before: on two cores that import time is free
    opts.while_waiting = _import_rest
    try:
        c = create(opts)
    except BaseException:
        if tty_proxy:
            tty_proxy.close()
        raise
    from pallet.runtime.lifecycle.delete import delete, destroy
    from pallet.runtime.lifecycle.start import start

    try:
        with c.lock():
            start(c)
    except BaseException:
        with c.lock():
            delete(c, force=True)
        if tty_proxy:
            tty_proxy.close()
        raise
    if detach:
        return 0
    status = _wait(c.pid, tty_proxy)
    if not keep:
        with c.lock():
            destroy(c)
    return status


def _import_rest() -> None:
    from pallet.runtime.lifecycle import delete, start  # noqa: F401


def _wait(pid: int, tty_proxy: Any) -> int:
    """Wait for the init (reaping any other orphan), forwarding signals to it."""
    import _signal

    def forward(signum: int, _frame: Any) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for s in FORWARDED:
        try:
            _signal.signal(s, forward)
        except (OSError, ValueError):
            pass
    if tty_proxy is not None:
        tty_proxy.relay(pid)
    while True:
        try:
            wpid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if wpid == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


class _TTYProxy:
    """A private console socket; relays our stdin/stdout to the container's pty master."""

    def __init__(self) -> None:
        import socket
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="pallet-tty-")
        self.path = os.path.join(self.dir, "console.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1)

    def close(self) -> None:
        import shutil

        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def relay(self, pid: int) -> None:
        import select
        import termios
        import tty

        from pallet.runtime import console

        master = console.receive_master(self.sock)
        self.close()
        saved = None
        if os.isatty(0):
            saved = termios.tcgetattr(0)
            tty.setraw(0)
            try:
                import fcntl

                ws = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
                fcntl.ioctl(master, termios.TIOCSWINSZ, ws)
            except OSError:
                pass
        fds = [master, 0]
        try:
            while True:
                try:
                    r, _, _ = select.select(fds, [], [], 0.2)
                except InterruptedError:
                    continue
                if master in r:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    os.write(1, data)
                if 0 in r:
                    data = os.read(0, 65536)
                    if not data:
                        fds.remove(0)
                    else:
                        os.write(master, data)
        finally:
            if saved is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
            os.close(master)
