"""Container networking: bridge networks, IPAM, published ports and DNS, as netavark + aardvark-dns.

The engine's seam (all take ``ctx=None`` for the default context)::

    res = setup(container_id, netns_path, [Attachment("mynet", aliases=["web"])],
                container_name="web1", hostname="web1",
                port_mappings=[parse_publish("8080:80")], dns=DNSOptions(...))
    res.interfaces        # [InterfaceStatus(network, interface, mac, address, prefixlen, gateway, ...)]
    res.ports             # the mappings with the host ports actually chosen
    render_resolv_conf(res.dns_servers, res.dns_search, res.dns_options)
    render_hosts(res.hosts)
    teardown(container_id)                     # everything; or teardown(cid, ["mynet"])
    connect(container_id, netns_path, Attachment("other"))   # a running container
    disconnect(container_id, "other")
    cleanup()                                  # engine start / system prune: what a crash left

Networks: :func:`create`, :func:`list_networks`, :func:`inspect`, :func:`remove`, :func:`prune`.
Importing this package is cheap; netlink (pyroute2) loads on the first call that needs it.
"""

from __future__ import annotations

import ipaddress

from pallet.context import Context
from pallet.context import default as _default_ctx
from pallet.errors import NetworkError
from pallet.network.errors import (
    AddressUnavailable,
    FirewallError,
    InvalidNetworkConfig,
    NetworkExists,
    NetworkInUse,
    NetworkNotFound,
    NotAttached,
    PortUnavailable,
)
from pallet.network.ports import parse_publish, publish_all
from pallet.network.resolvconf import render_hosts, render_resolv_conf
from pallet.network.types import (
    DEFAULT_NETWORK,
    DNS_DOMAIN,
    Attachment,
    DNSOptions,
    InterfaceStatus,
    Network,
    PortMapping,
    SetupResult,
)

TYPE_CHECKING = False  # typing costs an import on `pallet run`'s path: annotations are strings
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DEFAULT_NETWORK",
    "DNS_DOMAIN",
    "AddressUnavailable",
    "Attachment",
    "DNSOptions",
    "FirewallError",
    "InterfaceStatus",
    "InvalidNetworkConfig",
    "Network",
    "NetworkError",
    "NetworkExists",
    "NetworkInUse",
    "NetworkMode",
    "NetworkNotFound",
    "NotAttached",
    "PortMapping",
    "PortUnavailable",
    "SetupResult",
    "cleanup",
    "connect",
    "create",
    "disconnect",
    "exists",
    "inspect",
    "list_networks",
    "loopback_up",
    "parse_network_mode",
    "parse_publish",
    "prune",
    "publish_all",
    "reload",
    "remove",
    "rename",
    "render_hosts",
    "render_resolv_conf",
    "setup",
    "status",
    "teardown",
]


def _ctx(ctx: Context | None) -> Context:
    return ctx or _default_ctx()


# -- per-container ----------------------------------------------------------------------------


def setup(
    container_id: str,
    netns_path: str,
    attachments: list[Attachment],
    *,
    container_name: str,
    hostname: str | None = None,
    port_mappings: list[PortMapping] | None = None,
    dns: DNSOptions | None = None,
    ctx: Context | None = None,
) -> SetupResult:
    """Connect a container's network namespace to its networks; see the module docstring."""
    from pallet.network import bridge

    return bridge.setup(
        _ctx(ctx),
        container_id,
        str(netns_path),
        attachments,
        container_name=container_name,
        hostname=hostname,
        port_mappings=port_mappings,
        dns=dns,
    )


def teardown(container_id: str, networks: list[str] | None = None, ctx: Context | None = None) -> None:
    """Undo :func:`setup` (for ``networks`` only, or all). Idempotent for an unknown container."""
    from pallet.network import bridge

    bridge.teardown(_ctx(ctx), container_id, networks)


def connect(
    container_id: str,
    netns_path: str,
    attachment: Attachment,
    *,
    container_name: str | None = None,
    ctx: Context | None = None,
) -> SetupResult:
    from pallet.network import bridge

    return bridge.connect(_ctx(ctx), container_id, str(netns_path), attachment, container_name=container_name)


def rename(container_id: str, name: str, ctx: Context | None = None) -> None:
    """The container's DNS name on its networks follows a rename."""
    from pallet.network import bridge

    bridge.rename(_ctx(ctx), container_id, name)


def disconnect(container_id: str, network: str, ctx: Context | None = None) -> None:
    from pallet.network import bridge

    bridge.disconnect(_ctx(ctx), container_id, network)


def status(container_id: str, ctx: Context | None = None) -> SetupResult | None:
    """What :func:`setup` made for a container (for ``inspect``, ``port``), or None."""
    from pallet.network import bridge

    return bridge.status(_ctx(ctx), container_id)


def cleanup(ctx: Context | None = None) -> Any:
    """Remove whatever dead containers or a killed engine left; returns a CleanupReport."""
    from pallet.network import bridge

    return bridge.cleanup(_ctx(ctx))


