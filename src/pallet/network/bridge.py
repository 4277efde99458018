"""The bridge driver: per-container setup and teardown, network removal, crash cleanup.

One Linux bridge per network, made when the first container joins and removed when the last
leaves (as netavark does), holding the gateway address; one veth pair per container and
network, the host end enslaved to the bridge, the other end moved into the container's network
namespace as ``ethN`` with its address and default route. Firewall state is set and map
elements in pallet's nft table (:mod:`pallet.network.firewall`); names are served by the
network's DNS responder (:mod:`pallet.network.dnsctl`).

Every change holds the root's network lock, records what it is about to make before making it,
and undoes what it made if a later step fails, so :func:`cleanup` only ever meets what a killed
process left: records whose veth is gone (the container's namespace died), veths and bridges
labelled ours that no record explains, and firewall elements of either.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os

from pallet.context import Context
from pallet.fsutil import file_lock
from pallet.network import dnsctl, firewall, ipam, ports, resolvconf, store
from pallet.network.errors import InvalidNetworkConfig, NetworkError, NetworkInUse, NotAttached
from pallet.network.netlink import Netlink, NetlinkError, open_in
from pallet.network.store import Scope
from pallet.network.types import (
    ALIAS_RE,  # noqa: F401 - re-exported
    DEFAULT_NETWORK,
    DNS_DOMAIN,
    IFNAME_RE,
    Attachment,
    DNSOptions,
    InterfaceStatus,
    Network,
    PortMapping,
    SetupResult,
    check_alias,
    check_mac,
)
from pallet.records import dataclass, field

TYPE_CHECKING = False  # typing costs an import on `pallet run`'s path: annotations are strings
if TYPE_CHECKING:
    from typing import Any



def _log() -> Any:
    """The module's logger, importing logging only when there is something to log (~5 ms)."""
    import logging

    return logging.getLogger(__name__)
ROUTE_METRIC = 100


def _mac() -> str:
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{x:02x}" for x in b)


def _sysctl(path: str, value: str) -> None:
    try:
        with open(path, "r+") as f:
            if f.read().strip() != value:
                f.seek(0)
                f.write(value)
    except OSError as e:
        raise NetworkError(
            f"cannot set {path.removeprefix('/proc/sys/').replace('/', '.')}: {e.strerror}"
        ) from None


def lock(ctx: Context) -> contextlib.AbstractContextManager[int]:
    return file_lock(store.lock_path(ctx), what="the network state")


# -- networks ---------------------------------------------------------------------------------


def default_network(ctx: Context, nl: Netlink | None = None) -> Network:
    """The ``pallet`` network, written on first use with a subnet free on this host."""
    try:
        return store.load(ctx, DEFAULT_NETWORK)
    except NetworkError:
        pass
    own = nl is None
    nl = nl or Netlink()
    try:
        routes = nl.routes4()
    finally:
        if own:
            nl.close()
    subnet = store.pick_subnet(store.used_subnets(ctx, routes), prefer=store.DEFAULT_SUBNET)
    net = store.new_network(
        DEFAULT_NETWORK,
        store.parse_subnet(str(subnet), None),
        Scope.of(ctx).bridge_name(0),
        internal=False,
        dns=False,
        labels={},
        options={},
        dns_servers=[],
        fixed_id=True,
    )
    store.save(ctx, net)
    return net


def get_network(ctx: Context, name: str, nl: Netlink | None = None) -> Network:
    if name == DEFAULT_NETWORK:
        return default_network(ctx, nl)
    return store.find(ctx, name)


