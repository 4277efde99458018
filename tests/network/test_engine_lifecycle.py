"""Networking across a container's life through the engine: many containers on one network,
``run --rm``, stop/start, restart policies, kills, crashes, ``network rm``/``prune`` and
``system prune``. After each step that ends a container, nothing of its networking may remain:
``ip link``, ``nft list ruleset``, /proc/mounts (netns pins) and DNS responders are checked.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pallet import network
from pallet.network import netns
from tests.network.conftest import Engine, free_subnet, our_links, our_tables
from tests.support import peers


def ruleset_mentions(engine: Engine) -> list[str]:
    """Every object of this root's nft table in ``nft -j list ruleset`` (empty: none)."""
    out = json.loads(subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True).stdout)
    table = network.store.Scope.of(engine.ctx).table
    found = []
    for obj in out["nftables"]:
        for kind, v in obj.items():
            if isinstance(v, dict) and (
                v.get("table") == table or (kind == "table" and v.get("name") == table)
            ):
                found.append(f"{kind} {v.get('name', '')}")
    return found


def wait_status(engine: Engine, ref: str, want: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    got = ""
    while time.monotonic() < deadline:
        got = engine.ok("container", "inspect", "-f", "{{.State.Status}}", ref).strip()
        if got == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{ref} is {got}, wanted {want}")


def test_twenty_containers_get_distinct_addresses_and_leave_nothing(engine: Engine) -> None:
    subnet = free_subnet()
    engine.ok("network", "create", "--subnet", subnet, "many")
    engine.ok("run", "-d", "--name", "c0", "--network", "many", "small", "sleep", "300")
    assert our_links(engine.ctx) and our_tables(engine.ctx)  # the check below can see them

    def start(i: int) -> str:
        return engine.ok("run", "-d", "--name", f"c{i}", "--network", "many", "small", "sleep", "300").strip()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(start, range(1, 20)))
    addrs = [engine.ip(f"c{i}", "many") for i in range(20)]
    assert len(set(addrs)) == 20, addrs
    net = ipaddress.IPv4Network(subnet)
    assert all(ipaddress.IPv4Address(a) in net and a != str(net[1]) for a in addrs)
    # each container really has its address, and reaches the others
    out = engine.ok("exec", "c7", "sh", "-c", f"ip -4 -o addr show eth0; ping -c1 -W2 {addrs[13]}")
    assert addrs[7] in out and "1 packets received" in out
    # 20 host veths on one bridge
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    bridge = engine.inspect("c0")["NetworkSettings"]["Bridge"]
    index = next(i["ifindex"] for i in links if i["ifname"] == bridge)
    assert sum(1 for i in links if i.get("master") == bridge or i.get("master_index") == index) == 20
    ids = engine.ok("ps", "-aq", "--no-trunc").split()
    engine.ok("rm", "-f", *ids, timeout=180)
    assert our_links(engine.ctx) == [], "ip link still shows pallet's bridge or veths"
    assert our_tables(engine.ctx) == [] and ruleset_mentions(engine) == [], "nft still has pallet's table"
    assert engine.leaks() == []


def test_run_rm_leaves_nothing_and_keeps_the_exit_status(engine: Engine) -> None:
    # (the container exits before the CLI has recorded its start, or while it watches it)
    for wait in ("0", "0.5"):
        r = engine(
            "run", "--rm", "-p", "80", "small", "sh", "-c", f"ip -4 -o addr show eth0; sleep {wait}; exit 3"
        )
        assert r.rc == 3 and " eth0 " in r.out and "inet 10." in r.out, r
        assert engine.leaks() == [] and engine.ok("ps", "-aq") == ""
    # --network none: loopback only, and nothing of networking is made
    out = engine.ok("run", "--rm", "--network", "none", "small", "cat", "/proc/net/dev")
    assert [line.split(":")[0].strip() for line in out.splitlines()[2:]] == ["lo"]
    assert not (engine.runroot / "netns").exists() or os.listdir(engine.runroot / "netns") == []