def reload(ctx: Context | None = None) -> None:
    """Rewrite pallet's firewall table from the state (``network reload``)."""
    from pallet.network import bridge

    bridge.reload(_ctx(ctx))


def loopback_up(netns_path: str) -> None:
    from pallet.network import bridge

    bridge.loopback_up(str(netns_path))


# -- networks ---------------------------------------------------------------------------------


def create(
    name: str,
    *,
    subnet: str | None = None,
    gateway: str | None = None,
    internal: bool = False,
    labels: dict[str, str] | None = None,
    dns: bool = True,
    driver: str = "bridge",
    options: dict[str, str] | None = None,
    dns_servers: list[str] | None = None,
    interface_name: str | None = None,
    ignore: bool = False,
    ctx: Context | None = None,
) -> Network:
    """``network create``: a bridge network (the bridge itself appears with its first container)."""
    from pallet.network import bridge, store
    from pallet.network.netlink import Netlink

    ctx = _ctx(ctx)
    store.check_name(name)
    if driver != "bridge":
        raise InvalidNetworkConfig(f"unsupported network driver {driver!r}: only 'bridge'")
    if gateway and not subnet:
        raise InvalidNetworkConfig("--gateway needs --subnet")
    opts = dict(options or {})
    for key, value in opts.items():
        if key == "mtu":
            if not value.isdigit() or not 68 <= int(value) <= 65535:
                raise InvalidNetworkConfig(f"invalid mtu {value!r}: 68-65535")
        else:
            raise InvalidNetworkConfig(f"unsupported network option {key!r} (supported: mtu)")
    servers = list(dns_servers or [])
    for s in servers:
        try:
            ipaddress.ip_address(s)
        except ValueError:
            raise InvalidNetworkConfig(f"invalid DNS server {s!r}: expected an IP address") from None
    scope = store.Scope.of(ctx)
    with bridge.lock(ctx), Netlink() as nl:
        if name == DEFAULT_NETWORK or store.network_path(ctx, name).exists():
            if ignore:
                return bridge.get_network(ctx, name, nl)
            raise NetworkExists(f"network {name!r} already exists")
        links = {link.name for link in nl.links()}
        nets = store.all_networks(ctx)
        if subnet:
            sub = store.parse_subnet(subnet, gateway)
            for n in nets:
                if n.subnets and n.subnet.net.overlaps(sub.net):
                    raise InvalidNetworkConfig(
                        f"subnet {sub.subnet} overlaps network {n.name} ({n.subnet.subnet})"
                    )
            for d, plen, _oif in nl.routes4():
                if plen and ipaddress.IPv4Network(f"{d}/{plen}", strict=False).overlaps(sub.net):
                    raise InvalidNetworkConfig(
                        f"subnet {sub.subnet} is already used on this host (route {d}/{plen})"
                    )
        else:
            sub = store.parse_subnet(str(store.pick_subnet(store.used_subnets(ctx, nl.routes4()))), None)
        if interface_name:
            if not bridge.IFNAME_RE.match(interface_name):
                raise InvalidNetworkConfig(
                    f"invalid interface name {interface_name!r}: at most 15 of [A-Za-z0-9_.-]"
                )
            if interface_name in links or any(n.network_interface == interface_name for n in nets):
                raise InvalidNetworkConfig(f"interface name {interface_name} is already in use")
            iface = interface_name
        else:
            iface = store.next_bridge(ctx, scope, links)
        net = store.new_network(
            name,
            sub,
            iface,
            internal=internal,
            dns=dns,
            labels=labels or {},
            options=opts,
            dns_servers=servers,
        )
        store.save(ctx, net)
        return net


def list_networks(ctx: Context | None = None) -> list[Network]:
    """Every network, the default one included (written on first use)."""
    from pallet.network import bridge, store

    ctx = _ctx(ctx)
    if not store.network_path(ctx, DEFAULT_NETWORK).exists():
        with bridge.lock(ctx):
            bridge.default_network(ctx)
    return store.all_networks(ctx)


def exists(name: str, ctx: Context | None = None) -> bool:
    try:
        inspect(name, ctx)
    except NetworkNotFound:
        return False
    return True


def inspect(name: str, ctx: Context | None = None) -> dict[str, Any]:
    """podman's ``network inspect`` document: the definition plus attached containers."""
    from pallet.network import bridge, store

    ctx = _ctx(ctx)
    if name == DEFAULT_NETWORK:
        list_networks(ctx)
    net = store.find(ctx, name)
    doc = net.to_dict()
    containers = {}
    for r in bridge.users(ctx, net.name):
        for a in r["attachments"]:
            if a["network"] == net.name:
                containers[r["id"]] = {
                    "name": r["name"],
                    "interfaces": {
                        a["interface"]: {
                            "subnets": [
                                {"ipnet": f"{a['address']}/{a['prefixlen']}", "gateway": a["gateway"]}
                            ],
                            "mac_address": a["mac"],
                        }
                    },
                    "aliases": a.get("aliases", []),
                }
    doc["containers"] = containers
    return doc


