"""Bridge networks with real namespaces, veths, nftables and busybox as the containers' programs."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pallet import network
from pallet.network import Attachment, DNSOptions, dnsctl, store
from pallet.network.errors import AddressUnavailable, NetworkInUse, NotAttached
from tests.network.conftest import BUSYBOX, free_subnet, our_links, our_tables
from tests.support import peers


def cid(n: int | str) -> str:
    """A container id like the engine's (64 hex), the same for the same name within a test."""
    return hashlib.sha256(str(n).encode()).hexdigest()


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for whichever reaper adopted it counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_two_containers_on_a_user_network_talk_by_ip_and_by_name(ctx, ns):
    network.create("appnet", subnet=free_subnet(), ctx=ctx)
    a, b = ns.new(), ns.new()
    ra = network.setup(cid("a"), a, [Attachment("appnet", aliases=["web"])], container_name="server", ctx=ctx)
    rb = network.setup(cid("b"), b, [Attachment("appnet")], container_name="client", ctx=ctx)
    ia, ib = ra.interfaces[0], rb.interfaces[0]
    assert ia.interface == "eth0" and ia.address != ib.address
    assert ns.addresses(a)["eth0"] == [ia.address]
    ns.httpd(a, "hello from server\n")
    assert ns.wget(b, f"http://{ia.address}/").stdout == "hello from server\n"
    # by name: busybox's own DNS client asks the network's responder (the gateway)
    assert rb.dns_servers == [ib.gateway] and rb.dns_search[0] == "dns.pallet"
    for name in ("server", "web", "server.dns.pallet", "WEB.dns.pallet", ra.container_id[:12]):
        out = ns.nslookup(b, name, rb.dns_servers[0])
        assert out.returncode == 0 and f"Address: {ia.address}" in out.stdout, (name, out)
    resolved = ns.nslookup(b, "web", rb.dns_servers[0]).stdout.split("Address: ")[-1].strip()
    assert ns.wget(b, f"http://{resolved}/").stdout == "hello from server\n"
    # unknown names under our domain are NXDOMAIN from us, not forwarded
    out = ns.nslookup(b, "nosuch.dns.pallet", rb.dns_servers[0])
    assert out.returncode != 0 and "NXDOMAIN" in out.stdout + out.stderr


