"""The engine's side of container networking: a container's lifecycle, wired to :mod:`pallet.network`.

* ``create`` (:func:`compose`, :func:`resolve`): ``--network``, ``-p``, ``-P``, ``--expose``,
  ``--network-alias``, ``--ip``, ``--mac-address``, ``--dns*``, ``--add-host`` are checked and
  stored: docker's ``HostConfig.NetworkMode``/``PortBindings``/``PublishAllPorts`` and
  ``Config.ExposedPorts`` for ``inspect``, plus the plan the engine acts on: ``Networks`` (per
  network: aliases, static IP and MAC, docker's EndpointSettings shape) and ``PortMappings``.
* every start (:func:`start`, from the CLI; :func:`monitor_restart` from the monitor for restart
  policies): a new network namespace is pinned at ``RUNROOT/netns/<id>`` (in a shared-propagation
  directory, see :func:`pallet.network.netns.ensure_shared_dir`), connected to its networks by
  :func:`pallet.network.setup`, and the container's /etc/hosts and /etc/resolv.conf are written
  from the result; the runtime gets the pin's path in config.json (``linux.namespaces``).
* every exit, stop and ``rm`` (:func:`release`, reached from the engine's ``_release_storage``
  and ``_remove_storage``): :func:`pallet.network.teardown`, then the pin goes. Idempotent, and a
  no-op costing two ``stat`` calls when nothing is set up.
* after crashes (:func:`reconcile`: ``system prune``, and the first start after a boot): network
  state of containers that are not running is released, stray pins go, and
  :func:`pallet.network.cleanup` removes whatever else a killed process left.

``network connect``/``disconnect`` (:func:`connect`, :func:`disconnect`) change a container's
stored networks and, when it runs, its live namespace. Importing this module is free: it
imports :mod:`pallet.network` only when a container actually uses a bridge network.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pallet.errors import UsageError

TYPE_CHECKING = False  # typing costs an import on the hot path: annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from pallet.context import Context
    from pallet.engine.state import Container
    from pallet.network import SetupResult

#: the network mode when --network is not given: the default bridge network (``pallet``)
BRIDGE = "bridge"
_NOT_RUNNING = ("created", "exited", "dead")


def _conflict(what: str) -> UsageError:
    return UsageError(f"conflicting options: {what} and the network mode")


# -- create ------------------------------------------------------------------------------------------


def _port_key(port: int, proto: str) -> str:
    return f"{port}/{proto}"


def compose(opts: Any, image_config: dict[str, Any]) -> dict[str, Any]:
    """Check the network flags (pure: no state is read) and return what ``create`` stores.

    Keys: ``NetworkMode`` (docker's: ``bridge``, a network name, ``none``, ``host``,
    ``container:REF``), ``Networks`` ({name: EndpointSettings-like dict}, in interface order),
    ``PortMappings`` (pallet.network.PortMapping dicts, ``-P`` included), ``PortBindings`` and
    ``PublishAllPorts`` (docker's HostConfig), ``ExposedPorts`` (docker's Config).
    """
    value = opts.network or BRIDGE
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    mode = _plain_mode(value) if isinstance(value, str) else None
    if mode is None:
        from pallet.network import parse_network_mode

        mode = parse_network_mode(value)
    aliases = list(getattr(opts, "network_aliases", None) or [])
    ip = getattr(opts, "ip", None)
    mac = getattr(opts, "mac_address", None)
    publish = list(opts.publish or [])
    publish_all_ports = bool(getattr(opts, "publish_all", False))
    expose = list(getattr(opts, "expose", None) or [])
    if mode.kind == "container":
        if opts.hostname is not None:
            raise _conflict("hostname")
        if opts.dns or opts.dns_search or opts.dns_options:
            raise _conflict("dns")
        if opts.add_hosts:
            raise _conflict("custom host-to-IP mapping")
        if mac:
            raise _conflict("mac-address")
        if publish or publish_all_ports:
            raise UsageError("conflicting options: port publishing and the container type network mode")
    if mode.kind != "bridge":
        if publish or publish_all_ports:
            raise UsageError(
                f"port publishing needs a bridge network; --network {mode.kind} cannot publish ports"
            )
        if aliases:
            raise UsageError("network-scoped aliases are supported only for containers on bridge networks")
        if ip:
            raise UsageError(f"--ip needs a bridge network, not --network {mode.kind}")
        if mac and mode.kind != "container":
            raise UsageError(f"--mac-address needs a bridge network, not --network {mode.kind}")
    for h in opts.add_hosts:
        if h.rstrip().endswith("host-gateway") and mode.kind != "bridge":
            raise UsageError(f"--add-host {h}: host-gateway needs a bridge network (the container's gateway)")
    if aliases or mac or mode.kind == "bridge":
        from pallet.network.types import DEFAULT_NETWORK, check_alias, check_mac
    for alias in aliases:
        check_alias(alias)
    networks: dict[str, Any] = {}
    if mode.kind == "bridge":
        if (ip or mac) and len(mode.networks) > 1:
            raise UsageError("--ip and --mac-address can only be set for a single network")
        per_net = getattr(mode, "options", None) or {}
        for name in mode.networks:
            o = per_net.get(name, {})
            if (ip and o.get("ip")) or (mac and o.get("mac")):
                raise UsageError(f"--network {name}: ip/mac given both there and as --ip/--mac-address")
            net_ip, net_mac = o.get("ip") or ip, o.get("mac") or mac
            if net_ip:
                import ipaddress

                try:
                    net_ip = str(ipaddress.IPv4Address(net_ip))
                except ValueError:
                    what = f"--network {name}:ip=" if o.get("ip") else "--ip"
                    raise UsageError(f"invalid {what} {net_ip!r}: expected an IPv4 address") from None
            net_aliases = [*aliases, *o.get("aliases", [])]
            for alias in o.get("aliases", []):
                check_alias(alias)
            networks[name] = {
                "Aliases": net_aliases or None,
                "IPAMConfig": {"IPv4Address": net_ip} if net_ip else None,
                "MacAddress": check_mac(net_mac) if net_mac else "",
            }
            if o.get("interface"):
                networks[name]["InterfaceName"] = o["interface"]
        net_mode = BRIDGE if mode.networks[0] == DEFAULT_NETWORK else mode.networks[0]
    elif mode.kind == "container":
        net_mode = f"container:{mode.container}"
    else:
        net_mode = mode.kind

    exposed: dict[str, dict] = dict((image_config.get("config") or {}).get("ExposedPorts") or {})
    if expose or publish or publish_all_ports:
        from pallet.network import parse_publish, publish_all
    for e in expose:
        m = parse_publish(e)
        if m.host_port or m.host_ip:
            raise UsageError(f"invalid --expose {e!r}: expected PORT[-END][/PROTO]")
        for k in range(m.range):
            exposed.setdefault(_port_key(m.container_port + k, m.protocol), {})
    mappings = [parse_publish(p) for p in publish]
    bindings: dict[str, list[dict[str, str]]] = {}
    for m in mappings:
        for k in range(m.range):
            key = _port_key(m.container_port + k, m.protocol)
            exposed.setdefault(key, {})
            bindings.setdefault(key, []).append(
                {"HostIp": m.host_ip, "HostPort": str(m.host_port + k) if m.host_port else ""}
            )
    if publish_all_ports:
        # -P: every exposed port not published explicitly, on a random host port
        for m in publish_all(k for k in exposed if k not in bindings):
            mappings.append(m)
            for k in range(m.range):
                bindings.setdefault(_port_key(m.container_port + k, m.protocol), []).append(
                    {"HostIp": "", "HostPort": ""}
                )
    return {
        "NetworkMode": net_mode,
        "Networks": networks,
        "PortMappings": [m.to_dict() for m in mappings],
        "PortBindings": bindings,
        "PublishAllPorts": publish_all_ports,
        "ExposedPorts": exposed or None,
    }


def _plain_mode(value: str) -> Any:
    """``none``, ``host`` and ``container:X`` without importing pallet.network (~8 ms on the
    ``run`` path of containers that need none of it); None for anything else."""
    from types import SimpleNamespace

    if value in ("none", "host"):
        return SimpleNamespace(kind=value, networks=[], container=None)
    if value.startswith("container:") and "," not in value and value != "container:":
        return SimpleNamespace(kind="container", networks=[], container=value.split(":", 1)[1])
    return None


def resolve(ctx: Context, composed: dict[str, Any]) -> None:
    """``create``'s checks against the state: the networks exist, a static IP is in the subnet,
    a ``container:`` target exists (stored by ID; the container takes its hostname, as docker)."""
    from pallet.engine import containers

    hc = composed["HostConfig"]
    mode = hc.get("NetworkMode") or BRIDGE
    if mode.startswith("container:"):
        other = containers.get(mode.split(":", 1)[1], ctx)
        hc["NetworkMode"] = f"container:{other.id}"
        composed["Config"]["Hostname"] = other.config["Config"]["Hostname"]
        return
    nets = composed.get("Networks") or {}
    if not nets:
        return
    from pallet.network import store
    from pallet.network.types import DEFAULT_NETWORK

    resolved: dict[str, Any] = {}
    for name, endpoint in nets.items():
        if name == DEFAULT_NETWORK:
            resolved[name] = endpoint
            continue
        net = store.find(ctx, name)  # NetworkNotFound: "network 'x' not found"
        ip = (endpoint.get("IPAMConfig") or {}).get("IPv4Address")
        if ip and net.subnets:
            import ipaddress

            if ipaddress.IPv4Address(ip) not in net.subnet.net:
                raise UsageError(f"--ip {ip} is not in the subnet {net.subnet.subnet} of network {net.name}")
        if net.name in resolved:
            raise UsageError(f"network {net.name} is listed twice")
        resolved[net.name] = endpoint
    first = next(iter(resolved))
    if hc.get("NetworkMode") not in (BRIDGE, first):
        hc["NetworkMode"] = first
    aliases = any(e.get("Aliases") for e in resolved.values())
    if aliases and all(n == DEFAULT_NETWORK or not store.find(ctx, n).dns_enabled for n in resolved):
        raise UsageError(
            "network-scoped aliases need a network with DNS: the default network has none "
            "(create one with 'pallet network create')"
        )
    composed["Networks"] = resolved


# -- the namespace pin -----------------------------------------------------------------------------


def netns_dir(ctx: Context) -> Path:
    return Path(ctx.runroot) / "netns"


def pin_path(ctx: Context, container_id: str) -> Path:
    """Where a bridge-networked container's network namespace is pinned (its SandboxKey)."""
    return netns_dir(ctx) / container_id


