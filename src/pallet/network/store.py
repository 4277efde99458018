"""Where networking keeps its state, and how it names what it makes on the host.

Persistent (``ROOT/networks/``, survives engine restarts and reboots)::

    <name>.json            network definitions (podman's JSON shape)
    ipam/<name>.json       address allocations: {"last": ip, "allocations": {ip: container id}}
    containers/<id>.json   what setup made for a container (interfaces, addresses, ports, DNS)
    .lock                  flock held by every change, so two engines never race

Runtime (``RUNROOT/networks/``, gone at reboot like the links it describes)::

    dns/<name>/records     the DNS responder's view of the network (rewritten on every change)
    dns/<name>/pid         the responder's pid

Host objects are global, so their names carry a *scope* derived from the root: the default
root (/var/lib/pallet) makes ``pallet0``, ``pallet1`` ... and the nft table ``inet pallet``;
any other root (tests, a second engine) makes ``p<tag>-0`` ... and ``inet pallet_<tag>``, so two
roots on one host never touch each other's bridges, veths or rules. Every bridge and host veth
is labelled (IFLA_IFALIAS ``pallet:<scope>:...``) so cleanup finds exactly its own.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from pallet.content.digest import sha256_of
from pallet.context import Context
from pallet.fsutil import atomic_write
from pallet.network.errors import InvalidNetworkConfig, NetworkNotFound
from pallet.network.types import Network, Subnet
from pallet.records import dataclass

TYPE_CHECKING = False  # typing costs an import on `pallet run`'s path: annotations are strings
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = Path("/var/lib/pallet")
#: the default network's preferred subnet (podman's is 10.88.0.0/16; docker's 172.17.0.0/16)
DEFAULT_SUBNET = "10.89.0.0/24"
#: where new networks' subnets come from, /24 at a time, skipping any routed on the host
SUBNET_POOLS = ("10.89.0.0/16", "10.90.0.0/15", "10.92.0.0/14")
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
MAX_NAME = 64


@dataclass(frozen=True)
class Scope:
    """Names of host-global objects for one root."""

    tag: str  # "" for the default root

    @classmethod
    def of(cls, ctx: Context) -> Scope:
        root = Path(os.path.abspath(ctx.root))
        if root == DEFAULT_ROOT:
            return cls("")
        return cls(sha256_of(str(root).encode()).hex()[:5])

    @property
    def table(self) -> str:
        return f"pallet_{self.tag}" if self.tag else "pallet"

    @property
    def label(self) -> str:
        """IFLA_IFALIAS prefix on every interface of this scope."""
        return f"pallet:{self.tag or 'default'}:"

    def bridge_name(self, index: int) -> str:
        return f"p{self.tag}-{index}" if self.tag else f"pallet{index}"

    def bridge_index(self, name: str) -> int | None:
        prefix = f"p{self.tag}-" if self.tag else "pallet"
        rest = name[len(prefix) :] if name.startswith(prefix) else ""
        return int(rest) if rest.isdigit() else None

    def veth_name(self, container_id: str, network: str) -> str:
        digest = sha256_of(f"{self.tag}\0{container_id}\0{network}".encode()).hex()
        return f"veth{digest[:11]}"


def net_dir(ctx: Context) -> Path:
    return Path(ctx.root) / "networks"


def lock_path(ctx: Context) -> Path:
    return net_dir(ctx) / ".lock"


def run_dir(ctx: Context) -> Path:
    return Path(ctx.runroot) / "networks"


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InvalidNetworkConfig(f"cannot read {path}: {e}") from None


def write_json(path: Path, obj: Any) -> None:
    """Atomic (rename) but not fsynced: after a power loss the links are gone too, and
    :func:`pallet.network.cleanup` reconciles; a kill -9 never exposes a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True).encode(), sync=False)


# -- network definitions ---------------------------------------------------------------------


def check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME or not NAME_RE.match(name):
        raise InvalidNetworkConfig(
            f"invalid network name {name!r}: use letters, digits, '_', '.', '-' (not first), "
            f"at most {MAX_NAME} characters"
        )


def network_path(ctx: Context, name: str) -> Path:
    return net_dir(ctx) / f"{name}.json"


def load(ctx: Context, name: str) -> Network:
    check_name(name)
    data = read_json(network_path(ctx, name))
    if data is None:
        raise NetworkNotFound(f"network {name!r} not found")
    return Network.from_dict(data)


