"""``exec``: run another process inside a running container.

runtime → intermediate (born in the container's cgroup2 cgroup, it joins the v1 hierarchies
itself, then enters the container's namespaces from /proc/<init>/ns/*, and its root from
/proc/<init>/root) → the process, which sets up user, caps, rlimits, seccomp and execs.
Success is the close-on-exec channel reaching EOF; failure is a message naming the step.
No fd or cwd of the host crosses over (CVE-2024-21626).
"""

from __future__ import annotations

import os

from pallet.errors import RuntimeFailure
from pallet.runtime import cgroups, spec
from pallet.runtime import syscalls as sc
from pallet.runtime.channel import Channel
from pallet.runtime.lifecycle.create import (
    _reap,
    _report,
    _setgroups_denied,
    compile_seccomp,
    fork_in_cgroup,
    send_seccomp_listener,
)
from pallet.runtime.namespaces import ORDER
from pallet.runtime.state import Container, atomic_write

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ExecOptions:
    def __init__(
        self,
        detach: bool = False,
        pid_file: str | None = None,
        console_socket: str | None = None,
        preserve_fds: int = 0,
        ignore_paused: bool = False,
    ) -> None:
        self.detach, self.pid_file, self.console_socket = detach, pid_file, console_socket
        self.preserve_fds, self.ignore_paused = preserve_fds, ignore_paused