def _pin_lock(ctx: Context):
    from pallet.fsutil import file_lock

    return file_lock(Path(ctx.runroot) / "netns.lock", what="the network namespace directory")


def _create_pin(ctx: Context, container_id: str) -> str:
    from pallet.network import netns

    with _pin_lock(ctx):
        d = netns.ensure_shared_dir(netns_dir(ctx))
        p = d / container_id
        if os.path.lexists(p):  # left by a crash: a fresh namespace for a fresh start
            netns.remove(p)
        netns.create(p)
    return str(p)


def _remove_pin(ctx: Context, container_id: str) -> None:
    d = netns_dir(ctx)
    if not os.path.lexists(d / container_id):
        return
    from pallet.network import netns

    with _pin_lock(ctx):
        netns.remove(d / container_id)
        netns.release_dir(d)


# -- start and stop ------------------------------------------------------------------------------------


def networks_of(c: Container) -> dict[str, Any]:
    """The bridge networks a container is configured for ({} for none, host and container:)."""
    return _networks(c.config)


def _networks(config: dict[str, Any]) -> dict[str, Any]:
    mode = config["HostConfig"].get("NetworkMode") or "none"
    if mode in ("none", "host") or mode.startswith("container:"):
        return {}
    return config.get("Networks") or {}


def _attachments(config: dict[str, Any]) -> list[Any]:
    from pallet.network import Attachment

    out = []
    for name, ep in _networks(config).items():
        out.append(
            Attachment(
                name,
                static_ip=(ep.get("IPAMConfig") or {}).get("IPv4Address"),
                aliases=list(ep.get("Aliases") or []),
                static_mac=ep.get("MacAddress") or None,
                interface=ep.get("InterfaceName") or None,
            )
        )
    return out


