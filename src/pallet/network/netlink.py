"""rtnetlink through pyroute2's message codec, on a plain blocking socket.

pyroute2 encodes and decodes the netlink messages (links, addresses, routes and their nested
attributes). Its socket classes are not used: since 0.9 they sit on asyncio, and importing
``pyroute2`` runs a package ``__init__`` that loads every subsystem (conntrack, nftables, ipdb,
ndb, wireguard ...): ~200 ms, most of the whole ``pallet run`` budget. :func:`_codec` imports only
the three message modules (~20 ms) by registering the package without running its
``__init__``; a later ``import pyroute2`` elsewhere in the process still gets the full package
(the stand-in module loads it on first attribute access).

A :class:`Netlink` is bound to the network namespace it was opened in; :func:`open_in` opens
one inside a container's namespace by entering it with the calling thread only.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import socket
import struct
import sys
import types
from collections.abc import Iterator

from pallet.errors import NetworkError

TYPE_CHECKING = False  # typing costs an import on `pallet run`'s path: annotations are strings
if TYPE_CHECKING:
    from typing import Any

NETLINK_ROUTE = 0
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
_HDR = struct.Struct("=IHHII")


class _LazyPackage(types.ModuleType):
    """Stands in for ``pyroute2`` until someone asks for a top-level name, then becomes it."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if any(
            os.path.exists(os.path.join(d, name)) or os.path.exists(os.path.join(d, name + ".py"))
            for d in self.__path__
        ):
            # a submodule (`from pyroute2 import config`): import just that
            return importlib.import_module(f"pyroute2.{name}")
        spec = self.__spec__
        assert spec is not None and spec.loader is not None
        self.__class__ = types.ModuleType  # run the real __init__ once, into this very module
        spec.loader.exec_module(self)  # type: ignore[union-attr]
        return getattr(self, name)


_CODEC: types.SimpleNamespace | None = None


def _codec() -> types.SimpleNamespace:
    """pyroute2's ifinfmsg/ifaddrmsg/rtmsg classes, imported without the package's __init__."""
    global _CODEC
    if _CODEC is not None:
        return _CODEC
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is None or spec.submodule_search_locations is None:
            raise NetworkError("pyroute2 is not installed: pip install 'pallet[network]'")
        pkg = _LazyPackage("pyroute2")
        pkg.__spec__ = spec
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__file__ = spec.origin
        pkg.__package__ = "pyroute2"
        sys.modules["pyroute2"] = pkg
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    _CODEC = types.SimpleNamespace(ifinfmsg=ifinfmsg, ifaddrmsg=ifaddrmsg, rtmsg=rtmsg)
    return _CODEC


class NetlinkError(NetworkError):
    """The kernel refused a netlink request; ``errno`` says why."""

    def __init__(self, code: int, what: str) -> None:
        self.errno = code
        super().__init__(f"{what}: {os.strerror(code)}")


class Link:
    """What the library needs to know about one interface."""

    __slots__ = ("alias", "flags", "group", "index", "kind", "mac", "master", "name", "peer_netnsid")

    def __init__(self, msg: Any) -> None:
        self.index: int = msg["index"]
        self.flags: int = msg["flags"]
        self.name: str = msg.get_attr("IFLA_IFNAME")
        self.mac: str | None = msg.get_attr("IFLA_ADDRESS")
        self.master: int | None = msg.get_attr("IFLA_MASTER")
        self.alias: str | None = msg.get_attr("IFLA_IFALIAS")
        self.peer_netnsid: int | None = msg.get_attr("IFLA_LINK_NETNSID")
        self.group: int = msg.get_attr("IFLA_GROUP") or 0
        info = msg.get_attr("IFLA_LINKINFO")
        self.kind: str | None = info.get_attr("IFLA_INFO_KIND") if info is not None else None

    def __repr__(self) -> str:
        return f"Link({self.name!r}, index={self.index}, kind={self.kind!r}, master={self.master})"