def build_process(
    c: Container,
    process_file: str | None,
    args: list[str],
    *,
    tty: bool | None = None,
    cwd: str | None = None,
    env: list[str] | None = None,
    user: str | None = None,
    additional_gids: list[int] | None = None,
    caps: list[str] | None = None,
    no_new_privs: bool = False,
    apparmor: str | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """The process to run: ``--process`` JSON, or the container's process with overrides (as runc)."""
    if process_file:
        from pallet.runtime import jsonio

        try:
            with open(process_file, "rb") as f:
                proc = jsonio.loads(f.read())
        except OSError as e:
            raise RuntimeFailure(f"reading process file {process_file}: {e.strerror}") from None
        except ValueError as e:
            raise RuntimeFailure(f"process file {process_file} is not valid JSON: {e}") from None
        spec.validate_process(proc, where="process.json")
        return proc
    base = dict((c.data.get("config") or {}).get("process") or {})
    if not args:
        raise RuntimeFailure("exec: no command given (pass arguments or --process)")
    proc = {**base, "args": args, "terminal": bool(tty)}
    proc["env"] = list(base.get("env") or []) + list(env or [])
    if cwd:
        proc["cwd"] = cwd
    if user:
        u, _, g = user.partition(":")
        if not u.isdigit() or (g and not g.isdigit()):
            raise RuntimeFailure(f"--user {user!r}: expected UID[:GID] as numbers")
        proc["user"] = {"uid": int(u), "gid": int(g) if g else 0}
    if additional_gids:
        proc["user"] = {**(proc.get("user") or {}), "additionalGids": additional_gids}
    if caps:
        cs = {k: list(v) for k, v in (proc.get("capabilities") or {}).items()}
        for k in ("bounding", "effective", "permitted", "ambient", "inheritable"):
            if k == "inheritable" and k not in cs:
                continue
            cs.setdefault(k, [])
            cs[k] += [x for x in caps if x not in cs[k]]
        proc["capabilities"] = cs
    if no_new_privs:
        proc["noNewPrivileges"] = True
    if apparmor:
        proc["apparmorProfile"] = apparmor
    if label:
        proc["selinuxLabel"] = label
    spec.validate_process(proc)
    return proc


def exec_process(c: Container, proc: dict[str, Any], opts: ExecOptions) -> int:
    status = c.status()
    if status == "stopped":
        raise RuntimeFailure(f"cannot exec in a stopped container {c.id}")
    if status == "paused" and not opts.ignore_paused:
        raise RuntimeFailure(f"cannot exec in a paused container {c.id} (use --ignore-paused)")
    cfg = c.data.get("config") or {}
    linux = cfg.get("linux") or {}
    if proc.get("apparmorProfile") or proc.get("selinuxLabel"):
        from pallet.runtime import lsm

        lsm.check(proc.get("apparmorProfile") or "", proc.get("selinuxLabel") or "")
    if isinstance(proc.get("capabilities"), dict):
        from pallet.runtime import capabilities

        # entering a user namespace (setns) starts with a full bounding set in it
        proc["capabilities"] = capabilities.grantable(proc["capabilities"], "user" in spec.namespaces(cfg))
    filt = compile_seccomp(linux, c.root)
    mgr = cgroups.manager(linux.get("cgroupsPath"), c.id)
    sc.prctl(sc.PR_SET_DUMPABLE, 0)
    tty_proxy = None
    if proc.get("terminal") and not opts.console_socket:
        if opts.detach:
            raise RuntimeFailure("cannot allocate tty if runtime will detach without setting console socket")
        from pallet.runtime.lifecycle.run import _TTYProxy

        tty_proxy = _TTYProxy()
        opts.console_socket = tty_proxy.path
    if not opts.detach:
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    pid = c.pid
    types = [t for t in ORDER if t in spec.namespaces(cfg)]
    ns_fds: list[tuple[str, int]] = []
    try:
        for t in types:
            p = f"/proc/{pid}/ns/{spec.NS_PROC_NAME[t]}"
            if os.readlink(p) == os.readlink(f"/proc/self/ns/{spec.NS_PROC_NAME[t]}"):
                continue
            ns_fds.append((t, os.open(p, os.O_RDONLY | os.O_CLOEXEC)))
        root_fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        for _, fd in ns_fds:
            os.close(fd)
        raise RuntimeFailure(f"container {c.id}: opening its namespaces: {e.strerror}") from None
    console_fd = -1
    if proc.get("terminal"):
        from pallet.runtime import console

        console_fd = console.connect(opts.console_socket or "")
    from pallet.runtime import capabilities, namespaces, process  # noqa: F401 - needed after chroot
    from pallet.runtime.lifecycle.create import _preload

    _preload({**cfg, "process": proc})
    capabilities.last_cap()
    ch = Channel()
    child = 0
    try:
        inter, in_unified = fork_in_cgroup(mgr)
        if inter == 0:
            try:
                ch.child_side()
                mgr.join(unified=not in_unified)
                _intermediate(ch, ns_fds, root_fd, console_fd, proc, filt, opts)
            except BaseException as e:
                _report(ch, e)
            os._exit(1)
        ch.parent_side()
        try:
            # "pid" from the intermediate; from the process only "seccomp" (a NOTIFY listener to
            # fetch) or an error. EOF (the channel is close-on-exec) means execve succeeded.
            reaped = False
            listener_fd = -1
            while True:
                try:
                    tag, payload = ch.recv_up("exec process")
                except RuntimeFailure as e:
                    if child and "without reporting" in str(e):
                        break
                    raise
                if tag == "pid":
                    child = int(payload)
                    _reap(inter)
                    reaped = True
                elif tag == "seccomp":
                    listener_fd = int(payload.partition(" ")[2])
                if child and listener_fd >= 0:
                    send_seccomp_listener(filt, child, listener_fd, c.oci_state())
                    ch.send_down("seccomp-done")
                    listener_fd = -1
        except BaseException:
            if child:
                try:
                    os.kill(child, 9)
                except ProcessLookupError:
                    pass
            if not reaped:
                _reap(inter)
            raise
    finally:
        ch.close()
        os.close(root_fd)
        for _, fd in ns_fds:
            os.close(fd)
        if console_fd >= 0:
            os.close(console_fd)
    if opts.pid_file:
        atomic_write(os.path.abspath(opts.pid_file), str(child).encode(), 0o644)
    if opts.detach:
        return 0
    from pallet.runtime.lifecycle.run import _wait

    return _wait(child, tty_proxy)


def _intermediate(
    ch: Channel,
    ns_fds: list[tuple[str, int]],
    root_fd: int,
    console_fd: int,
    proc: dict[str, Any],
    filt: Any,
    opts: ExecOptions,
) -> None:
    from pallet.runtime import namespaces

    namespaces.join(ns_fds)
    os.fchdir(root_fd)
    os.chroot(".")
    os.chdir("/")
    pid = os.fork()
    if pid == 0:
        try:
            _child(ch, console_fd, proc, filt, opts)
        except BaseException as e:
            _report(ch, e)
        os._exit(127)
    ch.send_up("pid", str(pid))
    os._exit(0)


def _child(ch: Channel, console_fd: int, proc: dict[str, Any], filt: Any, opts: ExecOptions) -> None:
    from pallet.runtime import process

    if console_fd >= 0:
        from pallet.runtime import console

        user = proc.get("user") or {}
        console.setup(console_fd, proc.get("consoleSize"), int(user.get("uid", 0)), int(user.get("gid", 0)))
        os.close(console_fd)
    if proc.get("rlimits"):
        process.set_rlimits(proc["rlimits"])
    env = process.home_for(int((proc.get("user") or {}).get("uid", 0)), list(proc.get("env") or []))
    nnp = bool(proc.get("noNewPrivileges"))
    if nnp:
        process.no_new_privileges()
    if filt is not None and not nnp:
        _load_seccomp(ch, filt)
    process.apply_identity(proc, _setgroups_denied())
    process.chdir(proc.get("cwd") or "/")
    exe = process.lookup(proc["args"][0], env)
    if filt is not None and nnp:
        _load_seccomp(ch, filt)
    if proc.get("apparmorProfile") or proc.get("selinuxLabel"):
        from pallet.runtime import lsm

        lsm.apply_exec_labels(proc.get("apparmorProfile") or "", proc.get("selinuxLabel") or "")
    process.close_fds(opts.preserve_fds)
    process.execve(exe, proc["args"], env)



def _load_seccomp(ch: Channel, filt: Any) -> None:
    from pallet.runtime.lifecycle.create import _load_seccomp as load

    load(ch, filt, 0)  # 0: the runtime knows our host pid from the intermediate's "pid"