def _record_path(ctx: Context, container_id: str) -> Path:
    """Where pallet.network records what setup made (``store.container_path``), without importing
    it: release() runs for every container that stops, bridge or not."""
    return Path(ctx.root) / "networks" / "containers" / f"{container_id}.json"


def start(ctx: Context, c: Container) -> tuple[str | None, tuple[str, str, str] | None]:
    """Before the runtime runs: (network namespace path for config.json or None, and the
    (hostname, hosts, resolv.conf) files if networking wrote them, else None: the engine writes
    its own for ``none`` and ``host``)."""
    mode = c.config["HostConfig"].get("NetworkMode") or "none"
    if mode.startswith("container:"):
        return _join(ctx, c, mode.split(":", 1)[1])
    if not networks_of(c):
        return None, None
    from pallet.engine import containers

    start_begin(ctx, c)  # (a no-op when `_prepare` did it, or when there is no helper)
    helper = _helpers.get(c.id)
    if helper is not None and helper.pending:
        try:
            return helper.setup_end()
        except _HelperGone:
            pass  # it died: do it here (setup is idempotent: a left record is released first)
    return _setup(ctx, c.id, c.name, c.config, str(containers.container_dir(ctx, c.id)))


def start_begin(ctx: Context, c: Container) -> None:
    """Hand the container's network setup to ``pallet run``'s helper now, so that it overlaps
    the preparation of the root filesystem; :func:`start` collects it."""
    mode = c.config["HostConfig"].get("NetworkMode") or "none"
    if _helper is None or c.id in _helpers or mode.startswith("container:") or not networks_of(c):
        return
    from pallet.engine import containers

    helper = take_helper()
    assert helper is not None
    with contextlib.suppress(_HelperGone):  # then start() does it here
        helper.setup_begin(ctx, c.id, c.name, c.config, str(containers.container_dir(ctx, c.id)))


