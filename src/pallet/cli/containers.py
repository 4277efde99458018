"""Container verbs: run, create, start, stop, kill, restart, rm, ps, logs, exec, wait, attach, cp,
top, stats, port, rename, pause, unpause, commit, export, and the ``container`` group.

Parsing and rendering only; the work is in :mod:`pallet.engine`. Module-level imports stay
light: ``pallet run`` is benchmarked, so the engine is imported inside the handlers.
"""

from __future__ import annotations

import argparse
import os
import sys

from pallet.errors import PalletError, UsageError

TYPE_CHECKING = False  # typing costs an import on pallet run's path; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from pallet.context import Context

# -- --format: Go templates (pallet.cli.gotemplate), imported only when a --format is given -------------


def render_format(template: str, obj: Any) -> str:
    """One object through ``--format``: "json" (the object as JSON), or a Go template."""
    from pallet.cli import gotemplate

    if template.strip() == "json":
        return gotemplate.to_json(obj)
    return gotemplate.render(template, [obj]).removesuffix("\n")


def print_formatted(template: str, objs: list[Any], headers: dict[str, str] | None = None) -> None:
    """Each object through ``--format`` ("json": one JSON object per line, as docker's ``ps``);
    a ``table`` template gets a header row and docker's column alignment."""
    from pallet.cli import gotemplate

    if template.strip() == "json":
        for o in objs:
            print(gotemplate.to_json(o))
        return
    sys.stdout.write(gotemplate.render(template, objs, headers))


class PullProgress:
    """``pallet.cli.progress``'s display, made at the first event: ``run`` and ``create`` import
    nothing for it unless they really pull. Closing it ends the display of one pull."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._display: Any = None

    def _get(self) -> Any:
        if self._display is None:
            from pallet.cli import progress

            self._display = progress.create(sys.stderr, quiet=self.quiet)
        return self._display

    def start(self, ident: str, total: int | None = None, kind: str = "blob") -> None:
        self._get().start(ident, total, kind)

    def advance(self, ident: str, n: int) -> None:
        self._get().advance(ident, n)

    def finish(self, ident: str, status: str = "done") -> None:
        self._get().finish(ident, status)

    def message(self, text: str) -> None:
        self._get().message(text)

    def close(self) -> None:
        if self._display is not None:
            self._display.close()
            self._display = None


# -- shared parsing helpers ----------------------------------------------------------------------------------


def parse_detach_keys(text: str | None) -> bytes | None:
    """docker's --detach-keys: "ctrl-p,ctrl-q", "a,b"; "" disables detaching."""
    if text is None:
        return None
    if text == "":
        return b""
    out = bytearray()
    for part in text.split(","):
        p = part.strip()
        if p.lower().startswith("ctrl-") and len(p) == 6:
            ch = p[5].lower()
            code = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}.get(ch)
            if code is None:
                if not ("a" <= ch <= "z"):
                    raise UsageError(f"invalid detach keys {text!r}")
                code = ord(ch) - ord("a") + 1
            out.append(code)
        elif len(p) == 1:
            out.append(ord(p))
        else:
            raise UsageError(f"invalid detach keys {text!r}: use ctrl-<letter> or single characters")
    return bytes(out)


