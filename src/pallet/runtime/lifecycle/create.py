"""``create``: prepare the container and leave its init waiting on exec.fifo.

The process dance (runtime → [intermediate →] init):

1. the runtime checks the config, compiles seccomp, makes the state dir and cgroup, and forks
   the child straight into the cgroup2 part of the cgroup (clone3 CLONE_INTO_CGROUP); the child
   moves itself into the v1 hierarchies (cheap from inside: no global lock);
2. without namespaces to join by path, a user or a time namespace, that child is the init,
   cloned into its new namespaces; otherwise it is an intermediate that joins namespaces given by
   path, creates the user namespace (the runtime writes its id maps), unshares the rest, and
   forks the init (a pid namespace takes effect for children), then exits;
3. the init mounts the rootfs and makes devices, then tells the runtime, which applies
   ``linux.resources`` and runs prestart/createRuntime hooks (runc's order: limits are in place
   before any hook or container code, and the setup itself ran without them); the init waits for
   that at once when there are hooks, a terminal or a NOTIFY listener, else just before it takes
   the user's identity. It runs createContainer hooks, pivots, finishes setup, loads seccomp (a
   NOTIFY listener fd is fetched by the runtime with pidfd_getfd and sent to listenerPath),
   reports "ready", and blocks opening the fifo until ``start``.

The runtime stays non-dumpable throughout (CVE-2019-5736: nothing in the container may open
/proc/<runtime>/exe, here the Python interpreter). Any failure removes what was made.
"""

from __future__ import annotations

import os
import stat

