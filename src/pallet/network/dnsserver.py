"""The per-network DNS responder (``python -m pallet.network.dnsserver``), as aardvark-dns is.

It answers, authoritatively, A/AAAA queries for the names and aliases of the containers on its
network (bare, or under ``dns.pallet``) and PTR queries for their addresses, and forwards every
other query, unchanged, to upstream resolvers (over UDP; a truncated answer to a TCP client is
asked again over TCP): the asking container's ``--dns`` servers if it
has some, else the network's, else the host's (re-read from /etc/resolv.conf when it changes).

It is started by setup with its UDP and TCP sockets already bound on the gateway's port 53 and
passed as file descriptors, so queries sent before it has finished starting wait in the socket
buffers instead of being refused. It reads its records file again whenever that file changes
(stat on each query: the file is replaced atomically, so a new inode means new records), and
exits when the file is removed or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import signal
import socket
import struct
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from pallet.network import resolvconf

log = logging.getLogger("pallet.network.dns")
TTL = 60
UPSTREAM_TIMEOUT = 3.0


class Records:
    """The network's containers, reloaded when the records file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stamp: tuple[int, int, int] | None = None
        self.domain = "dns.pallet"
        self.by_name: dict[str, list[str]] = {}
        self.by_ip: dict[str, str] = {}
        self.upstreams: list[str] = []
        self.by_client: dict[str, list[str]] = {}
        self.host_stamp: tuple[int, int, int] | None = None
        self.host_servers: list[str] = []

    def refresh(self) -> bool:
        """Reload if changed; False once the file is gone (the network has no containers left)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self.stamp:
            try:
                data = json.loads(self.path.read_bytes())
            except (OSError, ValueError) as e:
                log.warning("cannot read %s: %s", self.path, e)
                return True
            self.stamp = stamp
            self._load(data)
        return True

    def _load(self, data: dict[str, Any]) -> None:
        self.domain = data.get("domain", "dns.pallet").lower().strip(".")
        self.upstreams = list(data.get("upstreams", []))
        by_name: dict[str, list[str]] = {}
        by_ip: dict[str, str] = {}
        by_client: dict[str, list[str]] = {}
        for c in data.get("containers", []):
            ip = c["ip"]
            for n in c.get("names", []):
                by_name.setdefault(n.lower().strip("."), []).append(ip)
            if c.get("names"):
                by_ip.setdefault(ip, c["names"][0])
            if c.get("upstreams"):
                by_client[ip] = list(c["upstreams"])
        self.by_name, self.by_ip, self.by_client = by_name, by_ip, by_client
        log.info("loaded %d names", len(by_name))

    def servers_for(self, client_ip: str) -> list[str]:
        servers = self.by_client.get(client_ip) or self.upstreams
        if servers:
            return servers
        host = resolvconf.HOST_RESOLV_CONF
        try:
            st = host.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self.host_stamp:
            self.host_stamp = stamp
            self.host_servers = resolvconf.host(host).nameservers
        return self.host_servers


def _split_server(server: str) -> tuple[str, int]:
    """``ip``, or ``ip:port`` / ``[ip6]:port`` (the port form is for tests and odd setups)."""
    if server.startswith("["):
        host, _, port = server[1:].partition("]:")
        return host, int(port or 53)
    if server.count(":") == 1:
        host, port = server.split(":")
        return host, int(port)
    return server, 53


class Responder:
    def __init__(self, records: Records) -> None:
        self.records = records
        self.stop = asyncio.Event()

    # -- answers ------------------------------------------------------------------------------

    def local_answer(self, query: dns.message.Message) -> dns.message.Message | None:
        """The authoritative answer for our names, or None to forward the query."""
        if not query.question:
            return None
        q = query.question[0]
        qname = q.name.to_text(omit_final_dot=True).lower()
        recs = self.records
        suffix = "." + recs.domain
        ours = qname == recs.domain or qname.endswith(suffix)
        short = qname[: -len(suffix)] if qname.endswith(suffix) else qname
        if q.rdtype == dns.rdatatype.PTR:
            ip = _ptr_ip(qname)
            name = recs.by_ip.get(ip) if ip else None
            if name is None:
                return None
            resp = _response(query)
            target = dns.name.from_text(f"{name}.{recs.domain}")
            resp.answer.append(dns.rrset.from_text_list(q.name, TTL, "IN", "PTR", [target.to_text()]))
            return resp
        ips = recs.by_name.get(short)
        if ips is None:
            if ours:
                resp = _response(query)
                resp.set_rcode(dns.rcode.NXDOMAIN)
                return resp
            return None
        resp = _response(query)
        if q.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
            resp.answer.append(dns.rrset.from_text_list(q.name, TTL, "IN", "A", sorted(set(ips))))
        return resp  # AAAA and the rest: the name exists, with no such records (NODATA)

    async def resolve(self, wire: bytes, client_ip: str, tcp: bool) -> bytes | None:
        alive = self.records.refresh()
        if not alive:
            self.stop.set()
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return _formerr(wire)
        try:
            answer = self.local_answer(query)
        except Exception:
            log.exception("answering %s", query.question)
            answer = None
        if answer is not None:
            return answer.to_wire(max_size=65535 if tcp else _udp_limit(query))
        servers = self.records.servers_for(client_ip)
        for server in servers:
            try:
                host, port = _split_server(server)
                reply = await _forward_udp(wire, host, port)
                if tcp and len(reply) > 3 and reply[2] & 0x02:
                    # truncated over UDP: this client can take the whole answer over TCP
                    reply = await _forward_tcp(wire, host, port)
                return reply
            except (OSError, TimeoutError, ValueError) as e:
                log.info("upstream %s failed: %s", server, e)
        resp = _response(query)
        resp.set_rcode(dns.rcode.SERVFAIL)
        return resp.to_wire()

    # -- transports ---------------------------------------------------------------------------

    async def serve(self, udp: socket.socket, tcp: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        responder = self
        pending: set[asyncio.Task] = set()

        class UDP(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                async def answer() -> None:
                    reply = await responder.resolve(data, addr[0], tcp=False)
                    if reply:
                        self.transport.sendto(reply, addr)  # type: ignore[attr-defined]

                task = loop.create_task(answer())
                pending.add(task)  # keep a reference until it is done
                task.add_done_callback(pending.discard)

        await loop.create_datagram_endpoint(UDP, sock=udp)

        async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")
            try:
                while True:
                    size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 30))[0]
                    data = await asyncio.wait_for(reader.readexactly(size), 30)
                    reply = await responder.resolve(data, peer[0] if peer else "", tcp=True)
                    if reply:
                        writer.write(struct.pack("!H", len(reply)) + reply)
                        await writer.drain()
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(on_tcp, sock=tcp)
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)

        async def watch() -> None:
            while not self.stop.is_set():
                await asyncio.sleep(2)
                if not self.records.refresh():
                    self.stop.set()

        watcher = loop.create_task(watch())
        await self.stop.wait()
        watcher.cancel()
        server.close()


def _response(query: dns.message.Message) -> dns.message.Message:
    resp = dns.message.make_response(query)
    resp.flags |= dns.flags.AA | dns.flags.RA
    return resp


def _udp_limit(query: dns.message.Message) -> int:
    return max(512, query.payload) if query.edns >= 0 else 512


def _formerr(wire: bytes) -> bytes | None:
    if len(wire) < 12:
        return None
    qid = wire[:2]
    return qid + struct.pack("!HHHHH", 0x8001, 0, 0, 0, 0)  # QR + FORMERR, no sections


def _ptr_ip(qname: str) -> str | None:
    if not qname.endswith(".in-addr.arpa"):
        return None
    parts = qname[: -len(".in-addr.arpa")].split(".")
    if len(parts) != 4:
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(reversed(parts))))
    except ValueError:
        return None


async def _forward_udp(wire: bytes, host: str, port: int) -> bytes:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        await loop.sock_connect(s, (host, port))
        await loop.sock_sendall(s, wire)
        while True:
            reply = await asyncio.wait_for(loop.sock_recv(s, 65535), UPSTREAM_TIMEOUT)
            if reply[:2] == wire[:2]:
                return reply


async def _forward_tcp(wire: bytes, host: str, port: int) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), UPSTREAM_TIMEOUT)
    try:
        writer.write(struct.pack("!H", len(wire)) + wire)
        await writer.drain()
        size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), UPSTREAM_TIMEOUT))[0]
        return await asyncio.wait_for(reader.readexactly(size), UPSTREAM_TIMEOUT)
    finally:
        writer.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pallet-dns", description="pallet's per-network DNS responder")
    p.add_argument("records", type=Path, help="records file written by pallet.network")
    p.add_argument("--udp-fd", type=int, required=True)
    p.add_argument("--tcp-fd", type=int, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("PALLET_DNS_LOG", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(message)s",
    )
    udp = socket.socket(fileno=args.udp_fd)
    tcp = socket.socket(fileno=args.tcp_fd)
    udp.setblocking(False)
    tcp.setblocking(False)
    records = Records(args.records)
    if not records.refresh():
        return 0
    asyncio.run(Responder(records).serve(udp, tcp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