class Netlink:
    """A blocking NETLINK_ROUTE socket in the namespace where it was made; one request at a time."""

    def __init__(self) -> None:
        self.codec = _codec()
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------------

    def _send(self, msg: Any, mtype: int, flags: int) -> int:
        self.seq += 1
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self.seq
        msg["header"]["pid"] = 0
        msg.encode()
        self.sock.send(msg.data)
        return self.seq

    def _replies(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """(type, whole message) of each reply to ``seq`` until DONE or the ack."""
        while True:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + _HDR.size <= len(data):
                length, mtype, _flags, mseq, _pid = _HDR.unpack_from(data, off)
                if length < _HDR.size:
                    return
                chunk = data[off : off + length]
                off += (length + 3) & ~3
                if mseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", chunk, _HDR.size)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return
                yield mtype, chunk

    def request(self, msg: Any, mtype: int, flags: int = 0, what: str = "netlink request") -> None:
        seq = self._send(msg, mtype, NLM_F_REQUEST | NLM_F_ACK | flags)
        try:
            for _ in self._replies(seq):
                pass
        except OSError as e:
            raise NetlinkError(e.errno or errno.EIO, what) from None

    def dump(self, cls: Any, msg: Any, mtype: int) -> list[Any]:
        seq = self._send(msg, mtype, NLM_F_REQUEST | NLM_F_DUMP)
        out = []
        try:
            for _mtype, chunk in self._replies(seq):
                m = cls(chunk)
                m.decode()
                out.append(m)
        except OSError as e:
            raise NetlinkError(e.errno or errno.EIO, "netlink dump") from None
        return out

    # -- links ------------------------------------------------------------------------------

    def links(self) -> list[Link]:
        msg = self.codec.ifinfmsg()
        msg["family"] = socket.AF_UNSPEC
        return [Link(m) for m in self.dump(self.codec.ifinfmsg, msg, RTM_GETLINK)]

    def link(self, name: str) -> Link | None:
        msg = self.codec.ifinfmsg()
        msg["family"] = socket.AF_UNSPEC
        msg["attrs"] = [("IFLA_IFNAME", name)]
        seq = self._send(msg, RTM_GETLINK, NLM_F_REQUEST)
        try:
            for _mtype, chunk in self._replies(seq):
                m = self.codec.ifinfmsg(chunk)
                m.decode()
                return Link(m)
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise NetlinkError(e.errno or errno.EIO, f"looking up interface {name}") from None
        return None

    def _newlink(self, index: int, attrs: list, up: bool | None) -> Any:
        msg = self.codec.ifinfmsg()
        msg["family"] = socket.AF_UNSPEC
        msg["index"] = index
        if up is not None:
            msg["flags"] = IFF_UP if up else 0
            msg["change"] = IFF_UP
        msg["attrs"] = attrs
        return msg

    def add_bridge(self, name: str, mac: str, alias: str, mtu: int | None = None) -> None:
        attrs: list = [
            ("IFLA_IFNAME", name),
            ("IFLA_ADDRESS", mac),
            ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]}),
        ]
        if mtu:
            attrs.append(("IFLA_MTU", mtu))
        self.request(
            self._newlink(0, attrs, True), RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, f"creating bridge {name}"
        )
        self.set_alias(name, alias)

    def add_veth(
        self, name: str, peer: str, peer_netns_fd: int, peer_mac: str, master: int, mtu: int | None = None
    ) -> None:
        """A veth pair: ``name`` here, enslaved to ``master`` and up; ``peer`` in the other namespace."""
        peer_attrs: list = [
            ("IFLA_IFNAME", peer),
            ("IFLA_NET_NS_FD", peer_netns_fd),
            ("IFLA_ADDRESS", peer_mac),
        ]
        attrs: list = [("IFLA_IFNAME", name), ("IFLA_MASTER", master)]
        if mtu:
            attrs.append(("IFLA_MTU", mtu))
            peer_attrs.append(("IFLA_MTU", mtu))
        attrs.append(
            (
                "IFLA_LINKINFO",
                {
                    "attrs": [
                        ("IFLA_INFO_KIND", "veth"),
                        ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]}),
                    ]
                },
            )
        )
        self.request(
            self._newlink(0, attrs, True),
            RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL,
            f"creating veth pair {name}/{peer}",
        )

    def set_alias(self, name: str, alias: str) -> None:
        self.request(
            self._newlink(0, [("IFLA_IFNAME", name), ("IFLA_IFALIAS", alias)], None),
            RTM_NEWLINK,
            0,
            f"labelling interface {name}",
        )

    def set_up(self, index: int, what: str = "") -> None:
        self.request(self._newlink(index, [], True), RTM_NEWLINK, 0, f"bringing up {what or index}")

    def delete_link(self, name: str) -> bool:
        """Delete an interface by name; False if it was not there."""
        try:
            self.request(
                self._newlink(0, [("IFLA_IFNAME", name)], None), RTM_DELLINK, 0, f"deleting interface {name}"
            )
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise
        return True

    def delete_links(self, names: list[str]) -> list[str]:
        """Delete several interfaces in one kernel batch; returns those that existed.

        Each RTM_DELLINK waits for an RCU grace period (~20-30 ms here); deleting by interface
        group unregisters all members under one. The group is a fresh random one, and the
        batch is used only if no other interface turned out to carry it.
        """
        if len(names) < 2:
            return [n for n in names if self.delete_link(n)]
        group = 0x70000000 | int.from_bytes(os.urandom(3), "big")
        marked = []
        for n in names:
            try:
                self.request(
                    self._newlink(0, [("IFLA_IFNAME", n), ("IFLA_GROUP", group)], None),
                    RTM_NEWLINK,
                    0,
                    f"marking interface {n}",
                )
                marked.append(n)
            except NetlinkError as e:
                if e.errno not in (errno.ENODEV, errno.ENOENT):
                    raise
        members = {link.name for link in self.links() if link.group == group}
        if members == set(marked) and len(marked) > 1:
            self.request(
                self._newlink(0, [("IFLA_GROUP", group)], None),
                RTM_DELLINK,
                0,
                f"deleting interfaces {', '.join(marked)}",
            )
            return marked
        return [n for n in marked if self.delete_link(n)]

    # -- addresses and routes ---------------------------------------------------------------

    def add_address(self, index: int, address: str, prefixlen: int, what: str = "") -> None:
        msg = self.codec.ifaddrmsg()
        msg["family"] = socket.AF_INET
        msg["prefixlen"] = prefixlen
        msg["index"] = index
        msg["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
        self.request(
            msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, f"adding {address}/{prefixlen} to {what or index}"
        )

    def add_default_route(self, gateway: str, oif: int, metric: int) -> None:
        msg = self.codec.rtmsg()
        msg["family"] = socket.AF_INET
        msg["table"] = RT_TABLE_MAIN
        msg["proto"] = RTPROT_BOOT
        msg["scope"] = RT_SCOPE_UNIVERSE
        msg["type"] = RTN_UNICAST
        msg["dst_len"] = 0
        msg["attrs"] = [("RTA_GATEWAY", gateway), ("RTA_OIF", oif), ("RTA_PRIORITY", metric)]
        self.request(msg, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, f"adding default route via {gateway}")

    def routes4(self) -> list[tuple[str, int, int | None]]:
        """(destination, prefix length, output interface) of every IPv4 route in every table."""
        msg = self.codec.rtmsg()
        msg["family"] = socket.AF_INET
        out = []
        for m in self.dump(self.codec.rtmsg, msg, RTM_GETROUTE):
            dst = m.get_attr("RTA_DST")
            if dst is None:
                continue  # default routes overlap nothing we would pick
            out.append((dst, m["dst_len"], m.get_attr("RTA_OIF")))
        return out

    def addresses4(self) -> list[tuple[str, int, int]]:
        """(address, prefix length, interface index) of every IPv4 address here."""
        msg = self.codec.ifaddrmsg()
        msg["family"] = socket.AF_INET
        return [
            (m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS"), m["prefixlen"], m["index"])
            for m in self.dump(self.codec.ifaddrmsg, msg, RTM_GETADDR)
        ]


def open_in(netns_path: str | os.PathLike[str]) -> Netlink:
    """A :class:`Netlink` socket inside the network namespace at ``netns_path``."""
    from pallet.network import netns

    with netns.entered(netns_path):
        return Netlink()
