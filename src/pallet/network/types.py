"""The values that cross the seam between the engine and networking, shaped like netavark's.

A :class:`Network` is what ``network create`` stores (podman's network JSON). The engine asks for
a container's networking with :class:`Attachment` s (one per network: static IP, aliases,
interface name) and :class:`PortMapping` s, and gets back a :class:`SetupResult`: per network the
interface, MAC, address and gateway (netavark's status block), plus the nameservers, search
domains and host entries to write into the container's resolv.conf and hosts.
"""

from __future__ import annotations

import ipaddress
import re

from pallet.network.errors import InvalidNetworkConfig
from pallet.records import asdict, dataclass, field

TYPE_CHECKING = False  # typing costs an import on `pallet run`'s path: annotations are strings
if TYPE_CHECKING:
    from typing import Any

DEFAULT_NETWORK = "pallet"
DNS_DOMAIN = "dns.pallet"
#: a DNS name (``--network-alias``, container names in the responder)
ALIAS_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*$")
#: a Linux interface name
IFNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


def check_alias(name: str) -> None:
    """A network alias must be a DNS name (the responder serves it)."""
    if not ALIAS_RE.match(name) or len(name) > 253:
        raise InvalidNetworkConfig(f"invalid network alias {name!r}: use DNS name characters")


def check_mac(mac: str) -> str:
    """A unicast MAC address (``--mac-address``), lower-cased."""
    if not MAC_RE.match(mac) or int(mac[:2], 16) & 1:
        raise InvalidNetworkConfig(
            f"invalid MAC address {mac!r}: expected a unicast address like 02:42:ac:11:00:02"
        )
    return mac.lower()


@dataclass
class Subnet:
    subnet: str  # "10.89.0.0/24"
    gateway: str | None = None

    @property
    def net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)


@dataclass
class Network:
    """A network definition as persisted under ``ROOT/networks/<name>.json`` (podman's shape)."""

    name: str
    id: str
    driver: str = "bridge"
    network_interface: str = ""
    created: str = ""
    subnets: list[Subnet] = field(default_factory=list)
    ipv6_enabled: bool = False
    internal: bool = False
    dns_enabled: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    network_dns_servers: list[str] = field(default_factory=list)
    ipam_options: dict[str, str] = field(default_factory=lambda: {"driver": "host-local"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Network:
        d = dict(d)
        d["subnets"] = [Subnet(**s) for s in d.get("subnets", [])]
        known = cls.__record_fields__  # type: ignore[attr-defined]
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def subnet(self) -> Subnet:
        return self.subnets[0]

    @property
    def mtu(self) -> int | None:
        mtu = self.options.get("mtu")
        return int(mtu) if mtu else None


@dataclass
class Attachment:
    """One network a container joins, as the engine asks for it (netavark's PerNetworkOptions)."""

    network: str = DEFAULT_NETWORK
    #: a fixed IPv4 address from the subnet (``--ip``); None: the next free one
    static_ip: str | None = None
    #: names other containers on this network resolve to this one (``--network-alias``)
    aliases: list[str] = field(default_factory=list)
    #: interface name inside the container; None: the first free ethN
    interface: str | None = None
    #: fixed MAC (``--mac-address``); None: a random locally administered one
    static_mac: str | None = None


@dataclass
class PortMapping:
    """``-p [HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTO]``; ``range`` consecutive ports from both."""

    container_port: int
    host_port: int = 0  # 0: pick a free port
    protocol: str = "tcp"
    host_ip: str = ""  # "": every host address
    range: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        host = f"{self.host_ip or '0.0.0.0'}:{self.host_port}"
        if self.range > 1:
            host += f"-{self.host_port + self.range - 1}"
            return f"{self.container_port}-{self.container_port + self.range - 1}/{self.protocol} -> {host}"
        return f"{self.container_port}/{self.protocol} -> {host}"


@dataclass
class DNSOptions:
    """The container's ``--dns``, ``--dns-search``, ``--dns-option`` and ``--add-host``."""

    servers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    #: (name, ip) pairs from ``--add-host NAME:IP``
    add_hosts: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class InterfaceStatus:
    """What one attachment became: netavark's status block for one network."""

    network: str
    interface: str  # name inside the container, e.g. "eth0"
    mac: str
    address: str  # "10.89.0.2"
    prefixlen: int
    gateway: str | None  # None on --internal networks
    bridge: str
    host_interface: str  # the host end of the veth pair
    aliases: list[str] = field(default_factory=list)
    #: the network's DNS responder address (the gateway) when DNS is enabled
    dns_server: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InterfaceStatus:
        return cls(**d)


@dataclass
class SetupResult:
    """Everything the engine needs after :func:`pallet.network.setup` (and nothing to undo by hand)."""

    container_id: str
    container_name: str
    netns: str
    interfaces: list[InterfaceStatus]
    ports: list[PortMapping]  # with the host ports actually chosen
    #: nameservers for the container's resolv.conf, in order
    dns_servers: list[str]
    dns_search: list[str]
    dns_options: list[str]
    #: (ip, [names]) lines for the container's /etc/hosts, after localhost
    hosts: list[tuple[str, list[str]]]

    def status_blocks(self) -> dict[str, Any]:
        """netavark's setup output: {network: {interfaces: {eth0: {mac_address, subnets}}, ...}}."""
        out: dict[str, Any] = {}
        for i in self.interfaces:
            sub: dict[str, Any] = {"ipnet": f"{i.address}/{i.prefixlen}"}
            if i.gateway:
                sub["gateway"] = i.gateway
            block: dict[str, Any] = {"interfaces": {i.interface: {"mac_address": i.mac, "subnets": [sub]}}}
            if i.dns_server:
                block["dns_server_ips"] = [i.dns_server]
                block["dns_search_domains"] = [DNS_DOMAIN]
            out[i.network] = block
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "container_id": self.container_id,
            "container_name": self.container_name,
            "netns": self.netns,
            "interfaces": [i.to_dict() for i in self.interfaces],
            "ports": [p.to_dict() for p in self.ports],
            "dns_servers": self.dns_servers,
            "dns_search": self.dns_search,
            "dns_options": self.dns_options,
            "hosts": [[ip, names] for ip, names in self.hosts],
        }
