"""-p/-P parsing and host port choice (checked against the host's real sockets)."""

from __future__ import annotations

import socket

import pytest

from pallet.network import PortMapping, parse_publish, ports, publish_all
from pallet.network.errors import InvalidNetworkConfig, PortUnavailable


@pytest.mark.parametrize(
    "spec,expect",
    [
        ("80", PortMapping(80, 0, "tcp", "", 1)),
        ("8080:80", PortMapping(80, 8080, "tcp", "", 1)),
        ("127.0.0.1:8080:80/udp", PortMapping(80, 8080, "udp", "127.0.0.1", 1)),
        ("127.0.0.1::80", PortMapping(80, 0, "tcp", "127.0.0.1", 1)),
        ("0.0.0.0:9000:90", PortMapping(90, 9000, "tcp", "", 1)),
        ("8000-8002:80-82/TCP", PortMapping(80, 8000, "tcp", "", 3)),
        ("53/udp", PortMapping(53, 0, "udp", "", 1)),
    ],
)
def test_parse_publish(spec, expect):
    assert parse_publish(spec) == expect


@pytest.mark.parametrize(
    "spec,match",
    [
        ("", "not a port"),
        ("0", "1-65535"),
        ("70000", "1-65535"),
        ("80/sctp", "tcp or udp"),
        ("1.2.3:80:80", "IPv4 address"),
        ("[::1]:80:80", "IPv6"),
        ("8000-8001:80", "differ in size"),
        ("x:80", "not a port"),
        ("90-80", "1-65535"),
        ("1:2:3:4", "expected"),
    ],
)
def test_parse_publish_rejects(spec, match):
    with pytest.raises(InvalidNetworkConfig, match=match):
        parse_publish(spec)


def test_publish_all():
    assert publish_all(["80/tcp", "53/udp", "9000"]) == [
        PortMapping(80, 0, "tcp"),
        PortMapping(53, 0, "udp"),
        PortMapping(9000, 0, "tcp"),
    ]


def test_resolve_picks_free_ports_and_refuses_taken_ones():
    chosen = ports.resolve([PortMapping(80), PortMapping(81, protocol="udp"), PortMapping(82, range=3)], [])
    assert all(p.host_port for p in chosen)
    assert chosen[2].range == 3
    # the chosen ports are really free on the host
    for p in chosen:
        kind = socket.SOCK_STREAM if p.protocol == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("0.0.0.0", p.host_port))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(PortUnavailable, match=f"{busy}/tcp is already in use on the host"):
            ports.resolve([PortMapping(80, busy)], [])
        # the same number over udp is another port
        assert ports.resolve([PortMapping(80, busy, "udp")], [])[0].host_port == busy
    used = [PortMapping(80, 40000, "tcp", "", 5)]
    with pytest.raises(PortUnavailable, match="published by another container"):
        ports.resolve([PortMapping(22, 40003)], used)
    with pytest.raises(PortUnavailable, match="published by another container"):
        ports.resolve([PortMapping(22, 40000), PortMapping(23, 40000)], [])
    # different host addresses may share a port number
    assert (
        ports.resolve(
            [PortMapping(22, 40003, host_ip="127.0.0.1")], [PortMapping(80, 40003, host_ip="127.0.0.2")]
        )[0].host_port
        == 40003
    )
    with pytest.raises(PortUnavailable, match="not an address of this host"):
        ports.resolve([PortMapping(22, 40010, host_ip="192.0.2.250")], [])