def _setup(
    ctx: Context, cid: str, name: str, config: dict[str, Any], files_dir: str
) -> tuple[str, tuple[str, str, str]]:
    _boot_reconcile(ctx)
    from pallet import network
    from pallet.engine.procs import trace
    from pallet.network.types import DNSOptions, PortMapping

    trace("network: setting up")
    cfg, hc = config["Config"], config["HostConfig"]
    if _record_path(ctx, cid).exists():  # a start after a crash: release what it left
        release(ctx, cid)
    pin = _create_pin(ctx, cid)
    trace("network: namespace pinned")
    try:
        hosts = []
        for entry in hc.get("ExtraHosts") or []:
            host, _, ip = entry.partition(":")
            hosts.append((host, ip))

        def setup() -> SetupResult:
            return network.setup(
                cid,
                pin,
                _attachments(config),
                container_name=name,
                hostname=cfg.get("Hostname") or None,
                port_mappings=[PortMapping(**m) for m in config.get("PortMappings") or []],
                dns=DNSOptions(
                    servers=list(hc.get("Dns") or []),
                    search=list(hc.get("DnsSearch") or []),
                    options=list(hc.get("DnsOptions") or []),
                    add_hosts=hosts,
                ),
                ctx=ctx,
            )

        try:
            res = setup()
        except (network.PortUnavailable, network.AddressUnavailable):
            # held by a container that died unnoticed (its monitor killed with it)? release
            # what crashes left, then try once more
            reconcile(ctx)
            res = setup()
    except BaseException:
        with contextlib.suppress(Exception):
            _remove_pin(ctx, cid)
        raise
    trace("network: set up")
    return pin, write_files(Path(files_dir), cfg.get("Hostname") or cid[:12], res)


def write_files(d: Path, hostname: str, res: SetupResult) -> tuple[str, str, str]:
    """/etc/hostname, /etc/hosts and /etc/resolv.conf (in directory ``d``) from a setup result."""
    from pallet.fsutil import atomic_write
    from pallet.network import render_hosts, render_resolv_conf

    d.mkdir(parents=True, exist_ok=True)
    gateway = next((i.gateway for i in res.interfaces if i.gateway), None)
    entries = []
    for ip, names in res.hosts:
        if ip == "host-gateway":
            if gateway is None:
                continue  # only --internal networks: no way out, no host to name
            ip = gateway
        entries.append((ip, names))
    texts = (
        hostname + "\n",
        render_hosts(entries),
        render_resolv_conf(res.dns_servers, res.dns_search, res.dns_options),
    )
    paths = (d / "hostname", d / "hosts", d / "resolv.conf")
    for p, text in zip(paths, texts, strict=True):
        atomic_write(p, text.encode(), sync=False)
    return str(paths[0]), str(paths[1]), str(paths[2])