def _ensure_bridge(ctx: Context, nl: Netlink, scope: Scope, net: Network) -> tuple[Network, int, bool]:
    """The bridge's ifindex, creating it (with its address) if needed; True if created."""
    link = nl.link(net.network_interface)
    if link is not None:
        if link.kind != "bridge" or not (link.alias or "").startswith(scope.label):
            raise NetworkError(
                f"interface {net.network_interface} of network {net.name} exists "
                "on the host and is not pallet's"
            )
        return net, link.index, False
    subnet = net.subnet.net
    clash = [
        f"{d}/{p}"
        for d, p, _ in nl.routes4()
        if p and ipaddress.IPv4Network(f"{d}/{p}", strict=False).overlaps(subnet)
    ]
    if clash:
        pool = ipam.Pool(ctx, net)
        if net.name == DEFAULT_NETWORK and not pool.allocations:
            # nothing uses the default network's subnet yet: move it rather than fail
            used = store.used_subnets(ctx, nl.routes4())
            used = [u for u in used if u != subnet]
            new = store.pick_subnet(used)
            net.subnets = [store.parse_subnet(str(new), None)]
            store.save(ctx, net)
            subnet = new
        else:
            raise NetworkError(
                f"subnet {subnet} of network {net.name} overlaps a route on this host "
                f"({clash[0]}): remove the network and create it with another --subnet"
            )
    nl.add_bridge(net.network_interface, _mac(), f"{scope.label}{net.name}", net.mtu)
    try:
        link = nl.link(net.network_interface)
        assert link is not None
        gw = net.subnet.gateway
        if gw:
            nl.add_address(link.index, gw, subnet.prefixlen, net.network_interface)
        _sysctl(f"/proc/sys/net/ipv4/conf/{net.network_interface}/route_localnet", "1")
        if not net.internal:
            _sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    except BaseException:
        nl.delete_link(net.network_interface)
        raise
    return net, link.index, True


def _record_ports(records: list[dict[str, Any]], exclude: str) -> list[PortMapping]:
    out = []
    for r in records:
        if r["id"] != exclude:
            out += [PortMapping(**p) for p in r.get("ports", [])]
    return out


def _dns_entries(ctx: Context, net: Network) -> list[dict[str, Any]]:
    entries = []
    for r in store.all_containers(ctx):
        for a in r.get("attachments", []):
            if a["network"] == net.name:
                names = [r["name"], *a.get("aliases", []), r["id"][:12]]
                seen: list[str] = []
                for n in names:
                    if n and n not in seen:
                        seen.append(n)
                entries.append(
                    {
                        "id": r["id"],
                        "ip": a["address"],
                        "names": seen,
                        "upstreams": r.get("dns", {}).get("servers", []),
                    }
                )
    return entries


def _refresh_dns(ctx: Context, net: Network) -> None:
    entries = _dns_entries(ctx, net)
    if entries:
        dnsctl.write_records(ctx, net, entries)
        dnsctl.ensure(ctx, net)
    else:
        dnsctl.stop(ctx, net.name)


# -- setup ------------------------------------------------------------------------------------


@dataclass
class _Undo:
    veths: list[str] = field(default_factory=list)
    bridges: list[Network] = field(default_factory=list)
    fw: firewall.Batch | None = None
    pending: firewall.Pending | None = None


def setup(
    ctx: Context,
    container_id: str,
    netns_path: str,
    attachments: list[Attachment],
    *,
    container_name: str,
    hostname: str | None = None,
    port_mappings: list[PortMapping] | None = None,
    dns: DNSOptions | None = None,
) -> SetupResult:
    """Connect the container whose network namespace is ``netns_path`` to ``attachments``.

    Called again for a container that already has networks (``network connect``), it adds the
    new ones and leaves the others alone; the result then describes all of them.
    """
    scope = Scope.of(ctx)
    if not attachments:
        raise InvalidNetworkConfig("no network to connect to")
    names = [a.network for a in attachments]
    if len(set(names)) != len(names):
        raise InvalidNetworkConfig(f"network listed twice: {', '.join(names)}")
    for a in attachments:
        for alias in a.aliases:
            check_alias(alias)
        if a.static_mac is not None:
            check_mac(a.static_mac)
        if a.interface is not None and not IFNAME_RE.match(a.interface):
            raise InvalidNetworkConfig(f"invalid interface name {a.interface!r}")
    if not container_name:
        raise InvalidNetworkConfig("a container name is required")
    store.container_path(ctx, container_id)  # validates the id
    for m in port_mappings or []:
        _check_port(m)
    nsfd = _open_netns(netns_path)
    try:
        with lock(ctx), Netlink() as nl:
            return _setup_locked(
                ctx,
                scope,
                nl,
                nsfd,
                container_id,
                netns_path,
                attachments,
                container_name,
                hostname,
                list(port_mappings or []),
                dns,
            )
    finally:
        os.close(nsfd)


def _open_netns(path: str) -> int:
    from pallet.network import netns

    return netns.open_ns(path)


