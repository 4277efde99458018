"""nftables rules for bridge networks, in one table of pallet's own (``inet pallet``).

The table's chains and rules never change with networks or containers: everything that does
(our bridges, internal bridges, subnets to masquerade, published ports) lives in named sets and
maps. Adding a network or a published port is then an element change, which the kernel commits
without the RCU grace period a chain or rule change costs (~5 ms instead of ~15 ms), and removal
never needs rule handles. Nothing outside the table is read or written.

Rules (IPv4)::

    forward      iifname @bridges oifname @bridges iifname . oifname != @same drop   # isolation
                 iifname @internal iifname . oifname != @same drop                   # --internal
                 oifname @internal iifname . oifname != @same drop
    input        internal bridges reach only the DNS responder (udp/tcp 53) on the host
    prerouting,  fib daddr type local jump hostports
    output       (output covers connections from the host itself, 127.0.0.1 included)
    hostports    dnat to (daddr . proto . port) in @ports4, else (proto . port) in @ports4any
    postrouting  127.0.0.0/8 sources leaving through a bridge are masqueraded (with
                 route_localnet=1 on the bridge this makes 127.0.0.1:PORT work, as netavark does);
                 DNATed traffic from a subnet back into a bridge is masqueraded (hairpin);
                 sources in @masq4 (non-internal subnets) going anywhere but our subnets are
                 masqueraded (outbound NAT)

Driven through the ``nft`` command (``nft -f -``): Debian's libnftables Python binding is
packaged for the system Python only, and the command costs ~2 ms more than a binding would.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable

from pallet.network.errors import FirewallError
from pallet.network.types import Network, PortMapping
from pallet.records import dataclass


@dataclass(frozen=True)
class PortRule:
    """One published port as nft sees it: host (ip, proto, port) -> container (ip, port)."""

    host_ip: str  # "" for every address
    protocol: str
    host_port: int
    address: str
    container_port: int

    def key(self) -> str:
        base = f"{self.protocol} . {self.host_port}"
        return f"{self.host_ip} . {base}" if self.host_ip else base

    def map(self) -> str:
        return "ports4" if self.host_ip else "ports4any"

    def element(self) -> str:
        return f"{self.key()} : {self.address} . {self.container_port}"


def port_rules(ports: Iterable[PortMapping], address: str) -> list[PortRule]:
    out = []
    for p in ports:
        for k in range(p.range):
            host_ip = "" if p.host_ip in ("", "0.0.0.0") else p.host_ip
            out.append(PortRule(host_ip, p.protocol, p.host_port + k, address, p.container_port + k))
    return out


def _q(name: str) -> str:
    return f'"{name}"'


class Batch:
    """An nft script applied in one transaction: all of it or none."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.lines: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.lines)

    def base(self) -> None:
        """Create the table, its sets and chains if missing, and (re)write the fixed rules."""
        t = f"inet {self.table}"
        add = self.lines.append
        add(f"add table {t}")
        add(f"add set {t} bridges {{ type ifname; }}")
        add(f"add set {t} internal {{ type ifname; }}")
        add(f"add set {t} same {{ type ifname . ifname; }}")
        add(f"add set {t} subnets4 {{ type ipv4_addr; flags interval; }}")
        add(f"add set {t} masq4 {{ type ipv4_addr; flags interval; }}")
        add(
            f"add map {t} ports4 {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}"
        )
        add(f"add map {t} ports4any {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}")
        chains = {
            "forward": "type filter hook forward priority filter; policy accept;",
            "input": "type filter hook input priority filter; policy accept;",
            "prerouting": "type nat hook prerouting priority dstnat; policy accept;",
            "output": "type nat hook output priority -100; policy accept;",
            "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
            "hostports": "",
        }
        for chain, spec in chains.items():
            add(f"add chain {t} {chain} {{ {spec} }}" if spec else f"add chain {t} {chain}")
            add(f"flush chain {t} {chain}")
        rules = [
            "forward iifname @bridges oifname @bridges iifname . oifname != @same drop",
            # (with br_netfilter, traffic between two containers on one bridge also passes
            # here, in and out of that bridge: only what crosses to another interface is cut)
            "forward iifname @internal iifname . oifname != @same drop",
            "forward oifname @internal iifname . oifname != @same drop",
            "input iifname @internal meta l4proto { tcp, udp } th dport 53 accept",
            "input iifname @internal ct state established,related accept",
            "input iifname @internal drop",
            "prerouting fib daddr type local jump hostports",
            "output fib daddr type local jump hostports",
            "hostports meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @ports4",
            "hostports meta nfproto ipv4 dnat ip to meta l4proto . th dport map @ports4any",
            "postrouting oifname @bridges ip saddr 127.0.0.0/8 masquerade",
            "postrouting oifname @bridges ct status dnat ip saddr @subnets4 masquerade",
            "postrouting ip saddr @masq4 ip daddr != @subnets4 masquerade",
        ]
        for r in rules:
            add(f"add rule {t} {r}")

    def flush_state(self) -> None:
        """Empty every set and map (before re-adding the whole state, in the same batch)."""
        for s in ("bridges", "internal", "same", "subnets4", "masq4"):
            self.lines.append(f"flush set inet {self.table} {s}")
        for m in ("ports4", "ports4any"):
            self.lines.append(f"flush map inet {self.table} {m}")

    def _elements(self, net: Network) -> list[tuple[str, str]]:
        br = _q(net.network_interface)
        out = [("bridges", br), ("same", f"{br} . {br}"), ("subnets4", net.subnet.subnet)]
        out.append(("internal", br) if net.internal else ("masq4", net.subnet.subnet))
        return out

    def add_network(self, net: Network) -> None:
        for s, e in self._elements(net):
            self.lines.append(f"add element inet {self.table} {s} {{ {e} }}")

    def remove_network(self, net: Network) -> None:
        # add-then-delete: deleting an absent element fails the batch, adding a present one doesn't
        for s, e in self._elements(net):
            self.lines.append(f"add element inet {self.table} {s} {{ {e} }}")
            self.lines.append(f"delete element inet {self.table} {s} {{ {e} }}")

    def add_ports(self, rules: Iterable[PortRule]) -> None:
        for r in rules:
            self.lines.append(f"add element inet {self.table} {r.map()} {{ {r.element()} }}")

    def remove_ports(self, rules: Iterable[PortRule]) -> None:
        for r in rules:
            self.lines.append(f"add element inet {self.table} {r.map()} {{ {r.element()} }}")
            self.lines.append(f"delete element inet {self.table} {r.map()} {{ {r.key()} }}")

    def delete_table(self) -> None:
        # add first so that deleting a table that is already gone is not an error
        self.lines.append(f"add table inet {self.table}")
        self.lines.append(f"delete table inet {self.table}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def apply(self) -> None:
        if self.lines:
            self.start().wait()

    def start(self) -> Pending:
        """Hand the batch to nft and return at once: the caller overlaps its own kernel work
        (netlink) with nft's commit, which mostly waits for an RCU grace period."""
        return Pending(self.text() if self.lines else "")


class Pending:
    """An nft transaction under way; :meth:`wait` raises FirewallError if nft refused it."""

    def __init__(self, script: str) -> None:
        self.proc: subprocess.Popen[str] | None = None
        if not script:
            return
        self.proc = subprocess.Popen(
            [_nft(), "-f", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(script)
            self.proc.stdin.close()
        except BrokenPipeError:
            pass

    def wait(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
        if proc.wait() != 0:
            _raise(err)


_NFT: str | None = None


def _nft() -> str:
    global _NFT
    if _NFT is None:
        dirs = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/sbin"]
        _NFT = next(
            (os.path.join(d, "nft") for d in dirs if d and os.access(os.path.join(d, "nft"), os.X_OK)), None
        )
        if _NFT is None:
            raise FirewallError("nft is not installed (Debian: apt-get install nftables)")
    return _NFT


def _raise(stderr: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "^" not in ln]
    first = next((ln for ln in lines if "Error" in ln), lines[0] if lines else "unknown error")
    raise FirewallError(f"nft refused the rules: {first.split('Error:', 1)[-1].strip()}")


def run(script: str) -> None:
    Pending(script).wait()


def table_exists(table: str) -> bool:
    res = subprocess.run([_nft(), "list", "table", "inet", table], capture_output=True, text=True)
    return res.returncode == 0


def list_table(table: str) -> str:
    res = subprocess.run([_nft(), "list", "table", "inet", table], capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else ""