def _join(ctx: Context, c: Container, target: str) -> tuple[str, tuple[str, str, str]]:
    """``--network container:X``: X's namespace (its pin when it has one: that path stays valid
    across X's restarts), and a copy of X's hosts and resolv.conf, as docker shares them."""
    from pallet.engine import containers
    from pallet.engine.errors import ContainerStateError
    from pallet.fsutil import atomic_write

    other = containers.get(target, ctx)
    if other.status not in ("running", "paused") or not other.pid:
        raise ContainerStateError(f"cannot join the network of container {other.name}: it is not running")
    pin = pin_path(ctx, other.id)
    netns = str(pin) if networks_of(other) and pin.exists() else f"/proc/{other.pid}/ns/net"
    src = containers.container_dir(ctx, other.id)
    d = containers.container_dir(ctx, c.id)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name, default in (
        ("hostname", (c.config["Config"].get("Hostname") or c.id[:12]) + "\n"),
        ("hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ("resolv.conf", ""),
    ):
        try:
            text = (src / name).read_text() if name != "hostname" else default
        except OSError:
            text = default
        atomic_write(d / name, text.encode(), sync=False)
        out.append(str(d / name))
    return netns, (out[0], out[1], out[2])


def release_begin(ctx: Context, container_id: str) -> None:
    """Start :func:`release` on a thread: tearing down is mostly waiting for the kernel (an RCU
    grace period per deleted link, nft's commit), which overlaps the rest of the container's
    removal; :func:`release` then waits for it (and redoes what failed, so errors surface)."""
    if container_id in _started or not _record_path(ctx, container_id).exists():
        return  # (a watch_exit thread is on it already)
    import threading

    def run() -> None:
        with contextlib.suppress(Exception):
            _release(ctx, container_id)

    thread = threading.Thread(target=run, name=f"teardown-{container_id[:12]}", daemon=True)
    _started[container_id] = thread
    thread.start()


_started: dict[str, Any] = {}
_wakers: dict[str, int] = {}


def watch_exit(ctx: Context, c: Container) -> None:
    """``run --rm`` (attached): tear the network down the moment the container's init exits,
    while the monitor drains its output and deletes it from the runtime and the CLI then removes
    the rest. When PID 1 of a PID namespace exits, the kernel kills everything else in it: nothing
    of the container can use the network any more, and an auto-removed container is never
    started again. :func:`release` and :func:`unwatch` wait for it."""
    if not c.config["HostConfig"].get("AutoRemove") or not networks_of(c):
        return
    from pallet.engine.procs import proc_start_time

    try:
        fd = os.pidfd_open(c.pid) if c.pid else -1
    except OSError:
        fd = -1
    if fd >= 0 and proc_start_time(c.pid) != c.pid_start:  # its pid was reused already
        os.close(fd)
        fd = -1
    if fd < 0:  # it exited before we looked (`run --rm IMAGE true`): start now
        release_begin(ctx, c.id)
        return
    import select
    import threading

    wake_r, wake_w = os.pipe2(os.O_CLOEXEC)

    def run() -> None:
        try:
            if fd in select.select([fd, wake_r], [], [])[0]:
                with contextlib.suppress(Exception):  # (release() redoes what failed)
                    _release(ctx, c.id)
        finally:
            os.close(fd)
            os.close(wake_r)

    thread = threading.Thread(target=run, name=f"watch-{c.id[:12]}", daemon=True)
    _started[c.id] = thread
    _wakers[c.id] = wake_w
    thread.start()


def unwatch(container_id: str) -> None:
    """Stop :func:`watch_exit`'s thread, or wait until its teardown is done."""
    w = _wakers.pop(container_id, None)
    if w is not None:
        with contextlib.suppress(OSError):
            os.write(w, b"x")
        os.close(w)
    thread = _started.pop(container_id, None)
    if thread is not None:
        thread.join()


def release(ctx: Context, container_id: str) -> None:
    """Tear the container's networking down and unpin its namespace; nothing set up is fine."""
    unwatch(container_id)
    _release(ctx, container_id)


def _release(ctx: Context, container_id: str) -> None:
    helper = _helpers.pop(container_id, None)
    if helper is not None:
        try:
            helper.teardown(ctx, container_id)
            return
        except _HelperGone:
            pass  # it died: do it here
    if _record_path(ctx, container_id).exists():
        from pallet import network
        from pallet.engine.procs import trace

        trace("network: teardown")
        network.teardown(container_id, ctx=ctx)
        trace("network: torn down")
    _remove_pin(ctx, container_id)


def monitor_restart(cfg: Any, phase: str) -> Exception | None:
    """The monitor's restart policy: ``down`` when the container exits to be restarted (docker
    and podman take a restarting container off its networks), ``up`` right before it runs again
    (new addresses, hosts and resolv.conf; the pin's path in config.json stays the same).
    Returns the error that prevents the restart, if any."""
    try:
        ctx = cfg.context()
        if phase == "down":
            release(ctx, cfg.container_id)
            return None
        from pallet.engine.state import state_for

        c = state_for(ctx.root).find(cfg.container_id)
        if c is None or not networks_of(c):
            return None
        start(ctx, c)
        return None
    except Exception as e:
        return e


# -- the network helper of `pallet run` ------------------------------------------------------------


class _HelperGone(Exception):
    """The helper process is not there to answer (it died); the caller does the work itself."""


class Helper:
    """A fork of ``pallet run`` made before the engine is imported (with its monitor, while the
    process is lean): it imports the netlink codec and the bridge driver (~35 ms of CPU) on the
    other core while the CLI creates and prepares the container, then does the container's
    :func:`_setup` and, for ``run --rm``, its teardown, each when the CLI asks. It exits when
    the CLI closes its socket (a detached container is torn down later by whoever stops it),
    holds none of the CLI's stdio, and ignores the terminal's signals (the CLI handles those)."""

    def __init__(self) -> None:
        import socket

        self.sock, theirs = socket.socketpair()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the forked child
            code = 0
            try:
                self.sock.close()
                _helper_serve(theirs)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        self.cid = ""
        self.pending = False  # a setup request sent, its result not read yet

    def _send(self, request: dict[str, Any]) -> None:
        import json

        try:
            self.sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError:
            raise _HelperGone() from None

    def _recv(self) -> dict[str, Any]:
        import json

        try:
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise _HelperGone()
                buf += chunk
        except OSError:
            raise _HelperGone() from None
        reply = json.loads(buf)
        if "error" in reply:
            raise _unpack_error(reply)
        return reply

    def setup_begin(self, ctx: Context, cid: str, name: str, config: dict[str, Any], files_dir: str) -> None:
        """Send the setup request; :meth:`setup_end` waits for its result. From then on the
        container's teardown goes through this helper (:func:`_release`)."""
        self._send({"op": "setup", "ctx": ctx.to_json(), "cid": cid, "name": name, "config": config,
                    "files_dir": files_dir})
        self.cid, self.pending = cid, True
        _helpers[cid] = self

    def setup_end(self) -> tuple[str, tuple[str, str, str]]:
        self.pending = False
        try:
            reply = self._recv()
        except BaseException:
            _helpers.pop(self.cid, None)  # it released what it made; nothing to tear down
            self.close()
            raise
        a, b, c = reply["files"]
        return reply["pin"], (a, b, c)

    def teardown(self, ctx: Context, cid: str) -> None:
        try:
            if self.pending:  # the run failed while the setup was under way
                with contextlib.suppress(Exception):
                    self.setup_end()
            self._send({"op": "teardown", "ctx": ctx.to_json(), "cid": cid})
            self._recv()
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


_helper: Helper | None = None
#: container id -> the helper setting it up (``pending``: its result not collected yet) or that set
#: it up (for its teardown)
_helpers: dict[str, Helper] = {}


def prefork_helper() -> None:
    """Fork the network helper now (``pallet run`` on a bridge network, see :class:`Helper`)."""
    global _helper
    _helper = Helper()


def discard_helpers() -> None:
    """The CLI is about to exit: a helper never asked for anything (the run failed before its
    network was set up) is killed, an idle one (a detached container is set up) told to go; both
    are waited for, so no process of the command outlives it."""
    global _helper
    if _helper is not None:
        with contextlib.suppress(OSError):
            os.kill(_helper.pid, 9)
        _helper.close()
        _helper = None
    for h in _helpers.values():
        h.close()
    _helpers.clear()


def forget_helper() -> None:
    """In a process forked from ``pallet run`` (its monitor): drop the helper's socket, which
    only the CLI may use (a copy held open here would keep the helper from ever seeing EOF)."""
    global _helper
    for h in (_helper, *_helpers.values()):
        if h is not None:
            h.sock.close()
    _helper = None
    _helpers.clear()


def take_helper() -> Helper | None:
    global _helper
    helper, _helper = _helper, None
    return helper


def _unpack_error(reply: dict[str, Any]) -> Exception:
    """The helper's exception as it was raised there (same type, so the same message and exit
    status), or a NetworkError with its message."""
    from pallet.errors import NetworkError

    if reply.get("pickled"):
        import pickle

        with contextlib.suppress(Exception):
            err = pickle.loads(bytes.fromhex(reply["pickled"]))
            if isinstance(err, Exception):
                return err
    return NetworkError(reply["error"])


def _helper_serve(sock: Any) -> None:
    import json
    import signal

    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)  # `pallet run ... | cat` must see EOF when the CLI exits
    os.close(devnull)
    with contextlib.suppress(Exception):
        from pallet.network import bridge  # noqa: F401 - the point: imported before it is needed
        from pallet.network.netlink import _codec

        _codec()
    import gc

    from pallet.context import Context

    gc.freeze()
    gc.enable()  # (forked from `pallet run`, whose launcher starts with the collector off)
    reader = sock.makefile("rb")
    for line in reader:
        req = json.loads(line)
        ctx = Context.from_json(req["ctx"])
        try:
            if req["op"] == "setup":
                pin, files = _setup(ctx, req["cid"], req["name"], req["config"], req["files_dir"])
                reply: dict[str, Any] = {"pin": pin, "files": list(files)}
            else:
                release(ctx, req["cid"])
                reply = {}
        except Exception as e:
            reply = {"error": str(e) or type(e).__name__}
            with contextlib.suppress(Exception):
                import pickle

                reply["pickled"] = pickle.dumps(e).hex()
        sock.sendall(json.dumps(reply).encode() + b"\n")


