"""Fixtures for networking tests: real network namespaces standing in for containers.

Every test gets its own pallet root, so its bridges (``p<tag>-N``), veths and nft table
(``inet pallet_<tag>``) are named apart from every other root's and from the host's; the
fixtures remove all of them, and every namespace and process they made, even when a test fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pallet.context import Context
from pallet.network import dnsctl, netns, store
from pallet.network.netlink import Netlink
from tests.support import peers

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="networking tests need root")

_handed_out: set[str] = set()


def free_subnet() -> str:
    """A /24 in 10.200.0.0-10.249.255.0 that no host route overlaps and no test used yet."""
    with Netlink() as nl:
        routes = [ipaddress.IPv4Network(f"{d}/{p}", strict=False) for d, p, _ in nl.routes4() if p]
    for _ in range(1000):
        net = ipaddress.IPv4Network(f"10.{random.randint(200, 249)}.{random.randint(0, 255)}.0/24")
        if str(net) not in _handed_out and not any(net.overlaps(r) for r in routes):
            _handed_out.add(str(net))
            return str(net)
    raise RuntimeError("no free test subnet")


def wipe(ctx: Context) -> None:
    """Remove everything a test root may have left on the host, whatever state it is in."""
    from pallet import network

    scope = store.Scope.of(ctx)
    for rec in store.all_containers(ctx):
        with contextlib.suppress(Exception):
            network.teardown(rec["id"], ctx=ctx)
    for net in store.all_networks(ctx):
        with contextlib.suppress(Exception):
            dnsctl.stop(ctx, net.name)
    dns_root = store.run_dir(ctx) / "dns"
    if dns_root.is_dir():
        for name in os.listdir(dns_root):
            with contextlib.suppress(Exception):
                dnsctl.stop(ctx, name)
    with Netlink() as nl:
        ours = [link.name for link in nl.links() if (link.alias or "").startswith(scope.label)]
        for name in ours:
            nl.delete_link(name)
    subprocess.run(["nft", "delete", "table", "inet", scope.table], capture_output=True)


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    c = Context(root=tmp_path / "root", runroot=tmp_path / "run")
    try:
        yield c
    finally:
        wipe(c)


class Namespaces:
    """Makes network namespaces ("containers") and runs commands in them; cleans both up."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.paths: list[Path] = []
        self.procs: list[subprocess.Popen] = []
        self.host_links: list[str] = []

    def new(self, name: str | None = None) -> str:
        path = self.base / (name or f"ns{len(self.paths)}")
        netns.create(path)
        self.paths.append(path)
        return str(path)

    def run(
        self, ns: str, *cmd: str, timeout: float = 20, check: bool = False
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["nsenter", f"--net={ns}", *cmd], capture_output=True, text=True, timeout=timeout, check=check
        )

    def spawn(self, ns: str, *cmd: str) -> subprocess.Popen:
        p = subprocess.Popen(
            ["nsenter", f"--net={ns}", *cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def httpd(self, ns: str, body: str, port: int = 80) -> subprocess.Popen:
        www = self.base / f"www-{len(self.procs)}"
        www.mkdir()
        (www / "index.html").write_text(body)
        p = self.spawn(ns, BUSYBOX, "httpd", "-f", "-p", str(port), "-h", str(www))
        self.wait_listen(ns, port)
        return p

    def wait_listen(self, ns: str, port: int, proto: str = "tcp", timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        flag = "-lnt" if proto == "tcp" else "-lnu"
        while time.monotonic() < deadline:
            out = self.run(ns, "ss", "-H", flag, f"sport = :{port}").stdout
            if out.strip():
                return
            time.sleep(0.02)
        raise RuntimeError(f"nothing listening on {proto}/{port} in {ns}")

    def wget(self, ns: str, url: str, timeout: int = 3) -> subprocess.CompletedProcess:
        # (this busybox build segfaults on wget -T, hence timeout(1))
        return self.run(ns, "timeout", str(timeout), BUSYBOX, "wget", "-q", "-O-", url, timeout=timeout + 10)

    def nslookup(self, ns: str, name: str, server: str) -> subprocess.CompletedProcess:
        return self.run(ns, BUSYBOX, "nslookup", name, server)

    def addresses(self, ns: str) -> dict[str, list[str]]:
        out = json.loads(self.run(ns, "ip", "-j", "-4", "addr", check=True).stdout)
        return {i["ifname"]: [a["local"] for a in i.get("addr_info", [])] for i in out}

    def remote(self, subnet: str) -> tuple[str, str, str]:
        """A namespace standing for another host, on a plain veth to the host and no route back
        to the container subnets: only masqueraded traffic gets replies. (ns, host_ip, its_ip)"""
        net = ipaddress.IPv4Network(subnet)
        host_ip, peer_ip = str(net.network_address + 1), str(net.network_address + 2)
        ns = self.new(f"remote{len(self.paths)}")
        tag = os.urandom(3).hex()
        host_if, peer_if = f"pt{tag}h", f"pt{tag}p"
        subprocess.run(
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", ns], check=True
        )
        self.host_links.append(host_if)
        subprocess.run(["ip", "addr", "add", f"{host_ip}/{net.prefixlen}", "dev", host_if], check=True)
        subprocess.run(["ip", "link", "set", host_if, "up"], check=True)
        for cmd in (
            ["ip", "addr", "add", f"{peer_ip}/{net.prefixlen}", "dev", peer_if],
            ["ip", "link", "set", peer_if, "up"],
            ["ip", "link", "set", "lo", "up"],
        ):
            self.run(ns, *cmd, check=True)
        return ns, host_ip, peer_ip

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                p.wait(5)
        for name in self.host_links:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        for path in self.paths:
            with contextlib.suppress(Exception):
                netns.remove(path)


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[Namespaces]:
    n = Namespaces(tmp_path / "netns")
    n.base.mkdir()
    try:
        yield n
    finally:
        n.close()


def our_links(ctx: Context) -> list[str]:
    scope = store.Scope.of(ctx)
    out = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout)
    prefix = f"p{scope.tag}-"
    return [
        i["ifname"]
        for i in out
        if i["ifname"].startswith(prefix) or (i.get("ifalias") or "").startswith(scope.label)
    ]


def our_tables(ctx: Context) -> list[str]:
    table = store.Scope.of(ctx).table
    out = json.loads(
        subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    )
    return [o["table"]["name"] for o in out["nftables"] if "table" in o and o["table"]["name"] == table] + [
        f"{o['rule']['table']}:{o['rule']['chain']}"
        for o in out["nftables"]
        if "rule" in o and o["rule"]["table"] == table
    ]


class UpstreamDNS:
    """A tiny authoritative server on a unique loopback address, standing for the host's resolver.

    It answers ``*.upstream.test`` with 203.0.113.7 (a documentation address nothing is sent to)
    and NXDOMAIN otherwise, and counts the queries it saw.
    """

    ANSWER = "203.0.113.7"

    def __init__(self) -> None:
        import socket
        import threading

        for _ in range(50):
            self.address = f"127.{random.randint(64, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.sock.bind((self.address, 53))
                break
            except OSError:
                self.sock.close()
        self.sock.settimeout(0.2)
        self.queries: list[str] = []
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import dns.message
        import dns.rcode
        import dns.rrset

        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            q = dns.message.from_wire(data)
            name = q.question[0].name.to_text(omit_final_dot=True)
            self.queries.append(name)
            r = dns.message.make_response(q)
            if name.endswith(".upstream.test") and q.question[0].rdtype == 1:
                r.answer.append(dns.rrset.from_text(q.question[0].name, 30, "IN", "A", self.ANSWER))
            elif not name.endswith(".upstream.test"):
                r.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(r.to_wire(), peer)

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def upstream_dns() -> Iterator[UpstreamDNS]:
    u = UpstreamDNS()
    try:
        yield u
    finally:
        u.close()


# -- engine-level fixtures: real containers through `pallet run` ----------------------------------------

PALLET = [sys.executable, "-m", "pallet.cli.main"]


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"rc={self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err}"


class Engine:
    """``pallet`` as a user runs it (a new process per command) on one private root, with images
    pulled from a loopback registry into the real store; runc as the runtime."""

    def __init__(self, base: Path, images: dict[str, str]) -> None:
        self.base = base
        self.root, self.runroot = base / "root", base / "run"
        self.images = images
        self.ctx = Context(root=self.root, runroot=self.runroot)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PALLET_")}
        self.env.update(
            {
                "PALLET_ROOT": str(self.root),
                "PALLET_RUNROOT": str(self.runroot),
                "PYTHONPATH": os.pathsep.join([str(peers.REPO), os.environ.get("PYTHONPATH", "")]),
            }
        )

    def __call__(self, *args: str, timeout: float = 90, input: str | None = None) -> Result:
        res = subprocess.run(
            [*PALLET, "--runtime", "runc", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            input=input,
            cwd=str(peers.REPO),
        )
        return Result(res.returncode, res.stdout, res.stderr)

    def ok(self, *args: str, timeout: float = 90) -> str:
        r = self(*args, timeout=timeout)
        assert r.rc == 0, f"pallet {' '.join(args)} failed:\n{r}"
        return r.out

    def fails(self, *args: str, rc: int = 125, match: str = "") -> Result:
        r = self(*args)
        assert r.rc == rc and match in r.err, f"pallet {' '.join(args)}: wanted rc={rc} and {match!r}:\n{r}"
        return r

    def inspect(self, ref: str) -> dict:
        return json.loads(self.ok("container", "inspect", ref))[0]

    def ip(self, ref: str, network: str) -> str:
        return self.inspect(ref)["NetworkSettings"]["Networks"][network]["IPAddress"]

    def sandbox(self, ref: str) -> str:
        return self.inspect(ref)["NetworkSettings"]["SandboxKey"]

    def wait_listen(self, ref: str, port: int, timeout: float = 15) -> None:
        """Until something in container ``ref`` listens on TCP ``port`` (checked from outside)."""
        ns = self.sandbox(ref)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["nsenter", f"--net={ns}", "ss", "-H", "-lnt", f"sport = :{port}"],
                capture_output=True,
                text=True,
            ).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise AssertionError(f"nothing listens on {port} in {ref}")

    def leaks(self) -> list[str]:
        """What networking may leave behind, as readable lines (empty: nothing)."""
        found = [f"link {n}" for n in our_links(self.ctx)]
        found += [f"nft {t}" for t in our_tables(self.ctx)]
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4]
                if mp.startswith(str(self.runroot / "netns")):
                    found.append(f"mount {mp}")
        pins = self.runroot / "netns"
        if pins.is_dir():
            found += [f"pin {pins / n}" for n in os.listdir(pins)]
        recs = store.net_dir(self.ctx) / "containers"
        if recs.is_dir():
            found += [f"record {n}" for n in os.listdir(recs)]
        for net in store.all_networks(self.ctx):
            ipam_file = store.net_dir(self.ctx) / "ipam" / f"{net.name}.json"
            if ipam_file.exists() and json.loads(ipam_file.read_text()).get("allocations"):
                found.append(f"addresses on {net.name}")
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if dnsctl.MODULE.encode() in cmd and str(self.runroot).encode() in cmd and ") Z " not in stat:
                found.append(f"dns responder {pid}")
        return found

    def remove_everything(self) -> None:
        ids = self("ps", "-aq", "--no-trunc").out.split()
        if ids:
            self("rm", "-f", *ids, timeout=180)
        for name in self("network", "ls", "-q").out.split():
            if name != "pallet":
                self("network", "rm", "-f", name)


@pytest.fixture(scope="session")
def net_images(small_layout: Path, registry: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """refimage ``small`` pushed by skopeo to a loopback docker-registry, and ``web``: the same with
    ``EXPOSE 80/tcp 53/udp`` set by umoci (for ``-P``). {short name: reference}."""
    web = tmp_path_factory.mktemp("web-layout") / "web"
    shutil.copytree(small_layout, web)
    subprocess.run(
        [
            "umoci",
            "config",
            "--image",
            f"{web}:latest",
            "--config.exposedports",
            "80/tcp",
            "--config.exposedports",
            "53/udp",
        ],
        check=True,
        capture_output=True,
    )
    refs = {"small": f"{registry}/net/small:latest", "web": f"{registry}/net/web:latest"}
    peers.skopeo_copy(f"oci:{small_layout}:latest", f"docker://{refs['small']}")
    peers.skopeo_copy(f"oci:{web}:latest", f"docker://{refs['web']}")
    return refs


@pytest.fixture(scope="module")
def engine_root(net_images: dict[str, str]) -> Iterator[Engine]:
    """One pallet root per test module, with the test images pulled through the real store."""
    base = Path(tempfile.mkdtemp(prefix="pn-", dir="/tmp"))  # short: unix socket paths
    e = Engine(base, net_images)
    try:
        for name, ref in net_images.items():
            e.ok("pull", "-q", ref, timeout=180)
            e.ok("tag", ref, name)
        yield e
    finally:
        with contextlib.suppress(Exception):
            e.remove_everything()
        wipe(e.ctx)
        _unmount_under(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def engine(engine_root: Engine) -> Iterator[Engine]:
    """The module's engine; after the test every container and network goes, and nothing of
    them may be left on the host: links, nft table, netns pins and mounts, DNS responders."""
    yield engine_root
    engine_root.remove_everything()
    leaks = engine_root.leaks()
    if leaks:
        wipe(engine_root.ctx)  # the next test starts clean even so
    assert leaks == [], f"left behind after removing every container and network: {leaks}"


def _unmount_under(base: Path) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(str(base))]
    for mp in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)