def test_fetch_by_name_through_the_generated_resolv_conf(ctx, ns, tmp_path):
    """glibc's resolver (Python's urllib) in the container's namespace, with the resolv.conf and
    hosts that render_* produce bind-mounted over /etc (a private mount namespace), fetches
    http://NAME/ from busybox httpd: the whole path a containerized program takes."""
    network.create("webnet", subnet=free_subnet(), ctx=ctx)
    a, b = ns.new(), ns.new()
    network.setup(cid("a"), a, [Attachment("webnet", aliases=["api"])], container_name="srv", ctx=ctx)
    rb = network.setup(
        cid("b"),
        b,
        [Attachment("webnet")],
        container_name="cli",
        hostname="clihost",
        dns=DNSOptions(add_hosts=[("extra.example", "192.0.2.55")]),
        ctx=ctx,
    )
    ns.httpd(a, "by name\n")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(network.render_resolv_conf(rb.dns_servers, rb.dns_search, ["timeout:2"]))
    hosts = tmp_path / "hosts"
    hosts.write_text(network.render_hosts(rb.hosts))
    assert f"{rb.interfaces[0].address}\tclihost cli" in hosts.read_text()
    script = (
        "import socket, urllib.request as u;"
        "print(u.urlopen('http://api/', timeout=5).read().decode().strip());"
        "print(u.urlopen('http://srv.dns.pallet/', timeout=5).read().decode().strip());"
        "print(socket.gethostbyname('extra.example'))"
    )
    inner = (
        f"mount --bind {resolv} /etc/resolv.conf && mount --bind {hosts} /etc/hosts && "
        f'exec nsenter --net={b} {sys.executable} -c "{script}"'
    )
    out = subprocess.run(["unshare", "-m", "sh", "-c", inner], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["by", "name", "by", "name", "192.0.2.55"]


def test_other_names_are_forwarded_to_the_upstream_resolver(ctx, ns, upstream_dns):
    network.create("fwd", subnet=free_subnet(), dns_servers=[upstream_dns.address], ctx=ctx)
    a = ns.new()
    r = network.setup(cid("a"), a, [Attachment("fwd")], container_name="asker", ctx=ctx)
    out = ns.nslookup(a, "www.upstream.test", r.dns_servers[0])
    assert f"Address: {upstream_dns.ANSWER}" in out.stdout, out
    assert "www.upstream.test" in upstream_dns.queries
    # the container's own --dns servers take precedence as its upstreams
    b = ns.new()
    rb = network.setup(
        cid("b"),
        b,
        [Attachment("fwd")],
        container_name="asker2",
        dns=DNSOptions(servers=["127.0.0.1"]),
        ctx=ctx,
    )
    before = len(upstream_dns.queries)
    out = ns.run(b, BUSYBOX, "nslookup", "-timeout=1", "x.upstream.test", rb.dns_servers[0])
    assert upstream_dns.ANSWER not in out.stdout
    assert len(upstream_dns.queries) == before


def test_dns_records_follow_containers_and_a_killed_responder_comes_back(ctx, ns):
    network.create("dyn", subnet=free_subnet(), ctx=ctx)
    a, b, c = ns.new(), ns.new(), ns.new()
    ra = network.setup(cid("a"), a, [Attachment("dyn")], container_name="first", ctx=ctx)
    server = ra.dns_servers[0]
    pid = dnsctl.pid_of(ctx, "dyn")
    assert pid
    # a container joining later is found by the running responder (it reloads its records)
    rb = network.setup(
        cid("b"), b, [Attachment("dyn", aliases=["second-alias"])], container_name="second", ctx=ctx
    )
    assert dnsctl.pid_of(ctx, "dyn") == pid
    out = ns.nslookup(a, "second-alias", server)
    assert f"Address: {rb.interfaces[0].address}" in out.stdout, out
    # reverse lookups
    rev = ns.nslookup(a, rb.interfaces[0].address, server)
    assert "second.dns.pallet" in rev.stdout, rev
    os.kill(pid, 9)
    deadline = time.monotonic() + 5
    while dnsctl.pid_of(ctx, "dyn") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert dnsctl.pid_of(ctx, "dyn") is None
    network.setup(cid("c"), c, [Attachment("dyn")], container_name="third", ctx=ctx)
    new = dnsctl.pid_of(ctx, "dyn")
    assert new and new != pid
    out = ns.nslookup(c, "first", server)
    assert f"Address: {ra.interfaces[0].address}" in out.stdout, out
    # teardown drops the names; the last one out stops the responder and removes its state
    network.teardown(ra.container_id, ctx=ctx)
    out = ns.nslookup(c, "first", server)
    assert ra.interfaces[0].address not in out.stdout
    network.teardown(rb.container_id, ctx=ctx)
    for rec in store.all_containers(ctx):
        network.teardown(rec["id"], ctx=ctx)
    assert dnsctl.pid_of(ctx, "dyn") is None
    assert not dnsctl.dns_dir(ctx, "dyn").exists()
    assert _gone(new)


def test_networks_are_isolated_from_each_other(ctx, ns):
    network.create("blue", subnet=free_subnet(), ctx=ctx)
    network.create("red", subnet=free_subnet(), ctx=ctx)
    a, b, c = ns.new(), ns.new(), ns.new()
    ra = network.setup(cid("a"), a, [Attachment("blue")], container_name="blue1", ctx=ctx)
    network.setup(cid("b"), b, [Attachment("blue")], container_name="blue2", ctx=ctx)
    rc = network.setup(cid("c"), c, [Attachment("red")], container_name="red1", ctx=ctx)
    ns.httpd(a, "blue only\n")
    target = f"http://{ra.interfaces[0].address}/"
    assert ns.wget(b, target).stdout == "blue only\n"
    blocked = ns.wget(c, target, timeout=2)
    assert blocked.returncode != 0 and blocked.stdout == ""
    # red's DNS knows nothing of blue's containers
    out = ns.nslookup(c, "blue1", rc.dns_servers[0])
    assert ra.interfaces[0].address not in out.stdout


def test_outbound_traffic_is_masqueraded_and_internal_networks_have_none(ctx, ns):
    remote, host_ip, remote_ip = ns.remote(free_subnet())
    ns.httpd(remote, "outside world\n")
    network.create("open", subnet=free_subnet(), ctx=ctx)
    network.create("closed", subnet=free_subnet(), internal=True, ctx=ctx)
    a, b = ns.new(), ns.new()
    ra = network.setup(cid("a"), a, [Attachment("open")], container_name="out", ctx=ctx)
    rb = network.setup(cid("b"), b, [Attachment("closed")], container_name="in", ctx=ctx)
    # the remote host has no route to container subnets: only masquerade gets replies back
    assert ns.wget(a, f"http://{remote_ip}/").stdout == "outside world\n"
    assert rb.interfaces[0].gateway is None
    assert "default" not in ns.run(b, "ip", "route").stdout
    assert ns.wget(b, f"http://{remote_ip}/", timeout=2).returncode != 0
    # even a container that adds its own default route is stopped by the firewall
    gw = str(ipaddress.IPv4Network(network.inspect("closed", ctx=ctx)["subnets"][0]["subnet"])[1])
    ns.run(b, "ip", "route", "add", "default", "via", gw, check=True)
    assert ns.wget(b, f"http://{remote_ip}/", timeout=2).returncode != 0
    assert ns.wget(b, f"http://{host_ip}/", timeout=2).returncode != 0
    # but the internal network's DNS still answers
    out = ns.nslookup(b, "in", rb.dns_servers[0])
    assert f"Address: {rb.interfaces[0].address}" in out.stdout
    assert ra.ports == []


def test_published_ports_from_loopback_host_address_and_other_hosts(ctx, ns):
    remote, host_ip, _remote_ip = ns.remote(free_subnet())
    a, b = ns.new(), ns.new()
    port = peers.free_port()
    ra = network.setup(
        cid("a"),
        a,
        [Attachment()],
        container_name="pub",
        ctx=ctx,
        port_mappings=[network.parse_publish(f"{port}:80"), network.parse_publish("8080")],
    )
    assert ra.interfaces[0].network == "pallet"
    ns.httpd(a, "published\n")
    ns.httpd(a, "random port\n", port=8080)
    assert ra.ports[0].host_port == port
    rnd = ra.ports[1].host_port
    assert rnd and rnd != 8080
    curl = ["curl", "-s", "--max-time", "5"]
    assert (
        subprocess.run([*curl, f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
        == "published\n"
    )
    assert (
        subprocess.run([*curl, f"http://{host_ip}:{port}/"], capture_output=True, text=True).stdout
        == "published\n"
    )
    assert (
        subprocess.run([*curl, f"http://127.0.0.1:{rnd}/"], capture_output=True, text=True).stdout
        == "random port\n"
    )
    # from another host, to the host's address on its link
    assert (
        ns.run(remote, "curl", "-s", "--max-time", "5", f"http://{host_ip}:{port}/").stdout == "published\n"
    )
    # from another container on the same network, through the host (hairpin)
    rb = network.setup(cid("b"), b, [Attachment()], container_name="peer", ctx=ctx)
    assert ns.wget(b, f"http://{rb.interfaces[0].gateway}:{port}/").stdout == "published\n"
    # the same host port cannot be published twice
    c = ns.new()
    with pytest.raises(network.PortUnavailable, match=str(port)):
        network.setup(
            cid("c"),
            c,
            [Attachment()],
            container_name="dup",
            ctx=ctx,
            port_mappings=[network.parse_publish(f"{port}:80")],
        )
    assert network.status(cid("c"), ctx=ctx) is None
    network.teardown(ra.container_id, ctx=ctx)
    gone = subprocess.run([*curl, f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
    assert gone.returncode != 0
    assert (
        f"{port}"
        not in subprocess.run(
            ["nft", "list", "table", "inet", store.Scope.of(ctx).table], capture_output=True, text=True
        ).stdout
    )


def test_a_port_bound_on_the_host_is_refused(ctx, ns):
    import socket

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(network.PortUnavailable, match="in use on the host"):
            network.setup(
                cid("a"),
                ns.new(),
                [Attachment()],
                container_name="x",
                ctx=ctx,
                port_mappings=[network.parse_publish(f"{busy}:80")],
            )
    assert our_links(ctx) == [] and store.all_containers(ctx) == []


def test_connect_and_disconnect_a_running_container(ctx, ns):
    network.create("front", subnet=free_subnet(), ctx=ctx)
    network.create("back", subnet=free_subnet(), ctx=ctx)
    a, b = ns.new(), ns.new()
    network.setup(cid("a"), a, [Attachment("front")], container_name="app", ctx=ctx)
    rb = network.setup(cid("b"), b, [Attachment("back", aliases=["db"])], container_name="db1", ctx=ctx)
    ns.httpd(b, "database\n")
    db = f"http://{rb.interfaces[0].address}/"
    assert ns.wget(a, db, timeout=2).returncode != 0
    res = network.connect(cid("a"), a, Attachment("back", aliases=["app-back"]), ctx=ctx)
    assert [i.interface for i in res.interfaces] == ["eth0", "eth1"]
    eth1 = res.interfaces[1]
    assert ns.addresses(a)["eth1"] == [eth1.address]
    assert ns.wget(a, db).stdout == "database\n"
    out = ns.nslookup(b, "app-back", rb.dns_servers[0])
    assert f"Address: {eth1.address}" in out.stdout
    with pytest.raises(network.NetworkError, match="already connected"):
        network.connect(cid("a"), a, Attachment("back"), ctx=ctx)
    network.disconnect(cid("a"), "back", ctx=ctx)
    assert "eth1" not in ns.addresses(a)
    assert ns.wget(a, db, timeout=2).returncode != 0
    assert eth1.address not in network.inspect("back", ctx=ctx)["containers"].__repr__()
    with pytest.raises(NotAttached):
        network.disconnect(cid("a"), "back", ctx=ctx)
    # eth0 on front is untouched
    assert ns.addresses(a)["eth0"] == [network.status(cid("a"), ctx=ctx).interfaces[0].address]


def test_twenty_containers_get_distinct_addresses_and_leave_nothing(ctx, ns):
    network.create("crowd", subnet=free_subnet(), ctx=ctx)
    ids, seen = [], {}
    for i in range(20):
        path = ns.new()
        r = network.setup(
            f"crowd{i:02d}" + os.urandom(8).hex(),
            path,
            [Attachment("crowd")],
            container_name=f"c{i}",
            ctx=ctx,
        )
        ids.append(r.container_id)
        seen[r.interfaces[0].address] = path
    assert len(seen) == 20
    for addr, path in seen.items():
        assert ns.addresses(path)["eth0"] == [addr]
    # neighbours reach each other (first and last)
    addrs = list(seen)
    first, last = addrs[0], addrs[-1]
    assert ns.run(seen[first], BUSYBOX, "ping", "-c", "1", "-W", "2", last).returncode == 0
    assert our_links(ctx) and our_tables(ctx)
    for i in ids:
        network.teardown(i, ctx=ctx)
    assert our_links(ctx) == []
    assert our_tables(ctx) == []
    assert dnsctl.pid_of(ctx, "crowd") is None
    assert network.inspect("crowd", ctx=ctx)["containers"] == {}


def test_addresses_persist_across_engine_restarts(ctx, ns, tmp_path):
    from pallet.context import Context

    network.create("persist", subnet=free_subnet(), ctx=ctx)
    a = ns.new()
    ra = network.setup(cid("a"), a, [Attachment("persist")], container_name="one", ctx=ctx)
    # a new engine process: a fresh Context on the same root, new interpreter
    code = (
        "import sys; from pallet import network; from pallet.context import Context;"
        "from pallet.network import Attachment;"
        f"c = Context(root={str(ctx.root)!r}, runroot={str(ctx.runroot)!r});"
        f"r = network.setup({cid('b')!r}, {ns.new()!r}, [Attachment('persist')],"
        " container_name='two', ctx=c);"
        "print(r.interfaces[0].address)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    second = out.stdout.strip()
    assert second and second != ra.interfaces[0].address
    again = Context(root=ctx.root, runroot=ctx.runroot)
    st = network.status(cid("b"), ctx=again)
    assert st is not None and st.interfaces[0].address == second
    pool = json.loads((tmp_path / "root/networks/ipam/persist.json").read_text())
    assert sorted(pool["allocations"]) == sorted([ra.interfaces[0].address, second])
    # releasing on teardown, and a static address can take what was released
    network.teardown(ra.container_id, ctx=again)
    rc = network.setup(
        cid("c"),
        ns.new(),
        [Attachment("persist", static_ip=ra.interfaces[0].address)],
        container_name="three",
        ctx=again,
    )
    assert rc.interfaces[0].address == ra.interfaces[0].address
    with pytest.raises(AddressUnavailable, match="already in use"):
        network.setup(
            cid("d"), ns.new(), [Attachment("persist", static_ip=second)], container_name="four", ctx=again
        )


def test_network_rm_refuses_while_in_use_and_force_disconnects(ctx, ns):
    network.create("tmpnet", subnet=free_subnet(), ctx=ctx)
    a = ns.new()
    network.setup(cid("a"), a, [Attachment("tmpnet")], container_name="holder", ctx=ctx)
    with pytest.raises(NetworkInUse, match="holder"):
        network.remove("tmpnet", ctx=ctx)
    assert our_links(ctx)
    network.remove("tmpnet", force=True, ctx=ctx)
    assert "eth0" not in ns.addresses(a)
    assert our_links(ctx) == [] and our_tables(ctx) == []
    assert not network.exists("tmpnet", ctx=ctx)
    assert dnsctl.pid_of(ctx, "tmpnet") is None


def test_cleanup_after_a_killed_engine_and_dead_containers(ctx, ns):
    network.create("crash", subnet=free_subnet(), ctx=ctx)
    a, b = ns.new(), ns.new()
    # an engine that sets two containers up and is killed before it tears anything down
    code = (
        "import os; from pallet import network; from pallet.context import Context;"
        "from pallet.network import Attachment;"
        f"c = Context(root={str(ctx.root)!r}, runroot={str(ctx.runroot)!r});"
        f"network.setup({cid('a')!r}, {a!r}, [Attachment('crash')], container_name='a', ctx=c,"
        "  port_mappings=[network.parse_publish('80')]);"
        f"network.setup({cid('b')!r}, {b!r}, [Attachment('crash')], container_name='b', ctx=c);"
        "os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert len(store.all_containers(ctx)) == 2
    # container a dies (its namespace goes, and the kernel takes its veth pair along)
    from pallet.network import netns

    netns.remove(a)
    ns.paths.remove(Path(a))
    deadline = time.monotonic() + 5
    veth_a = store.Scope.of(ctx).veth_name(cid("a"), "crash")
    while veth_a in our_links(ctx) and time.monotonic() < deadline:
        time.sleep(0.02)
    # and a setup killed between its state write and its links left an allocation behind
    pool = json.loads((ctx.root / "networks/ipam/crash.json").read_text())
    subnet = ipaddress.IPv4Network(network.inspect("crash", ctx=ctx)["subnets"][0]["subnet"])
    pool["allocations"][str(subnet[200])] = "f" * 64
    store.write_json(ctx.root / "networks/ipam/crash.json", pool)
    rep = network.cleanup(ctx=ctx)
    assert rep.containers == [cid("a")]
    assert len(rep.addresses) == 2
    assert [r["id"] for r in store.all_containers(ctx)] == [cid("b")]
    table = subprocess.run(
        ["nft", "list", "table", "inet", store.Scope.of(ctx).table], capture_output=True, text=True
    ).stdout
    assert "map ports4any" in table and "elements" not in table.split("map ports4any")[1].split("}")[0]
    # b is still served: its veth and name survive
    assert ns.nslookup(b, "b", network.status(cid("b"), ctx=ctx).dns_servers[0]).returncode == 0
    # b dies too: cleanup removes the bridge, the table and the responder
    netns.remove(b)
    ns.paths.remove(Path(b))
    deadline = time.monotonic() + 5
    while len(our_links(ctx)) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    network.cleanup(ctx=ctx)
    assert our_links(ctx) == [] and our_tables(ctx) == []
    assert dnsctl.pid_of(ctx, "crash") is None
    assert store.all_containers(ctx) == []


def test_failed_setup_leaves_nothing_behind(ctx, ns):
    network.create("fail", subnet=free_subnet(), ctx=ctx)
    a = ns.new()
    ns.run(
        a, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0", check=True
    )  # the name setup wants
    with pytest.raises(network.NetworkError, match="eth0"):
        network.setup(cid("a"), a, [Attachment("fail")], container_name="x", ctx=ctx)
    assert store.all_containers(ctx) == []
    assert network.inspect("fail", ctx=ctx)["containers"] == {}
    assert our_links(ctx) == [] and our_tables(ctx) == []
    assert dnsctl.pid_of(ctx, "fail") is None


def test_default_network_has_no_dns_and_uses_host_resolvers(ctx, ns):
    a = ns.new()
    r = network.setup(
        cid("a"),
        a,
        [Attachment()],
        container_name="plain",
        hostname="plainhost",
        dns=DNSOptions(servers=["192.0.2.53"], search=["corp.example"], options=["ndots:2"]),
        ctx=ctx,
    )
    i = r.interfaces[0]
    assert i.network == "pallet" and i.dns_server is None and i.bridge == store.Scope.of(ctx).bridge_name(0)
    assert (
        r.dns_servers == ["192.0.2.53"] and r.dns_search == ["corp.example"] and r.dns_options == ["ndots:2"]
    )
    assert dnsctl.pid_of(ctx, "pallet") is None
    assert "default via" in ns.run(a, "ip", "route").stdout
    assert r.status_blocks()["pallet"]["interfaces"]["eth0"]["mac_address"] == i.mac
    # the loopback interface is up too
    assert "UP" in ns.run(a, "ip", "-br", "link", "show", "lo").stdout


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(atts=[Attachment("nosuchnet")]), "not found"),
        (dict(atts=[Attachment(aliases=["bad alias"])]), "invalid network alias"),
        (dict(atts=[Attachment(static_ip="10.1.2.300")]), "invalid IPv4"),
        (dict(atts=[Attachment(), Attachment()]), "listed twice"),
        (dict(atts=[Attachment(interface="way-too-long-name0")]), "invalid interface"),
    ],
)
def test_bad_setup_requests_fail_cleanly(ctx, ns, bad, match):
    with pytest.raises(network.NetworkError, match=match):
        network.setup(cid("a"), ns.new(), bad["atts"], container_name="x", ctx=ctx)
    assert store.all_containers(ctx) == [] and our_links(ctx) == []


def test_setup_on_something_that_is_not_a_netns(ctx, tmp_path):
    f = tmp_path / "plainfile"
    f.write_text("")
    with pytest.raises(network.NetworkError, match="not a network namespace"):
        network.setup(cid("a"), str(f), [Attachment()], container_name="x", ctx=ctx)
    with pytest.raises(network.NetworkError, match="cannot open"):
        network.setup(cid("a"), str(tmp_path / "missing"), [Attachment()], container_name="x", ctx=ctx)


def test_default_network_moves_off_a_subnet_another_root_took(ctx, ns, tmp_path):
    from pallet.context import Context
    from tests.network.conftest import wipe

    other = Context(root=tmp_path / "other-root", runroot=tmp_path / "other-run")
    try:
        mine = network.inspect("pallet", ctx)["subnets"][0]["subnet"]  # chosen now, no bridge yet
        theirs = network.setup(cid("o"), ns.new(), [Attachment()], container_name="o", ctx=other)
        assert str(ipaddress.IPv4Network(f"{theirs.interfaces[0].address}/24", strict=False)) == mine
        r = network.setup(cid("a"), ns.new(), [Attachment()], container_name="a", ctx=ctx)
        moved = ipaddress.IPv4Network(f"{r.interfaces[0].address}/{r.interfaces[0].prefixlen}", strict=False)
        assert str(moved) != mine and network.inspect("pallet", ctx)["subnets"][0]["subnet"] == str(moved)
        assert r.interfaces[0].bridge != theirs.interfaces[0].bridge
    finally:
        wipe(other)


def test_a_dead_containers_port_can_be_published_again(ctx, ns):
    from pallet.network import netns

    port = peers.free_port()
    a = ns.new()
    network.setup(
        cid("a"),
        a,
        [Attachment()],
        container_name="gone",
        ctx=ctx,
        port_mappings=[network.parse_publish(f"{port}:80")],
    )
    netns.remove(a)  # the container died and nobody tore it down
    ns.paths.remove(Path(a))
    veth = store.Scope.of(ctx).veth_name(cid("a"), "pallet")
    deadline = time.monotonic() + 5
    while veth in our_links(ctx) and time.monotonic() < deadline:
        time.sleep(0.02)
    b = ns.new()
    r = network.setup(
        cid("b"),
        b,
        [Attachment()],
        container_name="new",
        ctx=ctx,
        port_mappings=[network.parse_publish(f"{port}:80")],
    )
    ns.httpd(b, "second owner\n")
    out = subprocess.run(
        ["curl", "-s", "--max-time", "5", f"http://127.0.0.1:{port}/"], capture_output=True, text=True
    )
    assert out.stdout == "second owner\n"
    assert network.status(cid("a"), ctx=ctx) is None and r.ports[0].host_port == port


def test_two_networks_at_once_and_a_full_subnet(ctx, ns):
    sub = free_subnet().replace(".0/24", ".0/30")  # one address for containers: .2
    network.create("tiny", subnet=sub, ctx=ctx)
    network.create("wide", subnet=free_subnet(), internal=True, ctx=ctx)
    a = ns.new()
    r = network.setup(cid("a"), a, [Attachment("tiny"), Attachment("wide")], container_name="both", ctx=ctx)
    assert [(i.network, i.interface) for i in r.interfaces] == [("tiny", "eth0"), ("wide", "eth1")]
    routes = ns.run(a, "ip", "route").stdout
    assert f"default via {r.interfaces[0].gateway} dev eth0 metric 100" in routes
    assert "eth1" not in [line.split()[4] for line in routes.splitlines() if line.startswith("default")]
    b = ns.new()
    with pytest.raises(AddressUnavailable, match="no free address"):
        network.setup(cid("b"), b, [Attachment("wide"), Attachment("tiny")], container_name="late", ctx=ctx)
    # the failed setup took nothing: not wide's address, not a veth, and b has no interfaces
    assert len(network.inspect("wide", ctx=ctx)["containers"]) == 1
    assert [ln.split(":")[1].strip() for ln in ns.run(b, "ip", "-o", "link").stdout.splitlines()] == ["lo"]
    assert len([x for x in our_links(ctx) if x.startswith("veth")]) == 2


def test_reload_restores_a_flushed_firewall(ctx, ns):
    remote, host_ip, _ = ns.remote(free_subnet())
    a = ns.new()
    port = peers.free_port()
    network.setup(
        cid("a"),
        a,
        [Attachment()],
        container_name="pub",
        ctx=ctx,
        port_mappings=[network.parse_publish(f"{port}:80")],
    )
    ns.httpd(a, "still here\n")
    url = f"http://{host_ip}:{port}/"
    curl = ["curl", "-s", "--max-time", "3", url]
    assert subprocess.run(curl, capture_output=True, text=True).stdout == "still here\n"
    subprocess.run(["nft", "delete", "table", "inet", store.Scope.of(ctx).table], check=True)
    assert subprocess.run(curl, capture_output=True, text=True).stdout == ""
    network.reload(ctx=ctx)
    assert subprocess.run(curl, capture_output=True, text=True).stdout == "still here\n"
    assert ns.run(remote, *curl).stdout == "still here\n"