class _Help(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, help="show this help message and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        parser.print_help()
        parser.exit()


def _add_create_flags(p: argparse.ArgumentParser, run: bool) -> None:
    a = p.add_argument
    if run:
        a("-d", "--detach", action="store_true", help="run in the background and print the container ID")
        a("--sig-proxy", default="true", choices=["true", "false"], help="proxy signals to the container")
        a("--detach-keys", help="key sequence to detach (default ctrl-p,ctrl-q)")
    a("-i", "--interactive", action="store_true", help="keep STDIN open")
    a("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    a("-a", "--attach", action="append", default=[], help="attach to STDIN, STDOUT or STDERR (accepted)")
    a("--rm", action="store_true", help="remove the container when it exits")
    a("--name", help="name the container")
    a("-e", "--env", action="append", default=[], help="set an environment variable (KEY=VALUE or KEY)")
    a("--env-file", action="append", default=[], help="read environment variables from a file")
    a("-v", "--volume", action="append", default=[], help="bind mount or volume: [SRC:]DEST[:OPTS]")
    a("--mount", action="append", default=[], help="mount: type=bind|volume|tmpfs,source=,target=,...")
    a("--tmpfs", action="append", default=[], help="mount a tmpfs: PATH[:OPTIONS]")
    a("-w", "--workdir", help="working directory inside the container")
    a("-u", "--user", help="user: name|uid[:group|gid]")
    a("--group-add", action="append", default=[], help="additional groups")
    a("--entrypoint", help="override the image's entrypoint")
    a("-h", "--hostname", help="container host name")
    a("-l", "--label", action="append", default=[], help="set a label KEY=VALUE")
    a("-m", "--memory", help="memory limit (e.g. 512m)")
    a("--memory-swap", help="memory + swap limit (-1: unlimited)")
    a("--memory-reservation", help="memory soft limit")
    a("--cpus", type=float, help="number of CPUs")
    a("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)")
    a("--cpuset-cpus", help="CPUs to run on (0-3, 0,1)")
    a("--pids-limit", type=int, help="maximum number of processes (-1: unlimited)")
    a("--ulimit", action="append", default=[], help="ulimit: NAME=SOFT[:HARD]")
    a("--read-only", action="store_true", help="mount the root filesystem read-only")
    a("--cap-add", action="append", default=[], help="add a Linux capability")
    a("--cap-drop", action="append", default=[], help="drop a Linux capability")
    a("--privileged", action="store_true", help="give the container every privilege")
    a("--security-opt", action="append", default=[], help="seccomp=FILE|unconfined, no-new-privileges, ...")
    a("--device", action="append", default=[], help="add a host device: HOST[:CONTAINER][:rwm]")
    a("--init", action="store_true", help="run an init (catatonit) as PID 1")
    a("--restart", default="no", help="restart policy: no, on-failure[:N], always, unless-stopped")
    a("--stop-signal", help="signal to stop the container (default SIGTERM)")
    a("--stop-timeout", type=int, help="seconds to wait before killing on stop (default 10)")
    a("--health-cmd", help="command to check health")
    a("--health-interval", help="time between health checks (e.g. 30s)")
    a("--health-timeout", help="maximum time a check may take")
    a("--health-retries", type=int, help="consecutive failures needed to report unhealthy")
    a("--health-start-period", help="grace period before failures count")
    a("--no-healthcheck", action="store_true", help="disable the image's HEALTHCHECK")
    # not dest="runtime": that would shadow the global --runtime (pallet --runtime runc run ...)
    a("--runtime", dest="container_runtime", help="OCI runtime: pallet-runtime, runc, crun, runsc, kata")
    a("--pull", default="missing", help="pull policy: always, missing, never, newer")
    a("--platform", help="image platform (os/arch)")
    a("--log-driver", default="json-file", help="json-file, k8s-file or none")
    a("--log-opt", action="append", default=[], help="log driver option: max-size=, max-file=")
    a("--add-host", action="append", default=[], help="add HOST:IP to /etc/hosts")
    a("--dns", action="append", default=[], help="DNS server")
    a("--dns-search", action="append", default=[], help="DNS search domain")
    a("--dns-option", action="append", default=[], help="DNS option")
    a("--sysctl", action="append", default=[], help="namespaced kernel parameter KEY=VALUE")
    a("--shm-size", help="size of /dev/shm")
    a(
        "--network",
        "--net",
        dest="network",
        action="append",
        help="bridge (default), NETWORK[,NETWORK...], NETWORK:ip=IP,mac=MAC,alias=NAME,interface_name=IF, "
        "none, host or container:NAME",
    )
    a("--network-alias", action="append", default=[], help="name other containers on the network use")
    a("--ip", help="IPv4 address on the network")
    a("--mac-address", help="MAC address of the container's interface")
    a("-p", "--publish", action="append", default=[], help="publish a port: [HOSTIP:][HOSTPORT:]PORT[/PROTO]")
    a("-P", "--publish-all", action="store_true", help="publish every exposed port on a random host port")
    a("--expose", action="append", default=[], help="expose a port or range: PORT[-END][/PROTO]")
    a("--cgroup-parent", help="parent cgroup (default /pallet)")
    a("--oom-score-adj", type=int, help="OOM score adjustment")
    a("--cidfile", help="write the container ID to this file")
    a("-q", "--quiet", action="store_true", help="suppress pull output")
    a("--help", action=_Help)
    a("image", metavar="IMAGE")
    a("command", nargs=argparse.REMAINDER, metavar="COMMAND")


def _options(args: argparse.Namespace):
    from pallet.engine.options import CreateOptions

    return CreateOptions(
        name=args.name,
        entrypoint=args.entrypoint,
        env=args.env,
        env_files=args.env_file,
        workdir=args.workdir,
        user=args.user,
        group_add=args.group_add,
        hostname=args.hostname,
        labels=args.label,
        tty=args.tty,
        interactive=args.interactive,
        auto_remove=args.rm,
        volumes=args.volume,
        mounts=args.mount,
        tmpfs=args.tmpfs,
        memory=args.memory,
        memory_swap=args.memory_swap,
        memory_reservation=args.memory_reservation,
        cpus=args.cpus,
        cpu_shares=args.cpu_shares,
        cpuset_cpus=args.cpuset_cpus,
        pids_limit=args.pids_limit,
        ulimits=args.ulimit,
        read_only=args.read_only,
        cap_add=args.cap_add,
        cap_drop=args.cap_drop,
        privileged=args.privileged,
        security_opt=args.security_opt,
        devices=args.device,
        init=args.init,
        restart=args.restart,
        stop_signal=args.stop_signal,
        stop_timeout=args.stop_timeout,
        health_cmd=args.health_cmd,
        health_interval=args.health_interval,
        health_timeout=args.health_timeout,
        health_retries=args.health_retries,
        health_start_period=args.health_start_period,
        no_healthcheck=args.no_healthcheck,
        runtime=args.container_runtime,
        pull=args.pull,
        platform=args.platform,
        log_driver=args.log_driver,
        log_opts=args.log_opt,
        add_hosts=args.add_host,
        dns=args.dns,
        dns_search=args.dns_search,
        dns_options=args.dns_option,
        sysctls=args.sysctl,
        shm_size=args.shm_size,
        network=list(args.network) if args.network else None,
        publish=args.publish,
        publish_all=args.publish_all,
        expose=args.expose,
        network_aliases=args.network_alias,
        ip=args.ip,
        mac_address=args.mac_address,
        cgroup_parent=args.cgroup_parent,
        oom_score_adj=args.oom_score_adj,
    )


def _write_cidfile(path: str | None, cid: str) -> None:
    if path:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise UsageError(
                f"container ID file found, make sure the other container isn't running or delete {path}"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(cid)


def _each(refs: list[str], fn, *, quiet: bool = False) -> int:
    """Apply ``fn`` to each reference; print it on success, an error line on failure."""
    rc = 0
    for ref in refs:
        try:
            out = fn(ref)
        except PalletError as e:
            print(f"Error: {e}", file=sys.stderr)
            rc = rc or e.exit_code
            continue
        if not quiet:
            print(ref if out is None else out)
    return rc


# -- handlers ------------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, ctx: Context) -> int:
    import socket

    from pallet.cli.main import gc_on
    from pallet.engine.launch import Launch, take_preforked
    from pallet.engine.procs import trace

    trace("cli: parsed")
    # the monitor first: main() forked it before the command line was even parsed (or, called
    # as a library, its interpreter boots now), while the engine is imported and the container
    # created and prepared
    ours = theirs = None
    if not args.detach:
        ours, theirs = socket.socketpair()
    launch = take_preforked()
    if launch is None:
        launch = Launch(theirs)
    elif theirs is not None:
        launch.give_client(theirs)
    if theirs is not None:
        theirs.close()
    from pallet.engine import containers

    opts = _options(args)
    command = args.command or None
    _show_pulls(containers, ctx, args.quiet)
    gc_on()
    trace("cli: imported")
    c, code = containers.run(
        args.image,
        command,
        opts,
        ctx,
        detach=args.detach,
        sig_proxy=args.sig_proxy == "true",
        detach_keys=parse_detach_keys(args.detach_keys),
        on_created=lambda c: _write_cidfile(args.cidfile, c.id),
        launch=launch,
        attach_sock=ours,
    )
    if args.detach:
        print(c.id)
        return _exit_now(0)
    return _exit_now(0 if code is None else code)


def _show_pulls(containers: Any, ctx: Context, quiet: bool) -> None:
    """A pull ``run``/``create`` needs shows its progress on stderr, as podman's (``-q``: not)."""
    src = containers.image_source(ctx)
    if hasattr(src, "progress"):
        src.progress = PullProgress(quiet)


def _exit_now(code: int) -> int:
    """In the ``pallet`` process itself, exit without tearing the interpreter down (that costs
    ~10-30 ms of freeing everything ``run`` imported, on the benchmarked path); when called as a
    library (tests, embedding), just return the status."""
    from pallet.cli.main import end_helpers, is_entry_process

    if is_entry_process():
        end_helpers()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def cmd_create(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import containers

    opts = _options(args)
    opts.attach = not (args.detach if hasattr(args, "detach") else False)
    _show_pulls(containers, ctx, args.quiet)
    c = containers.create(args.image, args.command or None, opts, ctx)
    _write_cidfile(args.cidfile, c.id)
    print(c.id)
    return 0


def cmd_start(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import attach as proto
    from pallet.engine import containers

    if args.attach or args.interactive:
        if len(args.containers) > 1:
            raise UsageError("you cannot start and attach multiple containers at once")
        c = containers.get(args.containers[0], ctx)
        tty = bool(c.config["Config"].get("Tty"))
        size = proto.terminal_size(0) if tty and os.isatty(0) else None
        ours, theirs = __import__("socket").socketpair()
        try:
            try:
                containers.start(c.id, ctx, attach_client=theirs, console_size=size)
            finally:
                theirs.close()
            res = proto.relay(
                ours,
                stdin_fd=0 if args.interactive else None,
                stdout_fd=1,
                stderr_fd=2,
                tty=tty,
                detach_keys=parse_detach_keys(args.detach_keys),
            )
            containers.finish_attached(ctx, c.id, res, ours)
        finally:
            ours.close()
        if res is None:
            return 0
        if res.get("ExitCode") is None:
            raise PalletError(res.get("Error") or "lost the container's monitor")
        return int(res["ExitCode"])
    return _each(args.containers, lambda r: (containers.start(r, ctx), None)[1])


def cmd_stop(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import containers

    return _each(args.containers, lambda r: (containers.stop(r, args.time, ctx), None)[1])


def cmd_kill(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import containers

    return _each(args.containers, lambda r: (containers.kill(r, args.signal, ctx), None)[1])


def cmd_restart(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import containers

    return _each(args.containers, lambda r: (containers.restart(r, args.time, ctx), None)[1])


def cmd_rm(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import containers
    from pallet.engine.errors import NoSuchContainer

    rc = 0
    for ref in args.containers:
        try:
            containers.remove(ref, force=args.force, volumes=args.volumes, ctx=ctx)
        except NoSuchContainer as e:
            if args.force:
                continue
            print(f"Error: {e}", file=sys.stderr)
            rc = rc or 1
            continue
        except PalletError as e:
            print(f"Error: {e}", file=sys.stderr)
            rc = e.exit_code if rc in (0, 1) else rc
            continue
        print(ref)
    return rc


_PS_HEADERS = {
    "ID": "CONTAINER ID",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
    "Status": "STATUS",
    "Ports": "PORTS",
    "Names": "NAMES",
    "Size": "SIZE",
    "State": "STATE",
    "Labels": "LABELS",
    "Mounts": "MOUNTS",
    "Networks": "NETWORKS",
}


def _ps_filter(containers_: list, filters: list[str], ctx: Context) -> list:
    import re

    from pallet.engine import networking
    from pallet.engine.inspect import docker_status

    flt: dict[str, list[str]] = {}
    for f in filters:
        k, sep, v = f.partition("=")
        if not sep:
            raise UsageError(f"bad format of filter {f!r} (expected name=value)")
        if k not in (
            "id",
            "name",
            "label",
            "status",
            "exited",
            "ancestor",
            "before",
            "since",
            "health",
            "volume",
            "network",
            "label!",
        ):
            raise UsageError(f"invalid filter {k!r}")
        flt.setdefault(k, []).append(v)
    for v in flt.get("status", []):
        if v not in ("created", "restarting", "running", "removing", "paused", "exited", "dead"):
            raise UsageError(
                f"invalid filter 'status={v}': use created, restarting, running, removing, "
                "paused, exited or dead"
            )
    out = []
    by_ref: dict[str, Any] = {}
    for key in ("before", "since"):
        for ref in flt.get(key, []):
            from pallet.engine import containers

            by_ref[key] = containers.get(ref, ctx)
    for c in containers_:
        st = docker_status(c)
        labels = c.config["Config"].get("Labels") or {}
        if flt.get("id") and not any(c.id.startswith(v) for v in flt["id"]):
            continue
        if flt.get("name") and not any(re.search(v, c.name) for v in flt["name"]):
            continue
        if flt.get("status") and st not in flt["status"]:
            continue
        if flt.get("exited") and not (st == "exited" and str(c.exit_code) in flt["exited"]):
            continue
        ok = True
        for lab in flt.get("label", []):
            k, sep, v = lab.partition("=")
            if k not in labels or (sep and labels[k] != v):
                ok = False
        for lab in flt.get("label!", []):
            k, sep, v = lab.partition("=")
            if k in labels and (not sep or labels[k] == v):
                ok = False
        if not ok:
            continue
        if flt.get("ancestor") and not any(
            a in (c.image, c.image_id, c.image_id[7:19])
            or c.image_id.startswith(a)
            or a in c.config.get("ImageNames", [])
            for a in flt["ancestor"]
        ):
            continue
        if "before" in by_ref and not c.created < by_ref["before"].created:
            continue
        if "since" in by_ref and not c.created > by_ref["since"].created:
            continue
        if flt.get("health"):
            h = (c.health or {}).get("Status") or "none"
            if h not in flt["health"]:
                continue
        if flt.get("volume"):
            vols = {m["Source"] for m in c.config["MountSpecs"]} | {
                m["Target"] for m in c.config["MountSpecs"]
            }
            if not any(v in vols for v in flt["volume"]):
                continue
        if flt.get("network") and not set(networking.network_names(c)) & set(flt["network"]):
            continue
        out.append(c)
    return out


def _ps_row(c: Any, ctx: Context, *, trunc: bool, size: bool) -> dict[str, Any]:
    from pallet.cli import render
    from pallet.engine import containers, networking
    from pallet.engine.inspect import command_text, docker_status, status_text

    labels = c.config["Config"].get("Labels") or {}
    row = {
        "ID": c.id[:12] if trunc else c.id,
        "Image": c.image,
        "Command": command_text(c, truncate=trunc),
        "CreatedAt": c.created,
        "RunningFor": render.time_ago(c.created),
        "Ports": networking.ports_text(ctx, c),
        "Status": status_text(c),
        "State": docker_status(c),
        "Names": c.name,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "Label": lambda k: labels.get(k, ""),
        "Mounts": ",".join(
            m["Source"][:15] if m["Type"] == "volume" else m["Source"] for m in c.config["MountSpecs"]
        ),
        "Networks": ",".join(networking.network_names(c)),
        "Size": "",
    }
    if size:
        rw = containers.rootfs_size(ctx, c)
        row["Size"] = f"{render.human_size(rw)} (virtual {render.human_size(rw)})"
    return row


def cmd_ps(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli import render
    from pallet.engine import containers

    cs = [c for c in containers.list_containers(ctx) if c.status != "removed"]
    show_all = args.all or args.last is not None or args.latest
    if not show_all:
        cs = [c for c in cs if c.status in ("running", "paused", "restarting", "stopping")]
    cs = _ps_filter(cs, args.filter, ctx)
    if args.latest:
        cs = cs[:1]
    elif args.last is not None and args.last >= 0:
        cs = cs[: args.last]
    trunc = not args.no_trunc
    if args.quiet:
        for c in cs:
            print(c.id[:12] if trunc else c.id)
        return 0
    rows = [_ps_row(c, ctx, trunc=trunc, size=args.size) for c in cs]
    if args.format:
        if args.format == "json":
            for r in rows:
                r.pop("Label")
                print(__import__("json").dumps(r, ensure_ascii=False))
            return 0
        print_formatted(args.format, rows, _PS_HEADERS)
        return 0
    headers = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    keys = ["ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names"]
    if args.size:
        headers.append("SIZE")
        keys.append("Size")
    render.table(headers, [[r[k] for k in keys] for r in rows])
    return 0


def cmd_logs(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import containers

    tail = None
    if args.tail not in (None, "all", "-1"):
        try:
            tail = int(args.tail)
        except ValueError:
            raise UsageError(f"invalid --tail {args.tail!r}: a number or 'all'") from None
    out, err = sys.stdout.buffer, sys.stderr.buffer
    try:
        for rec in containers.logs(
            args.container, ctx, since=args.since, until=args.until, tail=tail, follow=args.follow
        ):
            target = err if rec.stream == "stderr" else out
            if args.timestamps:
                target.write(rec.time.encode() + b" ")
            target.write(rec.data)
            if args.follow:
                target.flush()
    finally:
        out.flush()
        err.flush()
    return 0


def cmd_exec(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import execs

    code = execs.exec_(
        args.container,
        args.command,
        ctx,
        detach=args.detach,
        interactive=args.interactive,
        tty=args.tty,
        user=args.user,
        workdir=args.workdir,
        env=args.env,
        env_files=args.env_file,
        privileged=args.privileged,
        detach_keys=parse_detach_keys(args.detach_keys),
    )
    return 0 if code is None else code


def cmd_wait(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import containers

    return _each(args.containers, lambda r: containers.wait(r, ctx))


def cmd_attach(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import attach as proto
    from pallet.engine import containers

    c = containers.get(args.container, ctx)
    if c.status == "paused":
        raise PalletError(f"cannot attach to a paused container {c.name}: unpause it first")
    cfg = c.config["Config"]
    tty = bool(cfg.get("Tty"))
    want_stdin = not args.no_stdin and bool(cfg.get("OpenStdin"))
    sock = containers.attach_socket(ctx, c, stdin=want_stdin)
    with sock:
        res = proto.relay(
            sock,
            stdin_fd=0 if want_stdin else None,
            stdout_fd=1,
            stderr_fd=2,
            tty=tty,
            detach_keys=parse_detach_keys(args.detach_keys),
            sig_proxy=args.sig_proxy == "true",
        )
    if res is None:
        return 0
    if res.get("ExitCode") is None:
        return 0
    return int(res["ExitCode"])


def _split_cp(arg: str) -> tuple[str | None, str]:
    if arg.startswith(("/", ".", "~")) or arg == "-":
        return None, arg
    name, sep, path = arg.partition(":")
    if not sep:
        return None, arg
    return name, path


def cmd_cp(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import copy

    src_c, src = _split_cp(args.src)
    dst_c, dst = _split_cp(args.dest)
    if (src_c is None) == (dst_c is None):
        raise UsageError(
            "copying between containers or between host paths is not supported: exactly one of "
            "SRC and DEST must be CONTAINER:PATH"
        )
    if src_c is not None:
        if not src:
            raise UsageError("the source path in the container must not be empty")
        copy.copy_from(src_c, src, dst, ctx, follow_link=args.follow_link, archive=args.archive)
    else:
        if not dst:
            raise UsageError("the destination path in the container must not be empty")
        copy.copy_to(dst_c, src, dst, ctx, archive=args.archive, follow_link=args.follow_link)  # type: ignore[arg-type]
    return 0


def cmd_top(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli import render
    from pallet.engine import containers

    titles, rows = containers.top(args.container, args.ps_args or None, ctx)
    render.table(titles, rows)
    return 0


def bytes_size(n: float) -> str:
    """go-units BytesSize: binary units, 4 significant digits ("1.5MiB")."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024.0
        i += 1
    return f"{n:.4g}{units[i]}"


def _stats_rows(stats: list[dict[str, Any]], trunc: bool) -> list[dict[str, Any]]:
    from pallet.cli import render

    rows = []
    for s in stats:
        rows.append(
            {
                "ID": s["ID"][:12] if trunc else s["ID"],
                "Container": s["ID"][:12] if trunc else s["ID"],
                "Name": s["Name"],
                "CPUPerc": f"{s['CPUPerc']:.2f}%",
                "MemUsage": f"{bytes_size(s['MemUsage'])} / {bytes_size(s['MemLimit'])}",
                "MemPerc": f"{s['MemPerc']:.2f}%",
                "NetIO": f"{render.human_size(s['NetInput'])} / {render.human_size(s['NetOutput'])}",
                "BlockIO": f"{render.human_size(s['BlockInput'])} / {render.human_size(s['BlockOutput'])}",
                "PIDs": str(s["PIDs"]),
            }
        )
    return rows


def cmd_stats(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli import render
    from pallet.engine import containers

    headers = {
        "ID": "CONTAINER ID",
        "Container": "CONTAINER",
        "Name": "NAME",
        "CPUPerc": "CPU %",
        "MemUsage": "MEM USAGE / LIMIT",
        "MemPerc": "MEM %",
        "NetIO": "NET I/O",
        "BlockIO": "BLOCK I/O",
        "PIDs": "PIDS",
    }
    keys = ["ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs"]
    while True:
        rows = _stats_rows(
            containers.stats(args.containers or None, ctx, all_containers=args.all, interval=1.0),
            not args.no_trunc,
        )
        if not args.no_stream and sys.stdout.isatty():
            sys.stdout.write("\033[2J\033[H")
        if args.format == "json":
            for r in rows:
                print(__import__("json").dumps(r))
        elif args.format:
            print_formatted(args.format, rows, headers)
        else:
            render.table([headers[k] for k in keys], [[r[k] for k in keys] for r in rows])
        sys.stdout.flush()
        if args.no_stream:
            return 0


def cmd_port(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import containers

    pairs = containers.ports(args.container, ctx)
    if args.port:
        want = args.port if "/" in args.port else f"{args.port}/tcp"
        pairs = [p for p in pairs if p[0] == want]
        if not pairs:
            raise PalletError(f"no public port '{want}' published for {args.container}")
        for _, host in pairs:
            print(host)
        return 0
    for port, host in pairs:
        print(f"{port} -> {host}")
    return 0


def cmd_rename(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import containers

    containers.rename(args.container, args.new_name, ctx)
    return 0


def cmd_pause(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import containers

    return _each(args.containers, lambda r: (containers.pause(r, ctx), None)[1])


def cmd_unpause(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import containers

    return _each(args.containers, lambda r: (containers.unpause(r, ctx), None)[1])


def cmd_commit(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine.commit import commit

    info = commit(
        args.container,
        args.repository,
        ctx,
        message=args.message or "",
        author=args.author or "",
        changes=args.change,
        pause=args.pause == "true",
    )
    print(info.id)
    return 0


def cmd_export(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine.copy import export

    if args.output:
        from pallet.fsutil import atomic_writer

        with atomic_writer(args.output) as f:
            export(args.container, f, ctx)
        return 0
    if sys.stdout.isatty():
        raise UsageError("cowardly refusing to save to a terminal: use the -o flag or redirect")
    export(args.container, sys.stdout.buffer, ctx)
    sys.stdout.buffer.flush()
    return 0


def inspect_containers(
    refs: list[str], ctx: Context, *, size: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """(objects found, references not found): docker's container inspect JSON."""
    from pallet.engine import containers
    from pallet.engine.errors import NoSuchContainer
    from pallet.engine.inspect import container_inspect

    found, missing = [], []
    for r in refs:
        try:
            found.append(container_inspect(ctx, containers.get(r, ctx), size=size))
        except NoSuchContainer:
            missing.append(r)
    return found, missing


#: maps in docker's container JSON (Go map types: an absent key is not a template error)
_GO_MAPS = (
    ("Config", "Labels"),
    ("Config", "Volumes"),
    ("Config", "ExposedPorts"),
    ("HostConfig", "PortBindings"),
    ("HostConfig", "Sysctls"),
    ("HostConfig", "Tmpfs"),
    ("HostConfig", "LogConfig", "Config"),
    ("NetworkSettings", "Ports"),
    ("NetworkSettings", "Networks"),
    ("GraphDriver", "Data"),
)


def go_typed(obj: dict[str, Any]) -> dict[str, Any]:
    """Mark the maps of a container's inspect JSON for ``pallet.cli.gotemplate``
    (``{{.Config.Labels.x}}`` of an absent label prints ``<no value>``, as docker's)."""
    from pallet.cli.gotemplate import NIL_MAP, GoMap

    for path in _GO_MAPS:
        parent: Any = obj
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent:
            value = parent[path[-1]]
            if value is None:
                parent[path[-1]] = NIL_MAP
            elif isinstance(value, dict):
                parent[path[-1]] = GoMap(value)
    return obj


def inspect_data(name: str, ctx: Context) -> dict[str, Any]:
    """The top-level ``pallet inspect``'s container inspector (raises NotFound for non-containers)."""
    from pallet.engine import containers
    from pallet.engine.inspect import container_inspect

    return go_typed(container_inspect(ctx, containers.get(name, ctx)))


def cmd_inspect(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli.inspect import emit

    def one(name: str, ctx: Context) -> dict[str, Any]:
        from pallet.engine import containers
        from pallet.engine.inspect import container_inspect

        return go_typed(container_inspect(ctx, containers.get(name, ctx), size=args.size))

    return emit(args.containers, args.format, [("container", one)], ctx)


def cmd_prune(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli import render
    from pallet.engine import containers

    if not args.force:
        sys.stdout.write(
            "WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] "
        )
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return 0
    removed, reclaimed = containers.prune(ctx, args.filter)
    if removed:
        print("Deleted Containers:")
        for cid in removed:
            print(cid)
        print()
    print(f"Total reclaimed space: {render.human_size(reclaimed)}")
    return 0


# -- registration --------------------------------------------------------------------------------

_HELP = {
    "run": "create and run a container",
    "create": "create a container",
    "start": "start containers",
    "stop": "stop running containers",
    "kill": "kill running containers",
    "restart": "restart containers",
    "rm": "remove containers",
    "ps": "list containers",
    "logs": "fetch a container's logs",
    "exec": "run a command in a running container",
    "wait": "wait for containers to stop",
    "attach": "attach to a running container",
    "cp": "copy files between a container and the host",
    "top": "show a container's processes",
    "stats": "show containers' resource usage",
    "port": "list a container's port mappings",
    "rename": "rename a container",
    "pause": "pause containers",
    "unpause": "unpause containers",
    "commit": "create an image from a container's changes",
    "export": "export a container's filesystem as a tar archive",
    "inspect": "show containers' details",
    "prune": "remove all stopped containers",
}


def _add_verb(sub: Any, verb: str, *, aliases: tuple[str, ...] = ()) -> None:
    if verb in ("run", "create"):
        p = sub.add_parser(verb, help=_HELP[verb], aliases=list(aliases), add_help=False)
        _add_create_flags(p, verb == "run")
        p.set_defaults(func=cmd_run if verb == "run" else cmd_create)
        return
    p = sub.add_parser(verb, help=_HELP.get(verb, ""), aliases=list(aliases))
    a = p.add_argument
    if verb == "start":
        a("-a", "--attach", action="store_true", help="attach stdout/stderr and forward signals")
        a("-i", "--interactive", action="store_true", help="attach stdin")
        a("--detach-keys", help="key sequence to detach")
        a("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_start)
    elif verb in ("stop", "restart"):
        a("-t", "--time", "--timeout", dest="time", type=int, help="seconds to wait before killing")
        a("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_stop if verb == "stop" else cmd_restart)
    elif verb == "kill":
        a("-s", "--signal", default="KILL", help="signal to send (default KILL)")
        a("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_kill)
    elif verb == "rm":
        a("-f", "--force", action="store_true", help="kill and remove running containers")
        a("-v", "--volumes", action="store_true", help="also remove anonymous volumes")
        a("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_rm)
    elif verb == "ps":
        a("-a", "--all", action="store_true", help="show all containers (default: running)")
        a("-q", "--quiet", action="store_true", help="only IDs")
        a("-n", "--last", type=int, help="show the N last created containers")
        a("-l", "--latest", action="store_true", help="show the latest created container")
        a("-s", "--size", action="store_true", help="show sizes")
        a("--no-trunc", action="store_true", help="do not truncate output")
        a("--format", help="json, or a Go template")
        a("-f", "--filter", action="append", default=[], help="filter: status=, name=, label=, ...")
        p.set_defaults(func=cmd_ps)
    elif verb == "logs":
        a("-f", "--follow", action="store_true", help="follow the log")
        a("--tail", "-n", dest="tail", help="number of lines from the end (default all)")
        a("--since", help="since a time or duration (2024-01-02T15:04:05Z, 10m)")
        a("--until", help="until a time or duration")
        a("-t", "--timestamps", action="store_true", help="show timestamps")
        a("--details", action="store_true", help="accepted for docker compatibility")
        a("container", metavar="CONTAINER")
        p.set_defaults(func=cmd_logs)
    elif verb == "exec":
        a("-d", "--detach", action="store_true", help="run in the background")
        a("-i", "--interactive", action="store_true", help="keep STDIN open")
        a("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
        a("-u", "--user", help="user: name|uid[:group|gid]")
        a("-w", "--workdir", help="working directory")
        a("-e", "--env", action="append", default=[], help="set an environment variable")
        a("--env-file", action="append", default=[], help="read environment variables from a file")
        a("--privileged", action="store_true", help="give the process every capability")
        a("--detach-keys", help="key sequence to detach")
        a("container", metavar="CONTAINER")
        a("command", nargs=argparse.REMAINDER, metavar="COMMAND")
        p.set_defaults(func=cmd_exec)
    elif verb == "wait":
        a("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_wait)
    elif verb == "attach":
        a("--no-stdin", action="store_true", help="do not attach STDIN")
        a("--sig-proxy", default="true", choices=["true", "false"], help="proxy signals to the container")
        a("--detach-keys", help="key sequence to detach")
        a("container", metavar="CONTAINER")
        p.set_defaults(func=cmd_attach)
    elif verb == "cp":
        a("-a", "--archive", action="store_true", help="keep uid/gid")
        a("-L", "--follow-link", action="store_true", help="follow a symlink SRC_PATH")
        a("src", metavar="SRC")
        a("dest", metavar="DEST")
        p.set_defaults(func=cmd_cp)
    elif verb == "top":
        a("container", metavar="CONTAINER")
        a("ps_args", nargs=argparse.REMAINDER, metavar="PS_OPTIONS")
        p.set_defaults(func=cmd_top)
    elif verb == "stats":
        a("-a", "--all", action="store_true", help="all containers (default: running)")
        a("--no-stream", action="store_true", help="print one reading and exit")
        a("--no-trunc", action="store_true", help="do not truncate output")
        a("--format", help="json, or a Go template")
        a("containers", nargs="*", metavar="CONTAINER")
        p.set_defaults(func=cmd_stats)
    elif verb == "port":
        a("container", metavar="CONTAINER")
        a("port", nargs="?", metavar="PRIVATE_PORT[/PROTO]")
        p.set_defaults(func=cmd_port)
    elif verb == "rename":
        a("container", metavar="CONTAINER")
        a("new_name", metavar="NEW_NAME")
        p.set_defaults(func=cmd_rename)
    elif verb in ("pause", "unpause"):
        a("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_pause if verb == "pause" else cmd_unpause)
    elif verb == "commit":
        a("-a", "--author", help="author")
        a("-m", "--message", help="commit message")
        a("-c", "--change", action="append", default=[], help="apply a Dockerfile instruction")
        a(
            "-p",
            "--pause",
            default="true",
            choices=["true", "false"],
            help="pause during commit (default true)",
        )
        a("container", metavar="CONTAINER")
        a("repository", nargs="?", metavar="REPOSITORY[:TAG]")
        p.set_defaults(func=cmd_commit)
    elif verb == "export":
        a("-o", "--output", help="write to a file instead of stdout")
        a("container", metavar="CONTAINER")
        p.set_defaults(func=cmd_export)
    elif verb == "inspect":
        a("-f", "--format", help="json, or a Go template")
        a("-s", "--size", action="store_true", help="show sizes")
        a("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_inspect)
    elif verb == "prune":
        a("-f", "--force", action="store_true", help="do not ask for confirmation")
        a("--filter", action="append", default=[], help="until=, label=")
        p.set_defaults(func=cmd_prune)


_GROUP_VERBS = [
    "attach",
    "commit",
    "cp",
    "create",
    "exec",
    "export",
    "inspect",
    "kill",
    "logs",
    "pause",
    "port",
    "prune",
    "rename",
    "restart",
    "rm",
    "run",
    "start",
    "stats",
    "stop",
    "top",
    "unpause",
    "wait",
]


def register(subparsers: Any, verb: str) -> None:
    if verb == "container":
        p = subparsers.add_parser("container", help="manage containers")
        sub = p.add_subparsers(dest="container_command", metavar="COMMAND", parser_class=type(p))
        _add_verb(sub, "ps", aliases=("ls", "list"))
        for v in _GROUP_VERBS:
            _add_verb(sub, v)
        return
    _add_verb(subparsers, verb)