from pallet.errors import RuntimeFailure
from pallet.runtime import capabilities, cgroups, log, spec
from pallet.runtime import syscalls as sc
from pallet.runtime.channel import Channel
from pallet.runtime.state import (
    Container,
    ContainerExists,
    atomic_write,
    check_id,
    now_rfc3339,
    proc_start_time,
    rmtree,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class CreateOptions:
    """create's flags. ``foreground`` is set by ``run`` without --detach (we are the subreaper)."""

    def __init__(
        self,
        root: str,
        id: str,
        bundle: str = ".",
        pid_file: str | None = None,
        console_socket: str | None = None,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
        preserve_fds: int = 0,
        foreground: bool = False,
        extra_env: list[str] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.root, self.id, self.bundle, self.pid_file = root, id, bundle, pid_file
        self.console_socket, self.no_pivot, self.no_new_keyring = console_socket, no_pivot, no_new_keyring
        self.preserve_fds, self.foreground = preserve_fds, foreground
        self.extra_env = extra_env or []
        #: config.json already loaded (by ``run``), to read it once
        self.config = config
        #: called in the runtime right after the fork, while the children set up
        self.while_waiting: Any = None


def listen_fds() -> tuple[int, list[str]]:
    """systemd socket activation: pass LISTEN_FDS through (as runc does), renumbered for pid 1."""
    n = os.environ.get("LISTEN_FDS")
    if not n or not n.isdigit():
        return 0, []
    pid = os.environ.get("LISTEN_PID")
    if pid and pid != str(os.getpid()):
        return 0, []
    return int(n), [f"LISTEN_FDS={n}", "LISTEN_PID=1"]


def create(opts: CreateOptions) -> Container:
    check_id(opts.id)
    bundle = os.path.abspath(opts.bundle)
    cfg = opts.config if opts.config is not None else spec.load(bundle)
    if cfg.get("process") is None:
        raise RuntimeFailure("invalid config.json: process is required to create a container")
    rootfs = spec.rootfs_path(cfg, bundle)
    if not os.path.isdir(rootfs):
        raise RuntimeFailure(f"rootfs {rootfs} does not exist or is not a directory")
    proc = cfg["process"]
    linux = cfg.get("linux") or {}
    if proc.get("terminal") and not opts.console_socket and not opts.foreground:
        raise RuntimeFailure("cannot allocate a tty without --console-socket")
    ns = spec.namespaces(cfg)
    if cfg.get("hostname") and ns.get("uts", "absent") == "absent":
        raise RuntimeFailure("unable to set hostname without a new UTS namespace")
    if cfg.get("domainname") and ns.get("uts", "absent") == "absent":
        raise RuntimeFailure("unable to set domainname without a new UTS namespace")
    if (
        linux.get("sysctl")
        and ns.get("network", "absent") == "absent"
        and any(k.startswith("net.") for k in linux["sysctl"])
    ):
        raise RuntimeFailure("sysctl net.*: requires a network namespace of its own")
    if proc.get("apparmorProfile") or proc.get("selinuxLabel"):
        from pallet.runtime import lsm

        lsm.check(proc.get("apparmorProfile") or "", proc.get("selinuxLabel") or "")
    if isinstance(proc.get("capabilities"), dict):
        proc["capabilities"] = capabilities.grantable(proc["capabilities"], "user" in ns)
    cg = cgroups.manager(linux.get("cgroupsPath"), opts.id)
    os.makedirs(opts.root, 0o711, exist_ok=True)
    filt = compile_seccomp(linux, opts.root)

    sc.prctl(sc.PR_SET_DUMPABLE, 0)
    c = Container(opts.root, opts.id)
    try:
        os.mkdir(c.dir, 0o711)
    except FileExistsError:
        raise ContainerExists(f"container with id {opts.id} already exists") from None
    except OSError as e:
        raise RuntimeFailure(f"creating state directory {c.dir}: {e.strerror}") from None
    c.data = {
        "ociVersion": cfg.get("ociVersion"),
        "id": opts.id,
        "status": "creating",
        "pid": 0,
        "bundle": bundle,
        "rootfs": rootfs,
        "created": now_rfc3339(),
        "owner": "",
        "annotations": cfg.get("annotations") or {},
        "config": cfg,
    }
    init_pid = 0
    cg_made = False

    def after_fork() -> None:
        """Runtime work done while the intermediate and init set up (it only needs the fifo at
        its very end, by the state directory's fd)."""
        if opts.while_waiting is not None:
            opts.while_waiting()
        from pallet.runtime.cgroups import devices  # noqa: F401 - for the limits, soon
        uid_root, gid_root = _host_root_ids(linux)
        os.mkfifo(c.fifo, 0o622)
        os.chmod(c.fifo, 0o622)
        if uid_root or gid_root:
            os.chown(c.fifo, uid_root, gid_root)

    try:
        if cg.exists() and cg.pids():  # as runc: never share a cgroup with live processes
            raise RuntimeFailure(f"container's cgroup {cg.path} is not empty: it has processes")
        cg_made = True
        cg.create()
        init_pid = _spawn(c, cfg, opts, rootfs, ns, cg, filt, after_fork)
        c.data["pid"] = init_pid
        c.data["_start_time"] = proc_start_time(init_pid)
        c.data["status"] = "created"
        c.save()
        if opts.pid_file:
            atomic_write(os.path.abspath(opts.pid_file), str(init_pid).encode(), 0o644)
    except BaseException:
        _cleanup_failed(c, init_pid, cg if cg_made else None)
        raise
    log.debug(f"container {opts.id} created, init pid {init_pid}")
    return c


def compile_seccomp(linux: dict[str, Any], root: str) -> Any:
    """The config's seccomp profile compiled before any fork (errors surface here), or None.

    Compiled filters are cached under the runtime root: engines send the same default profile
    with every container, and a cache hit costs ~0.6 ms where libseccomp takes ~15 ms."""
    if not linux.get("seccomp"):
        return None
    from pallet.runtime import seccomp

    return seccomp.compile_profile(linux["seccomp"], cache_dir=os.path.join(root, SECCOMP_CACHE))


#: the compile cache's directory in the runtime root ('@' cannot start a container id)
SECCOMP_CACHE = "@seccomp-cache"


def _host_root_ids(linux: dict[str, Any]) -> tuple[int, int]:
    def host(maps: list[dict[str, Any]] | None) -> int:
        for m in maps or []:
            if m["containerID"] == 0:
                return m["hostID"]
        return 0

    return host(linux.get("uidMappings")), host(linux.get("gidMappings"))


def _cleanup_failed(c: Container, init_pid: int, cg: Any) -> None:
    pid = init_pid or c.data.get("pid") or 0
    if pid:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        _wait_gone(pid)
    if cg is not None:
        try:
            for p in cg.pids():  # anything the init forked before it died (hooks, no pid ns)
                try:
                    os.kill(p, 9)
                except ProcessLookupError:
                    pass
            cg.destroy()
        except RuntimeFailure as e:  # the create error is the one to report
            log.warning(f"cleaning up after a failed create: {e}")
    if "mount" not in spec.namespaces(c.data.get("config") or {}):
        from pallet.runtime import rootfs as rfs

        rfs.unmount_under(c.data.get("rootfs") or "")
    rmtree(c.dir)


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    delay = 0.0005
    while proc_start_time(pid) is not None and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _spawn(
    c: Container,
    cfg: dict[str, Any],
    opts: CreateOptions,
    rootfs: str,
    ns: dict[str, str | None],
    cg: Any,
    filt: Any,
    after_fork: Any = None,
) -> int:
    """Fork the init (directly when it can be, else through an intermediate), drive the setup;
    returns the init's host pid. The runtime does its own part (``after_fork``) while the
    children work: on two cores the two halves of a container start overlap."""
    linux = cfg.get("linux") or {}
    ns_fds: list[tuple[str, int]] = []
    if any(ns.values()):  # namespaces given by path
        from pallet.runtime import namespaces

        ns_fds = namespaces.open_paths(ns)
    console_fd = -1
    if cfg["process"].get("terminal") and opts.console_socket:
        from pallet.runtime import console

        console_fd = console.connect(opts.console_socket)
    state_fd = os.open(c.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    # every module the children use is imported now, in the runtime: after pivot_root (or a
    # setns into another mount namespace) nothing can be imported, and importing in the child
    # would copy-on-write fault much of the interpreter's heap (3 ms instead of 0.6 ms)
    _preload(cfg)
    ch = Channel()
    try:
        if _direct_init_ok(ns, linux):
            init_pid = _spawn_init_directly(c, cfg, opts, rootfs, ns, cg, filt, ch, state_fd, console_fd)
            if init_pid:
                ch.parent_side()
                c.data["pid"] = init_pid
                # device rules now, while the init makes its mounts: it waits for them only
                # before its mknods (the change of rules passes through "deny all")
                cg.set({"devices": (linux.get("resources") or {}).get("devices")})
                ch.send_down("devices-done")
                if after_fork is not None:
                    after_fork()
                c.save()  # if we die now, ``delete --force`` can still find and kill the init
                _drive(c, cfg, ch, cg, filt, linux, init_pid, intermediate=0, devices_done=True)
                return init_pid
        pid, in_unified = fork_in_cgroup(cg)
        if pid == 0:  # intermediate
            try:
                ch.child_side()
                cg.join(unified=not in_unified)
                _intermediate(ch, cfg, opts, rootfs, ns, ns_fds, state_fd, console_fd, filt, c, cg)
            except BaseException as e:
                _report(ch, e)
            os._exit(1)
        ch.parent_side()
        for _, fd in ns_fds:
            os.close(fd)
        ns_fds = []
        if after_fork is not None:
            after_fork()
        return _drive(c, cfg, ch, cg, filt, linux, 0, intermediate=pid)
    finally:
        ch.close()
        os.close(state_fd)
        if console_fd >= 0:
            os.close(console_fd)
        for _, fd in ns_fds:
            os.close(fd)


def _direct_init_ok(ns: dict[str, str | None], linux: dict[str, Any]) -> bool:
    """Whether the init can be cloned straight into its namespaces, without an intermediate: no
    namespace to join by path and no user or time namespace (those need setup between the
    namespaces' creation and the init's birth)."""
    return not any(ns.values()) and "user" not in ns and "time" not in ns


def _spawn_init_directly(
    c: Container,
    cfg: dict[str, Any],
    opts: CreateOptions,
    rootfs: str,
    ns: dict[str, str | None],
    cg: Any,
    filt: Any,
    ch: Channel,
    state_fd: int,
    console_fd: int,
) -> int:
    """clone3 the init into its new namespaces and the cgroup2 cgroup in one step (the common
    case: saves a fork and a process). Returns its pid, or 0 if the kernel refuses clone3 here
    (then the caller uses the intermediate)."""
    from pallet.runtime import namespaces

    flags = namespaces.new_flags(ns, exclude=("user", "cgroup"))
    fd = cg.unified_fd()
    try:
        pid = sc.clone3(flags, fd)
    except OSError as e:
        log.debug(f"clone3 of the init: {e.strerror}; using an intermediate process")
        return 0
    finally:
        if fd >= 0:
            os.close(fd)
    if pid == 0:  # the init, pid 1 of its namespace
        try:
            ch.child_side()
            cg.join(unified=fd < 0)
            if "cgroup" in ns:  # rooted at the cgroup we are now in
                sc.unshare(sc.CLONE_NEWCGROUP)
            _init(ch, cfg, opts, rootfs, ns, state_fd, console_fd, filt, c, cg, devices_early=True)
        except BaseException as e:
            _report(ch, e)
        os._exit(1)
    return pid


def _drive(
    c: Container,
    cfg: dict[str, Any],
    ch: Channel,
    cg: Any,
    filt: Any,
    linux: dict[str, Any],
    init_pid: int,
    intermediate: int,
    devices_done: bool = False,
) -> int:
    """The runtime's side of the setup: answer the children until the init is ready."""
    pid = intermediate
    inter_done = reaped = not intermediate
    ready = False
    try:
        # the intermediate's "pid" and the init's messages can arrive in either order
        while not (ready and inter_done):
            tag, payload = ch.recv_up("container setup")
            if tag == "userns":
                from pallet.runtime import namespaces

                namespaces.write_id_maps(pid, linux)
                ch.send_down("maps-done")
            elif tag == "pid":
                init_pid = int(payload)
                c.data["pid"] = init_pid
                c.save()  # if we die now, ``delete --force`` can still find and kill the init
                if not reaped:
                    _reap(pid)
                inter_done = reaped = True
            elif tag == "mounted":
                host_pid = int(payload)
                if not reaped:
                    _reap(pid)  # it has forked the init and is exiting: let pids.max count 1
                    reaped = True
                # the init's setup (mounts, device nodes) ran unconstrained, as in runc
                resources = linux.get("resources") or {}
                if devices_done:  # only what is left; update=True leaves the devices alone
                    cg.set({k: v for k, v in resources.items() if k != "devices"}, update=True)
                else:
                    cg.set(resources)
                hk = cfg.get("hooks") or {}
                if hk.get("prestart") or hk.get("createRuntime"):
                    from pallet.runtime import hooks

                    state = {**c.oci_state(), "status": "creating", "pid": host_pid}
                    # runtime-tools' hooks_stdin wants "created" for the deprecated prestart
                    hooks.run("prestart", hk.get("prestart"), {**state, "status": "created"})
                    hooks.run("createRuntime", hk.get("createRuntime"), state)
                ch.send_down("mounted-done")
            elif tag == "seccomp":
                host_pid, _, fd = payload.partition(" ")
                send_seccomp_listener(filt, int(host_pid), int(fd), c.oci_state())
                ch.send_down("seccomp-done")
            elif tag == "ready":
                ready = True
    finally:
        if not reaped:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            _reap(pid)
    return init_pid


def fork_in_cgroup(cg: Any) -> tuple[int, bool]:
    """fork() with the child born in the container's cgroup2 cgroup when there is one.

    (pid, born_in_unified). The child then joins the v1 hierarchies itself (``Manager.join``):
    neither step takes the kernel's global cgroup lock for writing, which a migration by pid
    does (runc pays 5-30 ms for it on every container start here)."""
    fd = cg.unified_fd()
    if fd >= 0:
        try:
            return sc.fork_into_cgroup(fd), True
        except OSError as e:
            log.debug(f"clone3 into {cg.dirs.get('')}: {e.strerror}; falling back to fork")
        finally:
            os.close(fd)  # in the parent and (its copy) in the child
    return os.fork(), False


def send_seccomp_listener(filt: Any, pid: int, fd: int, state: dict[str, Any]) -> None:
    """Fetch the NOTIFY listener fd from the container process and hand it to listenerPath.

    pidfd_getfd copies the fd without a socket between us (the init is non-dumpable, but the
    runtime is root over its user namespace)."""
    from pallet.runtime import seccomp

    try:
        pidfd = os.pidfd_open(pid)
        try:
            mine = sc.pidfd_getfd(pidfd, fd)
        finally:
            os.close(pidfd)
    except OSError as e:
        raise RuntimeFailure(f"seccomp: fetching the listener fd from pid {pid}: {e.strerror}") from None
    try:
        seccomp.send_listener(filt, mine, filt.listener_path, {**state, "pid": pid}, filt.listener_metadata)
    finally:
        os.close(mine)


def _preload(cfg: dict[str, Any]) -> None:
    """Import everything the intermediate and init will use (after pivot_root, or a setns into
    another mount namespace, no module can be found)."""
    from pallet.runtime import namespaces, process, rootfs  # noqa: F401

    proc = cfg.get("process") or {}
    if proc.get("terminal"):
        import fcntl  # noqa: F401
        import socket  # noqa: F401
        import struct  # noqa: F401
        import termios  # noqa: F401

        from pallet.runtime import console  # noqa: F401
    if proc.get("rlimits"):
        import resource  # noqa: F401
    if cfg.get("hooks"):
        import subprocess  # noqa: F401

        from pallet.runtime import hooks  # noqa: F401
    if proc.get("apparmorProfile") or proc.get("selinuxLabel"):
        from pallet.runtime import lsm  # noqa: F401
    if (cfg.get("linux") or {}).get("seccomp"):
        from pallet.runtime import seccomp

        seccomp.preload()
    capabilities.last_cap()


def _reap(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return status
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


def _report(ch: Channel, e: BaseException) -> None:
    msg = str(e) if isinstance(e, RuntimeFailure) else f"{type(e).__name__}: {e}"
    try:
        ch.send_up("error", msg)
    except OSError:
        pass


def _intermediate(
    ch: Channel,
    cfg: dict[str, Any],
    opts: CreateOptions,
    rootfs: str,
    ns: dict[str, str | None],
    ns_fds: list[tuple[str, int]],
    state_fd: int,
    console_fd: int,
    filt: Any,
    c: Container,
    cg: Any,
) -> None:
    from pallet.runtime import namespaces

    namespaces.join(ns_fds)
    if ns.get("user", "absent") is None:
        sc.unshare(sc.CLONE_NEWUSER)
        ch.send_up("userns")
        ch.expect_down("maps-done")
        try:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        except OSError as e:
            raise RuntimeFailure(
                f"becoming root in the user namespace (is 0 mapped?): {e.strerror}"
            ) from None
    flags = namespaces.new_flags(ns, exclude=("user",))
    if flags:
        try:
            sc.unshare(flags)
        except OSError as e:
            raise RuntimeFailure(
                f"unshare namespaces {sorted(t for t, p in ns.items() if p is None)}: {e.strerror}"
            ) from None
    linux = cfg.get("linux") or {}
    if ns.get("time", "absent") is None and linux.get("timeOffsets"):
        namespaces.write_time_offsets(linux["timeOffsets"])
    pid = os.fork()
    if pid == 0:
        try:
            _init(ch, cfg, opts, rootfs, ns, state_fd, console_fd, filt, c, cg)
        except BaseException as e:
            _report(ch, e)
        os._exit(1)
    ch.send_up("pid", str(pid))
    os._exit(0)


def _init(
    ch: Channel,
    cfg: dict[str, Any],
    opts: CreateOptions,
    rootfs: str,
    ns: dict[str, str | None],
    state_fd: int,
    console_fd: int,
    filt: Any,
    c: Container,
    cg: Any,
    devices_early: bool = False,
) -> None:
    """The container's pid 1 until execve: finish setup, report ready, wait for start.

    ``devices_early``: the runtime sets the device rules while we mount, and tells us
    ("devices-done") before we make device nodes."""
    from pallet.runtime import process
    from pallet.runtime import rootfs as rfs

    proc = cfg["process"]
    in_userns = "user" in ns
    os.setsid()
    os.umask(0)
    host_pid = int(os.readlink("/proc/self"))  # still the host's procfs: our pid as the host sees it
    process.set_oom_score_adj(proc.get("oomScoreAdj"))
    if not opts.no_new_keyring:
        _join_session_keyring(opts.id)
    cg_mounts = None
    if any(m.get("type") in ("cgroup", "cgroup2") for m in cfg.get("mounts") or []):
        cg_mounts = rfs.CgroupMounts(cg.mounts_for_container(), cg.symlinks_for_container(), "cgroup" in ns)
    own_mntns = "mount" in ns
    # without a mount namespace of its own (as runc) the mounts land in the host's, under the
    # rootfs; delete unmounts them
    root = rfs.prepare(
        cfg,
        rootfs,
        in_userns,
        cg_mounts,
        private=own_mntns,
        before_devices=(lambda: ch.expect_down("devices-done")) if devices_early else None,
    )
    root.close()
    # the runtime applies linux.resources now (devices too: our mknods are done) and runs the
    # prestart/createRuntime hooks. We wait for that here when hooks (they must see the limits and
    # a container not yet pivoted), a terminal (opening /dev/ptmx while the device rules change)
    # or a NOTIFY listener (its own exchange) need it; otherwise we go on with our setup and
    # wait only before the user's identity and seccomp, while the runtime writes the limits.
    ch.send_up("mounted", str(host_pid))
    synced = bool(
        _has_hook(cfg, "prestart", "createRuntime", "createContainer")
        or console_fd >= 0
        or (filt is not None and filt.wants_notify)
    )
    if synced:
        ch.expect_down("mounted-done")
    if _has_hook(cfg, "createContainer"):
        from pallet.runtime import hooks

        state = {**c.oci_state(), "status": "creating", "pid": host_pid}
        hooks.run("createContainer", cfg["hooks"]["createContainer"], state)
    if own_mntns:
        rfs.pivot(rootfs, opts.no_pivot)
        rfs.root_propagation(cfg)
    else:
        os.chroot(rootfs)
        os.chdir("/")
    if console_fd >= 0:
        from pallet.runtime import console

        user = proc.get("user") or {}
        console.setup(console_fd, proc.get("consoleSize"), int(user.get("uid", 0)), int(user.get("gid", 0)))
    rfs.finalize(cfg, own_mntns)
    if cfg.get("hostname"):
        sc.sethostname(cfg["hostname"])
    if cfg.get("domainname"):
        sc.setdomainname(cfg["domainname"])
    if proc.get("rlimits"):
        process.set_rlimits(proc["rlimits"])
    if not synced:
        ch.expect_down("mounted-done")
    env = list(proc.get("env") or [])
    nfds, lenv = listen_fds()
    env += lenv + opts.extra_env
    env = process.home_for(int((proc.get("user") or {}).get("uid", 0)), env)
    nnp = bool(proc.get("noNewPrivileges"))
    if nnp:
        process.no_new_privileges()
    if filt is not None and not nnp:
        _load_seccomp(ch, filt, host_pid)
    setgroups_denied = _setgroups_denied()
    process.apply_identity(proc, setgroups_denied)
    process.chdir(proc.get("cwd") or "/")
    exe = process.lookup(proc["args"][0], env)
    if filt is not None and nnp:
        _load_seccomp(ch, filt, host_pid)
    ch.send_up("ready")
    # wait for ``start``: opening a fifo for writing blocks until a reader opens it. The fd stays
    # open (close-on-exec): ``start`` reads to EOF, so it returns, and runs the poststart hooks,
    # only once we have run the startContainer hooks and exec'd the user's program (or died)
    fd = os.open(c.fifo.rsplit("/", 1)[1], os.O_WRONLY | os.O_CLOEXEC, dir_fd=state_fd)
    os.write(fd, b"0")
    os.close(state_fd)
    try:
        if _has_hook(cfg, "startContainer"):
            from pallet.runtime import hooks

            hooks.run(
                "startContainer",
                cfg["hooks"]["startContainer"],
                {**c.oci_state(), "status": "created", "pid": host_pid},
            )
        if proc.get("apparmorProfile") or proc.get("selinuxLabel"):
            from pallet.runtime import lsm

            lsm.apply_exec_labels(proc.get("apparmorProfile") or "", proc.get("selinuxLabel") or "")
        process.close_fds(nfds + opts.preserve_fds)
        process.execve(exe, proc["args"], env)
    except RuntimeFailure as e:
        os.write(2, f"pallet-runtime: {e}\n".encode(errors="replace"))
        os._exit(getattr(e, "exit_code", 1) if isinstance(e, process.ExecFailed) else 1)


def _has_hook(cfg: dict[str, Any], *kinds: str) -> bool:
    hk = cfg.get("hooks") or {}
    return any(hk.get(k) for k in kinds)


def _load_seccomp(ch: Channel, filt: Any, host_pid: int) -> None:
    """Install the filter; a NOTIFY listener fd is fetched by the runtime before we go on."""
    from pallet.runtime import seccomp

    listener = seccomp.load(filt)
    if listener is not None:
        ch.send_up("seccomp", f"{host_pid} {listener}")
        ch.expect_down("seccomp-done")
        os.close(listener)


def _setgroups_denied() -> bool:
    try:
        with open("/proc/self/setgroups", "rb") as f:
            return f.read().strip() == b"deny"
    except OSError:
        return False


def _join_session_keyring(cid: str) -> None:
    """A fresh session keyring per container (runc's default), so keys never leak between them."""
    try:
        sc.join_session_keyring(f"_ses.{cid}")
    except OSError as e:  # best effort, as in runc (e.g. keyrings disabled)
        log.debug(f"session keyring: {e.strerror}")


def is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False
