"""IPv4 address management: one allocation file per network, changed only under the network lock.

Addresses are handed out round-robin after the last one given (as CNI's host-local does), so a
just-released address is not reused at once while peers may still cache its MAC. The network
address, the gateway and the broadcast address are never handed out; nor is an address already
recorded, so an address is never given twice, even across engine restarts (the file is under
ROOT). Callers hold :func:`pallet.network.store.lock_path` while calling these.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pallet.context import Context
from pallet.network import store
from pallet.network.errors import AddressUnavailable, InvalidNetworkConfig
from pallet.network.types import Network


class Pool:
    """The allocations of one network, loaded from and saved to its file."""

    def __init__(self, ctx: Context, net: Network) -> None:
        self.net = net
        self.path: Path = store.net_dir(ctx) / "ipam" / f"{net.name}.json"
        data = store.read_json(self.path) or {}
        self.last: str | None = data.get("last")
        self.allocations: dict[str, str] = dict(data.get("allocations", {}))
        self.subnet = net.subnet.net
        self.gateway = ipaddress.IPv4Address(net.subnet.gateway) if net.subnet.gateway else None

    def save(self) -> None:
        if self.allocations or self.last:
            store.write_json(
                self.path, {"subnet": str(self.subnet), "last": self.last, "allocations": self.allocations}
            )
        else:  # nothing left to remember (a pool only static addresses were taken from)
            self.path.unlink(missing_ok=True)

    def _reserved(self, ip: ipaddress.IPv4Address) -> bool:
        return ip in (self.subnet.network_address, self.subnet.broadcast_address, self.gateway)

    def allocate(self, container_id: str, static: str | None = None) -> str:
        if static:
            try:
                ip = ipaddress.IPv4Address(static)
            except ValueError:
                raise InvalidNetworkConfig(f"invalid IPv4 address {static!r}") from None
            if ip not in self.subnet or self._reserved(ip):
                raise InvalidNetworkConfig(
                    f"address {ip} is not a usable address of network {self.net.name} ({self.subnet})"
                )
            owner = self.allocations.get(str(ip))
            if owner is not None and owner != container_id:
                raise AddressUnavailable(f"address {ip} on network {self.net.name} is already in use")
            self.allocations[str(ip)] = container_id
            return str(ip)
        first = int(self.subnet.network_address) + 1
        last = int(self.subnet.broadcast_address) - 1
        size = last - first + 1
        start = first
        if self.last:
            prev = int(ipaddress.IPv4Address(self.last))
            if first <= prev <= last:
                start = prev + 1 if prev < last else first
        for k in range(size):
            n = first + (start - first + k) % size
            ip = ipaddress.IPv4Address(n)
            if self._reserved(ip) or str(ip) in self.allocations:
                continue
            self.allocations[str(ip)] = container_id
            self.last = str(ip)
            return str(ip)
        raise AddressUnavailable(f"network {self.net.name} ({self.subnet}) has no free address left")

    def release(self, container_id: str, address: str | None = None) -> None:
        for ip, owner in list(self.allocations.items()):
            if owner == container_id and (address is None or ip == address):
                del self.allocations[ip]

    def owners(self) -> set[str]:
        return set(self.allocations.values())


def drop(ctx: Context, name: str) -> None:
    """Forget a removed network's allocations."""
    path = store.net_dir(ctx) / "ipam" / f"{name}.json"
    try:
        path.unlink()
    except FileNotFoundError:
        pass
