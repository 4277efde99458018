"""The CLI's side of a container's monitor (pallet.engine.monitor): start one, hand it the
container, wait until it runs.

``pallet run`` forks its monitor before it imports anything else, even the monitor's own modules
(json, socket, selectors ...: the monitor imports them after the fork, on the other core), so
that the fork is cheap and the CLI's pages are not shared with a process that lives as long as
the container: this module imports nothing but ``os`` and ``sys`` at the top.
"""

from __future__ import annotations

import contextlib
import os
import sys

TYPE_CHECKING = False  # typing costs an import on pallet run's path; annotations are strings
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from typing import Any


class MonitorConfig:
    """Everything the monitor needs, computed by the CLI (JSON: it crosses into the monitor's
    own interpreter over its control socket)."""

    FIELDS = (
        "container_id",
        "root",
        "runroot",
        "bundle",
        "runtime_name",
        "runtime_path",
        "runtime_root",
        "tty",
        "open_stdin",
        "stdin_once",
        "log_path",
        "log_driver",
        "log_max_size",
        "log_max_file",
        "restart_name",
        "restart_max",
        "restart_count",
        "auto_remove",
        "healthcheck",
        "cgroups_path",
        "stop_signal",
        "ctx",
    )

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("ctx", {})
        missing = [f for f in self.FIELDS if f not in kw]
        if missing:
            raise TypeError(f"MonitorConfig: missing {', '.join(missing)}")
        self.__dict__.update({f: kw[f] for f in self.FIELDS})

    def context(self):
        """The CLI's Context, as the monitor needs it for the storage, state and network."""
        from pallet.context import Context

        return Context.from_json(self.ctx or {"root": self.root, "runroot": self.runroot})

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.FIELDS}


_BOOT = (
    "import sys,json;sys.path[:0]=json.loads(sys.argv[1]);"
    "from pallet.engine.monitor import serve;serve(int(sys.argv[2]),int(sys.argv[3]))"
)


