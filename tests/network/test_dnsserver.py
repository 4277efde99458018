"""The DNS responder on its own: a real process on loopback, asked by dnspython's client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from pallet.fsutil import atomic_write
from tests.support import peers


@pytest.fixture
def responder(tmp_path, upstream_dns):
    records = tmp_path / "records"

    def write(containers, upstreams=(upstream_dns.address,)):
        atomic_write(
            records,
            json.dumps(
                {"domain": "dns.pallet", "upstreams": list(upstreams), "containers": containers}
            ).encode(),
            sync=False,
        )

    write(
        [
            {"id": "a" * 64, "ip": "10.5.0.2", "names": ["alpha", "www"], "upstreams": []},
            {"id": "b" * 64, "ip": "10.5.0.3", "names": ["beta"], "upstreams": ["127.0.0.1:9"]},
        ]
    )
    port = peers.free_port()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
    tcp.listen()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pallet.network.dnsserver",
            str(records),
            "--udp-fd",
            str(udp.fileno()),
            "--tcp-fd",
            str(tcp.fileno()),
        ],
        pass_fds=(udp.fileno(), tcp.fileno()),
        stderr=subprocess.PIPE,
    )
    udp.close()
    tcp.close()
    try:
        yield port, write, proc, records
    finally:
        proc.kill()
        proc.wait()


def ask(port, name, rdtype="A", tcp=False):
    q = dns.message.make_query(name, rdtype)
    fn = dns.query.tcp if tcp else dns.query.udp
    return fn(q, "127.0.0.1", port=port, timeout=5)


def test_answers_names_aliases_and_ptr_authoritatively(responder):
    port, *_ = responder
    r = ask(port, "www")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert [rr.address for rr in r.answer[0]] == ["10.5.0.2"]
    assert ask(port, "ALPHA.dns.pallet.").answer[0][0].address == "10.5.0.2"
    r = ask(port, "alpha", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []  # exists, but no IPv6
    r = ask(port, "3.0.5.10.in-addr.arpa", "PTR")
    assert r.answer[0][0].target.to_text() == "beta.dns.pallet."
    assert ask(port, "nosuch.dns.pallet").rcode() == dns.rcode.NXDOMAIN
    assert ask(port, "beta", tcp=True).answer[0][0].address == "10.5.0.3"


def test_forwards_the_rest_and_reloads_records(responder, upstream_dns):
    port, write, _proc, _records = responder
    r = ask(port, "host.upstream.test")
    assert r.answer[0][0].address == upstream_dns.ANSWER
    assert ask(port, "x.upstream.test", tcp=True).answer[0][0].address == upstream_dns.ANSWER
    assert ask(port, "gamma").rcode() == dns.rcode.NXDOMAIN  # forwarded: upstream says NXDOMAIN
    write([{"id": "c" * 64, "ip": "10.5.0.9", "names": ["gamma"], "upstreams": []}])
    assert ask(port, "gamma").answer[0][0].address == "10.5.0.9"
    assert ask(port, "alpha").rcode() == dns.rcode.NXDOMAIN
    # no upstream answers: SERVFAIL, not silence
    write([], upstreams=["127.0.0.1:9"])
    t = time.monotonic()
    assert ask(port, "y.upstream.test").rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - t < 5


def test_survives_garbage_and_exits_when_its_records_go(responder):
    port, _write, proc, records = responder
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(b"\x12\x34" + os.urandom(20), ("127.0.0.1", port))
        reply = s.recv(512)
        assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == dns.rcode.FORMERR
        s.sendto(b"x", ("127.0.0.1", port))  # too short to answer at all
    assert ask(port, "alpha").answer[0][0].address == "10.5.0.2"
    records.unlink()
    assert proc.wait(10) == 0
