"""The container lifecycle: create, start, run, stop, kill, restart, rm, wait, pause, rename, prune.

State lives in :mod:`pallet.engine.state`; each container's processes are watched by its
monitor (:mod:`pallet.engine.monitor`); root filesystems come from the ImageSource seam
(:mod:`pallet.engine.image_source`). Every function takes ``ctx`` (None: the default context)
and a container reference: a full ID, a name, or a unique ID prefix.

Transitions are compare-and-set on the status column, so concurrent commands on one container
serialise without lock files. Reads reconcile: a container whose monitor and processes are gone
(after a reboot, or a killed monitor) is shown exited, and its storage is released.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal as _signal
import socket
import time
from pathlib import Path

from pallet.engine import cgroups, networking, spec
from pallet.engine import runtime as rt
from pallet.engine.errors import ContainerRunning, ContainerStateError, NoSuchContainer, NoSuchImage
from pallet.engine.options import DEFAULT_STOP_TIMEOUT, CreateOptions, parse_bytes, signal_number
from pallet.engine.procs import alive, proc_start_time, trace
from pallet.engine.state import ACTIVE, Container, State, now_rfc3339, state_for
from pallet.errors import EngineError, NotFound, PalletError, UsageError

TYPE_CHECKING = False  # importing typing costs start-up time; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from pallet.context import Context
    from pallet.engine.image_source import ImageSource

#: an image config with a command, to validate options before the real image is known
_ANY_IMAGE: dict[str, Any] = {"config": {"Cmd": ["true"]}}
_NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_sources: dict[tuple[str, int], ImageSource] = {}


def _ctx(ctx: Context | None) -> Context:
    if ctx is None:
        from pallet.context import default

        return default()
    return ctx


def _state(ctx: Context) -> State:
    return state_for(ctx.root)


def image_source(ctx: Context) -> ImageSource:
    """The ImageSource for ``ctx`` (one per process and root)."""
    key = (str(ctx.root), os.getpid())
    src = _sources.get(key)
    if src is None:
        from pallet.engine.image_source import get_image_source

        src = _sources[key] = get_image_source(ctx)
    return src


def container_dir(ctx: Context, container_id: str) -> Path:
    """Persistent per-container files: logs, hosts, resolv.conf, hostname."""
    return Path(ctx.root) / "engine" / "containers" / container_id


def bundle_dir(ctx: Context, container_id: str) -> Path:
    """Volatile per-container files: config.json, pid file, attach socket (under the runroot)."""
    return Path(ctx.runroot) / "engine" / container_id


def _runtime(ctx: Context, c: Container) -> rt.Runtime:
    info = c.config.get("Runtime") or {}
    return rt.Runtime.for_container(ctx.runroot, info.get("Name"), info.get("Path"))


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UsageError(f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name.lstrip("/")


# -- lookup and reconciliation ----------------------------------------------------------------------


def get(ref: str, ctx: Context | None = None) -> Container:
    """The container ``ref`` names, reconciled with the processes actually running."""
    ctx = _ctx(ctx)
    return reconcile(ctx, _state(ctx).get(ref))


def list_containers(ctx: Context | None = None) -> list[Container]:
    """Every container, newest first, reconciled."""
    ctx = _ctx(ctx)
    return [reconcile(ctx, c) for c in _state(ctx).list()]


def reconcile(ctx: Context, c: Container) -> Container:
    """Fix a record whose monitor is gone: running → exited (255), half-done starts and removals."""
    if c.status in ("running", "paused", "restarting", "stopping"):
        if alive(c.monitor_pid, c.monitor_start):
            return c
        if c.status != "restarting" and alive(c.pid, c.pid_start):
            return c  # monitor killed, container still up: it keeps running, unmonitored
        st = _state(ctx)
        code = c.exit_code if c.status == "restarting" else 255
        if st.transition(
            c.id,
            (c.status,),
            status="exited",
            pid=0,
            pid_start=0,
            monitor_pid=0,
            monitor_start=0,
            exit_code=code,
            finished_at=c.finished_at or now_rfc3339(),
            error="" if c.status == "restarting" else "container monitor exited unexpectedly",
        ):
            with contextlib.suppress(Exception):
                _runtime(ctx, c).delete(c.id)
            if c.config.get("HostConfig", {}).get("AutoRemove"):
                with contextlib.suppress(Exception):
                    remove(c.id, ctx=ctx, volumes=True)
                    return _gone(c)
            with contextlib.suppress(Exception):
                _release_storage(ctx, c.id)
        return st.find(c.id) or _gone(c)
    if c.status in ("starting", "removing") and not alive(c.monitor_pid, c.monitor_start):
        st = _state(ctx)
        if c.status == "starting":
            adopted = _adopt_started(ctx, c)
            if adopted is not None:
                return adopted
            back = "exited" if c.started_at else "created"
            if st.transition(c.id, ("starting",), status=back, monitor_pid=0, monitor_start=0, pid=0):
                with contextlib.suppress(Exception):
                    _runtime(ctx, c).delete(c.id)
                with contextlib.suppress(Exception):
                    _release_storage(ctx, c.id)
        else:
            me = os.getpid()
            if st.transition(c.id, ("removing",), monitor_pid=me, monitor_start=proc_start_time(me)):
                _remove_storage(ctx, c.id, remove_volumes=True, delete_row=True)
                return _gone(c)
        return st.find(c.id) or _gone(c)
    return c


def _adopt_started(ctx: Context, c: Container) -> Container | None:
    """The CLI that started ``c`` died before recording it: if its monitor lives, record it now."""
    bundle = bundle_dir(ctx, c.id)
    try:
        mpid, mstart = (int(x) for x in (bundle / "monitor.pid").read_text().split())
    except (OSError, ValueError):
        return None
    if not alive(mpid, mstart):
        return None
    try:
        pid = int((bundle / "pid").read_text().strip())
    except (OSError, ValueError):
        return c  # still starting: its monitor will record the outcome
    st = _state(ctx)
    st.transition(
        c.id,
        ("starting",),
        status="running",
        pid=pid,
        pid_start=proc_start_time(pid),
        monitor_pid=mpid,
        monitor_start=mstart,
        started_at=c.started_at or now_rfc3339(),
        error="",
    )
    return st.find(c.id) or _gone(c)


def _gone(c: Container) -> Container:
    c.status = "removed"
    return c


# -- create -----------------------------------------------------------------------------------------


def create(
    image: str,
    command: list[str] | None = None,
    options: CreateOptions | None = None,
    ctx: Context | None = None,
) -> Container:
    """Create a container from ``image`` (pulled per ``options.pull``); it is not started."""
    from pallet.engine import names, volumes

    ctx = _ctx(ctx)
    opts = options or CreateOptions()
    st = _state(ctx)
    name = validate_name(opts.name) if opts.name else None
    if name and st.name_taken(name):
        from pallet.engine.errors import NameConflict

        raise NameConflict(
            f'the container name "/{name}" is already in use by another container: remove or rename it first'
        )
    rt_name, rt_path = rt.resolve(opts.runtime or ctx.runtime)
    if opts.init and not find_init():
        raise UsageError("--init needs an init binary on the host: install catatonit or tini")
    src = image_source(ctx)
    img = None
    if opts.pull == "missing":  # the image is here (the usual case): compose once, below
        with contextlib.suppress(NotFound):
            img = src.resolve(image, "never", opts.platform)
    if img is None:
        # every flag is checked before anything is pulled (compose is pure: it runs again below
        # with the image's config)
        spec.compose(_ANY_IMAGE, command, opts, container_id="0" * 64, image_name=image)
        img = src.resolve(image, opts.pull, opts.platform)
    platform = spec.check_platform(img.config, opts.platform)
    cid = os.urandom(32).hex()
    composed = spec.compose(img.config, command, opts, container_id=cid, image_name=image)
    networking.resolve(ctx, composed)
    name = name or names.random_name(st.name_taken)
    args = list(composed["Config"].get("Entrypoint") or []) + list(composed["Config"].get("Cmd") or [])
    vol_names: list[str] = []
    made_anonymous: list[str] = []
    try:
        for m in composed["MountSpecs"]:
            if m["Type"] != "volume":
                continue
            if not m["Source"]:
                m["Source"] = os.urandom(32).hex()
                made_anonymous.append(m["Source"])
                volumes.create(m["Source"], ctx, anonymous=True)
            else:
                volumes.ensure(ctx, m["Source"], labels=m.get("Labels"))
            vol_names.append(m["Source"])
        stored = dict(composed)
        stored.update(
            {
                "Path": args[0],
                "Args": args[1:],
                "Platform": platform,
                "Runtime": {"Name": rt_name, "Path": rt_path},
                "CgroupsPath": cgroups.cgroups_path(cid, composed["HostConfig"].get("CgroupParent") or None),
                "ImageDigest": img.digest,
                "ImageNames": list(img.names),
            }
        )
        record = Container(
            id=cid,
            name=name,
            image=image,
            image_id=img.id,
            created=now_rfc3339(),
            config=stored,
            status="created",
        )
        src.hold(img.id, cid)
        try:
            st.insert(record, vol_names)
        except BaseException:
            src.unhold(img.id, cid)
            raise
    except BaseException:
        if made_anonymous:
            volumes.remove_anonymous(ctx, made_anonymous)
        raise
    container_dir(ctx, cid).mkdir(parents=True, exist_ok=True)
    return record


def _import_removal() -> None:
    """What removing a container imports that running it did not."""
    import shutil  # noqa: F401 - with bz2 and lzma: ~1.6 ms


def _rmtree(path: str | os.PathLike[str], ignore_errors: bool = True) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=ignore_errors)


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def find_init() -> str | None:
    """A static init for --init: catatonit (podman's), tini or docker-init."""
    for name in ("catatonit", "tini-static", "docker-init", "tini"):
        for d in ("/usr/libexec/podman", "/usr/bin", "/usr/local/bin", "/usr/sbin", "/bin"):
            p = os.path.join(d, name)
            if os.access(p, os.X_OK):
                return p
        p2 = _which(name)
        if p2:
            return p2
    return None


# -- start ------------------------------------------------------------------------------------------


def _write_files(ctx: Context, c: Container) -> tuple[str, str, str]:
    """/etc/hostname, /etc/hosts and /etc/resolv.conf for the container, as docker writes them."""
    from pallet.fsutil import atomic_write

    cfg, hc = c.config["Config"], c.config["HostConfig"]
    d = container_dir(ctx, c.id)
    d.mkdir(parents=True, exist_ok=True)
    hostname = cfg["Hostname"]
    net = hc.get("NetworkMode") or spec.DEFAULT_NETWORK
    if net == "host":
        try:
            hosts = Path("/etc/hosts").read_text()
        except OSError:
            hosts = "127.0.0.1\tlocalhost\n"
        if not hosts.endswith("\n"):
            hosts += "\n"
    else:
        hosts = (
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
            "ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        )
    hosts += f"127.0.1.1\t{hostname}\n" if net != "host" else ""
    for entry in hc.get("ExtraHosts") or []:
        host, _, ip = entry.partition(":")
        hosts += f"{ip}\t{host}\n"
    try:
        host_resolv = Path("/etc/resolv.conf").read_text()
    except OSError:
        host_resolv = ""
    lines = host_resolv.splitlines()
    servers = [ln for ln in lines if ln.split()[:1] == ["nameserver"]]
    search = [ln for ln in lines if ln.split()[:1] in (["search"], ["domain"])]
    options = [ln for ln in lines if ln.split()[:1] == ["options"]]
    if net != "host":
        servers = [s for s in servers if not s.split()[1].startswith(("127.", "::1"))] if servers else []
    if hc.get("Dns"):
        servers = [f"nameserver {s}" for s in hc["Dns"]]
    if hc.get("DnsSearch"):
        search = ["search " + " ".join(hc["DnsSearch"])]
    if hc.get("DnsOptions"):
        options = ["options " + " ".join(hc["DnsOptions"])]
    resolv = "\n".join(search + servers + options) + "\n"
    paths = (d / "hostname", d / "hosts", d / "resolv.conf")
    for p, text in zip(paths, (hostname + "\n", hosts, resolv), strict=True):
        atomic_write(p, text.encode(), sync=False)
    return str(paths[0]), str(paths[1]), str(paths[2])


def log_path(ctx: Context, c: Container) -> str:
    driver = c.config["HostConfig"]["LogConfig"]["Type"]
    name = "ctr.log" if driver == "k8s-file" else f"{c.id}-json.log"
    return str(container_dir(ctx, c.id) / name)


def _prepare(ctx: Context, c: Container, console_size: tuple[int, int] | None) -> str:
    """Mount the rootfs, resolve user and mounts, write config.json; returns the bundle path."""
    from pallet.engine import paths, users, volumes
    from pallet.fsutil import atomic_write

    networking.start_begin(ctx, c)  # `run`'s helper sets the network up meanwhile
    src = image_source(ctx)
    img = src.lookup(c.image_id)
    if img is None:
        raise NoSuchImage(f"the image {c.image} ({c.image_id[7:19]}) of container {c.name} no longer exists")
    rootfs = src.prepare_rootfs(c.id, img, volatile=bool(c.config["HostConfig"].get("AutoRemove")))
    st = _state(ctx)
    st.update(c.id, rootfs=rootfs)
    cfg, hc = c.config["Config"], c.config["HostConfig"]
    if cfg.get("WorkingDir"):
        paths.mkdir_all_in_root(rootfs, cfg["WorkingDir"])
    user = users.resolve(rootfs, cfg.get("User"), hc.get("GroupAdd") or ())
    resolved: list[dict[str, Any]] = []
    for m in c.config["MountSpecs"]:
        m = dict(m)
        if m["Type"] == "volume":
            image_path = paths.secure_join(rootfs, m["Target"])
            m["Source"] = volumes.prepare(
                ctx, m["Source"], image_path=image_path, nocopy=m.get("NoCopy", False)
            )
        elif m["Type"] == "bind" and not os.path.exists(m["Source"]):
            if m.get("MustExist"):
                raise UsageError(
                    f'invalid mount config for type "bind": bind source path does not exist: {m["Source"]}'
                )
            os.makedirs(m["Source"], exist_ok=True)
        resolved.append(m)
    netns, files = networking.start(ctx, c)
    hostname_p, hosts_p, resolv_p = files or _write_files(ctx, c)
    inputs = spec.StartInputs(
        rootfs=rootfs,
        uid=user.uid,
        gid=user.gid,
        additional_gids=user.additional_gids,
        home=user.home,
        mounts=resolved,
        hosts_path=hosts_p,
        resolv_path=resolv_p,
        hostname_path=hostname_p,
        cgroups_path=c.config["CgroupsPath"],
        console_size=console_size,
        init_path=find_init() if hc.get("Init") else None,
        netns_path=netns,
        cgroup_v2=cgroups.is_v2(),
    )
    config_json = spec.runtime_spec(c.config, inputs, process_args=[c.config["Path"], *c.config["Args"]])
    bundle = bundle_dir(ctx, c.id)
    bundle.mkdir(parents=True, exist_ok=True)
    import json

    atomic_write(bundle / "config.json", json.dumps(config_json).encode(), sync=False)
    return str(bundle)


def _monitor_config(ctx: Context, c: Container, bundle: str):
    from pallet.engine.launch import MonitorConfig

    cfg, hc = c.config["Config"], c.config["HostConfig"]
    runtime = _runtime(ctx, c)
    log_cfg = hc["LogConfig"]
    opts = log_cfg.get("Config") or {}
    return MonitorConfig(
        container_id=c.id,
        root=str(ctx.root),
        runroot=str(ctx.runroot),
        bundle=bundle,
        runtime_name=runtime.name,
        runtime_path=runtime.path,
        runtime_root=runtime.state_root,
        tty=bool(cfg.get("Tty")),
        open_stdin=bool(cfg.get("OpenStdin")),
        stdin_once=bool(cfg.get("StdinOnce")),
        log_path=log_path(ctx, c),
        log_driver=log_cfg["Type"],
        log_max_size=parse_bytes(opts.get("max-size"), "max-size") or 0,
        log_max_file=int(opts.get("max-file") or 1),
        restart_name=hc["RestartPolicy"]["Name"],
        restart_max=int(hc["RestartPolicy"].get("MaximumRetryCount") or 0),
        restart_count=c.restart_count,
        auto_remove=bool(hc.get("AutoRemove")),
        healthcheck=cfg.get("Healthcheck"),
        cgroups_path=c.config["CgroupsPath"],
        stop_signal=signal_number(cfg.get("StopSignal") or "SIGTERM"),
        ctx=ctx.to_json(),
    )


def start(
    ref: str,
    ctx: Context | None = None,
    *,
    attach_client: socket.socket | None = None,
    console_size: tuple[int, int] | None = None,
    launch: Any = None,
) -> Container:
    """Start a created or exited container; returns once it runs (or raises why it could not).

    ``attach_client``: one end of a socketpair that the monitor treats as an attached client
    from before the container starts (``run`` and ``start -a`` use it to lose no output).
    ``launch``: a :class:`pallet.engine.launch.Launch` started earlier (``run`` starts it
    before ``create`` so the monitor's interpreter boots meanwhile); it is used up either way.
    """
    from pallet.engine.launch import Launch

    ctx = _ctx(ctx)
    st = _state(ctx)
    c = get(ref, ctx)
    if c.status in ("running", "paused", "restarting"):
        if launch is not None:
            launch.close()
        if attach_client is not None:
            raise ContainerStateError(f"container {c.name} is already running: use 'attach'")
        return c
    if c.status not in ("created", "exited"):
        if launch is not None:
            launch.close()
        raise ContainerStateError(f"cannot start container {c.name}: it is {c.status}")
    me = os.getpid()
    if not st.transition(
        c.id,
        ("created", "exited"),
        status="starting",
        monitor_pid=me,
        monitor_start=proc_start_time(me),
        stop_requested=False,
        error="",
    ):
        if launch is not None:
            launch.close()
        raise ContainerStateError(f"cannot start container {c.name}: another command is changing it")
    previous = c.status
    try:
        if launch is None:
            launch = Launch(attach_client)  # boots while we prepare
        bundle = _prepare(ctx, c, console_size)
        trace("prepared")
        # `run --rm` (attached: this process removes it): what removal imports, while it starts
        removes = c.config["HostConfig"].get("AutoRemove") and c.config["Config"].get("AttachStdout")
        res = launch.start(_monitor_config(ctx, c, bundle), _import_removal if removes else None)
    except BaseException as e:
        if launch is not None:
            launch.close()
        st.transition(
            c.id,
            ("starting",),
            status=previous,
            monitor_pid=0,
            monitor_start=0,
            error=str(e) if isinstance(e, Exception) else "",
        )
        with contextlib.suppress(Exception):
            _release_storage(ctx, c.id)
        if c.config["HostConfig"].get("AutoRemove"):
            with contextlib.suppress(Exception):
                remove(c.id, ctx=ctx, volumes=True)
        raise
    if "error" in res:
        # the container never ran: as docker, it keeps its previous state, with the error (and
        # 126/127 as its exit code when the command could not be executed)
        code = int(res.get("exit_code") or 125)
        err = rt.classify(res["error"]) if code in (126, 127) else EngineError(res["error"])
        err.exit_code = code
        fields: dict[str, Any] = {
            "status": previous,
            "monitor_pid": 0,
            "monitor_start": 0,
            "pid": 0,
            "error": res["error"],
        }
        if code in (126, 127):
            fields["exit_code"] = code
        if previous == "exited":
            fields["finished_at"] = now_rfc3339()
        st.transition(c.id, ("starting",), **fields)
        with contextlib.suppress(Exception):
            _release_storage(ctx, c.id)
        if c.config["HostConfig"].get("AutoRemove"):
            with contextlib.suppress(Exception):
                remove(c.id, ctx=ctx, volumes=True)
        raise err
    # the monitor records the first start through us (it then needs no database until the end);
    # if the container already exited, the monitor's record won and this changes nothing
    st.transition(c.id, ("starting",), **res["record"])
    trace("cli: running recorded")
    return st.find(c.id) or c


def run(
    image: str,
    command: list[str] | None = None,
    options: CreateOptions | None = None,
    ctx: Context | None = None,
    *,
    detach: bool = False,
    stdin_fd: int | None = 0,
    stdout_fd: int = 1,
    stderr_fd: int = 2,
    sig_proxy: bool = True,
    detach_keys: bytes | None = None,
    on_created=None,
    launch: Any = None,
    attach_sock: socket.socket | None = None,
) -> tuple[Container, int | None]:
    """``pallet run``: create, start and (unless ``detach``) relay stdio until the container exits.

    Returns the container and its exit status (None when detached, by -d or the detach keys).
    """
    from pallet.engine import attach as proto
    from pallet.engine.launch import Launch

    ctx = _ctx(ctx)
    opts = options or CreateOptions()
    opts.attach = not detach
    ours = attach_sock
    if launch is None:  # the CLI launches it even earlier, before importing this module
        theirs = None
        if not detach:
            ours, theirs = socket.socketpair()
        launch = Launch(theirs)  # the monitor's interpreter boots while we create and prepare
        if theirs is not None:
            theirs.close()
    try:
        c = create(image, command, opts, ctx)
        trace("created")
        if on_created is not None:
            on_created(c)
    except BaseException:
        launch.close()
        if ours is not None:
            ours.close()
        raise
    if detach:
        return start(c.id, ctx, launch=launch), None
    assert ours is not None
    size = None
    if opts.tty and stdin_fd is not None and os.isatty(stdin_fd):
        size = proto.terminal_size(stdin_fd)
    try:
        networking.watch_exit(ctx, start(c.id, ctx, console_size=size, launch=launch))
        result = proto.relay(
            ours,
            stdin_fd=stdin_fd if opts.interactive else None,
            stdout_fd=stdout_fd,
            stderr_fd=stderr_fd,
            tty=opts.tty,
            sig_proxy=sig_proxy,
            detach_keys=detach_keys if detach_keys is not None else proto.DEFAULT_DETACH_KEYS,
        )
        finish_attached(ctx, c.id, result, ours)
    finally:
        ours.close()
        networking.unwatch(c.id)
    trace("cli: exit received")
    if result is None:
        return c, None
    if result.get("ExitCode") is None:
        raise EngineError(result.get("Error") or "lost the container's monitor")
    return c, int(result["ExitCode"])


def finish_attached(
    ctx: Context, container_id: str, result: dict[str, Any] | None, sock: socket.socket | None = None
) -> None:
    """After EXIT on an attached socket: remove the container when the monitor asked us to
    (``--rm``), tell it we are done and wait for it to exit, so nothing of the container is
    left when ``run --rm`` returns. Call before closing the socket."""
    if result and result.get("Cleanup") == "remove":
        me = os.getpid()
        # the monitor deletes the runtime's state meanwhile: leave that (and the bundle the
        # runtime may read) to it, and finish once it is gone
        monitor_deletes = bool(result.get("RuntimeDelete")) and sock is not None
        took = _state(ctx).transition(
            container_id,
            ACTIVE,
            status="removing",
            pid=0,
            exit_code=int(result["ExitCode"]),
            oom_killed=bool(result.get("OOMKilled")),
            started_at=result.get("StartedAt") or "",
            finished_at=result.get("FinishedAt") or now_rfc3339(),
            monitor_pid=me,
            monitor_start=proc_start_time(me),
        )
        from pallet.engine import attach as proto

        if sock is not None and took:
            # the removal is ours from here (if we die, the next command finishes it: the row says
            # "removing"): the monitor may exit as soon as its runtime delete is done
            with contextlib.suppress(OSError):
                sock.sendall(proto.frame(proto.DONE))
        if took:
            _remove_storage(ctx, container_id, remove_volumes=not monitor_deletes,
                            delete_row=not monitor_deletes, runtime=not monitor_deletes)
        trace("cli: removed")
        if sock is not None:
            with contextlib.suppress(OSError):
                if not took:
                    sock.sendall(proto.frame(proto.DONE))
                sock.settimeout(30)
                while sock.recv(4096):
                    pass
        if took and monitor_deletes:
            # the monitor is gone: its runtime delete is done (or, if it died, do it now)
            _remove_storage(ctx, container_id, remove_volumes=True, delete_row=True, layer=False)
            trace("cli: runtime state and row gone")


def attach_socket(
    ctx: Context, c: Container, *, stdin: bool, stdout: bool = True, stderr: bool = True
) -> socket.socket:
    """Connect to a running container's monitor and say which streams we want."""
    from pallet.engine import attach as proto

    path = str(bundle_dir(ctx, c.id) / "attach")
    try:
        sock = proto.connect(path)
    except OSError:
        raise ContainerStateError(f"cannot attach to container {c.name}: it is not running") from None
    sock.sendall(proto.jframe(proto.HELLO, {"stdin": stdin, "stdout": stdout, "stderr": stderr}))
    return sock


# -- stop, kill, wait ---------------------------------------------------------------------------------


def _wait_gone(pid: int, start: int, timeout: float | None) -> bool:
    """Wait until process ``pid`` (started at ``start``) is gone; False on timeout."""
    if not alive(pid, start):
        return True
    import select

    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        fd = -1
    try:
        if fd >= 0 and not alive(pid, start):
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if fd >= 0:
                r, _, _ = select.select([fd], [], [], min(remaining, 0.5) if remaining is not None else 0.5)
                if r:
                    return True
            else:
                time.sleep(0.02)
            if not alive(pid, start):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
    finally:
        if fd >= 0:
            os.close(fd)


def _wait_stopped(ctx: Context, c: Container, timeout: float | None) -> bool:
    """Wait for the monitor to record the exit (it exits when nothing restarts)."""
    if c.monitor_pid and alive(c.monitor_pid, c.monitor_start):
        return _wait_gone(c.monitor_pid, c.monitor_start, timeout)
    return _wait_gone(c.pid, c.pid_start, timeout)


def _wake_monitor(c: Container) -> None:
    # while "starting", monitor_pid names the CLI that is starting it, not a monitor
    if (
        c.status in ("running", "paused", "restarting")
        and c.monitor_pid
        and alive(c.monitor_pid, c.monitor_start)
    ):
        with contextlib.suppress(OSError):
            os.kill(c.monitor_pid, _signal.SIGUSR1)


def _after_stop(ctx: Context, c: Container) -> Container:
    """The container's row once it stopped; a ``--rm`` container's monitor may have removed it
    already: then the last row we had, as docker's ``stop``/``kill`` still succeed then."""
    try:
        return get(c.id, ctx)
    except NoSuchContainer:
        return c


def stop(ref: str, timeout: int | None = None, ctx: Context | None = None) -> Container:
    """Send the stop signal, then SIGKILL after ``timeout`` seconds (docker's escalation)."""
    ctx = _ctx(ctx)
    st = _state(ctx)
    c = get(ref, ctx)
    if c.status not in ("running", "paused", "restarting", "stopping"):
        return c
    st.transition(c.id, ACTIVE, stop_requested=True)
    _wake_monitor(c)  # a monitor waiting to restart re-reads the flag now, not after its back-off
    if c.status == "restarting":
        _wait_stopped(ctx, c, 30)
        return _after_stop(ctx, c)
    cfg = c.config["Config"]
    if timeout is None:
        timeout = cfg.get("StopTimeout", DEFAULT_STOP_TIMEOUT)
    runtime = _runtime(ctx, c)
    sig = signal_number(cfg.get("StopSignal") or "SIGTERM")
    with contextlib.suppress(PalletError):  # it may have exited meanwhile
        runtime.kill(c.id, sig)
    if c.status == "paused":
        runtime.call("resume", c.id)
    if not _wait_stopped(ctx, c, None if timeout is not None and timeout < 0 else float(timeout or 0)):
        with contextlib.suppress(PalletError):  # it may have exited meanwhile
            runtime.kill(c.id, _signal.SIGKILL, all_procs=True)
        if not _wait_stopped(ctx, c, 30):
            raise EngineError(f"container {c.name} did not stop within 30s of SIGKILL")
    return _after_stop(ctx, c)


def kill(ref: str, sig: str | int = "KILL", ctx: Context | None = None) -> Container:
    """Send a signal to the container's init; SIGKILL (or the stop signal) also cancels restarts."""
    ctx = _ctx(ctx)
    st = _state(ctx)
    c = get(ref, ctx)
    if c.status not in ("running", "paused"):
        raise ContainerStateError(f"cannot kill container {c.name}: it is not running")
    n = signal_number(sig)
    stop_sig = signal_number(c.config["Config"].get("StopSignal") or "SIGTERM")
    final = n in (_signal.SIGKILL, stop_sig)
    if final:
        st.transition(c.id, ACTIVE, stop_requested=True)
    runtime = _runtime(ctx, c)
    runtime.kill(c.id, n)
    if final and c.status == "paused":
        runtime.call("resume", c.id)
    if n == _signal.SIGKILL:
        _wait_stopped(ctx, c, 10)
    return _after_stop(ctx, c)


def restart(ref: str, timeout: int | None = None, ctx: Context | None = None) -> Container:
    ctx = _ctx(ctx)
    c = stop(ref, timeout, ctx)
    return start(c.id, ctx)


def wait(ref: str, ctx: Context | None = None) -> int:
    """Block until the container is not running; its exit status (docker's 'not-running')."""
    from pallet.engine import attach as proto

    ctx = _ctx(ctx)
    c = get(ref, ctx)
    last_code: int | None = None
    while True:
        if c.status in ("created", "exited", "dead"):
            return c.exit_code
        if c.status == "removed":
            return last_code if last_code is not None else c.exit_code
        try:
            sock = attach_socket(ctx, c, stdin=False, stdout=False, stderr=False)
        except ContainerStateError:
            time.sleep(0.05)
        else:
            with sock:
                reader = proto.FrameReader()
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    for kind, payload in reader.feed(data):
                        if kind == proto.EXIT:
                            import json

                            last_code = json.loads(payload).get("ExitCode")
                            if last_code is not None:
                                return int(last_code)
        try:
            c = get(c.id, ctx)
        except NoSuchContainer:
            if last_code is not None:
                return last_code
            raise


# -- remove -----------------------------------------------------------------------------------------


def remove(ref: str, *, force: bool = False, volumes: bool = False, ctx: Context | None = None) -> Container:
    """Remove a container: its runtime state, root filesystem layer, files and (``volumes``)
    anonymous volumes. ``force`` kills it first if it runs."""
    ctx = _ctx(ctx)
    st = _state(ctx)
    c = get(ref, ctx)
    me = os.getpid()
    for _ in range(50):
        if c.status == "removed":
            return c
        if c.status in ACTIVE:
            if not force:
                raise ContainerRunning(
                    f"cannot remove container {c.name}: container is {c.status}: stop the "
                    "container before removing or force remove"
                )
            st.transition(c.id, ACTIVE, stop_requested=True)
            _wake_monitor(c)
            if c.status != "restarting":
                runtime = _runtime(ctx, c)
                with contextlib.suppress(PalletError):  # it may have exited meanwhile
                    runtime.kill(c.id, _signal.SIGKILL, all_procs=True)
                if c.status == "paused":
                    runtime.call("resume", c.id)
            if not _wait_stopped(ctx, c, 30):
                raise EngineError(f"container {c.name} did not stop after SIGKILL")
        elif c.status == "removing":
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                cur = st.find(c.id)
                if cur is None:
                    return _gone(c)
                if not alive(cur.monitor_pid, cur.monitor_start):
                    break
                time.sleep(0.02)
        elif st.transition(
            c.id,
            ("created", "exited", "dead"),
            status="removing",
            monitor_pid=me,
            monitor_start=proc_start_time(me),
        ):
            _remove_storage(ctx, c.id, remove_volumes=volumes, delete_row=True)
            return _gone(c)
        try:
            c = get(c.id, ctx)
        except NoSuchContainer:
            return _gone(c)
    raise EngineError(f"cannot remove container {c.name}: its state keeps changing")


def _release_storage(ctx: Context, container_id: str) -> None:
    """The container stopped: off its networks, unmount its root filesystem (its changes stay)."""
    try:
        networking.release(ctx, container_id)
    finally:
        image_source(ctx).release_rootfs(container_id)
    st = _state(ctx)
    with contextlib.suppress(Exception):
        st.update(container_id, rootfs="")


def _remove_storage(
    ctx: Context,
    container_id: str,
    *,
    remove_volumes: bool,
    delete_row: bool,
    runtime: bool = True,
    layer: bool = True,
) -> None:
    """Delete everything a container owns, then its row. Each step is idempotent.

    ``runtime=False``: leave the runtime's state and the bundle (the monitor is deleting them);
    ``layer=False``: the root filesystem, image hold and files are already gone."""
    from pallet.engine import volumes as vols

    st = _state(ctx)
    c = st.find(container_id)
    anon: list[str] = []
    if c is not None:
        if runtime:
            rt_ = _runtime(ctx, c)
            if os.path.isdir(os.path.join(rt_.state_root, container_id)):
                rt_.delete(container_id)
        if remove_volumes:
            anon = st.container_volumes(container_id)
    networking.release_begin(ctx, container_id)  # on a thread, while the rest goes
    trace("remove: runtime state gone")
    if layer:
        src = image_source(ctx)
        src.remove_rootfs(container_id)
        trace("remove: rootfs removed")
        if c is not None:
            src.unhold(c.image_id, container_id)
        _rmtree(container_dir(ctx, container_id), ignore_errors=True)
    if runtime:
        _rmtree(bundle_dir(ctx, container_id), ignore_errors=True)
    networking.release(ctx, container_id)
    if delete_row:
        st.delete(container_id)
    if anon:
        vols.remove_anonymous(ctx, anon)


def prune(ctx: Context | None = None, filters: list[str] | None = None) -> tuple[list[str], int]:
    """Remove every stopped container (matching ``until=``/``label=`` filters); (ids, bytes freed)."""
    ctx = _ctx(ctx)
    flt: dict[str, list[str]] = {}
    for f in filters or []:
        k, sep, v = f.partition("=")
        if not sep or k not in ("until", "label", "label!"):
            raise UsageError(f"invalid filter {f!r}: container prune accepts until=, label= and label!=")
        flt.setdefault(k, []).append(v)
    until_ns = None
    if flt.get("until"):
        from pallet.engine.logs import parse_since

        until_ns = parse_since(flt["until"][-1])
    removed, reclaimed = [], 0
    src = image_source(ctx)
    for c in list_containers(ctx):
        if c.status not in ("created", "exited", "dead"):
            continue
        if until_ns is not None:
            from pallet.engine.logs import _parse_time_ns

            if _parse_time_ns(c.created) > until_ns:
                continue
        labels = c.config["Config"].get("Labels") or {}
        if not _labels_match(labels, flt.get("label", []), flt.get("label!", [])):
            continue
        size = 0
        with contextlib.suppress(Exception):
            size = src.rootfs_size(c.id)
        try:
            remove(c.id, ctx=ctx)
        except (ContainerRunning, NoSuchContainer):
            continue
        removed.append(c.id)
        reclaimed += size
    return removed, reclaimed


def _labels_match(labels: dict[str, str], want: list[str], not_want: list[str]) -> bool:
    for lab in want:
        k, sep, v = lab.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    for lab in not_want:
        k, sep, v = lab.partition("=")
        if k in labels and (not sep or labels[k] == v):
            return False
    return True


# -- pause, rename ----------------------------------------------------------------------------------


def pause(ref: str, ctx: Context | None = None) -> Container:
    ctx = _ctx(ctx)
    c = get(ref, ctx)
    if c.status != "running":
        raise ContainerStateError(
            f"container {c.name} is not running"
            if c.status != "paused"
            else f"container {c.name} is already paused"
        )
    _runtime(ctx, c).check("pause", c.id, what=f"pausing {c.name}")
    _state(ctx).transition(c.id, ("running",), status="paused")
    return get(c.id, ctx)


def unpause(ref: str, ctx: Context | None = None) -> Container:
    ctx = _ctx(ctx)
    c = get(ref, ctx)
    if c.status != "paused":
        raise ContainerStateError(f"container {c.name} is not paused")
    _runtime(ctx, c).check("resume", c.id, what=f"unpausing {c.name}")
    _state(ctx).transition(c.id, ("paused",), status="running")
    return get(c.id, ctx)


def rename(ref: str, new_name: str, ctx: Context | None = None) -> Container:
    ctx = _ctx(ctx)
    c = get(ref, ctx)
    name = validate_name(new_name)
    if name == c.name:
        raise UsageError(f"renaming a container with the same name as its current name: {name}")
    _state(ctx).rename(c.id, name)
    networking.rename(ctx, c.id, name)
    return get(c.id, ctx)


# -- runtime views ----------------------------------------------------------------------------------


def top(
    ref: str, ps_args: list[str] | None = None, ctx: Context | None = None
) -> tuple[list[str], list[list[str]]]:
    """docker top: the host's ``ps`` output restricted to the container's processes."""
    import subprocess

    ctx = _ctx(ctx)
    c = get(ref, ctx)
    if c.status not in ("running", "paused"):
        raise ContainerStateError(f"container {c.name} is not running")
    pids = set(cgroups.pids(c.config["CgroupsPath"]))
    args = ps_args or ["-ef"]
    res = subprocess.run(["ps", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise EngineError(f"ps {' '.join(args)} failed: {res.stderr.strip()}")
    lines = res.stdout.splitlines()
    if not lines:
        return [], []
    titles = lines[0].split()
    if "PID" not in titles:
        raise EngineError(f"couldn't find the PID field in ps output for 'ps {' '.join(args)}'")
    idx = titles.index("PID")
    rows = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > idx and fields[idx].isdigit() and int(fields[idx]) in pids:
            rows.append(fields)
    return titles, rows


def stats_sample(ctx: Context, c: Container) -> dict[str, Any]:
    """One reading of a container's counters, plus wall time and network bytes."""
    raw = cgroups.stats(c.config["CgroupsPath"]) if c.status in ("running", "paused") else {}
    rx = tx = 0
    if c.pid and c.config["HostConfig"].get("NetworkMode") != "host":
        try:
            with open(f"/proc/{c.pid}/net/dev") as f:
                for line in f.readlines()[2:]:
                    iface, _, rest = line.partition(":")
                    if iface.strip() == "lo":
                        continue
                    parts = rest.split()
                    rx += int(parts[0])
                    tx += int(parts[8])
        except (OSError, ValueError, IndexError):
            pass
    return {"t": time.monotonic_ns(), "raw": raw, "rx": rx, "tx": tx}


def stats(
    refs: list[str] | None, ctx: Context | None = None, *, all_containers: bool = False, interval: float = 1.0
) -> list[dict[str, Any]]:
    """CPU %, memory, network, block I/O and pids per container, from two cgroup readings."""
    ctx = _ctx(ctx)
    if refs:
        cs = [get(r, ctx) for r in refs]
    else:
        cs = [c for c in list_containers(ctx) if all_containers or c.status in ("running", "paused")]
    first = {c.id: stats_sample(ctx, c) for c in cs}
    if cs:
        time.sleep(interval)
    out = []
    host_mem = cgroups.host_memory()
    for c in cs:
        a, b = first[c.id], stats_sample(ctx, c)
        dt = max(1, b["t"] - a["t"])
        cpu = 0.0
        if a["raw"] and b["raw"]:
            cpu = max(0, b["raw"]["cpu_ns"] - a["raw"]["cpu_ns"]) / dt * 100.0
        raw = b["raw"] or {}
        usage = max(0, raw.get("mem_usage", 0) - raw.get("mem_cache", 0))
        limit = raw.get("mem_limit") or host_mem
        out.append(
            {
                "ID": c.id,
                "Name": c.name,
                "CPUPerc": cpu,
                "MemUsage": usage,
                "MemLimit": limit,
                "MemPerc": (usage / limit * 100.0) if limit else 0.0,
                "NetInput": b["rx"],
                "NetOutput": b["tx"],
                "BlockInput": raw.get("blk_read", 0),
                "BlockOutput": raw.get("blk_write", 0),
                "PIDs": raw.get("pids", 0),
            }
        )
    return out


def ports(ref: str, ctx: Context | None = None) -> list[tuple[str, str]]:
    """(container port/proto, host ip:port) pairs; none without a bridge network."""
    ctx = _ctx(ctx)
    return networking.port_pairs(ctx, get(ref, ctx))


def logs(
    ref: str,
    ctx: Context | None = None,
    *,
    since: str | None = None,
    until: str | None = None,
    tail: int | None = None,
    follow: bool = False,
):
    """The container's log records; with ``follow``, new ones until it stops."""
    from pallet.engine import logs as logmod

    ctx = _ctx(ctx)
    c = get(ref, ctx)
    driver = c.config["HostConfig"]["LogConfig"]["Type"]
    if driver == "none":
        raise EngineError(
            f"configured logging driver does not support reading: container {c.name} uses --log-driver none"
        )
    path = log_path(ctx, c)
    since_ns = logmod.parse_since(since)
    until_ns = logmod.parse_since(until)
    try:
        st = os.stat(path)
        offset, inode = st.st_size, st.st_ino
    except FileNotFoundError:
        offset, inode = 0, 0
    yield from logmod.read(path, driver, since=since_ns, until=until_ns, tail=tail)
    if not follow or until_ns is not None:
        return

    def running() -> bool:
        try:
            cur = get(c.id, ctx)
        except NoSuchContainer:
            return False
        return cur.status in ACTIVE

    for rec in logmod.follow(path, driver, start_offset=offset, start_inode=inode, still_running=running):
        if since_ns is None or logmod._in_window(rec, since_ns, None):
            yield rec


def rootfs_size(ctx: Context, c: Container) -> int:
    with contextlib.suppress(Exception):
        return image_source(ctx).rootfs_size(c.id)
    return 0