# -- crashes ---------------------------------------------------------------------------------------


def reconcile(ctx: Context) -> Any:
    """Release the network state of containers that are not running (their monitor died with
    them, or the engine was killed mid-way), remove stray pins, then let
    :func:`pallet.network.cleanup` remove whatever else a crash left. Returns its report.

    Safe beside concurrent starts: a start marks its container 'starting' before it pins a
    namespace (under the pin lock) or writes a network record, so each candidate is judged by
    its row read afresh under that lock, never from a snapshot taken before the start began.
    """
    from pallet import network
    from pallet.engine import containers
    from pallet.network import netns, store

    st = containers._state(ctx)

    def stale(cid: str) -> bool:
        c = st.find(cid)
        return c is None or c.status in _NOT_RUNNING

    d = netns_dir(ctx)
    pins = {n for n in os.listdir(d) if not n.startswith(".")} if d.is_dir() else set()
    records = {rec["id"] for rec in store.all_containers(ctx)}
    # reconciling the rows first settles starts whose command died (back to created/exited);
    # that may release storage and pins itself, so it runs outside the pin lock
    for cid in records | pins:
        with contextlib.suppress(Exception):
            containers.get(cid, ctx)
    with _pin_lock(ctx):
        for cid in records | pins:
            if not stale(cid):
                continue
            if cid in records:  # (teardown is a no-op for a record released meanwhile)
                with contextlib.suppress(Exception):
                    network.teardown(cid, ctx=ctx)
            if cid in pins:
                with contextlib.suppress(Exception):
                    netns.remove(d / cid)
        if d.is_dir():
            netns.release_dir(d)
    return network.cleanup(ctx)


def _boot_reconcile(ctx: Context) -> None:
    """Once per boot (the runroot is a tmpfs): clean up after a crash before the first start.

    Under a lock and checked again inside it, so that of many first starts racing one does the
    work and the rest wait for it rather than judging each other's half-made starts."""
    marker = Path(ctx.runroot) / "networks" / ".reconciled"
    if marker.exists():
        return
    from pallet.fsutil import file_lock

    with file_lock(Path(ctx.runroot) / "networks.reconcile.lock", what="the network reconciliation"):
        if marker.exists():
            return
        try:
            reconcile(ctx)
        finally:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()


