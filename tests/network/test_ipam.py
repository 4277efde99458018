"""IPAM: addresses from the subnet, never twice, released, persisted (no kernel needed)."""

from __future__ import annotations

import json

import pytest

from pallet.context import Context
from pallet.network import ipam, store
from pallet.network.errors import AddressUnavailable, InvalidNetworkConfig


def _net(ctx: Context, subnet: str = "10.210.0.0/29", gateway: str | None = None):
    net = store.new_network(
        "n",
        store.parse_subnet(subnet, gateway),
        "x0",
        internal=False,
        dns=True,
        labels={},
        options={},
        dns_servers=[],
    )
    store.save(ctx, net)
    return net


@pytest.fixture
def ctx(tmp_path):
    return Context(root=tmp_path / "root", runroot=tmp_path / "run")


def test_hands_out_every_host_address_once_and_never_the_reserved_ones(ctx):
    net = _net(ctx)  # 10.210.0.0/29: .1 gateway, .2-.6 hosts, .7 broadcast
    pool = ipam.Pool(ctx, net)
    got = [pool.allocate(f"c{i}") for i in range(5)]
    assert got == [f"10.210.0.{i}" for i in range(2, 7)]
    with pytest.raises(AddressUnavailable, match="no free address"):
        pool.allocate("c5")


def test_round_robin_after_release_and_persistence_across_reloads(ctx):
    net = _net(ctx)
    pool = ipam.Pool(ctx, net)
    a, b = pool.allocate("a"), pool.allocate("b")
    pool.release("a")
    pool.save()
    again = ipam.Pool(ctx, net)  # a restarted engine
    assert again.allocations == {b: "b"}
    c = again.allocate("c")
    assert c not in (a, b)  # the just-freed address is not reused at once
    again.save()
    data = json.loads((ctx.root / "networks/ipam/n.json").read_text())
    assert data["allocations"] == {b: "b", c: "c"} and data["last"] == c


def test_static_addresses(ctx):
    net = _net(ctx, "10.210.0.0/24", "10.210.0.254")
    pool = ipam.Pool(ctx, net)
    assert pool.allocate("a", "10.210.0.1") == "10.210.0.1"  # .1 is free: the gateway is .254
    for bad, match in (
        ("10.210.0.254", "not a usable"),
        ("10.210.0.255", "not a usable"),
        ("10.210.0.0", "not a usable"),
        ("10.211.0.5", "not a usable"),
        ("nonsense", "invalid IPv4"),
    ):
        with pytest.raises(InvalidNetworkConfig, match=match):
            pool.allocate("b", bad)
    with pytest.raises(AddressUnavailable, match="already in use"):
        pool.allocate("b", "10.210.0.1")
    assert pool.allocate("b") == "10.210.0.2"


def test_subnet_validation():
    for bad, match in (
        ("10.0.0.1/24", "host bits"),
        ("10.0.0.0/31", "too small"),
        ("fd00::/64", "IPv4"),
        ("127.0.0.0/8", "cannot be used"),
        ("bogus", "invalid subnet"),
    ):
        with pytest.raises(InvalidNetworkConfig, match=match):
            store.parse_subnet(bad, None)
    with pytest.raises(InvalidNetworkConfig, match="not a host address"):
        store.parse_subnet("10.9.0.0/24", "10.9.1.1")
    assert store.parse_subnet("10.9.0.0/24", None).gateway == "10.9.0.1"


def test_subnet_picking_avoids_routes_and_other_networks():
    import ipaddress

    used = [ipaddress.IPv4Network("10.89.0.0/24"), ipaddress.IPv4Network("10.89.1.0/25")]
    assert str(store.pick_subnet(used, prefer="10.89.0.0/24")) == "10.89.2.0/24"
    assert str(store.pick_subnet([], prefer="10.89.0.0/24")) == "10.89.0.0/24"
    with pytest.raises(InvalidNetworkConfig, match="no free subnet"):
        store.pick_subnet([ipaddress.IPv4Network("10.0.0.0/8")])


def test_scopes_keep_roots_apart(tmp_path):
    default = store.Scope.of(Context(root=store.DEFAULT_ROOT, runroot=tmp_path))
    assert (default.table, default.bridge_name(0), default.label) == ("pallet", "pallet0", "pallet:default:")
    a = store.Scope.of(Context(root=tmp_path / "a", runroot=tmp_path))
    b = store.Scope.of(Context(root=tmp_path / "b", runroot=tmp_path))
    assert a.table != b.table and a.bridge_name(1) != b.bridge_name(1)
    assert len(a.bridge_name(999)) <= 15 and len(a.veth_name("x" * 64, "n" * 64)) <= 15
    assert a.veth_name("c", "n") != b.veth_name("c", "n")


def test_a_released_static_address_is_free_after_a_reload(ctx):
    """A pool only static addresses were taken from has no round-robin position: releasing its
    last address must still reach the file (a restarted engine saw it taken forever)."""
    net = _net(ctx, "10.210.0.0/24")
    pool = ipam.Pool(ctx, net)
    pool.allocate("a", "10.210.0.9")
    pool.save()
    assert ipam.Pool(ctx, net).allocations == {"10.210.0.9": "a"}
    again = ipam.Pool(ctx, net)
    again.release("a")
    again.save()
    fresh = ipam.Pool(ctx, net)
    assert fresh.allocations == {}
    assert fresh.allocate("b", "10.210.0.9") == "10.210.0.9"
