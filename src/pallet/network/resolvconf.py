"""resolv.conf and hosts files: reading the host's, writing a container's.

Docker's and podman's rules: a container on a network with DNS gets the network's responder
(the bridge gateway) as its only nameserver and ``dns.pallet`` first in its search list; its
``--dns`` servers then become the responder's upstreams for its queries. Elsewhere it gets
``--dns`` or the host's nameservers, minus loopback ones it could not reach from its own
namespace (falling back to public resolvers only if none are left, as docker does).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pallet.records import dataclass, field

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
FALLBACK_SERVERS = ["8.8.8.8", "8.8.4.4"]


@dataclass
class ResolvConf:
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


def parse(text: str) -> ResolvConf:
    rc = ResolvConf()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        key, args = words[0], words[1:]
        if key == "nameserver" and args:
            addr = args[0].split("%", 1)[0]
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                continue
            rc.nameservers.append(args[0])
        elif key in ("search", "domain") and args:
            rc.search = list(args)  # the last search/domain line wins, as in glibc
        elif key == "options":
            rc.options.extend(args)
    return rc


def host(path: Path = HOST_RESOLV_CONF) -> ResolvConf:
    try:
        return parse(path.read_text(errors="replace"))
    except OSError:
        return ResolvConf()


def is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def container_servers(dns: list[str], host_rc: ResolvConf) -> list[str]:
    """Nameservers for a container without a DNS-enabled network."""
    if dns:
        return list(dns)
    usable = [s for s in host_rc.nameservers if not is_loopback(s)]
    return usable or list(FALLBACK_SERVERS)


def render_resolv_conf(nameservers: list[str], search: list[str], options: list[str]) -> str:
    lines = []
    if search:
        lines.append("search " + " ".join(search))
    lines += [f"nameserver {s}" for s in nameservers]
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def render_hosts(entries: list[tuple[str, list[str]]]) -> str:
    """/etc/hosts with the usual localhost lines, then ``entries`` ((ip, names) in order)."""
    lines = [
        "127.0.0.1\tlocalhost localhost.localdomain localhost4 localhost4.localdomain4",
        "::1\tlocalhost localhost.localdomain localhost6 localhost6.localdomain6",
    ]
    lines += [f"{ip}\t{' '.join(names)}" for ip, names in entries if names]
    return "\n".join(lines) + "\n"