def test_stop_start_and_restart_policy_set_up_again(engine: Engine) -> None:
    engine.ok("run", "-d", "--name", "s", "small", "sleep", "300")
    first = engine.ip("s", "pallet")
    pin = engine.inspect("s")["NetworkSettings"]["SandboxKey"]
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    assert pin and any(line.split()[4] == pin for line in mounts)
    engine.ok("stop", "-t", "0", "s")
    # stopped: off the network (no veth, no pin, no address), as podman does
    assert engine.leaks() == [], "a stopped container keeps no network state"
    info = engine.inspect("s")
    assert info["NetworkSettings"]["IPAddress"] == "" and info["NetworkSettings"]["SandboxKey"] == ""
    engine.ok("start", "s")
    second = engine.ip("s", "pallet")
    assert second and second in engine.ok("exec", "s", "ip", "-4", "-o", "addr", "show", "eth0")
    engine.ok("restart", "-t", "0", "s")
    assert engine.ip("s", "pallet") in engine.ok("exec", "s", "ip", "-4", "-o", "addr", "show", "eth0")
    assert first  # (addresses are handed out round-robin: a restart may get a new one)
    engine.ok("rm", "-f", "s")

    # a restart policy: the monitor takes the container off its network at each exit and sets it
    # up again before each restart (new hosts file, new address: the last one was released)
    engine.ok(
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "small",
        "sh",
        "-c",
        "ip -4 -o addr show eth0 | awk '{print $4}'; grep -c flaky /etc/hosts; sleep 0.3; exit 1",
    )
    wait_status(engine, "flaky", "exited", timeout=30)
    logs = engine.ok("logs", "flaky").split()
    addrs = logs[0::2]
    assert len(addrs) == 3 and len(set(addrs)) == 3 and logs[1::2] == ["1", "1", "1"], logs
    assert engine.inspect("flaky")["RestartCount"] == 2
    assert engine.leaks() == [], "the last exit took the container off its network"


