"""``run``/``create`` network options through the engine: --ip, --mac-address, --hostname,
--dns, --dns-search, --dns-option, --add-host (host-gateway), DNS forwarding to a container's
--dns servers, inspect's NetworkSettings, and bad input (one error line, status 125, nothing
created).
"""

from __future__ import annotations

import ipaddress

from tests.network.conftest import Engine, UpstreamDNS, free_subnet
from tests.network.test_engine_bridge import lookup


def test_static_ip_mac_hostname_and_inspect(engine: Engine) -> None:
    subnet = free_subnet()
    engine.ok("network", "create", "--subnet", subnet, "fixed")
    ip = str(ipaddress.IPv4Network(subnet)[77])
    mac = "02:42:0a:00:00:4d"
    cid = engine.ok(
        "run",
        "-d",
        "--name",
        "st",
        "--network",
        "fixed",
        "--ip",
        ip,
        "--mac-address",
        mac,
        "--hostname",
        "static-host",
        "small",
        "sleep",
        "300",
    ).strip()
    out = engine.ok(
        "exec", "st", "sh", "-c", "ip -o link show eth0; ip -4 -o addr show eth0; hostname; cat /etc/hosts"
    )
    assert mac in out and f"{ip}/24" in out and "static-host" in out
    assert f"{ip}\tstatic-host st" in out, "the container's own names in its /etc/hosts"
    ns = engine.inspect("st")["NetworkSettings"]
    gw = str(ipaddress.IPv4Network(subnet)[1])
    assert (ns["IPAddress"], ns["IPPrefixLen"], ns["Gateway"], ns["MacAddress"]) == (ip, 24, gw, mac)
    ep = ns["Networks"]["fixed"]
    assert (ep["IPAddress"], ep["Gateway"], ep["MacAddress"]) == (ip, gw, mac)
    assert ep["IPAMConfig"] == {"IPv4Address": ip} and ep["NetworkID"] and ep["DNSNames"][0] == "st"
    assert ns["SandboxKey"] == str(engine.runroot / "netns" / cid)
    hc = engine.inspect("st")["HostConfig"]
    assert hc["NetworkMode"] == "fixed"
    # the address is taken while st runs
    engine.fails("run", "--rm", "--network", "fixed", "--ip", ip, "small", "true", match=ip)
    ps = engine.ok("ps", "--format", "{{.Names}} {{.Networks}}", "--filter", "network=fixed")
    assert ps == "st fixed\n"
    assert engine.ok("ps", "-q", "--filter", "network=pallet") == ""
    # on two networks: the deprecated top-level fields stay empty, both endpoints are listed
    engine.ok("network", "create", "--subnet", free_subnet(), "second")
    engine.ok("run", "-d", "--name", "two", "--network", "fixed,second", "small", "sleep", "300")
    ns2 = engine.inspect("two")["NetworkSettings"]
    assert set(ns2["Networks"]) == {"fixed", "second"} and ns2["IPAddress"] == ""
    out = engine.ok("exec", "two", "ip", "-4", "-o", "addr")
    assert ns2["Networks"]["fixed"]["IPAddress"] in out and ns2["Networks"]["second"]["IPAddress"] in out
    # a static address is free again once its container is gone
    engine.ok("rm", "-f", "st", "two")
    assert engine.leaks() == []
    engine.ok("run", "--rm", "--network", "fixed", "--ip", ip, "small", "true")


def test_dns_options_and_add_host_on_the_default_network(engine: Engine) -> None:
    out = engine.ok(
        "run",
        "--rm",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        "corp.example",
        "--dns-option",
        "ndots:2",
        "--add-host",
        "db.local:10.1.2.3",
        "--add-host",
        "hostgw:host-gateway",
        "small",
        "sh",
        "-c",
        "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; ip route",
    )
    resolv, hosts, routes = out.split("---\n")
    assert resolv.split("\n") == ["search corp.example", "nameserver 192.0.2.53", "options ndots:2", ""]
    gateway = next(line.split()[2] for line in routes.splitlines() if line.startswith("default"))
    assert "10.1.2.3\tdb.local" in hosts and f"{gateway}\thostgw" in hosts
    assert f"{gateway}\thost.containers.internal" in hosts
    # without --dns: the host's nameservers (loopback ones dropped: unreachable from a container)
    resolv = engine.ok("run", "--rm", "small", "cat", "/etc/resolv.conf")
    assert "nameserver 127." not in resolv and "nameserver" in resolv


def test_dns_network_forwards_to_the_containers_dns_servers(
    engine: Engine, upstream_dns: UpstreamDNS
) -> None:
    """On a network with DNS the container's resolv.conf names the responder only; names it does
    not know go to the container's --dns servers (here a server on a host loopback address)."""
    engine.ok("network", "create", "--subnet", free_subnet(), "fwd")
    out = engine.ok(
        "run",
        "--rm",
        "--network",
        "fwd",
        "--dns",
        upstream_dns.address,
        "--name",
        "asker",
        "small",
        "sh",
        "-c",
        "cat /etc/resolv.conf; echo ---; busybox nslookup www.upstream.test; "
        "echo ---; busybox nslookup asker",
    )
    resolv, forwarded, own = out.split("---\n")
    assert upstream_dns.address not in resolv and "search dns.pallet" in resolv
    assert lookup(forwarded) == [UpstreamDNS.ANSWER]
    assert "www.upstream.test" in upstream_dns.queries
    assert len(lookup(own)) == 1 and "asker" not in upstream_dns.queries


