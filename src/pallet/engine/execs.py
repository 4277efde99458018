"""``exec``: run another process in a running container, through the runtime's ``exec``.

The process inherits the container's process settings from its config.json (capabilities,
rlimits, seccomp, no-new-privileges, environment), with the user's overrides. Without a
terminal the runtime runs in the foreground on our stdio. With ``-t`` the runtime is told to
hand the pty master to our console socket (``--console-socket``), so the terminal is ours:
raw mode, resize on SIGWINCH, and the exit status read with ``waitpid`` as the process's
subreaper — the same path for every runc-compatible runtime.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
from typing import TYPE_CHECKING

from pallet.engine import containers as C
from pallet.engine import security, users
from pallet.engine.errors import ContainerStateError
from pallet.engine.options import expand_env, merge_env, parse_env_file
from pallet.engine.runtime import classify, last_error
from pallet.errors import EngineError, UsageError

if TYPE_CHECKING:
    from pallet.context import Context


def exec_(
    ref: str,
    command: list[str],
    ctx: Context | None = None,
    *,
    detach: bool = False,
    interactive: bool = False,
    tty: bool = False,
    user: str | None = None,
    workdir: str | None = None,
    env: list[str] | tuple[str, ...] = (),
    env_files: list[str] | tuple[str, ...] = (),
    privileged: bool = False,
    stdin_fd: int = 0,
    stdout_fd: int = 1,
    stderr_fd: int = 2,
    detach_keys: bytes | None = None,
) -> int | None:
    """Run ``command`` in the container; its exit status (None with ``detach``).

    A command that does not exist raises CommandNotFound (127), one that cannot be executed
    CommandNotExecutable (126), as docker exec reports them.
    """
    ctx = C._ctx(ctx)
    if not command:
        raise UsageError("exec needs a command to run")
    c = C.get(ref, ctx)
    if c.status == "paused":
        raise ContainerStateError(f"container {c.name} is paused, unpause the container before exec")
    if c.status != "running":
        raise ContainerStateError(f"container {c.name} is not running")
    bundle = C.bundle_dir(ctx, c.id)
    with open(bundle / "config.json") as f:
        proc = dict(json.load(f)["process"])
    proc["args"] = list(command)
    proc["terminal"] = tty
    proc.pop("consoleSize", None)
    extra: list[str] = []
    for path in env_files:
        extra += parse_env_file(path)
    extra += list(env)
    proc["env"] = merge_env(list(proc.get("env") or []), expand_env(extra))
    if workdir is not None:
        if not workdir.startswith("/"):
            raise UsageError(f"the working directory {workdir!r} is invalid: it needs to be an absolute path")
        proc["cwd"] = workdir
    if user:
        u = users.resolve(c.rootfs or "/nonexistent", user)
        proc["user"] = {"uid": u.uid, "gid": u.gid}
        if u.additional_gids:
            proc["user"]["additionalGids"] = list(u.additional_gids)
    if privileged:
        caps = list(security.host_caps())
        proc["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
    if tty and os.isatty(stdin_fd):
        from pallet.engine.attach import terminal_size

        size = terminal_size(stdin_fd)
        if size:
            proc["consoleSize"] = {"height": size[0], "width": size[1]}
    token = secrets.token_hex(6)
    pfile = bundle / f"exec-{token}.json"
    log = str(bundle / f"exec-{token}.log")
    pfile.write_text(json.dumps(proc))
    runtime = C._runtime(ctx, c)
    try:
        if detach:
            res = subprocess.run(
                runtime.argv("exec", "--detach", "--process", str(pfile), c.id, log=log),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if res.returncode != 0:
                raise _failed(log, res.stderr)
            return None
        if tty:
            return _exec_tty(
                runtime,
                c.id,
                str(pfile),
                log,
                str(bundle),
                stdin_fd if interactive else None,
                stdout_fd,
                detach_keys,
            )
        return _exec_pipes(
            runtime,
            c.id,
            str(pfile),
            log,
            str(bundle),
            stdin_fd if interactive else None,
            stdout_fd,
            stderr_fd,
        )
    finally:
        with contextlib.suppress(OSError):
            os.unlink(pfile)
        with contextlib.suppress(OSError):
            os.unlink(log)


def _failed(log: str, stderr: bytes) -> EngineError:
    """A failed ``runtime exec`` as docker reports it: the runtime's own error from its JSON log,
    else what it wrote to stderr."""
    return classify(last_error(log) or stderr.decode("utf-8", "replace").strip())


def _subreaper() -> None:
    from pallet.libc import set_child_subreaper

    set_child_subreaper()


def _wait_exit(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0
        code = os.waitstatus_to_exitcode(status)
        return code if code >= 0 else 128 - code


def _exec_pipes(
    runtime,
    container_id: str,
    pfile: str,
    log: str,
    bundle: str,
    stdin_fd: int | None,
    stdout_fd: int,
    stderr_fd: int,
) -> int:
    """Detached exec on our stdin/stdout and a stderr pipe; as its subreaper, we wait for it.

    stderr goes through a pipe so that when the runtime fails, its own error message (written
    to the same stderr) is dropped and reported once, as an error with docker's exit status.
    """
    _subreaper()
    pid_path = os.path.join(bundle, f"exec-{os.getpid()}-{secrets.token_hex(4)}.pid")
    err_r, err_w = os.pipe()
    try:
        proc = subprocess.Popen(
            runtime.argv(
                "exec", "--detach", "--pid-file", pid_path, "--process", pfile, container_id, log=log
            ),
            stdin=stdin_fd if stdin_fd is not None else subprocess.DEVNULL,
            stdout=stdout_fd,
            stderr=err_w,
        )
    except BaseException:
        os.close(err_r)
        os.close(err_w)
        raise
    os.close(err_w)
    while True:
        try:
            rc = proc.wait()
            break
        except KeyboardInterrupt:
            continue
    if rc != 0:
        data = b""
        os.set_blocking(err_r, False)
        with contextlib.suppress(OSError):
            data = os.read(err_r, 65536)
        os.close(err_r)
        raise _failed(log, data)
    try:
        with open(pid_path) as f:
            pid = int(f.read().strip())
    finally:
        with contextlib.suppress(OSError):
            os.unlink(pid_path)
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
    old = {s: signal.signal(s, lambda signum, _f: _forward(pid, signum)) for s in forwarded}
    try:
        while True:
            try:
                chunk = os.read(err_r, 65536)
            except InterruptedError:
                continue
            if not chunk:
                break
            _write_all(stderr_fd, chunk)
        return _wait_exit(pid)
    finally:
        os.close(err_r)
        for s, h in old.items():
            signal.signal(s, h)


def _forward(pid: int, signum: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signum)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BrokenPipeError:
            return


def _exec_tty(
    runtime,
    container_id: str,
    pfile: str,
    log: str,
    bundle: str,
    stdin_fd: int | None,
    stdout_fd: int,
    detach_keys: bytes | None,
) -> int | None:
    import fcntl
    import selectors
    import struct
    import termios

    from pallet.engine.attach import DEFAULT_DETACH_KEYS, bind, terminal_size

    _subreaper()
    sock_path = os.path.join(bundle, f"exec-{os.getpid()}.sock")
    pid_path = os.path.join(bundle, f"exec-{os.getpid()}.pid")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    bind(listener, sock_path)
    listener.listen(1)
    arg_path = sock_path
    dfd = -1
    if len(sock_path.encode()) >= 100:
        dfd = os.open(bundle, os.O_PATH | os.O_DIRECTORY)
        arg_path = f"/proc/{os.getpid()}/fd/{dfd}/{os.path.basename(sock_path)}"
    try:
        res = subprocess.run(
            runtime.argv(
                "exec",
                "--detach",
                "--tty",
                "--console-socket",
                arg_path,
                "--pid-file",
                pid_path,
                "--process",
                pfile,
                container_id,
                log=log,
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(dfd,) if dfd >= 0 else (),
        )
        if res.returncode != 0:
            raise _failed(log, res.stderr)
        listener.settimeout(10)
        conn, _ = listener.accept()
        with conn:
            _msg, fds, _f, _a = socket.recv_fds(conn, 4096, 4)
        master = fds[0]
        with open(pid_path) as f:
            pid = int(f.read().strip())
    finally:
        listener.close()
        for p in (sock_path, pid_path):
            with contextlib.suppress(OSError):
                os.unlink(p)
        if dfd >= 0:
            os.close(dfd)

    keys = DEFAULT_DETACH_KEYS if detach_keys is None else detach_keys
    saved = None
    if stdin_fd is not None and os.isatty(stdin_fd):
        import tty as ttymod

        saved = termios.tcgetattr(stdin_fd)
        ttymod.setraw(stdin_fd)
        size = terminal_size(stdin_fd)
        if size:
            with contextlib.suppress(OSError):
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    old_winch = signal.signal(signal.SIGWINCH, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ, "master")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    if stdin_fd is not None:
        with contextlib.suppress(ValueError, OSError):
            sel.register(stdin_fd, selectors.EVENT_READ, "stdin")
    matched = 0
    detached = False
    try:
        done = False
        while not done:
            for key, _ in sel.select():
                if key.data == "wake":
                    with contextlib.suppress(OSError):
                        wake_r.recv(512)
                    if stdin_fd is not None and os.isatty(stdin_fd):
                        size = terminal_size(stdin_fd)
                        if size:
                            with contextlib.suppress(OSError):
                                fcntl.ioctl(
                                    master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0)
                                )
                elif key.data == "stdin":
                    data = os.read(stdin_fd, 65536)  # type: ignore[arg-type]
                    if not data:
                        sel.unregister(stdin_fd)  # type: ignore[arg-type]
                        os.write(master, b"\x04")
                        continue
                    out = bytearray()
                    for b in data:
                        if keys and b == keys[matched]:
                            matched += 1
                            if matched == len(keys):
                                detached = True
                                done = True
                                break
                            continue
                        if matched:
                            out += keys[:matched]
                            matched = 0
                        out.append(b)
                    if out:
                        os.write(master, bytes(out))
                else:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        done = True
                        break
                    os.write(stdout_fd, data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)  # type: ignore[arg-type]
        signal.signal(signal.SIGWINCH, old_winch)
        signal.set_wakeup_fd(old_wakeup)
        sel.close()
        wake_r.close()
        wake_w.close()
        os.close(master)
    if detached:
        return None
    return _wait_exit(pid)
