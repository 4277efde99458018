"""The client against servers that misbehave on purpose: errors, rate limits, hangs, dropped and
corrupted bodies, malformed manifests, and spec pagination."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from pallet.content import Digest, InvalidManifest
from pallet.content import mediatypes as mt
from pallet.errors import ContentError, DigestMismatch
from pallet.registry.client import (
    InvalidResponse,
    NotFoundError,
    RegistryClient,
    RegistryUnavailable,
    TooManyRequests,
)
from tests.registry.client.conftest import FaultServer, send

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": str(Digest.of(b"{}")), "size": 2},
        "layers": [],
    }
).encode()
MANIFEST_DIGEST = Digest.of(MANIFEST)
BLOB = bytes(range(256)) * 4096  # 1 MiB
BLOB_DIGEST = Digest.of(BLOB)


def client(server: FaultServer, **kw) -> RegistryClient:
    kw.setdefault("backoff", 0.05)
    kw.setdefault("tls_verify", None)
    return RegistryClient(server.addr, insecure=False, **kw)


def manifest_route(status_sequence: list[int], headers: dict[str, str] | None = None, body: bytes = MANIFEST):
    calls = iter(status_sequence)

    def route(h, server) -> None:
        status = next(calls, 200)
        if status == 200:
            send(
                h,
                200,
                body,
                {"Docker-Content-Digest": str(Digest.of(body)), **(headers or {})},
                content_type=mt.OCI_MANIFEST,
            )
        else:
            send(
                h,
                status,
                json.dumps({"errors": [{"code": "UNKNOWN", "message": f"boom {status}"}]}).encode(),
                headers,
            )

    return route


def test_retries_server_errors_then_succeeds(fault_server: FaultServer) -> None:
    fault_server.routes[("GET", "/v2/r/manifests/t")] = manifest_route([500, 503])
    with client(fault_server) as c:
        _, digest = c.get_manifest("r", "t")
    assert digest == MANIFEST_DIGEST
    assert fault_server.hits["/v2/r/manifests/t"] == 3


def test_gives_up_after_retries_with_the_registry_message(fault_server: FaultServer) -> None:
    fault_server.routes[("GET", "/v2/r/manifests/t")] = manifest_route([500] * 10)
    with (
        client(fault_server, retries=2) as c,
        pytest.raises(RegistryUnavailable, match=r"boom 500 \(UNKNOWN\)"),
    ):
        c.get_manifest("r", "t")
    assert fault_server.hits["/v2/r/manifests/t"] == 3


def test_429_honours_retry_after(fault_server: FaultServer) -> None:
    fault_server.routes[("GET", "/v2/r/manifests/t")] = manifest_route([429], {"Retry-After": "1"})
    with client(fault_server) as c:
        start = time.monotonic()
        c.get_manifest("r", "t")
        assert time.monotonic() - start >= 0.95
    fault_server.routes[("GET", "/v2/r/manifests/u")] = manifest_route([429] * 3, {"Retry-After": "3600"})
    with client(fault_server) as c, pytest.raises(TooManyRequests, match="retry after 3600s"):
        c.get_manifest("r", "u")  # no point waiting an hour: fail at once, saying why
    assert fault_server.hits["/v2/r/manifests/u"] == 1


def test_hung_registry_fails_within_the_timeout() -> None:
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(16)  # accepts connections (the kernel does), never answers
        addr = f"127.0.0.1:{lsock.getsockname()[1]}"
        with RegistryClient(addr, insecure=False, timeout=1, connect_timeout=1, retries=1, backoff=0.05) as c:
            start = time.monotonic()
            with pytest.raises(RegistryUnavailable, match=rf"registry {addr} did not answer within 1s"):
                c.get_manifest("r", "t")
            assert time.monotonic() - start < 5


def test_blob_that_stalls_mid_body_times_out(fault_server: FaultServer) -> None:
    def stall(h, server) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(BLOB)))
        h.end_headers()
        h.wfile.write(BLOB[:1000])
        h.wfile.flush()
        server.stop.wait(30)

    fault_server.routes[("GET", f"/v2/r/blobs/{BLOB_DIGEST}")] = stall
    with client(fault_server, timeout=0.5, retries=1) as c, c.open_blob("r", BLOB_DIGEST, len(BLOB)) as r:
        start = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="connection failed"):
            r.read()
        assert time.monotonic() - start < 5


def test_connection_refused_is_one_clear_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with (
            RegistryClient(f"127.0.0.1:{port}", insecure=False, retries=1, backoff=0.01) as c,
            pytest.raises(RegistryUnavailable) as err,
        ):
            c.ping()
    msg = str(err.value)
    assert "cannot reach registry 127.0.0.1" in msg and "refused" in msg.lower() and "\n" not in msg


def _dropping_blob(honour_range: bool, drops: int = 1):
    state = {"drops": drops}

    def route(h, server) -> None:
        rng = h.headers.get("Range")
        start = 0
        if rng and honour_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
        body = BLOB[start:]
        h.send_response(206 if start else 200)
        h.send_header("Content-Length", str(len(body)))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}")
        h.end_headers()
        if state["drops"] > 0:
            state["drops"] -= 1
            h.wfile.write(body[: len(body) // 3])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        h.wfile.write(body)

    return route


def test_dropped_blob_resumes_with_range(fault_server: FaultServer) -> None:
    fault_server.routes[("GET", f"/v2/r/blobs/{BLOB_DIGEST}")] = _dropping_blob(honour_range=True, drops=2)
    with client(fault_server) as c, c.open_blob("r", BLOB_DIGEST, len(BLOB), chunk_size=4096) as r:
        assert r.read() == BLOB
        assert (r.resumes, r.restarts) == (2, 0)
    ranges = [hdrs.get("Range") for m, p, hdrs in fault_server.headers if p.startswith("/v2/r/blobs/")]
    assert ranges[0] is None and all(x and x.startswith("bytes=") for x in ranges[1:])


def test_dropped_blob_restarts_when_range_is_ignored(fault_server: FaultServer) -> None:
    fault_server.routes[("GET", f"/v2/r/blobs/{BLOB_DIGEST}")] = _dropping_blob(honour_range=False)
    with client(fault_server) as c, c.open_blob("r", BLOB_DIGEST, len(BLOB), chunk_size=4096) as r:
        got = b"".join(r)
        assert got == BLOB
        assert (r.resumes, r.restarts) == (1, 1)


def test_corrupt_blob_raises_and_withholds_the_end(fault_server: FaultServer) -> None:
    bad = bytearray(BLOB)
    bad[-1] ^= 0xFF

    def route(h, server) -> None:
        send(h, 200, bytes(bad), content_type="application/octet-stream")

    fault_server.routes[("GET", f"/v2/r/blobs/{BLOB_DIGEST}")] = route
    seen = bytearray()
    with (
        client(fault_server) as c,
        c.open_blob("r", BLOB_DIGEST, len(BLOB), chunk_size=4096) as r,
        pytest.raises(DigestMismatch, match=f"{BLOB_DIGEST}: content hashes to"),
    ):
        for chunk in r:
            seen += chunk
    assert len(seen) < len(BLOB)  # the last bytes never reached the consumer
    with client(fault_server) as c, pytest.raises(DigestMismatch):
        c.get_blob("r", BLOB_DIGEST)


def test_oversized_blob_is_cut_off(fault_server: FaultServer) -> None:
    def route(h, server) -> None:
        send(h, 200, BLOB + b"extra", content_type="application/octet-stream")

    fault_server.routes[("GET", f"/v2/r/blobs/{BLOB_DIGEST}")] = route
    with client(fault_server) as c, pytest.raises(DigestMismatch, match="more than the expected"):
        c.get_blob("r", BLOB_DIGEST, len(BLOB))


def test_manifest_digest_checks(fault_server: FaultServer) -> None:
    other = MANIFEST.replace(b'"layers": []', b'"layers":[]')
    # by digest: the body must hash to it, whatever the headers say
    fault_server.routes[("GET", f"/v2/r/manifests/{MANIFEST_DIGEST}")] = manifest_route([], body=other)
    # by tag: the Docker-Content-Digest header must match the body
    fault_server.routes[("GET", "/v2/r/manifests/lying")] = lambda h, s: send(
        h, 200, MANIFEST, {"Docker-Content-Digest": str(Digest.of(other))}, content_type=mt.OCI_MANIFEST
    )
    with client(fault_server) as c:
        with pytest.raises(DigestMismatch, match="hashes to"):
            c.get_manifest("r", MANIFEST_DIGEST)
        with pytest.raises(DigestMismatch, match="registry says"):
            c.get_manifest("r", "lying")


def test_malformed_manifest(fault_server: FaultServer) -> None:
    broken = b'{"schemaVersion": 2, "mediaType": "' + mt.OCI_MANIFEST.encode() + b'", "config": '
    fault_server.routes[("GET", "/v2/r/manifests/t")] = manifest_route([], body=broken)
    fault_server.routes[("GET", "/v2/r/manifests/huge")] = lambda h, s: send(
        h, 200, b" " * (5 << 20), content_type=mt.OCI_MANIFEST
    )
    with client(fault_server) as c:
        with pytest.raises(InvalidManifest, match="malformed manifest") as err:
            c.get_manifest("r", "t")
        assert isinstance(err.value, ContentError)
        with pytest.raises(InvalidResponse, match="exceeds"):
            c.get_manifest("r", "huge")


def test_registry_error_codes_are_carried(fault_server: FaultServer) -> None:
    with client(fault_server) as c, pytest.raises(NotFoundError) as err:
        c.get_manifest("nope", "t")
    assert err.value.codes == ("NAME_UNKNOWN",)
    assert err.value.status == 404
    assert str(err.value) == (
        f"fetching manifest t of {fault_server.addr}/nope: repository name not known to "
        "registry (NAME_UNKNOWN)"
    )


def test_not_a_registry(fault_server: FaultServer) -> None:
    fault_server.routes[("GET", "/v2/")] = lambda h, s: send(h, 404, b"not found", content_type="text/plain")
    with (
        client(fault_server) as c,
        pytest.raises(InvalidResponse, match="does not serve the registry API v2"),
    ):
        c.ping()


def _paginated_tags(all_tags: list[str]):
    def route(h, server) -> None:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
        n = int(q.get("n", ["1000"])[0])
        last = q.get("last", [""])[0]
        rest = [t for t in all_tags if t > last]
        page = rest[:n]
        headers = {}
        if len(rest) > n:
            headers["Link"] = f'</v2/r/tags/list?n={n}&last={urllib.parse.quote(page[-1])}>; rel="next"'
        send(h, 200, json.dumps({"name": "r", "tags": page}).encode(), headers)

    return route


def test_tags_follow_link_pagination(fault_server: FaultServer) -> None:
    names = sorted(f"v{i:03d}" for i in range(23))
    fault_server.routes[("GET", "/v2/r/tags/list")] = _paginated_tags(names)
    with client(fault_server) as c:
        gen = c.tags("r", page_size=10)
        assert isinstance(gen, Iterator)
        assert list(gen) == names
    assert fault_server.hits["/v2/r/tags/list"] == 3


def test_many_threads_share_one_token_and_pool(fault_server: FaultServer) -> None:
    fault_server.routes[("GET", f"/v2/r/blobs/{BLOB_DIGEST}")] = lambda h, s: send(
        h, 200, BLOB, content_type="application/octet-stream"
    )
    out: list[bytes] = []
    with client(fault_server) as c:
        threads = [
            threading.Thread(target=lambda: out.append(c.get_blob("r", BLOB_DIGEST))) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert out == [BLOB] * 8
    assert fault_server.hits["/v2/"] == 1  # the registry was probed once


class UploadServer:
    """Chunked uploads as the spec describes them, strictly: a minimum chunk length, a new Location
    after every PATCH, Content-Range checked against what was received."""

    def __init__(self, server: FaultServer, min_chunk: int) -> None:
        self.min_chunk = min_chunk
        self.received = bytearray()
        self.patches: list[int] = []
        self.blobs: dict[str, bytes] = {}
        self.session = 0
        server.routes[("POST", "/v2/r/blobs/uploads/")] = self.post
        server.routes[("PATCH", "/v2/r/blobs/uploads/*")] = self.patch
        server.routes[("PUT", "/v2/r/blobs/uploads/*")] = self.put
        server.routes[("HEAD", "/v2/r/blobs/*")] = lambda h, s: send(h, 404, b"")

    def _location(self) -> str:
        self.session += 1
        return f"/v2/r/blobs/uploads/s{self.session}?_state=opaque{self.session}"

    def post(self, h, server) -> None:
        send(
            h,
            202,
            b"",
            {"Location": self._location(), "OCI-Chunk-Min-Length": str(self.min_chunk), "Range": "0-0"},
        )

    def patch(self, h, server) -> None:
        assert f"_state=opaque{self.session}" in h.path, "the client must use the last Location"
        data = h.rfile.read(int(h.headers["Content-Length"]))
        start, end = map(int, h.headers["Content-Range"].split("-"))
        if start != len(self.received) or end - start + 1 != len(data):
            return send(h, 416, b"", {"Range": f"0-{len(self.received) - 1}"})
        self.received += data
        self.patches.append(len(data))
        send(h, 202, b"", {"Location": self._location(), "Range": f"0-{len(self.received) - 1}"})

    def put(self, h, server) -> None:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
        assert q["_state"] == [f"opaque{self.session}"]
        n = int(h.headers.get("Content-Length") or 0)
        self.received += h.rfile.read(n)
        digest = q["digest"][0]
        if Digest.of(bytes(self.received)) != digest:
            return send(
                h, 400, json.dumps({"errors": [{"code": "DIGEST_INVALID", "message": "no"}]}).encode()
            )
        self.blobs[digest] = bytes(self.received)
        send(h, 201, b"", {"Location": f"/v2/r/blobs/{digest}", "Docker-Content-Digest": digest})


def test_chunked_upload_honours_min_length_and_location(fault_server: FaultServer) -> None:
    up = UploadServer(fault_server, min_chunk=300_000)
    with client(fault_server) as c:
        assert c.upload_blob("r", BLOB, BLOB_DIGEST, chunk_size=1000) == "uploaded"
    assert up.blobs[BLOB_DIGEST] == BLOB
    assert up.patches[:-1] and all(n == 300_000 for n in up.patches[:-1])
    assert sum(up.patches) == len(BLOB)


def test_retry_of_a_monolithic_upload_after_a_server_error(fault_server: FaultServer) -> None:
    up = UploadServer(fault_server, min_chunk=0)
    calls = {"n": 0}
    real_put = up.put

    def flaky_put(h, server) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            h.rfile.read(int(h.headers.get("Content-Length") or 0))
            return send(h, 503, b"")
        real_put(h, server)

    fault_server.routes[("PUT", "/v2/r/blobs/uploads/*")] = flaky_put
    with client(fault_server) as c:
        assert c.upload_blob("r", BLOB, BLOB_DIGEST) == "uploaded"
    assert up.blobs[BLOB_DIGEST] == BLOB and calls["n"] == 2