def _check_port(m: PortMapping) -> None:
    if m.protocol not in ports.PROTOCOLS:
        raise InvalidNetworkConfig(f"invalid protocol {m.protocol!r} for port {m.container_port}: tcp or udp")
    if m.range < 1 or not 1 <= m.container_port <= 65536 - m.range:
        raise InvalidNetworkConfig(f"invalid container port {m.container_port} (range {m.range})")
    if m.host_port and not 1 <= m.host_port <= 65536 - m.range:
        raise InvalidNetworkConfig(f"invalid host port {m.host_port} (range {m.range})")
    if m.host_ip:
        try:
            ipaddress.IPv4Address(m.host_ip)
        except ValueError:
            raise InvalidNetworkConfig(f"invalid host IP {m.host_ip!r} for a published port") from None


def _setup_locked(
    ctx: Context,
    scope: Scope,
    nl: Netlink,
    nsfd: int,
    cid: str,
    netns_path: str,
    attachments: list[Attachment],
    name: str,
    hostname: str | None,
    mappings: list[PortMapping],
    dns: DNSOptions | None,
) -> SetupResult:
    record = store.load_container(ctx, cid)
    fresh = record is None
    if record is None:
        dns = dns or DNSOptions()
        record = {
            "id": cid,
            "name": name,
            "hostname": hostname or "",
            "netns": str(netns_path),
            "attachments": [],
            "ports": [],
            "dns": {
                "servers": dns.servers,
                "search": dns.search,
                "options": dns.options,
                "add_hosts": [list(h) for h in dns.add_hosts],
            },
        }
    else:
        if os.path.realpath(record["netns"]) != os.path.realpath(netns_path):
            raise NetworkError(
                f"container {cid} is already set up in another network namespace "
                f"({record['netns']}): tear it down first"
            )
        have = {a["network"] for a in record["attachments"]}
        for a in attachments:
            if a.network in have:
                raise NetworkError(f"container {record['name']} is already connected to network {a.network}")
        if mappings:
            raise InvalidNetworkConfig("ports can only be published when a container is first set up")
    nets = [get_network(ctx, a.network, nl) for a in attachments]
    for net in nets:
        if net.driver != "bridge":
            raise NetworkError(f"network {net.name}: driver {net.driver!r} is not supported")

    # interface names: requested ones, then the lowest free ethN
    used_if = {a["interface"] for a in record["attachments"]}
    ifnames = []
    for a in attachments:
        if a.interface:
            if a.interface in used_if:
                raise InvalidNetworkConfig(f"interface {a.interface} is already used in container {name}")
            ifname = a.interface
        else:
            k = 0
            while f"eth{k}" in used_if:
                k += 1
            ifname = f"eth{k}"
        used_if.add(ifname)
        ifnames.append(ifname)

    chosen: list[PortMapping] = []
    if mappings:
        # ports of containers whose veths are gone (dead, cleanup not run yet) do not count
        live = {link.name for link in nl.links() if (link.alias or "").startswith(scope.label)}
        holders = []
        for r in store.all_containers(ctx):
            if r["id"] == cid or any(a["host_interface"] in live for a in r["attachments"]):
                holders.append(r)
            elif r.get("ports"):
                _teardown_locked(ctx, scope, nl, r, None)  # its nft elements would clash
        chosen = ports.resolve(mappings, _record_ports(holders, cid))
    saved_before = None if fresh else dict(record, attachments=list(record["attachments"]))
    pools: dict[str, ipam.Pool] = {}
    new_att: list[dict[str, Any]] = []
    undo = _Undo()
    try:
        # bridges first: making one may still move the default network to a free subnet
        fw = firewall.Batch(scope.table)
        brindex = []
        for i, net in enumerate(nets):
            net, index, created = _ensure_bridge(ctx, nl, scope, net)
            nets[i] = net
            brindex.append(index)
            if created:
                undo.bridges.append(net)
                if not fw:
                    fw.base()
                fw.add_network(net)
        # addresses: allocated and recorded before any veth exists (see cleanup)
        pools = {net.name: ipam.Pool(ctx, net) for net in nets}
        for net, a, ifname in zip(nets, attachments, ifnames, strict=True):
            new_att.append(
                {
                    "network": net.name,
                    "interface": ifname,
                    "mac": (a.static_mac or _mac()).lower(),
                    "address": pools[net.name].allocate(cid, a.static_ip),
                    "prefixlen": net.subnet.net.prefixlen,
                    "gateway": None if net.internal else net.subnet.gateway,
                    "bridge": net.network_interface,
                    "host_interface": scope.veth_name(cid, net.name),
                    "aliases": list(a.aliases),
                    "dns_server": net.subnet.gateway if net.dns_enabled else None,
                }
            )
        record["attachments"] = record["attachments"] + new_att
        if chosen:
            record["ports"] = [p.to_dict() for p in chosen]
        for p in pools.values():
            p.save()
        store.save_container(ctx, record)
        for net, att, index in zip(nets, new_att, brindex, strict=True):
            host_if = att["host_interface"]
            if nl.link(host_if) is not None:  # left by a killed engine for this very container
                nl.delete_link(host_if)
            nl.add_veth(host_if, att["interface"], nsfd, att["mac"], index, net.mtu)
            undo.veths.append(host_if)
            nl.set_alias(host_if, f"{scope.label}{cid}:{net.name}")
        if chosen:
            target = _port_target(record["attachments"], nets)
            if not fw and not firewall.table_exists(scope.table):
                fw.base()
                for n in _active_networks(ctx, nl, scope):
                    fw.add_network(n)
            fw.add_ports(firewall.port_rules(chosen, target))
        # nft commits (mostly an RCU grace period) while the namespace is configured
        pending = undo.pending = fw.start()
        undo.fw = fw if fw else None
        with open_in(netns_path) as inner:
            lo = inner.link("lo")
            if lo is not None and not lo.flags & 1:
                inner.set_up(lo.index, "lo")
            metric = ROUTE_METRIC + sum(1 for a in record["attachments"][: -len(new_att)] if a["gateway"])
            for att in new_att:
                link = inner.link(att["interface"])
                if link is None:
                    raise NetworkError(f"interface {att['interface']} vanished from {netns_path}")
                inner.add_address(link.index, att["address"], att["prefixlen"], att["interface"])
                inner.set_up(link.index, att["interface"])
                if att["gateway"]:
                    inner.add_default_route(att["gateway"], link.index, metric)
                    metric += 1
        undo.pending = None
        pending.wait()
        for net in nets:
            if net.dns_enabled:
                _refresh_dns(ctx, net)
    except BaseException:
        _rollback(ctx, nl, scope, cid, record, saved_before, new_att, nets, pools, undo)
        raise
    return result_of(record)