# -- views ------------------------------------------------------------------------------------------


def _status(ctx: Context, c: Container) -> SetupResult | None:
    if c.status not in ("running", "paused") or not networks_of(c):
        return None
    from pallet.network import store

    try:
        rec = store.load_container(ctx, c.id)
    except Exception:
        return None
    if rec is None:
        return None
    from pallet.network.bridge import result_of

    return result_of(rec)


def _live_ports(ctx: Context, c: Container) -> list[Any]:
    """The published ports with the host ports chosen at start (running containers only)."""
    if c.status not in ("running", "paused") or not c.config.get("PortMappings"):
        return []
    from pallet.network import store
    from pallet.network.types import PortMapping

    try:
        rec = store.load_container(ctx, c.id)
    except Exception:
        return []
    return [PortMapping(**p) for p in (rec or {}).get("ports", [])]


def port_pairs(ctx: Context, c: Container) -> list[tuple[str, str]]:
    """``pallet port``: (container port/proto, host ip:port), one per port."""
    out = []
    for m in _live_ports(ctx, c):
        for k in range(m.range):
            out.append(
                (_port_key(m.container_port + k, m.protocol), f"{m.host_ip or '0.0.0.0'}:{m.host_port + k}")
            )
    return sorted(out, key=lambda p: (int(p[0].split("/")[0]), p[0], p[1]))


def ports_text(ctx: Context, c: Container) -> str:
    """ps's PORTS column: ``0.0.0.0:8080->80/tcp, 0.0.0.0:9000-9001->9000-9001/udp``."""
    parts = []
    for m in _live_ports(ctx, c):
        host = f"{m.host_ip or '0.0.0.0'}:{m.host_port}"
        ctr = str(m.container_port)
        if m.range > 1:
            host += f"-{m.host_port + m.range - 1}"
            ctr += f"-{m.container_port + m.range - 1}"
        parts.append(f"{host}->{ctr}/{m.protocol}")
    return ", ".join(parts)


def network_names(c: Container) -> list[str]:
    """ps's NETWORKS column and ``--filter network=``: the networks, or the mode."""
    nets = networks_of(c)
    if nets:
        return list(nets)
    mode = c.config["HostConfig"].get("NetworkMode") or "none"
    return [mode] if mode == "host" or mode.startswith("container:") else ["none"]


def settings(ctx: Context, c: Container) -> dict[str, Any]:
    """docker's ``NetworkSettings`` for ``inspect``. The deprecated top-level IPAddress, Gateway,
    MacAddress ... are filled when the container is on exactly one network, as podman does."""
    res = _status(ctx, c)
    live = {i.network: i for i in res.interfaces} if res else {}
    exposed = c.config["Config"].get("ExposedPorts") or {}
    ports: dict[str, Any] = {k: None for k in exposed}
    for key, host in port_pairs(ctx, c):
        ip, _, port = host.rpartition(":")
        ports.setdefault(key, None)
        ports[key] = (ports[key] or []) + [{"HostIp": ip, "HostPort": port}]
    nets: dict[str, Any] = {}
    ids: dict[str, str] = {}
    for name, ep in networks_of(c).items():
        i = live.get(name)
        if name not in ids:
            with contextlib.suppress(Exception):
                from pallet.network import store

                ids[name] = store.load(ctx, name).id
        nets[name] = {
            "IPAMConfig": ep.get("IPAMConfig"),
            "Links": None,
            "Aliases": ep.get("Aliases"),
            "MacAddress": i.mac if i else "",
            "NetworkID": ids.get(name, ""),
            "EndpointID": i.host_interface if i else "",
            "Gateway": (i.gateway or "") if i else "",
            "IPAddress": i.address if i else "",
            "IPPrefixLen": i.prefixlen if i else 0,
            "IPv6Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "DriverOpts": None,
            "DNSNames": [c.name, *(ep.get("Aliases") or []), c.id[:12]] if i else None,
        }
    mode = c.config["HostConfig"].get("NetworkMode") or "none"
    if mode in ("none", "host"):
        nets = {
            mode: {"IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": mode, "IPAddress": ""}
        }
    running = c.status in ("running", "paused") and c.pid
    if networks_of(c):
        sandbox = str(pin_path(ctx, c.id)) if running else ""
    elif mode == "host":
        sandbox = ""
    else:
        sandbox = f"/proc/{c.pid}/ns/net" if running else ""
    out: dict[str, Any] = {
        "Bridge": "",
        "SandboxID": c.id if running and mode != "host" else "",
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports,
        "SandboxKey": sandbox,
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": "",
        "Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "MacAddress": "",
        "Networks": nets,
    }
    if len(live) == 1:
        (only,) = live.values()
        out.update(
            {
                "Bridge": only.bridge,
                "EndpointID": only.host_interface,
                "Gateway": only.gateway or "",
                "IPAddress": only.address,
                "IPPrefixLen": only.prefixlen,
                "MacAddress": only.mac,
            }
        )
    return out


