"""The per-container monitor: pallet's conmon.

``pallet run`` forks the monitor before it imports anything else, and other callers (``start``)
launch it as its own small interpreter (``python -S``); either way double-forked into a new
session, so it outlives the CLI and has no terminal, before the container is even prepared, so
its start-up overlaps the CLI's work. The CLI then hands it the container over a control socket
(:class:`pallet.engine.launch.Launch`). The monitor:

* is the container's parent: it sets PR_SET_CHILD_SUBREAPER, runs ``RUNTIME run --detach`` and
  so inherits the container's init when the runtime exits;
* holds the container's stdio (pipes, or the pty master the runtime sends to its console
  socket), writes the log file, and relays the streams to attached clients over its attach
  socket (:mod:`pallet.engine.attach`);
* records the exit status, exit time and OOM kills (from the cgroup, before ``RUNTIME delete``
  removes it), releases the root filesystem, applies restart policies with docker's back-off,
  runs healthchecks on their interval, and removes ``--rm`` containers.

It imports a handful of standard modules and none of the CLI's (argparse, logging, dataclasses,
the store), to keep its resident memory small: about 12 MB RSS, 7 MB PSS, most of it the
interpreter and the runtime's modules it preloads (BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

from pallet.engine import attach as proto
from pallet.engine import cgroups
from pallet.engine.launch import MonitorConfig
from pallet.engine.logs import LogWriter
from pallet.engine.procs import alive, now_rfc3339, proc_start_time, trace

TYPE_CHECKING = False  # typing costs an import on the hot path: annotations are strings
if TYPE_CHECKING:
    from typing import Any

_BACKPRESSURE = 4 << 20
_DRAIN_TIMEOUT = 2.0


class _Row:
    """The few columns the monitor reads back, as attributes."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)


class _MonitorState:
    """Row operations on the engine database, on pallet.engine.db only (no dataclasses)."""

    _COLUMNS = ("status", "stop_requested", "exit_code", "oom_killed", "finished_at", "started_at")

    def __init__(self, root: str) -> None:
        self.path = os.path.join(root, "engine", "engine.db")
        self._conn = None

    @property
    def conn(self):
        if self._conn is None:
            from pallet.engine import db

            self._conn = db.connect(self.path)
        return self._conn

    def update(self, container_id: str, **fields: Any) -> None:
        from pallet.engine import db

        db.update(self.conn, container_id, **fields)

    def transition(self, container_id: str, from_states: Any, **fields: Any) -> bool:
        from pallet.engine import db

        return db.transition(self.conn, container_id, from_states, **fields)

    def find(self, container_id: str) -> _Row | None:
        from pallet.engine import db

        row = db.fetch(self.conn, container_id, *self._COLUMNS)
        if row is None:
            return None
        row["stop_requested"] = bool(row["stop_requested"])
        row["oom_killed"] = bool(row["oom_killed"])
        return _Row(row)


def _preload_runtime() -> None:
    """What a forked pallet-runtime imports for ``run --detach`` and ``delete``, including what it
    imports on first use (cgroups, namespaces, seccomp ...: ~3 ms more in the container's
    start), and what the monitor needs to call it (~8 ms here, off the CLI's path; 1.5 MB)."""
    with contextlib.suppress(Exception):  # best effort: the runtime reports what fails itself
        from pallet.engine import runtime  # noqa: F401
        from pallet.runtime import cgroups as runtime_cgroups
        from pallet.runtime import cli, namespaces, process, rootfs, seccomp  # noqa: F401
        from pallet.runtime.cgroups import common, devices, v1, v2  # noqa: F401
        from pallet.runtime.lifecycle import create, delete, run, start  # noqa: F401

        seccomp.sha256_impl()
        seccomp.libseccomp_version()  # dlopen: the seccomp compile cache's key
        runtime_cgroups.controllers_available()  # reads the cgroup layout, kept for the container's life


# -- the monitor ----------------------------------------------------------------------------------