class Launch:
    """A container monitor, started before the container is ready so its interpreter boots while
    the CLI prepares the container; :meth:`start` hands it the container and waits until it runs.

    The monitor is a fresh ``python -S`` that imports only what it needs (about 11 MB resident
    instead of a forked CLI's 17), or, for ``pallet run``, a fork made before the CLI imported
    anything but this module (:func:`prefork`); either way :func:`_fork_detached` puts it in its
    own session as a child subreaper.
    """

    def __init__(
        self, client: socket.socket | None = None, *, fork_only: bool = False, preload: bool = False
    ) -> None:
        """``fork_only``: the monitor is this process, forked (see :func:`prefork`): only for a
        process that is still lean. ``preload``: the container will most likely run on this
        installation's pallet-runtime, which the monitor forks rather than executes
        (:func:`spawn_runtime`): import its modules while the CLI prepares the container."""
        state = sys.modules.get("pallet.engine.state")
        if state is not None:
            state.close_all()  # SQLite connections must not cross fork()
        import _socket  # socket.socketpair's C half: the socket module comes later, if at all

        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self._ctl_fd = ours.detach()
        self._ctl: socket.socket | None = None
        self.client_fd = -1  # an attach client handed over with the container (SCM_RIGHTS)
        if not fork_only:
            import json

            paths = [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), *sys.path]
            argv = [sys.executable, "-S", "-s", "-B", "-c", _BOOT, json.dumps(paths), str(theirs.fileno()),
                    str(client.fileno() if client is not None else -1)]
        pid = _fork_detached()
        if pid == 0:  # pragma: no cover - the monitor-to-be
            try:
                if fork_only:
                    os.close(self._ctl_fd)
                    networking = sys.modules.get("pallet.engine.networking")
                    if networking is not None:
                        networking.forget_helper()  # `run`'s network helper is the CLI's alone
                    from pallet.engine.monitor import serve

                    serve(theirs.detach(), -1, preload=preload)  # never returns
                os.set_inheritable(theirs.fileno(), True)
                if client is not None:
                    os.set_inheritable(client.fileno(), True)
                os.execv(sys.executable, argv)
            except BaseException:
                with contextlib.suppress(Exception):
                    __import__("traceback").print_exc()
                    sys.stderr.flush()
            os._exit(127)
        theirs.close()
        os.waitpid(pid, 0)
        from pallet.engine.procs import trace

        trace("monitor forked" if fork_only else "monitor launched")

    @property
    def ctl(self) -> socket.socket:
        """The control socket to the monitor."""
        if self._ctl is None:
            import socket

            self._ctl = socket.socket(fileno=self._ctl_fd)
        return self._ctl

    def give_client(self, client: socket.socket) -> None:
        """Hand ``client`` (the attach socket of ``run``) to the monitor with the container."""
        self.client_fd = os.dup(client.fileno())

    def start(self, cfg: MonitorConfig, meanwhile: Callable[[], object] | None = None) -> dict[str, Any]:
        """Give the monitor its container; returns {"pid", "monitor_pid"} or {"error", "exit_code"}.
        ``meanwhile`` is called while the monitor starts it (this process is idle then)."""
        import json
        import socket

        try:
            payload = json.dumps(cfg.to_dict()).encode() + b"\n"
            if self.client_fd >= 0:
                sent = socket.send_fds(self.ctl, [payload], [self.client_fd])
                os.close(self.client_fd)
                self.client_fd = -1
                payload = payload[sent:]
            self.ctl.sendall(payload)
            if meanwhile is not None:
                meanwhile()
            chunks = []
            while True:
                b = self.ctl.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except OSError:
            chunks = []
        finally:
            self.close()
        if not chunks:
            return {
                "error": "the container monitor died before the container started; see "
                f"{os.path.join(cfg.bundle, 'monitor.log')}",
                "exit_code": 125,
            }
        return json.loads(b"".join(chunks))

    def close(self) -> None:
        """Without a container (create failed), the monitor sees EOF and exits."""
        if self._ctl is not None:
            self._ctl.close()
        elif self._ctl_fd >= 0:
            os.close(self._ctl_fd)
        self._ctl_fd = -1
        if self.client_fd >= 0:
            os.close(self.client_fd)
            self.client_fd = -1


def _fork_detached() -> int:
    """Fork the monitor-to-be: double-forked into a new session (so it outlives this process and,
    not being the session's leader, can never acquire a controlling terminal) and marked child
    subreaper (the container's init, orphaned when ``RUNTIME run --detach`` exits, becomes its
    child; the flag survives exec). Returns 0 in it, else the intermediate's pid to reap."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid != 0:
        return pid
    try:  # pragma: no cover - the forked children
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        from pallet.libc import set_child_subreaper

        set_child_subreaper()
    except BaseException:
        os._exit(127)  # never back into the caller's code in a child
    return 0


_preforked: Launch | None = None


def prefork(preload: bool = False) -> None:
    """Fork ``pallet run``'s monitor now, while the CLI is still lean (no interpreter to start,
    no modules to import again: it is ready within a millisecond, with about the memory of an
    exec'd one); :func:`take_preforked` hands it to the run."""
    global _preforked
    _preforked = Launch(fork_only=True, preload=preload)


def discard_preforked() -> None:
    """The command ends without having handed a container to its preforked monitor (``run``
    failed early): tell the monitor (EOF) and wait until it is gone (its end of the socket closes
    as it exits), so that no process of the command outlives it."""
    launch = take_preforked()
    if launch is None:
        return
    import socket

    try:
        launch.ctl.shutdown(socket.SHUT_WR)
        launch.ctl.settimeout(5)
        launch.ctl.recv(1)
    except OSError:
        pass
    launch.close()


def take_preforked() -> Launch | None:
    global _preforked
    launch, _preforked = _preforked, None
    return launch