def test_podman_per_network_options(engine: Engine) -> None:
    """``--network NAME:ip=...,mac=...,alias=...,interface_name=...`` (podman's syntax): each
    network its own address, MAC, aliases and interface name inside the container."""
    sa, sb = free_subnet(), free_subnet()
    engine.ok("network", "create", "--subnet", sa, "pa")
    engine.ok("network", "create", "--subnet", sb, "pb")
    ip_a, ip_b = str(ipaddress.IPv4Network(sa)[40]), str(ipaddress.IPv4Network(sb)[41])
    mac_b = "02:42:0a:00:00:29"
    engine.ok(
        "run", "-d", "--name", "multi",
        "--network", f"pa:ip={ip_a},alias=first,alias=one,interface_name=front0",
        "--network", f"pb:ip={ip_b},mac={mac_b}",
        "small", "sleep", "300",
    )
    out = engine.ok("exec", "multi", "sh", "-c", "ip -4 -o addr show front0; ip -o link; ip -4 -o addr")
    assert f"{ip_a}/24" in out.splitlines()[0], out
    assert mac_b in out and f"{ip_b}/24" in out
    nets = engine.inspect("multi")["NetworkSettings"]["Networks"]
    assert nets["pa"]["IPAMConfig"] == {"IPv4Address": ip_a} and nets["pa"]["IPAddress"] == ip_a
    assert set(nets["pa"]["Aliases"] or []) >= {"first", "one"}
    assert (nets["pb"]["IPAddress"], nets["pb"]["MacAddress"]) == (ip_b, mac_b)
    engine.ok("run", "-d", "--name", "asker", "--network", "pa", "small", "sleep", "300")
    for name in ("multi", "first", "one"):
        assert lookup(engine.ok("exec", "asker", "busybox", "nslookup", name)) == [ip_a], name
    # the address is taken; both spellings of a static address at once are refused
    engine.fails("run", "--rm", "--network", f"pa:ip={ip_a}", "small", "true", match=ip_a)
    engine.fails("run", "--rm", "--network", f"pa:ip={ip_a}", "--ip", ip_a, "small", "true",
                 match="given both")
    engine.ok("rm", "-f", "multi", "asker")
    assert engine.leaks() == []


def test_bad_network_options_are_refused_and_create_nothing(engine: Engine) -> None:
    engine.ok("network", "create", "--subnet", "10.251.3.0/24", "--internal", "good")
    for args, match in [
        (["--network", "nosuch"], "not found"),
        (["--network", "none,good"], "cannot be combined"),
        (["--network", "slirp4netns"], "not supported"),
        (["-p", "99999:80"], "1-65535"),
        (["-p", "80/sctp"], "tcp or udp"),
        (["-p", "1.2.3:80:80"], "IPv4"),
        (["--network", "none", "-p", "80"], "port publishing"),
        (["--network", "host", "-P"], "port publishing"),
        (["--network", "good", "--ip", "10.9.9.9"], "not in the subnet"),
        (["--network", "good", "--ip", "not-an-ip"], "invalid --ip"),
        (["--network", "good,pallet", "--ip", "10.251.3.9"], "single network"),
        (["--network", "good:ip=10.9.9.9"], "not in the subnet"),
        (["--network", "good:ip=bogus"], "invalid --network good:ip="),
        (["--network", "good:color=red"], "unknown option 'color'"),
        (["--network", "good:ip6=fd00::9"], "IPv4 only"),
        (["--network", "good:alias=bad name!"], "invalid network alias"),
        (["--mac-address", "zz:zz"], "invalid MAC"),
        (["--mac-address", "01:00:5e:00:00:01"], "unicast"),
        (["--network-alias", "web"], "need a network with DNS"),
        (["--network", "good", "--network-alias", "bad name!"], "invalid network alias"),
        (["--network", "none", "--add-host", "gw:host-gateway"], "host-gateway"),
        (["--network", "host", "--network-alias", "x"], "aliases"),
        (["--expose", "1:80"], "--expose"),
        (["--network", "container:nosuch"], "no such container"),
    ]:
        r = engine("run", "--rm", *args, "small", "true")
        assert r.rc == 125 and match in r.err, (args, str(r))
        assert r.err.count("\n") == 1, f"one error line: {r.err!r}"
    assert engine.ok("ps", "-aq") == ""
    assert engine.leaks() == []
    # ports of an --internal-only container cannot be published (nowhere to come in from)
    r = engine("run", "--rm", "--network", "good", "-p", "80", "small", "true")
    assert r.rc == 125 and "internal" in r.err, r
    assert engine.ok("ps", "-aq") == "", "run --rm removes a container that failed to start"
    assert engine.leaks() == []