def serve(ctl_fd: int, client_fd: int, preload: bool = False) -> None:
    """Entry point of the monitor's own interpreter: wait for the container, then monitor it."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # "re-read your state": harmless until we have one
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # never hold the CLI's stdout: `pallet run -d x | cat` must see EOF
    if preload:
        _preload_runtime()
    ctl = socket.socket(fileno=ctl_fd)
    os.set_inheritable(ctl_fd, False)
    buf = b""
    while not buf.endswith(b"\n"):
        chunk, fds, _flags, _addr = socket.recv_fds(ctl, 65536, 1)
        if fds:
            client_fd = fds[0]  # the attach client, handed over with the container
        if not chunk:
            os._exit(0)  # the CLI gave up (create failed)
        buf += chunk
    cfg = MonitorConfig(**json.loads(buf))
    from pallet.libc import set_process_title

    set_process_title(f"pallet-monitor {cfg.container_id[:12]}")
    with open(os.path.join(cfg.bundle, "monitor.pid"), "w") as f:  # for reconciliation if the CLI dies
        f.write(f"{os.getpid()} {proc_start_time(os.getpid())}\n")
    logfd = os.open(os.path.join(cfg.bundle, "monitor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(logfd, 2)
    os.close(logfd)
    os.close(devnull)
    client = None
    if client_fd >= 0:
        os.set_inheritable(client_fd, False)
        client = socket.socket(fileno=client_fd)
    for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(s, signal.SIG_IGN)
    import gc

    gc.freeze()  # the boot's objects live as long as we do: keep the collector off them
    gc.enable()  # (a monitor forked from `pallet run` inherits the launcher's collector-off)
    trace(f"monitor: ready with {len(sys.modules)} modules")
    code = 0
    try:
        Monitor(cfg, ctl, client).run()
    except BaseException:
        __import__("traceback").print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def own_runtime(name: str, path: str) -> bool:
    """Is ``path`` the pallet-runtime of this very installation (so ``pallet.runtime`` here is its
    code)? Then the monitor forks and calls it instead of exec'ing a new interpreter (saves
    ~10 ms per call); ``PALLET_RUNTIME_EXEC=1`` forces the exec, as for any other runtime."""
    if name != "pallet-runtime" or os.environ.get("PALLET_RUNTIME_EXEC"):
        return False
    beside = os.path.join(os.path.dirname(sys.executable), "pallet-runtime")
    try:
        if os.path.realpath(path) != os.path.realpath(beside):
            return False
        with open(path, "rb") as f:
            return b"pallet.runtime.cli import entry" in f.read(4096)
    except OSError:
        return False


#: what the monitor handles or ignores, back to the default for the runtime and so the container
#: (podman's containers start with nothing ignored)
_RUNTIME_SIGDEF = (
    signal.SIGCHLD, signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGQUIT,
    signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU,
)


def spawn_runtime(path: str, argv: list[str], stdio: tuple[int, int, int], inproc: bool) -> int:
    """Start ``argv`` (a runtime command line) with ``stdio`` as fds 0-2; returns its pid.

    ``inproc``: fork and run pallet-runtime's CLI in the child (the same argv, the same process
    tree and exit status as an exec, minus an interpreter start-up). The child gets what exec
    would give it: only fds 0-2, default signal handling, CPython's own SIGPIPE ignore."""
    if not inproc:
        return os.posix_spawn(
            path,
            argv,
            os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate(stdio)],
            setsigdef=_RUNTIME_SIGDEF,
        )
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1  # pragma: no cover - the forked child
    try:
        signal.set_wakeup_fd(-1)
        for sig in _RUNTIME_SIGDEF:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as a fresh interpreter has it
        for i, fd in enumerate(stdio):
            if fd != i:
                os.dup2(fd, i)
            else:
                os.set_inheritable(fd, True)
        os.closerange(3, 1 << 20)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the runtime's own stdio objects
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        sys.argv = ["pallet-runtime", *argv[1:]]
        import gc

        gc.disable()
        from pallet.runtime.cli import main

        code = main(argv[1:])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        with contextlib.suppress(BaseException):
            __import__("traceback").print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class Client:
    def __init__(
        self,
        sock: socket.socket,
        *,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        hello: bool,
        initial: bool = False,
    ) -> None:
        self.sock = sock
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.hello = hello
        self.initial = initial
        self.out = bytearray()
        self.reader = proto.FrameReader()
        self.closed = False