def _port_target(attachments: list[dict[str, Any]], nets: list[Network]) -> str:
    """Published ports go to the container's first address on a non-internal network."""
    for a in attachments:
        if a["gateway"]:
            return a["address"]
    raise InvalidNetworkConfig("ports cannot be published from a container only on --internal networks")


def _rollback(
    ctx: Context,
    nl: Netlink,
    scope: Scope,
    cid: str,
    record: dict[str, Any],
    before: dict[str, Any] | None,
    new_att: list[dict[str, Any]],
    nets: list[Network],
    pools: dict[str, ipam.Pool],
    undo: _Undo,
) -> None:
    def attempt(step: Any, *args: Any) -> None:
        try:
            step(*args)
        except Exception as e:  # undo as much as possible; the original error is what surfaces
            _log().warning("rolling back the network setup of %s: %s", cid, e)

    if undo.pending is not None:
        attempt(undo.pending.wait)
    attempt(nl.delete_links, undo.veths + [n.network_interface for n in undo.bridges])

    def firewall_back() -> None:
        rb = firewall.Batch(scope.table)
        if not _our_bridges(nl, scope):
            if firewall.table_exists(scope.table):
                rb.delete_table()
        elif undo.fw is not None:
            if record.get("ports") and before is None:
                target = _port_target(record["attachments"], nets)
                rb.remove_ports(firewall.port_rules([PortMapping(**p) for p in record["ports"]], target))
            for net in undo.bridges:
                rb.remove_network(net)
        rb.apply()

    attempt(firewall_back)

    def state_back() -> None:
        for att in new_att:
            pools[att["network"]].release(cid, att["address"])
        for p in pools.values():
            p.save()
        if before is None:
            store.delete_container(ctx, cid)
        else:
            store.save_container(ctx, before)

    attempt(state_back)
    for net in nets:
        if net.dns_enabled:
            attempt(_refresh_dns, ctx, net)


