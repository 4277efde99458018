"""Published ports: docker's ``-p``/``-P`` syntax, and choosing free host ports.

Ports are forwarded by the kernel (nft DNAT), so no process holds the host port: before a
mapping is added, the host port is checked both against every other container's mappings and
against the host's own sockets (a listener already there would silently lose its traffic).
"""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
from collections.abc import Iterable

from pallet.network.errors import InvalidNetworkConfig, PortUnavailable
from pallet.network.types import PortMapping

PROTOCOLS = ("tcp", "udp")


def _port_range(text: str, what: str, spec: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        a = int(lo)
        b = int(hi) if sep else a
    except ValueError:
        raise InvalidNetworkConfig(f"invalid port mapping {spec!r}: {what} {text!r} is not a port") from None
    if not (1 <= a <= 65535 and 1 <= b <= 65535) or b < a:
        raise InvalidNetworkConfig(f"invalid port mapping {spec!r}: {what} {text!r} is not in 1-65535")
    return a, b - a + 1


def parse_publish(spec: str) -> PortMapping:
    """``[[HOSTIP:][HOSTPORT[-END]]:]CONTAINERPORT[-END][/tcp|udp]`` as ``docker run -p`` takes it."""
    text, _, proto = spec.strip().partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise InvalidNetworkConfig(f"invalid port mapping {spec!r}: protocol must be tcp or udp")
    host_ip = ""
    if text.startswith("["):
        raise InvalidNetworkConfig(f"invalid port mapping {spec!r}: IPv6 host addresses are not supported")
    parts = text.split(":")
    if len(parts) == 1:
        host, ctr = "", parts[0]
    elif len(parts) == 2:
        host, ctr = parts
    elif len(parts) == 3:
        host_ip, host, ctr = parts
        try:
            ip = ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise InvalidNetworkConfig(
                f"invalid port mapping {spec!r}: {host_ip!r} is not an IPv4 address"
            ) from None
        host_ip = "" if ip.is_unspecified else str(ip)
    else:
        raise InvalidNetworkConfig(
            f"invalid port mapping {spec!r}: expected [HOSTIP:][HOSTPORT:]CONTAINERPORT"
        )
    cport, crange = _port_range(ctr, "container port", spec)
    if not host:
        return PortMapping(cport, 0, proto, host_ip, crange)
    hport, hrange = _port_range(host, "host port", spec)
    if hrange != crange:
        raise InvalidNetworkConfig(f"invalid port mapping {spec!r}: host and container ranges differ in size")
    return PortMapping(cport, hport, proto, host_ip, crange)


def publish_all(exposed: Iterable[str]) -> list[PortMapping]:
    """``-P``: every exposed port ("80/tcp", "53/udp", "8000-8002/tcp") on a random host port."""
    out = []
    for e in exposed:
        port, _, proto = e.partition("/")
        m = parse_publish(f"{port}/{proto or 'tcp'}")
        out.append(m)
    return out


def _bindable(host_ip: str, port: int, proto: str) -> bool:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host_ip or "0.0.0.0", port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            if e.errno == errno.EADDRNOTAVAIL:
                raise PortUnavailable(f"cannot publish on {host_ip}: not an address of this host") from None
            raise
    return True


def _ephemeral() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def _clash(m: PortMapping, port: int, used: Iterable[PortMapping]) -> PortMapping | None:
    for u in used:
        if u.protocol != m.protocol:
            continue
        if u.host_ip and m.host_ip and u.host_ip != m.host_ip:
            continue
        if u.host_port <= port + m.range - 1 and port <= u.host_port + u.range - 1:
            return u
    return None


def resolve(mappings: list[PortMapping], used: list[PortMapping]) -> list[PortMapping]:
    """Fill in free host ports and check every requested one; raises PortUnavailable."""
    out: list[PortMapping] = []
    taken = list(used)
    for m in mappings:
        if m.host_port:
            clash = _clash(m, m.host_port, taken)
            if clash is not None:
                raise PortUnavailable(
                    f"host port {m.host_port}/{m.protocol} is already published by another container"
                )
            for k in range(m.range):
                if not _bindable(m.host_ip, m.host_port + k, m.protocol):
                    raise PortUnavailable(
                        f"host port {m.host_port + k}/{m.protocol} is already in use on the host"
                    )
            chosen = PortMapping(m.container_port, m.host_port, m.protocol, m.host_ip, m.range)
        else:
            lo, hi = _ephemeral()
            pool = list(range(lo, hi - m.range + 2))
            random.shuffle(pool)
            port = next(
                (
                    p
                    for p in pool
                    if _clash(m, p, taken) is None
                    and all(_bindable(m.host_ip, p + k, m.protocol) for k in range(m.range))
                ),
                None,
            )
            if port is None:
                raise PortUnavailable(f"no free host port for {m.container_port}/{m.protocol}")
            chosen = PortMapping(m.container_port, port, m.protocol, m.host_ip, m.range)
        out.append(chosen)
        taken.append(chosen)
    return out