def find(ctx: Context, name_or_id: str) -> Network:
    """By exact name, else by a unique prefix of the id (as podman and docker accept)."""
    if NAME_RE.match(name_or_id) and network_path(ctx, name_or_id).exists():
        return load(ctx, name_or_id)
    if re.fullmatch(r"[0-9a-f]{3,64}", name_or_id):
        hits = [n for n in all_networks(ctx) if n.id.startswith(name_or_id)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InvalidNetworkConfig(f"network id prefix {name_or_id!r} is ambiguous")
    raise NetworkNotFound(f"network {name_or_id!r} not found")


def all_networks(ctx: Context) -> list[Network]:
    d = net_dir(ctx)
    out = []
    try:
        names = sorted(os.listdir(d))
    except FileNotFoundError:
        return []
    for fn in names:
        if fn.endswith(".json") and not fn.startswith("."):
            data = read_json(d / fn)
            if data is not None:
                out.append(Network.from_dict(data))
    return out


def save(ctx: Context, net: Network) -> None:
    write_json(network_path(ctx, net.name), net.to_dict())


def used_subnets(ctx: Context, routes: list[tuple[str, int, int | None]]) -> list[ipaddress.IPv4Network]:
    """Subnets of our networks and of the host's IPv4 routes (except the default route)."""
    used = [n.subnet.net for n in all_networks(ctx) if n.subnets]
    for dst, plen, _oif in routes:
        try:
            net = ipaddress.IPv4Network(f"{dst}/{plen}", strict=False)
        except ValueError:
            continue
        if plen and not net.is_loopback and not net.is_multicast:
            used.append(net)
    return used


def pick_subnet(used: list[ipaddress.IPv4Network], prefer: str | None = None) -> ipaddress.IPv4Network:
    if prefer:
        net = ipaddress.IPv4Network(prefer)
        if not any(net.overlaps(u) for u in used):
            return net
    for pool in SUBNET_POOLS:
        for net in ipaddress.IPv4Network(pool).subnets(new_prefix=24):
            if not any(net.overlaps(u) for u in used):
                return net
    raise InvalidNetworkConfig("no free subnet left in the pools: pass --subnet")


def parse_subnet(subnet: str, gateway: str | None) -> Subnet:
    try:
        net = ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        raise InvalidNetworkConfig(f"invalid subnet {subnet!r}: expected CIDR like 10.89.5.0/24") from None
    if net.version != 4:
        raise InvalidNetworkConfig(f"subnet {subnet}: only IPv4 subnets are supported")
    if str(net) != subnet.strip():
        raise InvalidNetworkConfig(f"invalid subnet {subnet!r}: host bits set (did you mean {net}?)")
    if net.prefixlen > 30:
        raise InvalidNetworkConfig(f"subnet {subnet} is too small: at most /30")
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_unspecified:
        raise InvalidNetworkConfig(f"subnet {subnet} cannot be used for containers")
    if gateway:
        try:
            gw = ipaddress.IPv4Address(gateway)
        except ValueError:
            raise InvalidNetworkConfig(f"invalid gateway {gateway!r}: expected an IPv4 address") from None
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise InvalidNetworkConfig(f"gateway {gateway} is not a host address of subnet {net}")
    else:
        gw = net.network_address + 1
    return Subnet(str(net), str(gw))


def new_network(
    name: str,
    subnet: Subnet,
    interface: str,
    *,
    internal: bool,
    dns: bool,
    labels: dict[str, str],
    options: dict[str, str],
    dns_servers: list[str],
    fixed_id: bool = False,
) -> Network:
    ident = (
        sha256_of(f"pallet network {name}".encode()).hex() if fixed_id else os.urandom(32).hex()
    )
    return Network(
        name=name,
        id=ident,
        network_interface=interface,
        created=now(),
        subnets=[subnet],
        internal=internal,
        dns_enabled=dns,
        labels=dict(labels),
        options=dict(options),
        network_dns_servers=list(dns_servers),
    )


def next_bridge(ctx: Context, scope: Scope, taken: set[str]) -> str:
    """The lowest free bridge index among our networks and the host's links."""
    names = {n.network_interface for n in all_networks(ctx)} | taken
    i = 1
    while scope.bridge_name(i) in names:
        i += 1
    return scope.bridge_name(i)


# -- per-container records ---------------------------------------------------------------------


def container_path(ctx: Context, container_id: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", container_id):
        raise InvalidNetworkConfig(f"invalid container id {container_id!r}")
    return net_dir(ctx) / "containers" / f"{container_id}.json"


def load_container(ctx: Context, container_id: str) -> dict[str, Any] | None:
    return read_json(container_path(ctx, container_id))


def save_container(ctx: Context, record: dict[str, Any]) -> None:
    write_json(container_path(ctx, record["id"]), record)


def delete_container(ctx: Context, container_id: str) -> None:
    try:
        os.unlink(container_path(ctx, container_id))
    except FileNotFoundError:
        pass


def all_containers(ctx: Context) -> list[dict[str, Any]]:
    d = net_dir(ctx) / "containers"
    try:
        names = sorted(os.listdir(d))
    except FileNotFoundError:
        return []
    out = []
    for fn in names:
        if fn.endswith(".json") and not fn.startswith("."):
            rec = read_json(d / fn)
            if rec is not None:
                out.append(rec)
    return out