def _active_networks(ctx: Context, nl: Netlink, scope: Scope) -> list[Network]:
    """Our networks whose bridge exists on the host."""
    bridges = _our_bridges(nl, scope)
    return [n for n in store.all_networks(ctx) if n.network_interface in bridges]


def result_of(record: dict[str, Any]) -> SetupResult:
    """The engine's view of a container's networking, from its record."""
    ifaces = [InterfaceStatus.from_dict(a) for a in record["attachments"]]
    d = record.get("dns", {})
    host_rc = resolvconf.host()
    dns_ifaces = [i for i in ifaces if i.dns_server]
    if dns_ifaces:
        servers = list(dict.fromkeys(i.dns_server for i in dns_ifaces if i.dns_server))
        search = [DNS_DOMAIN, *(d.get("search") or host_rc.search)]
    else:
        servers = resolvconf.container_servers(d.get("servers", []), host_rc)
        search = list(d.get("search") or host_rc.search)
    options = list(d.get("options") or host_rc.options)
    hosts: list[tuple[str, list[str]]] = []
    if ifaces:
        names = [n for n in (record.get("hostname"), record["name"]) if n]
        hosts.append((ifaces[0].address, list(dict.fromkeys(names))))
        gw = next((i.gateway for i in ifaces if i.gateway), None)
        if gw:
            hosts.append((gw, ["host.containers.internal"]))
    for name, ip in d.get("add_hosts", []):
        hosts.append((ip, [name]))
    return SetupResult(
        container_id=record["id"],
        container_name=record["name"],
        netns=record["netns"],
        interfaces=ifaces,
        ports=[PortMapping(**p) for p in record.get("ports", [])],
        dns_servers=servers,
        dns_search=search,
        dns_options=options,
        hosts=hosts,
    )


# -- teardown ---------------------------------------------------------------------------------


def teardown(ctx: Context, container_id: str, networks: list[str] | None = None) -> None:
    """Undo setup for ``networks`` (None: all of them). A container with nothing set up is fine."""
    scope = Scope.of(ctx)
    with lock(ctx), Netlink() as nl:
        record = store.load_container(ctx, container_id)
        if record is None:
            if networks:
                raise NotAttached(f"container {container_id} is not connected to any network")
            return
        _teardown_locked(ctx, scope, nl, record, networks)


def _teardown_locked(
    ctx: Context, scope: Scope, nl: Netlink, record: dict[str, Any], networks: list[str] | None
) -> None:
    cid = record["id"]
    atts = record["attachments"]
    if networks is not None:
        names = {a["network"] for a in atts}
        for n in networks:
            if n not in names:
                raise NotAttached(f"container {record['name']} is not connected to network {n}")
        gone = [a for a in atts if a["network"] in networks]
    else:
        gone = list(atts)
    keep = [a for a in atts if a not in gone]
    fw = firewall.Batch(scope.table)
    # published ports follow the address they point at
    old_ports = [PortMapping(**p) for p in record.get("ports", [])]
    target = next((a["address"] for a in atts if a["gateway"]), None)
    if old_ports and target is not None and any(a["address"] == target for a in gone):
        fw.remove_ports(firewall.port_rules(old_ports, target))
        record["ports"] = []
    emptied: list[Network] = []
    dns_nets: list[Network] = []
    for a in gone:
        try:
            net = store.load(ctx, a["network"])
        except NetworkError:
            continue  # the definition went first: nothing of it is left to release
        pool = ipam.Pool(ctx, net)
        pool.release(cid)
        pool.save()
        if not pool.allocations:
            emptied.append(net)
        if net.dns_enabled:
            dns_nets.append(net)
    record["attachments"] = keep
    if keep or networks is not None:
        store.save_container(ctx, record)
    else:
        store.delete_container(ctx, cid)
    for net in dns_nets:
        _refresh_dns(ctx, net)
    for net in emptied:
        fw.remove_network(net)
    if emptied and not _our_bridges(nl, scope) - {n.network_interface for n in emptied}:
        fw = firewall.Batch(scope.table)
        fw.delete_table()
    # nft commits while the links go: both mostly wait for RCU grace periods, which overlap
    pending = fw.start()
    try:
        # the host veths (each takes its container end along) and emptied bridges, in one batch
        nl.delete_links([a["host_interface"] for a in gone] + [n.network_interface for n in emptied])
    finally:
        try:
            pending.wait()
        except NetworkError as e:
            if firewall.table_exists(scope.table):
                raise
            _log().debug("firewall table already gone: %s", e)