class Monitor:
    def __init__(self, cfg: MonitorConfig, ctl: socket.socket, client: socket.socket | None) -> None:
        self._common(cfg)
        self.ctl: socket.socket | None = ctl
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        proto.bind(self.listener, os.path.join(cfg.bundle, "attach"))
        self.listener.listen(32)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, ("listen", None))
        if client is not None:
            client.setblocking(False)
            c = Client(client, stdin=cfg.open_stdin, stdout=True, stderr=True, hello=True, initial=True)
            self._add_client(c)

    def _common(self, cfg: MonitorConfig) -> None:
        self.cfg = cfg
        self.inproc = own_runtime(cfg.runtime_name, cfg.runtime_path)
        self.ctl = None
        self.started_at = ""
        self.first_record: dict[str, Any] = {}
        self.sel = selectors.DefaultSelector()
        self.clients: list[Client] = []
        self.pid = 0
        self.ctr_status: int | None = None
        self.out_fds: dict[int, str] = {}
        self.stdin_fd = -1
        self.stdin_buf = bytearray()
        self.stdin_eof = False
        self.master = -1
        self.started_mono = 0.0
        self.restart_count = cfg.restart_count
        self.backoff = 0.0
        self.restart_at: float | None = None
        self.health: dict[str, Any] | None = None
        self.health_next: float | None = None
        self.health_proc: dict[str, Any] | None = None
        self.health_started = 0.0
        self.drain_deadline: float | None = None
        self.pending_size: tuple[int, int] | None = None
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.reload = False
        self._state = None
        self.log = (
            LogWriter(cfg.log_path, cfg.log_driver, cfg.log_max_size, cfg.log_max_file)
            if cfg.log_driver != "none"
            else None
        )
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", None))

    # -- state ----------------------------------------------------------------------------------
    @property
    def state(self):
        if self._state is None:
            self._state = _MonitorState(self.cfg.root)  # type: ignore[assignment]
        return self._state

    def _sync(self, msg: dict[str, Any]) -> None:
        if self.ctl is not None:
            with contextlib.suppress(OSError):
                self.ctl.sendall(json.dumps(msg).encode())
            self.ctl.close()
            self.ctl = None

    # -- main -----------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD, signal.SIGUSR1})

    def run(self) -> int:
        self._install_signals()
        err = self._start_container(first=True)
        if err is not None:
            self._start_failed(err)
            return 0
        self._sync({"record": self.first_record})
        self._loop()
        return 0

    def _on_usr1(self, *_: Any) -> None:
        self.reload = True

    def _runtime_argv(self, *args: str, log: str | None = None) -> list[str]:
        argv = [self.cfg.runtime_path, "--root", self.cfg.runtime_root]
        if log:
            argv += ["--log", log, "--log-format", "json"]
        return argv + list(args)

    def _start_container(self, first: bool = False) -> Exception | None:
        """Run the runtime; the container's init ends up our child. None on success.

        The first start is recorded by the CLI from our reply (so a monitor whose container
        never restarts or reports health touches the database only when it exits: sqlite3 stays
        unloaded); restarts are recorded here."""
        from pallet.engine.runtime import classify, last_error

        cfg = self.cfg
        pidfile = os.path.join(cfg.bundle, "pid")
        rtlog = os.path.join(cfg.bundle, "runtime.log")
        for p in (pidfile, rtlog):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        child_fds: list[int] = []
        console = None
        args = ["run", "--detach", "--bundle", cfg.bundle, "--pid-file", pidfile]
        if cfg.tty:
            console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            cpath = os.path.join(cfg.bundle, "console.sock")
            proto.bind(console, cpath)
            console.listen(1)
            if len(cpath.encode()) >= 100:
                d = os.open(cfg.bundle, os.O_PATH | os.O_DIRECTORY)
                os.set_inheritable(d, False)
                cpath = f"/proc/{os.getpid()}/fd/{d}/console.sock"
            args += ["--console-socket", cpath]
            stdio = (devnull, devnull, devnull)
        else:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            if cfg.open_stdin:
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
                self.stdin_fd = in_w
                stdio = (in_r, out_w, err_w)
                child_fds.append(in_r)
            else:
                stdio = (devnull, out_w, err_w)
            child_fds += [out_w, err_w]
            self.out_fds = {out_r: "stdout", err_r: "stderr"}
        argv = self._runtime_argv(*args, cfg.container_id, log=rtlog)
        try:
            rt_pid = spawn_runtime(cfg.runtime_path, argv, stdio, self.inproc)
        except OSError as e:
            for fd in child_fds:
                os.close(fd)
            os.close(devnull)
            return classify(f"cannot run the OCI runtime {cfg.runtime_path}: {e.strerror}")
        for fd in child_fds:
            os.close(fd)
        os.close(devnull)
        trace("monitor: runtime spawned")
        status = self._wait_pid(rt_pid)
        trace("monitor: runtime exited")
        if status != 0:
            msg = last_error(rtlog)
            if not msg:
                stderr_text = self._drain_discard()
                msg = stderr_text or f"{cfg.runtime_name} exited with status {status}"
            else:
                self._drain_discard()
            self._close_stdio()
            if console is not None:
                console.close()
            return classify(msg)
        try:
            with open(pidfile) as f:
                self.pid = int(f.read().strip())
        except (OSError, ValueError):
            self._close_stdio()
            return classify(f"{cfg.runtime_name} did not write the container's pid file")
        if console is not None:
            console.settimeout(10)
            try:
                conn, _ = console.accept()
                with conn:
                    _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 4)
            except OSError as e:
                console.close()
                return classify(f"no console from {cfg.runtime_name}: {e}")
            console.close()
            if not fds:
                return classify(f"{cfg.runtime_name} sent no console file descriptor")
            self.master = fds[0]
            for extra in fds[1:]:
                os.close(extra)
            os.set_blocking(self.master, False)
            if self.pending_size:
                self._resize(*self.pending_size)
            self.out_fds = {self.master: "stdout"}
        for fd in self.out_fds:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, ("out", fd))
        if self.stdin_fd >= 0:
            os.set_blocking(self.stdin_fd, False)
        self.ctr_status = None
        self.started_mono = time.monotonic()
        from pallet.engine.procs import now_rfc3339

        health = None
        if self._health_enabled():
            health = {"Status": "starting", "FailingStreak": 0, "Log": []}
            self.health = health
            self.health_next = time.monotonic() + self._hc_interval()
        self.started_at = now_rfc3339()
        record = {
            "status": "running",
            "pid": self.pid,
            "pid_start": proc_start_time(self.pid),
            "monitor_pid": os.getpid(),
            "monitor_start": proc_start_time(os.getpid()),
            "started_at": self.started_at,
            "finished_at": "",
            "exit_code": 0,
            "error": "",
            "oom_killed": False,
            "restart_count": self.restart_count,
            "health": health,
        }
        if first:
            self.first_record = record
        else:
            self.state.update(cfg.container_id, **record)
        return None

    def _wait_pid(self, pid: int) -> int:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                return os.waitstatus_to_exitcode(status)
            except InterruptedError:
                continue
            except ChildProcessError:
                return 0

    def _drain_discard(self) -> str:
        """Read what the runtime wrote to the container's stdio before failing (not the app's)."""
        text = b""
        for fd in list(self.out_fds):
            os.set_blocking(fd, False)
            with contextlib.suppress(OSError):
                text += os.read(fd, 65536)
        return text.decode("utf-8", "replace").strip().splitlines()[-1] if text.strip() else ""

    def _close_stdio(self) -> None:
        for fd in list(self.out_fds):
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        self.out_fds = {}
        if self.stdin_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.stdin_fd)
            self.stdin_fd = -1
        self.stdin_buf.clear()
        self.master = -1

    def _start_failed(self, err: Exception) -> None:
        """The container never ran: tell the CLI why (it records it and cleans up)."""
        with contextlib.suppress(Exception):
            self._runtime_delete()
        self._sync({"error": str(err), "exit_code": getattr(err, "exit_code", 125)})
        for c in self.clients:
            c.sock.close()

    # -- event loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            timeout = self._next_timeout()
            for key, mask in self.sel.select(timeout):
                kind, arg = key.data
                if kind == "listen":
                    self._accept()
                elif kind == "wake":
                    with contextlib.suppress(OSError):
                        self.wake_r.recv(4096)
                elif kind == "out":
                    self._read_output(arg)
                elif kind == "client":
                    if mask & selectors.EVENT_READ:
                        self._read_client(arg)
                    if mask & selectors.EVENT_WRITE and not arg.closed:
                        self._flush_client(arg)
                elif kind == "stdin":
                    self._flush_stdin()
                elif kind == "health":
                    self._read_health()
            self._reap()
            now = time.monotonic()
            if (
                self.health_next is not None
                and now >= self.health_next
                and self.health_proc is None
                and self.pid
                and self.ctr_status is None
            ):
                self._start_health()
            if self.health_proc is not None and now >= self.health_proc["deadline"]:
                self._timeout_health()
            if self.reload and self.restart_at is not None:
                self.reload = False
                c = self.state.find(self.cfg.container_id)
                if c is None or c.stop_requested:
                    self._final_exit(stopped=True)
                    return
            drained = not self.out_fds or (self.drain_deadline is not None and now >= self.drain_deadline)
            if self.ctr_status is not None and self.restart_at is None and drained and self._after_exit():
                return
            if self.restart_at is not None and now >= self.restart_at:
                self.restart_at = None
                c = self.state.find(self.cfg.container_id)
                if c is None or c.stop_requested or c.status not in ("restarting",):
                    self._final_exit(stopped=True)
                    return
                self.restart_count += 1
                err = self._network_restart("up") or self._start_container()
                if err is not None:
                    self._record_failed_restart(err)
                    return

    def _next_timeout(self) -> float | None:
        deadlines = [
            d
            for d in (
                self.health_next if self.ctr_status is None else None,
                self.health_proc["deadline"] if self.health_proc else None,
                self.drain_deadline if self.ctr_status is not None else None,
                self.restart_at,
            )
            if d is not None
        ]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            if pid == self.pid and self.ctr_status is None:
                self.ctr_status = os.waitstatus_to_exitcode(status)
                self.drain_deadline = time.monotonic() + _DRAIN_TIMEOUT
                if self.stdin_fd >= 0:
                    self._close_stdin()
            elif self.health_proc is not None and pid == self.health_proc["pid"]:
                self.health_proc["status"] = os.waitstatus_to_exitcode(status)
                self._maybe_finish_health()

    # -- clients ----------------------------------------------------------------------------------
    def _add_client(self, c: Client) -> None:
        self.clients.append(c)
        self.sel.register(c.sock, selectors.EVENT_READ, ("client", c))

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            self._add_client(Client(sock, stdin=False, stdout=False, stderr=False, hello=False))

    def _drop_client(self, c: Client) -> None:
        if c.closed:
            return
        c.closed = True
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(c.sock)
        c.sock.close()
        self.clients.remove(c)
        if c.initial and c.stdin and self.cfg.stdin_once and self.stdin_fd >= 0:
            self.stdin_eof = True
            if not self.stdin_buf:
                self._close_stdin()

    def _read_client(self, c: Client) -> None:
        try:
            data = c.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client(c)
            return
        for kind, payload in c.reader.feed(data):
            if kind == proto.HELLO:
                req = json.loads(payload or b"{}")
                c.stdin = bool(req.get("stdin")) and self.cfg.open_stdin
                c.stdout = bool(req.get("stdout"))
                c.stderr = bool(req.get("stderr"))
                c.hello = True
            elif (kind == proto.STDIN and c.stdin and self.stdin_fd >= 0 and not self.stdin_eof) or (
                kind == proto.STDIN and c.stdin and self.master >= 0
            ):
                self.stdin_buf += payload
                self._flush_stdin()
            elif kind == proto.STDIN_EOF and c.stdin:
                if self.stdin_fd >= 0:
                    self.stdin_eof = True
                    if not self.stdin_buf:
                        self._close_stdin()
            elif kind == proto.RESIZE:
                req = json.loads(payload)
                self._resize(int(req["h"]), int(req["w"]))
            elif kind == proto.SIGNAL:
                req = json.loads(payload)
                self._signal_container(int(req["signal"]))

    def _send(self, c: Client, data: bytes) -> None:
        if c.closed:
            return
        if not c.out:
            try:
                n = c.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._drop_client(c)
                return
            data = data[n:]
            if not data:
                return
        c.out += data
        with contextlib.suppress(KeyError, ValueError):
            self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, ("client", c))

    def _flush_client(self, c: Client) -> None:
        try:
            n = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop_client(c)
            return
        del c.out[:n]
        if not c.out:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.modify(c.sock, selectors.EVENT_READ, ("client", c))
        self._maybe_resume_output()

    def _flush_all_clients(self, timeout: float = 5.0) -> None:
        """Block until queued output reached every client (before EXIT and exiting)."""
        deadline = time.monotonic() + timeout
        for c in list(self.clients):
            if not c.out:
                continue
            c.sock.setblocking(True)
            c.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                c.sock.sendall(bytes(c.out))
                c.out.clear()
            except OSError:
                self._drop_client(c)
                continue
            c.sock.setblocking(False)

    # -- container I/O -------------------------------------------------------------------------------
    def _read_output(self, fd: int) -> None:
        stream = self.out_fds.get(fd)
        if stream is None:
            return
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno not in (errno.EIO, errno.EBADF):  # EIO: the pty's last user is gone
                __import__("traceback").print_exc()
            data = b""
        if not data:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(fd)
            os.close(fd)
            if fd == self.master:
                self.master = -1
            del self.out_fds[fd]
            return
        if self.log is not None:
            self.log.write(stream, data)
        kind = proto.STDOUT if stream == "stdout" else proto.STDERR
        framed = None
        blocked = False
        for c in list(self.clients):
            if c.hello and (c.stdout if stream == "stdout" else c.stderr):
                framed = framed or proto.frame(kind, data)
                self._send(c, framed)
                if len(c.out) > _BACKPRESSURE:
                    blocked = True
        if blocked:
            for ofd in self.out_fds:
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(ofd)

    def _maybe_resume_output(self) -> None:
        if any(len(c.out) > _BACKPRESSURE for c in self.clients):
            return
        for fd in self.out_fds:
            try:
                self.sel.get_key(fd)
            except KeyError:
                self.sel.register(fd, selectors.EVENT_READ, ("out", fd))

    def _flush_stdin(self) -> None:
        target = self.stdin_fd if self.stdin_fd >= 0 else self.master
        if target < 0:
            self.stdin_buf.clear()
            return
        while self.stdin_buf:
            try:
                n = os.write(target, self.stdin_buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.stdin_buf.clear()
                if target == self.stdin_fd:
                    self._close_stdin()
                return
            del self.stdin_buf[:n]
        want_write = bool(self.stdin_buf)
        try:
            key = self.sel.get_key(target)
        except KeyError:
            key = None
        if target == self.stdin_fd:
            if want_write and key is None:
                self.sel.register(target, selectors.EVENT_WRITE, ("stdin", None))
            elif not want_write and key is not None:
                self.sel.unregister(target)
            if not self.stdin_buf and self.stdin_eof:
                self._close_stdin()

    def _close_stdin(self) -> None:
        if self.stdin_fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.stdin_fd)
            with contextlib.suppress(OSError):
                os.close(self.stdin_fd)
            self.stdin_fd = -1
        self.stdin_buf.clear()

    def _resize(self, h: int, w: int) -> None:
        if self.master < 0:
            self.pending_size = (h, w)
            return
        import termios

        with contextlib.suppress(OSError):
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", h, w, 0, 0))

    def _signal_container(self, sig: int) -> None:
        if not self.pid or self.ctr_status is not None:
            return
        self._runtime_call("kill", self.cfg.container_id, str(sig))

    def _runtime_call(self, *args: str) -> int:
        """A short runtime command (kill, delete) with stdin/stdout on /dev/null."""
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            pid = spawn_runtime(
                self.cfg.runtime_path, self._runtime_argv(*args), (devnull, devnull, 2), self.inproc
            )
        finally:
            os.close(devnull)
        return self._wait_pid(pid)

    def _runtime_delete(self) -> None:
        self._runtime_call("delete", "--force", self.cfg.container_id)

    # -- exit -------------------------------------------------------------------------------------
    def _after_exit(self) -> bool:
        """The container exited and its output is drained. True when the monitor is done."""
        from pallet.engine.procs import now_rfc3339

        for fd in list(self.out_fds):
            self._read_output(fd)  # whatever is left within the deadline
        self._close_stdio()
        self.drain_deadline = None
        if self.log is not None:
            self.log.flush()
        status = self.ctr_status if self.ctr_status is not None else 255
        exit_code = status if status >= 0 else 128 - status
        trace("monitor: container exited, output drained")
        oom = cgroups.oom_kills(self.cfg.cgroups_path) > 0  # before delete removes the cgroup
        if self.health_proc is not None:
            with contextlib.suppress(OSError):
                os.kill(self.health_proc["pid"], signal.SIGKILL)
        self.health_next = None
        if self.cfg.auto_remove and not self.cfg.restart_name and self._initial_client_pid():
            # run --rm, attached: the CLI removes the container while we delete the runtime's
            # state (the two overlap); it waits for us to finish before it returns
            self._hand_removal_to_client(exit_code, oom, now_rfc3339(), runtime_delete=True)
            return True
        self._runtime_delete()
        trace("monitor: runtime delete done")
        ran_for = time.monotonic() - self.started_mono
        if self.cfg.restart_name:
            c = self.state.find(self.cfg.container_id)
            stop_requested = (
                c is None or c.stop_requested or c.status not in ("starting", "running", "paused", "stopping")
            )
        else:
            stop_requested = True  # no policy: nothing to decide, and no database to open
        restart = False
        if not stop_requested:
            policy = self.cfg.restart_name
            if policy in ("always", "unless-stopped"):
                restart = True
            elif policy == "on-failure":
                restart = exit_code != 0 and (
                    self.cfg.restart_max == 0 or self.restart_count < self.cfg.restart_max
                )
        finished = now_rfc3339()
        self.ctr_status = None
        self.pid = 0
        if restart:
            if ran_for >= 10:
                self.backoff = 0
            self.backoff = 0.1 if not self.backoff else min(self.backoff * 2, 60.0)
            ok = self.state.transition(
                self.cfg.container_id,
                ("starting", "running", "paused", "stopping"),
                status="restarting",
                exit_code=exit_code,
                finished_at=finished,
                oom_killed=oom,
                pid=0,
                started_at=self.started_at,
                restart_count=self.restart_count,
            )
            if ok:
                self._network_restart("down")
                self._broadcast_exit({"ExitCode": exit_code, "OOMKilled": oom, "Restarting": True})
                self.restart_at = time.monotonic() + self.backoff
                return False
        self._final_exit(stopped=False, exit_code=exit_code, oom=oom, finished=finished)
        return True

    def _network_restart(self, phase: str) -> Exception | None:
        """Restart policies take the container off its networks and set them up again."""
        from pallet.engine import networking

        err = networking.monitor_restart(self.cfg, phase)
        if err is not None and phase == "down":
            print(f"network teardown of {self.cfg.container_id} failed: {err}", file=sys.stderr)
            return None
        return err

    def _final_exit(
        self, *, stopped: bool, exit_code: int | None = None, oom: bool = False, finished: str | None = None
    ) -> None:
        cid = self.cfg.container_id
        if self.cfg.auto_remove and exit_code is not None and not stopped:
            # an attached CLI (run --rm) records the exit and removes the container itself, as
            # podman's does: it has the storage code loaded, which this interpreter would import
            owner = self._initial_client_pid()
            if owner:
                self._hand_removal_to_client(exit_code, oom, finished or now_rfc3339())
                return
        from pallet.engine.db import ACTIVE

        c = self.state.find(cid)
        if exit_code is None:
            exit_code = c.exit_code if c is not None else 0
            oom = c.oom_killed if c is not None else False
        finished = finished or (c.finished_at if c is not None and c.finished_at else now_rfc3339())
        removed = False
        if self.cfg.auto_remove:
            if self.state.transition(
                cid,
                ACTIVE,
                status="removing",
                pid=0,
                exit_code=exit_code,
                started_at=self.started_at or (c.started_at if c is not None else ""),
                finished_at=finished,
                oom_killed=oom,
                monitor_pid=os.getpid(),
                monitor_start=proc_start_time(os.getpid()),
            ):
                self._finish_cleanup(remove=True)
                removed = True
        else:
            self.state.transition(
                cid,
                ACTIVE,
                status="exited",
                pid=0,
                pid_start=0,
                exit_code=exit_code,
                started_at=self.started_at or (c.started_at if c is not None else ""),
                finished_at=finished,
                oom_killed=oom,
                monitor_pid=0,
                monitor_start=0,
                health=self._final_health(),
            )
            self._finish_cleanup(remove=False)
        trace("monitor: cleanup done")
        self._broadcast_exit({"ExitCode": exit_code, "OOMKilled": oom, "Removed": removed})
        self._flush_all_clients()
        for c2 in list(self.clients):
            self._drop_client(c2)
        if self.log is not None:
            self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.cfg.bundle, "attach"))

    def _initial_client_pid(self) -> int:
        """The pid of the CLI attached since the start (``run`` without -d), 0 if none is left."""
        for c in self.clients:
            if c.initial and not c.closed:
                try:
                    cred = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                except OSError:
                    return 0
                pid = struct.unpack("3i", cred)[0]
                return pid if alive(pid, 0) else 0
        return 0

    def _hand_removal_to_client(self, exit_code: int, oom: bool, finished: str, *,
                                runtime_delete: bool = False) -> None:
        """Tell the attached CLI to record the exit and remove the container; when it is gone
        (its socket closed), finish whatever it did not do. ``runtime_delete``: the runtime's
        state is still there; delete it while the CLI removes the rest (it then leaves that to us)."""
        if self.log is not None:
            self.log.close()
            self.log = None
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.cfg.bundle, "attach"))
        info = {
            "ExitCode": exit_code,
            "OOMKilled": oom,
            "Cleanup": "remove",
            "StartedAt": self.started_at,
            "FinishedAt": finished,
            "RuntimeDelete": runtime_delete,
        }
        framed = proto.jframe(proto.EXIT, info)
        for c in list(self.clients):
            if c.hello:
                self._send(c, framed)
        self._flush_all_clients()
        initial = [c for c in self.clients if c.initial and not c.closed]
        for c in list(self.clients):
            if not c.initial:
                self._drop_client(c)
        trace("monitor: removal handed to the client")
        if runtime_delete:
            self._runtime_delete()
            trace("monitor: runtime delete done")
        done = False
        for c in initial:  # wait until the CLI says DONE, or is gone
            c.sock.setblocking(True)
            c.sock.settimeout(300)
            with contextlib.suppress(OSError):
                while not done:
                    data = c.sock.recv(4096)
                    if not data:
                        break
                    done = any(kind == proto.DONE for kind, _ in c.reader.feed(data))
            if not done:
                self._drop_client(c)
        if done:
            os._exit(0)  # the CLI waits for our end of the socket to close: exit, do not linger
        from pallet.engine.db import ACTIVE

        cid = self.cfg.container_id
        row = self.state.find(cid)
        if row is None:
            return
        me = os.getpid()
        if row.status in ACTIVE:  # the CLI died before recording anything
            taken = self.state.transition(
                cid,
                ACTIVE,
                status="removing",
                pid=0,
                exit_code=exit_code,
                oom_killed=oom,
                started_at=self.started_at,
                finished_at=finished,
                monitor_pid=me,
                monitor_start=proc_start_time(me),
            )
        else:  # it died half-way through the removal
            taken = self.state.transition(
                cid, ("removing",), monitor_pid=me, monitor_start=proc_start_time(me)
            )
        if taken:
            self._finish_cleanup(remove=True)

    def _final_health(self) -> dict[str, Any] | None:
        if self.health is None:
            return None
        h = dict(self.health)
        if h.get("Status") == "starting":
            h["Status"] = "unhealthy" if h.get("FailingStreak") else "starting"
        return h

    def _finish_cleanup(self, *, remove: bool) -> None:
        """Release (or, for --rm, remove) the container's storage; never raises."""
        try:
            from pallet.engine import containers

            ctx = self.cfg.context()
            if remove:
                containers._remove_storage(ctx, self.cfg.container_id, remove_volumes=True, delete_row=True)
            else:
                containers._release_storage(ctx, self.cfg.container_id)
        except Exception:
            __import__("traceback").print_exc()

    def _record_failed_restart(self, err: Exception) -> None:
        from pallet.engine.procs import now_rfc3339

        code = getattr(err, "exit_code", 125)
        self.state.transition(
            self.cfg.container_id,
            ("restarting",),
            status="exited",
            pid=0,
            exit_code=code,
            error=str(err),
            finished_at=now_rfc3339(),
            monitor_pid=0,
        )
        self._finish_cleanup(remove=False)
        self._broadcast_exit({"ExitCode": code, "Error": str(err)})
        self._flush_all_clients()

    def _broadcast_exit(self, info: dict[str, Any]) -> None:
        framed = proto.jframe(proto.EXIT, info)
        for c in list(self.clients):
            if c.hello:
                self._send(c, framed)
        self._flush_all_clients()
        for c in list(self.clients):
            if c.initial:
                self._drop_client(c)

    # -- healthchecks ------------------------------------------------------------------------------
    def _health_enabled(self) -> bool:
        hc = self.cfg.healthcheck
        return bool(hc and hc.get("Test") and hc["Test"][0] not in ("NONE",))

    def _hc_interval(self) -> float:
        return (
            (self.cfg.healthcheck or {}).get("Interval") / 1e9
            if (self.cfg.healthcheck or {}).get("Interval")
            else 30.0
        )

    def _hc_timeout(self) -> float:
        t = (self.cfg.healthcheck or {}).get("Timeout")
        return t / 1e9 if t else 30.0

    def _start_health(self) -> None:
        hc = self.cfg.healthcheck or {}
        test = list(hc.get("Test") or [])
        args = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        try:
            with open(os.path.join(self.cfg.bundle, "config.json")) as f:
                proc = dict(json.load(f)["process"])
        except (OSError, ValueError, KeyError):
            self.health_next = time.monotonic() + self._hc_interval()
            return
        proc["args"] = args
        proc["terminal"] = False
        proc.pop("consoleSize", None)
        pfile = os.path.join(self.cfg.bundle, "health-process.json")
        with open(pfile, "w") as f:
            json.dump(proc, f)
        r, w = os.pipe2(os.O_CLOEXEC)
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            pid = spawn_runtime(
                self.cfg.runtime_path,
                self._runtime_argv("exec", "--process", pfile, self.cfg.container_id),
                (devnull, w, w),
                self.inproc,
            )
        finally:
            os.close(w)
            os.close(devnull)
        os.set_blocking(r, False)
        self.health_started = time.time()
        self.health_proc = {
            "pid": pid,
            "fd": r,
            "out": bytearray(),
            "status": None,
            "eof": False,
            "deadline": time.monotonic() + self._hc_timeout(),
            "timed_out": False,
        }
        self.sel.register(r, selectors.EVENT_READ, ("health", None))
        self.health_next = None

    def _read_health(self) -> None:
        hp = self.health_proc
        if hp is None:
            return
        try:
            data = os.read(hp["fd"], 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            if len(hp["out"]) < 4096:
                hp["out"] += data[: 4096 - len(hp["out"])]
            return
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(hp["fd"])
        os.close(hp["fd"])
        hp["eof"] = True
        self._maybe_finish_health()

    def _timeout_health(self) -> None:
        hp = self.health_proc
        if hp is None or hp["timed_out"]:
            return
        hp["timed_out"] = True
        hp["deadline"] = time.monotonic() + 3600
        with contextlib.suppress(OSError):
            os.kill(hp["pid"], signal.SIGKILL)
        self._record_health(-1, f"Health check exceeded timeout ({self._hc_timeout():g}s)")

    def _maybe_finish_health(self) -> None:
        hp = self.health_proc
        if hp is None or hp["status"] is None or not hp["eof"]:
            return
        self.health_proc = None
        if not hp["timed_out"]:
            self._record_health(hp["status"], hp["out"].decode("utf-8", "replace"))
        if self.pid and self.ctr_status is None:
            self.health_next = time.monotonic() + self._hc_interval()

    def _record_health(self, code: int, output: str) -> None:
        from pallet.engine.procs import now_rfc3339

        hc = self.cfg.healthcheck or {}
        h = self.health or {"Status": "starting", "FailingStreak": 0, "Log": []}
        start = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.health_started))
            + f".{int((self.health_started % 1) * 1e9):09d}Z"
        )
        h["Log"] = [
            *(h.get("Log") or [])[-4:],
            {"Start": start, "End": now_rfc3339(), "ExitCode": code, "Output": output},
        ]
        retries = hc.get("Retries") or 3
        start_period = (hc.get("StartPeriod") or 0) / 1e9
        in_start = time.monotonic() - self.started_mono < start_period
        if code == 0:
            h["Status"] = "healthy"
            h["FailingStreak"] = 0
        elif not (in_start and h.get("Status") == "starting"):
            h["FailingStreak"] = int(h.get("FailingStreak", 0)) + 1
            if h["FailingStreak"] >= retries:
                h["Status"] = "unhealthy"
        self.health = h
        with contextlib.suppress(Exception):
            self.state.update(self.cfg.container_id, health=h)