def test_killed_monitor_and_engine_crashes_are_cleaned_up(engine: Engine) -> None:
    # a monitor killed with its container: the next start that needs its port, and the next
    # `ps`, see it exited and release its network
    port = peers.free_port()
    cid = engine.ok("run", "-d", "--name", "k", "-p", f"{port}:80", "small", "sleep", "300").strip()
    bundle = engine.runroot / "engine" / cid
    mpid = int((bundle / "monitor.pid").read_text().split()[0])
    pid = int((bundle / "pid").read_text())
    os.kill(mpid, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert our_links(engine.ctx), "the pinned namespace keeps the veth until the engine notices"
    engine.ok("run", "-d", "--name", "k2", "-p", f"{port}:80", "small", "sleep", "300")
    assert engine.ok("port", "k2").strip() == f"80/tcp -> 0.0.0.0:{port}"
    assert "k Exited (255)" in engine.ok("ps", "-a", "--format", "{{.Names}} {{.Status}}")
    engine.ok("rm", "-f", "k", "k2")
    assert engine.leaks() == []

    # networking a crashed engine left for a container it no longer knows (a pinned namespace,
    # a veth, an address, a port rule, a DNS responder): `system prune` removes all of it
    engine.ok("network", "create", "--subnet", free_subnet(), "crash")
    ghost = "f" * 64
    pin = netns.ensure_shared_dir(engine.runroot / "netns") / ghost
    netns.create(pin)
    network.setup(
        ghost,
        str(pin),
        [network.Attachment("crash")],
        container_name="ghost",
        port_mappings=[network.parse_publish("80")],
        ctx=engine.ctx,
    )
    assert our_links(engine.ctx) and engine.leaks() != []
    out = engine.ok("system", "prune", "-f")
    assert "crash" in out, "the unused network is pruned too"
    assert engine.leaks() == []


def test_reconciling_beside_starts_takes_nothing_from_them(engine: Engine) -> None:
    # crash clean-up (system prune, and the first start after boot) runs while other commands
    # start containers: it must judge each one by its state now, not from an earlier snapshot
    import threading

    from pallet.engine import networking

    stop = threading.Event()
    passes = [0]

    def reconcile_loop() -> None:
        while not stop.is_set():
            networking.reconcile(engine.ctx)
            passes[0] += 1

    def start(i: int) -> str:
        return engine.ok("run", "-d", "--name", f"r{i}", "small", "sleep", "300", timeout=120).strip()

    t = threading.Thread(target=reconcile_loop)
    t.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            ids = list(pool.map(start, range(12)))
    finally:
        stop.set()
        t.join()
    assert passes[0] > 3, "the loop must overlap the starts"
    for i in range(12):
        out = engine.ok("exec", f"r{i}", "ip", "-4", "-o", "addr", "show", "eth0")
        assert engine.ip(f"r{i}", "pallet") in out
    engine.ok("rm", "-f", *ids, timeout=180)
    assert engine.leaks() == []


def test_network_rm_and_prune_respect_containers(engine: Engine) -> None:
    engine.ok("network", "create", "--subnet", free_subnet(), "busy")
    engine.ok("network", "create", "--subnet", free_subnet(), "idle")
    engine.ok("network", "create", "--subnet", free_subnet(), "parked")
    engine.ok("run", "-d", "--name", "runner", "--network", "busy", "small", "sleep", "300")
    engine.ok("create", "--name", "sleeper", "--network", "parked", "small", "true")
    # in use (running, or configured by a stopped container): refused with podman's status 2
    r = engine.fails("network", "rm", "busy", rc=2, match="runner")
    engine.fails("network", "rm", "parked", rc=2, match="sleeper")
    engine.fails("network", "rm", "pallet", rc=125, match="cannot be removed")
    # prune removes only the network nothing uses or is configured to use
    assert engine.ok("network", "prune", "-f").split() == ["idle"], r
    assert set(engine.ok("network", "ls", "-q").split()) == {"pallet", "busy", "parked"}
    # -f removes the containers using it, as podman does (stopping running ones)
    assert engine.ok("network", "rm", "-f", "busy").strip() == "busy"
    assert engine.ok("ps", "-a", "--format", "{{.Names}}").split() == ["sleeper"]
    assert our_links(engine.ctx) == [] and our_tables(engine.ctx) == []
    # a container configured for a network that is gone cannot start, with a clear error
    engine.ok("network", "rm", "-f", "parked")
    assert engine.ok("ps", "-aq") == ""
    engine.fails("run", "--rm", "--network", "parked", "small", "true", match="not found")


def test_container_network_mode_joins_a_bridge_container(engine: Engine) -> None:
    engine.ok("run", "-d", "--name", "owner", "--hostname", "ownerhost", "small", "sleep", "300")
    ip = engine.ip("owner", "pallet")
    out = engine.ok(
        "run",
        "--rm",
        "--network",
        "container:owner",
        "small",
        "sh",
        "-c",
        "ip -4 -o addr show eth0; hostname; cat /etc/hosts",
    )
    assert ip in out and "ownerhost" in out
    engine.fails(
        "run", "--rm", "--network", "container:owner", "-p", "80", "small", "true", match="conflicting"
    )
    engine.fails(
        "run", "--rm", "--network", "container:owner", "--dns", "1.1.1.1", "small", "true", match="dns"
    )
    engine.fails("run", "--rm", "--network", "container:owner", "-h", "x", "small", "true", match="hostname")


def test_namespace_pins_do_not_outlive_the_container_in_other_mount_namespaces(engine: Engine) -> None:
    """A mount namespace made while a container runs (a service with PrivateTmp, another
    runtime's container being set up: here `unshare -m --propagation slave`) gets a copy of the
    container's netns pin. Removing the container must not leave that copy (and with it the
    namespace) behind: the pins live in a shared-propagation mount, as `ip netns` keeps them (an
    unmount propagates to the copies), and the pin file is unlinked after the unmount (which
    detaches copies elsewhere since Linux 3.18)."""
    engine.ok("run", "-d", "--name", "pinned", "small", "sleep", "300")
    pin = engine.sandbox("pinned")
    other = subprocess.Popen(["unshare", "-m", "--propagation", "slave", "sleep", "120"])
    try:
        deadline = time.monotonic() + 10
        seen = False
        while time.monotonic() < deadline and not seen:
            try:
                seen = pin in Path(f"/proc/{other.pid}/mountinfo").read_text()
            except OSError:
                pass
            time.sleep(0.02)
        assert seen, "the new mount namespace has a copy of the pin"
        shared = [
            line
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4] == str(engine.runroot / "netns")
        ]
        assert shared and "shared:" in shared[0], shared
        engine.ok("rm", "-f", "pinned")
        assert pin not in Path(f"/proc/{other.pid}/mountinfo").read_text()
        assert str(engine.runroot / "netns") not in Path("/proc/self/mountinfo").read_text()
    finally:
        other.kill()
        other.wait()
