"""Network definitions: create, list, inspect, remove, prune, and ``--network`` parsing."""

from __future__ import annotations

import ipaddress
import json

import pytest

from pallet import network
from pallet.network.errors import InvalidNetworkConfig, NetworkExists, NetworkNotFound
from pallet.network.netlink import Netlink
from tests.network.conftest import free_subnet


def test_create_list_inspect_remove(ctx):
    sub = free_subnet()
    net = network.create("app-net.1", subnet=sub, labels={"team": "web"}, internal=True, ctx=ctx)
    assert net.subnet.subnet == sub and net.internal and net.dns_enabled and net.labels == {"team": "web"}
    on_disk = json.loads((ctx.root / "networks" / "app-net.1.json").read_text())
    assert on_disk["subnets"] == [{"subnet": sub, "gateway": sub.replace(".0/24", ".1")}]
    names = [n.name for n in network.list_networks(ctx)]
    assert names == ["app-net.1", "pallet"]  # the default network appears on first use
    default = network.inspect("pallet", ctx)
    assert default["dns_enabled"] is False and default["network_interface"].endswith("-0")
    doc = network.inspect(net.id[:12], ctx)  # id prefixes work as in podman
    assert doc["name"] == "app-net.1" and doc["containers"] == {}
    assert network.remove("app-net.1", ctx=ctx) == "app-net.1"
    assert not network.exists("app-net.1", ctx)
    with pytest.raises(NetworkNotFound):
        network.remove("app-net.1", ctx=ctx)


def test_auto_subnets_and_bridge_names_are_distinct(ctx):
    a = network.create("a", ctx=ctx)
    b = network.create("b", ctx=ctx)
    assert a.subnet.net != b.subnet.net and not a.subnet.net.overlaps(b.subnet.net)
    assert a.network_interface != b.network_interface
    assert a.subnet.net.subnet_of(ipaddress.IPv4Network("10.88.0.0/13"))
    with pytest.raises(NetworkExists):
        network.create("a", ctx=ctx)
    assert network.create("a", ignore=True, ctx=ctx).id == a.id


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(name="-bad"), "invalid network name"),
        (dict(name="x" * 65), "invalid network name"),
        (dict(name="sp ace"), "invalid network name"),
        (dict(name="pallet"), "already exists"),
        (dict(name="n", gateway="10.1.1.1"), "--gateway needs --subnet"),
        (dict(name="n", subnet="10.1.1.0/24", gateway="10.1.2.1"), "not a host address"),
        (dict(name="n", driver="macvlan"), "only 'bridge'"),
        (dict(name="n", options={"mtu": "12"}), "invalid mtu"),
        (dict(name="n", options={"vlan": "1"}), "unsupported network option"),
        (dict(name="n", dns_servers=["not-an-ip"]), "invalid DNS server"),
        (dict(name="n", interface_name='br"; flush ruleset'), "invalid interface name"),
        (dict(name="n", interface_name="sixteen-chars-xx"), "invalid interface name"),
    ],
)
def test_create_rejects(ctx, kw, match):
    name = kw.pop("name")
    with pytest.raises(network.NetworkError, match=match):
        network.create(name, ctx=ctx, **kw)
    assert not (ctx.root / "networks" / "n.json").exists()


def test_overlapping_subnets_are_refused(ctx):
    sub = free_subnet()
    network.create("one", subnet=sub, ctx=ctx)
    with pytest.raises(InvalidNetworkConfig, match="overlaps network one"):
        network.create("two", subnet=sub.replace(".0/24", ".128/25"), ctx=ctx)
    # a subnet the host already routes (here: a link of the test's own)
    with Netlink() as nl:
        routed = next(
            ipaddress.IPv4Network(f"{d}/{p}", strict=False)
            for d, p, _ in nl.routes4()
            if 8 < p <= 30 and not d.startswith("127.")
        )
    with pytest.raises(InvalidNetworkConfig, match="already used on this host"):
        network.create("three", subnet=str(routed), ctx=ctx)


def test_default_network_cannot_be_removed_and_prune(ctx):
    with pytest.raises(InvalidNetworkConfig, match="cannot be removed"):
        network.remove("pallet", ctx=ctx)
    network.create("keep", subnet=free_subnet(), labels={"keep": "yes"}, ctx=ctx)
    network.create("drop1", subnet=free_subnet(), labels={"keep": "no"}, ctx=ctx)
    network.create("drop2", subnet=free_subnet(), ctx=ctx)
    assert network.prune({"keep": "no"}, ctx) == ["drop1"]
    assert sorted(network.prune(ctx=ctx)) == ["drop2", "keep"]
    assert [n.name for n in network.list_networks(ctx)] == ["pallet"]


def test_parse_network_mode():
    m = network.parse_network_mode(None)
    assert (m.kind, m.networks) == ("bridge", ["pallet"])
    assert network.parse_network_mode(["bridge"]).networks == ["pallet"]
    assert network.parse_network_mode(["a,b", "a"]).networks == ["a", "b"]
    assert network.parse_network_mode("none").kind == "none"
    assert network.parse_network_mode("host").kind == "host"
    m = network.parse_network_mode("container:web")
    assert (m.kind, m.container) == ("container", "web")
    # podman's per-network options
    m = network.parse_network_mode(
        ["a:ip=10.7.0.5,alias=x,alias=y,interface_name=net0", "b:mac=02:00:00:00:00:01"]
    )
    assert (m.kind, m.networks) == ("bridge", ["a", "b"])
    assert m.options == {
        "a": {"ip": "10.7.0.5", "aliases": ["x", "y"], "interface": "net0"},
        "b": {"mac": "02:00:00:00:00:01"},
    }
    assert network.parse_network_mode("bridge:alias=w").options == {"pallet": {"aliases": ["w"]}}
    for bad, match in (
        ("host,a", "cannot be combined"),
        ("container:", "needs a container"),
        ("slirp4netns", "not supported"),
        ("a:ip=10.0.0.1,bogus=1", "unknown option 'bogus'"),
        ("a:ip=10.0.0.1,alias", "expected KEY=VALUE"),
        ("a:ip6=fd00::5", "IPv4 only"),
        ("a:ip=10.0.0.1,ip=10.0.0.2", "given twice"),
        (["a:ip=10.0.0.1", "a:alias=z"], "given twice"),
        (["a:ip=10.0.0.1", "host"], "cannot be combined"),
        ("none:ip=10.0.0.1", "takes no options"),
        ("host:alias=x", "takes no options"),
    ):
        with pytest.raises(InvalidNetworkConfig, match=match):
            network.parse_network_mode(bad)