def remove(name: str, force: bool = False, ctx: Context | None = None) -> str:
    """``network rm``; returns the removed network's name. The default network cannot go."""
    from pallet.network import bridge, store

    ctx = _ctx(ctx)
    if name == DEFAULT_NETWORK:
        raise InvalidNetworkConfig(f"the default network {DEFAULT_NETWORK!r} cannot be removed")
    net = store.find(ctx, name)
    if net.name == DEFAULT_NETWORK:
        raise InvalidNetworkConfig(f"the default network {DEFAULT_NETWORK!r} cannot be removed")
    bridge.remove_network(ctx, net.name, force=force)
    return net.name


def prune(
    labels: dict[str, str | None] | None = None,
    ctx: Context | None = None,
    keep: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """Remove every network but the default that no container uses (optionally: with these labels).

    ``keep``: networks the engine's containers are configured to use (stopped ones included).
    """
    from pallet.network import bridge, store

    ctx = _ctx(ctx)
    removed = []
    for net in store.all_networks(ctx):
        if net.name == DEFAULT_NETWORK or net.name in keep or bridge.users(ctx, net.name):
            continue
        if labels and not all(
            k in net.labels and (v is None or net.labels[k] == v) for k, v in labels.items()
        ):
            continue
        try:
            bridge.remove_network(ctx, net.name)
        except NetworkInUse:
            continue  # a container joined meanwhile
        removed.append(net.name)
    return removed


# -- run --network parsing ----------------------------------------------------------------------


class NetworkMode:
    """A parsed ``--network`` value: bridge networks, none, host, or container:NAME.

    ``options``: podman's per-network options by network (``NAME:ip=A,mac=M,alias=X,
    interface_name=I``), as {"ip": str, "mac": str, "aliases": [str], "interface": str}."""

    def __init__(
        self,
        kind: str,
        networks: list[str] | None = None,
        container: str | None = None,
        options: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.kind = kind  # "bridge", "none", "host", "container"
        self.networks = networks or []
        self.container = container
        self.options = options or {}

    def __repr__(self) -> str:
        return (
            f"NetworkMode({self.kind!r}, networks={self.networks}, container={self.container!r}, "
            f"options={self.options})"
        )


_NETWORK_OPTION_KEYS = {"ip": "ip", "mac": "mac", "alias": "aliases", "interface_name": "interface"}


def _network_options(name: str, text: str) -> dict[str, Any]:
    """podman's ``NAME:OPT=V,...`` options of one network."""
    out: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not value:
            raise InvalidNetworkConfig(f"--network {name}: invalid option {item!r}: expected KEY=VALUE")
        if key == "ip6":
            raise InvalidNetworkConfig(f"--network {name}: ip6 is not supported (IPv4 only)")
        field_ = _NETWORK_OPTION_KEYS.get(key)
        if field_ is None:
            raise InvalidNetworkConfig(
                f"--network {name}: unknown option {key!r} (ip, mac, alias, interface_name)"
            )
        if field_ == "aliases":
            out.setdefault("aliases", []).append(value)
        elif field_ in out:
            raise InvalidNetworkConfig(f"--network {name}: {key} given twice")
        else:
            out[field_] = value
    return out


def parse_network_mode(values: list[str] | str | None) -> NetworkMode:
    """``--network`` as docker and podman take it: repeatable; a value is one mode, or networks
    separated by commas, or one network with podman's options (``NAME:ip=...,alias=...``)."""
    if values is None or values == [] or values == "":
        return NetworkMode("bridge", [DEFAULT_NETWORK])
    items = [values] if isinstance(values, str) else list(values)
    names: list[str] = []
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        head, sep, rest = item.partition(":")
        if sep and head not in ("container", "ns") and "=" in rest:
            name = DEFAULT_NETWORK if head.strip() in ("bridge", "default") else head.strip()
            if not name or name in options:
                raise InvalidNetworkConfig(f"--network {item}: network {name or '?'} given twice or empty")
            options[name] = _network_options(name, rest)
            names.append(name)
            continue
        names += [v.strip() for v in item.split(",") if v.strip()]
    special = [
        n
        for n in names
        if n in ("none", "host", "private", "slirp4netns", "pasta") or n.startswith(("container:", "ns:"))
    ]
    if special:
        if len(names) > 1:
            raise InvalidNetworkConfig(f"--network {special[0]} cannot be combined with other networks")
        mode = special[0]
        if mode in options:  # none:ip=...: there is no network to set an address or alias on
            raise InvalidNetworkConfig(f"--network {mode}: takes no options (ip, mac, alias, interface_name)")
        if mode.startswith("container:"):
            target = mode.split(":", 1)[1]
            if not target:
                raise InvalidNetworkConfig("--network container: needs a container name or id")
            return NetworkMode("container", container=target)
        if mode in ("none", "host"):
            return NetworkMode(mode)
        raise InvalidNetworkConfig(f"--network {mode} is not supported")
    out = []
    for n in names:
        n = DEFAULT_NETWORK if n in ("bridge", "default") else n
        if n not in out:
            out.append(n)
    return NetworkMode("bridge", out, options=options)