def _our_bridges(nl: Netlink, scope: Scope) -> set[str]:
    return {
        link.name
        for link in nl.links()
        if link.kind == "bridge" and (link.alias or "").startswith(scope.label)
    }


# -- connect / disconnect ---------------------------------------------------------------------


def connect(
    ctx: Context,
    container_id: str,
    netns_path: str,
    attachment: Attachment,
    *,
    container_name: str | None = None,
) -> SetupResult:
    """Join a running container to one more network (``network connect``)."""
    record = store.load_container(ctx, container_id)
    name = container_name or (record["name"] if record else None)
    if not name:
        raise InvalidNetworkConfig("a container name is required")
    return setup(ctx, container_id, netns_path, [attachment], container_name=name)


def disconnect(ctx: Context, container_id: str, network: str) -> None:
    """Remove a running container from one network (``network disconnect``)."""
    teardown(ctx, container_id, [network])


def rename(ctx: Context, container_id: str, name: str) -> None:
    """A renamed container answers to its new name on its networks' DNS at once (docker's
    embedded DNS does; the old name stops resolving). Unknown containers are ignored."""
    with lock(ctx):
        record = store.load_container(ctx, container_id)
        if record is None or record.get("name") == name:
            return
        record["name"] = name
        store.save_container(ctx, record)
        for net_name in dict.fromkeys(a["network"] for a in record["attachments"]):
            with contextlib.suppress(NetworkError):
                net = store.load(ctx, net_name)
                if net.dns_enabled:
                    _refresh_dns(ctx, net)


def status(ctx: Context, container_id: str) -> SetupResult | None:
    record = store.load_container(ctx, container_id)
    return result_of(record) if record else None


# -- network removal and crash cleanup --------------------------------------------------------


def users(ctx: Context, name: str) -> list[dict[str, Any]]:
    return [r for r in store.all_containers(ctx) if any(a["network"] == name for a in r["attachments"])]


def remove_network(ctx: Context, name: str, force: bool = False) -> None:
    """Delete a network; with ``force``, disconnect its containers first (their links go)."""
    scope = Scope.of(ctx)
    with lock(ctx), Netlink() as nl:
        net = get_network(ctx, name, nl)
        attached = users(ctx, net.name)
        if attached and not force:
            names = ", ".join(sorted(r["name"] for r in attached))
            raise NetworkInUse(f"network {net.name} is in use by container(s): {names}")
        for r in attached:
            _teardown_locked(ctx, scope, nl, r, [net.name])
        if nl.link(net.network_interface) is not None:
            fw = firewall.Batch(scope.table)
            fw.remove_network(net)
            nl.delete_link(net.network_interface)
            with contextlib.suppress(NetworkError):
                fw.apply()
        if not _active_networks(ctx, nl, scope):
            fw = firewall.Batch(scope.table)
            fw.delete_table()
            fw.apply()
        dnsctl.stop(ctx, net.name)
        ipam.drop(ctx, net.name)
        try:
            os.unlink(store.network_path(ctx, net.name))
        except FileNotFoundError:
            pass


@dataclass
class CleanupReport:
    containers: list[str] = field(default_factory=list)  # records of dead containers dropped
    links: list[str] = field(default_factory=list)  # veths and bridges deleted
    addresses: list[str] = field(default_factory=list)  # allocations released
    dns: list[str] = field(default_factory=list)  # responders stopped or restarted