# -- network connect / disconnect / rm ------------------------------------------------------------


def rename(ctx: Context, container_id: str, name: str) -> None:
    """A renamed container on bridge networks: its DNS name follows (a no-op for the others)."""
    if not _record_path(ctx, container_id).exists():
        return
    from pallet import network

    network.rename(container_id, name, ctx=ctx)


def resolve_container(name_or_id: str, ctx: Context) -> tuple[str, str, str]:
    """(id, name, network namespace path) of a running container on bridge networks."""
    from pallet.engine import containers
    from pallet.engine.errors import ContainerStateError

    c = containers.get(name_or_id, ctx)
    if c.status not in ("running", "paused"):
        raise ContainerStateError(f"container {c.name} is not running")
    pin = pin_path(ctx, c.id)
    if not pin.exists():
        raise ContainerStateError(f"container {c.name} is not on a bridge network")
    return c.id, c.name, str(pin)


def _check_joinable(c: Container) -> None:
    mode = c.config["HostConfig"].get("NetworkMode") or "none"
    if mode == "host" or mode.startswith("container:") or (mode == "none" and not networks_of(c)):
        what = "the network of another container" if mode.startswith("container:") else f"--network {mode}"
        raise UsageError(
            f"container {c.name} uses {what}: it cannot be connected to or disconnected from networks"
        )


def connect(
    ctx: Context,
    ref: str,
    network_name: str,
    *,
    aliases: list[str] | None = None,
    ip: str | None = None,
    mac: str | None = None,
) -> None:
    """``network connect``: a running container joins at once (a new ethN); a stopped one at its
    next start, as docker and podman do."""
    from pallet import network
    from pallet.engine import containers
    from pallet.engine.state import state_for
    from pallet.network import store
    from pallet.network.types import DEFAULT_NETWORK, check_alias, check_mac

    c = containers.get(ref, ctx)
    _check_joinable(c)
    name = (
        DEFAULT_NETWORK if network_name in (BRIDGE, DEFAULT_NETWORK) else store.find(ctx, network_name).name
    )
    nets = dict(c.config.get("Networks") or {})
    if name in nets:
        raise UsageError(f"container {c.name} is already connected to network {name}")
    for a in aliases or []:
        check_alias(a)
    if ip:
        import ipaddress

        try:
            ip = str(ipaddress.IPv4Address(ip))
        except ValueError:
            raise UsageError(f"invalid --ip {ip!r}: expected an IPv4 address") from None
    endpoint = {
        "Aliases": list(aliases or []) or None,
        "IPAMConfig": {"IPv4Address": ip} if ip else None,
        "MacAddress": check_mac(mac) if mac else "",
    }
    live = c.status in ("running", "paused") and pin_path(ctx, c.id).exists()
    if live:
        network.connect(
            c.id,
            str(pin_path(ctx, c.id)),
            network.Attachment(name, static_ip=ip, aliases=list(aliases or []), static_mac=mac),
            container_name=c.name,
            ctx=ctx,
        )
    nets[name] = endpoint
    c.config["Networks"] = nets
    try:
        state_for(ctx.root).update(c.id, config=c.config)
    except BaseException:
        if live:
            with contextlib.suppress(Exception):
                network.disconnect(c.id, name, ctx=ctx)
        raise


def disconnect(ctx: Context, ref: str, network_name: str) -> None:
    """``network disconnect``: off the network now if running, and for its next starts. A
    container left with no network has only loopback, as with ``--network none``."""
    from pallet import network
    from pallet.engine import containers
    from pallet.engine.state import state_for
    from pallet.network import NotAttached, store
    from pallet.network.types import DEFAULT_NETWORK

    c = containers.get(ref, ctx)
    _check_joinable(c)
    if network_name in (BRIDGE, DEFAULT_NETWORK):
        name = DEFAULT_NETWORK
    else:
        try:
            name = store.find(ctx, network_name).name
        except network.NetworkNotFound:
            name = network_name  # removed meanwhile: the container may still list it
    nets = dict(c.config.get("Networks") or {})
    if name not in nets:
        raise NotAttached(f"container {c.name} is not connected to network {name}")
    if c.status in ("running", "paused") and _record_path(ctx, c.id).exists():
        with contextlib.suppress(NotAttached):
            network.disconnect(c.id, name, ctx=ctx)
    del nets[name]
    c.config["Networks"] = nets
    state_for(ctx.root).update(c.id, config=c.config)


def containers_using(ctx: Context, network_name: str) -> list[Container]:
    """Every container (whatever its state) configured to use a network."""
    from pallet.engine import containers

    return [c for c in containers.list_containers(ctx) if network_name in networks_of(c)]


def used_networks(ctx: Context) -> set[str]:
    from pallet.engine import containers

    out: set[str] = set()
    for c in containers.list_containers(ctx):
        out.update(networks_of(c))
    return out