def cleanup(ctx: Context) -> CleanupReport:
    """Remove what a killed engine or a dead container left (for ``system prune``, engine start).

    A container whose host veth is gone lost its namespace (the kernel deletes both ends):
    its record, addresses, ports and DNS names go. Labelled veths and bridges no record or
    network explains are deleted. The firewall is rewritten from the surviving state in one
    transaction, and each DNS-enabled network with containers gets its responder back.
    """
    scope = Scope.of(ctx)
    rep = CleanupReport()
    with lock(ctx), Netlink() as nl:
        links = {link.name: link for link in nl.links() if (link.alias or "").startswith(scope.label)}
        records = store.all_containers(ctx)
        live = []
        for r in records:
            alive = [a for a in r["attachments"] if a["host_interface"] in links]
            dead = [a for a in r["attachments"] if a not in alive]
            if not dead:
                live.append(r)
                continue
            if not alive:
                rep.containers.append(r["id"])
            # links of the dead attachments are gone; drop them like a teardown would
            for a in dead:
                with contextlib.suppress(NetworkError):
                    net = store.load(ctx, a["network"])
                    pool = ipam.Pool(ctx, net)
                    pool.release(r["id"], a["address"])
                    pool.save()
                    rep.addresses.append(f"{a['network']}:{a['address']}")
            if any(
                a["address"] == next((x["address"] for x in r["attachments"] if x["gateway"]), None)
                for a in dead
            ):
                r["ports"] = []
            r["attachments"] = alive
            if alive:
                store.save_container(ctx, r)
                live.append(r)
            else:
                store.delete_container(ctx, r["id"])
        # allocations no record explains (a setup killed between its two writes)
        owners = {(a["network"], a["address"], r["id"]) for r in live for a in r["attachments"]}
        nets = store.all_networks(ctx)
        for net in nets:
            pool = ipam.Pool(ctx, net)
            for ip, cid in list(pool.allocations.items()):
                if (net.name, ip, cid) not in owners:
                    del pool.allocations[ip]
                    rep.addresses.append(f"{net.name}:{ip}")
            pool.save()
        wanted_veths = {a["host_interface"] for r in live for a in r["attachments"]}
        used_nets = {a["network"] for r in live for a in r["attachments"]}
        wanted_bridges = {n.network_interface for n in nets if n.name in used_nets}
        for name, link in links.items():
            if (link.kind == "veth" and name not in wanted_veths) or (
                link.kind == "bridge" and name not in wanted_bridges
            ):
                nl.delete_link(name)
                rep.links.append(name)
        # firewall: rewrite from what survives, or drop the table if nothing does
        fw = firewall.Batch(scope.table)
        active = [n for n in nets if n.name in used_nets]
        if active:
            fw.base()
            fw.flush_state()
            for n in active:
                fw.add_network(n)
            for r in live:
                target = next((a["address"] for a in r["attachments"] if a["gateway"]), None)
                if r.get("ports") and target:
                    fw.add_ports(firewall.port_rules([PortMapping(**p) for p in r["ports"]], target))
        elif firewall.table_exists(scope.table):
            fw.delete_table()
        fw.apply()
        # DNS: responders for networks with containers, none for the others
        dns_root = store.run_dir(ctx) / "dns"
        known = set(os.listdir(dns_root)) if dns_root.is_dir() else set()
        for net in nets:
            if net.dns_enabled and net.name in used_nets:
                had = dnsctl.pid_of(ctx, net.name)
                _refresh_dns(ctx, net)
                if had is None:
                    rep.dns.append(f"started {net.name}")
            elif net.name in known or dnsctl.pid_of(ctx, net.name):
                dnsctl.stop(ctx, net.name)
                rep.dns.append(f"stopped {net.name}")
            known.discard(net.name)
        for stale in known:  # responders of networks that no longer exist
            dnsctl.stop(ctx, stale)
            rep.dns.append(f"stopped {stale}")
    return rep


def reload(ctx: Context) -> None:
    """Re-apply the firewall from the state (after something flushed the ruleset)."""
    cleanup(ctx)


def loopback_up(netns_path: str) -> None:
    """Bring ``lo`` up in a namespace (``--network none``, or before a runtime that won't)."""
    with open_in(netns_path) as inner:
        lo = inner.link("lo")
        if lo is not None and not lo.flags & 1:
            inner.set_up(lo.index, "lo")


__all__ = [
    "CleanupReport",
    "NetlinkError",
    "cleanup",
    "connect",
    "default_network",
    "disconnect",
    "get_network",
    "loopback_up",
    "reload",
    "remove_network",
    "result_of",
    "setup",
    "status",
    "teardown",
]
