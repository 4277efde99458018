"""Servers the registry client is tested against: docker-registry with htpasswd, TLS and token auth,
a token server signing distribution's JWTs, and fault-injecting HTTP servers. All on loopback."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pallet.content import Digest, parse
from tests.support import peers

USER, PASSWORD = "alice", "s3cret-pw"


# -- certificates ---------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path, name: str = "pallet-test-ca") -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    crt, key = d / f"{name}.crt", d / f"{name}.key"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        str(key),
        "-out",
        str(crt),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )
    return crt, key


def make_cert(ca: tuple[Path, Path], d: Path, name: str, *, client: bool = False) -> tuple[Path, Path]:
    """A leaf certificate signed by ``ca``: a server cert for 127.0.0.1, or a client cert."""
    crt, key, csr, ext = d / f"{name}.crt", d / f"{name}.key", d / f"{name}.csr", d / f"{name}.ext"
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr)
    )
    if client:
        ext.write_text("extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n")
    else:
        ext.write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
            "keyUsage=digitalSignature,keyEncipherment\n"
        )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        str(crt),
        "-extfile",
        str(ext),
    )
    return crt, key


# -- docker-registry variants -----------------------------------------------------------------------


def htpasswd_file(path: Path, user: str = USER, password: str = PASSWORD) -> Path:
    res = subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True)
    path.write_text(res.stdout)
    return path


@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("htpasswd-registry")
    with peers.docker_registry(root, htpasswd=htpasswd_file(root / "htpasswd")) as addr:
        yield addr


@dataclass
class TLSRegistry:
    addr: str
    ca_dir: Path  # holds ca.crt only: a cert_dir for the client
    client_cert: tuple[Path, Path] | None = None


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSRegistry]:
    root = tmp_path_factory.mktemp("tls-registry")
    ca = make_ca(root / "ca")
    server = make_cert(ca, root / "ca", "server")
    ca_dir = root / "certs.d"
    ca_dir.mkdir()
    shutil.copy(ca[0], ca_dir / "ca.crt")
    with peers.docker_registry(root / "reg", tls=server) as addr:
        yield TLSRegistry(addr, ca_dir)


@contextlib.contextmanager
def registry_with_client_certs(root: Path) -> Iterator[TLSRegistry]:
    """docker-registry demanding a client certificate signed by its CA (http.tls.clientcas)."""
    ca = make_ca(root / "ca")
    server = make_cert(ca, root / "ca", "server")
    client = make_cert(ca, root / "ca", "client", client=True)
    port = peers.free_port()
    cfg = root / "config.yml"
    cfg.write_text(
        "\n".join(
            [
                "version: 0.1",
                "log: {level: error, accesslog: {disabled: true}}",
                "storage:",
                f"  filesystem: {{rootdirectory: {root / 'data'}}}",
                "http:",
                f"  addr: 127.0.0.1:{port}",
                "  tls:",
                f"    certificate: {server[0]}",
                f"    key: {server[1]}",
                f"    clientcas: [{ca[0]}]",
            ]
        )
        + "\n"
    )
    log = open(root / "registry.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(root / 'registry.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("docker-registry with clientcas did not start")
            time.sleep(0.05)
        certs = root / "certs"
        certs.mkdir()
        shutil.copy(ca[0], certs / "ca.crt")
        shutil.copy(client[0], certs / "client.cert")
        shutil.copy(client[1], certs / "client.key")
        yield TLSRegistry(f"127.0.0.1:{port}", certs, client)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# -- a token server for distribution's token auth ----------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Issues distribution's RS256 JWTs (x5c chain to the registry's rootcertbundle) for a user."""

    key: Path
    cert: Path
    issuer: str = "pallet-test-issuer"
    service: str = "pallet-test-registry"
    user: str = USER
    password: str = PASSWORD
    expires_in: int = 300
    #: seconds added to exp for the next tokens; -200 makes tokens the registry finds expired
    exp_offsets: list[int] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    port: int = 0

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def sign(self, claims: dict) -> str:
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True, capture_output=True
        ).stdout
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(sig)}"

    def issue(self, query: dict[str, list[str]], authorization: str | None) -> tuple[int, dict]:
        account = ""
        if authorization:
            scheme, _, value = authorization.partition(" ")
            user, _, pw = (
                base64.b64decode(value).decode().partition(":") if scheme == "Basic" else ("", "", "")
            )
            if (user, pw) != (self.user, self.password):
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid credentials"}]}
            account = user
        access = []
        for scope in query.get("scope", []):
            for one in scope.split():
                typ, _, rest = one.partition(":")
                name, _, actions = rest.rpartition(":")
                granted = (
                    actions.split(",")
                    if account
                    else [a for a in actions.split(",") if a == "pull" and name.startswith("public/")]
                )
                access.append({"type": typ, "name": name, "actions": granted})
        now = int(time.time())
        offset = self.exp_offsets.pop(0) if self.exp_offsets else 0
        claims = {
            "iss": self.issuer,
            "sub": account,
            "aud": self.service,
            "exp": now + self.expires_in + offset,
            "nbf": now - 10,
            "iat": now,
            "jti": f"{now}-{len(self.requests)}",
            "access": access,
        }
        self.requests.append({"query": query, "account": account})
        return 200, {
            "token": self.sign(claims),
            "expires_in": self.expires_in,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        }


@contextlib.contextmanager
def serve_token_server(ts: TokenServer) -> Iterator[TokenServer]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            status, doc = ts.issue(urllib.parse.parse_qs(url.query), self.headers.get("Authorization"))
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    ts.port = srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield ts
    finally:
        srv.shutdown()
        srv.server_close()


@dataclass
class TokenRegistry:
    addr: str
    tokens: TokenServer


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    root = tmp_path_factory.mktemp("token-registry")
    key, cert = root / "signer.key", root / "signer.crt"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=pallet-token-signer",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    )
    with serve_token_server(TokenServer(key, cert)) as ts:
        cfg = {"realm": ts.realm, "service": ts.service, "issuer": ts.issuer, "rootcertbundle": str(cert)}
        with peers.docker_registry(root / "reg", token=cfg) as addr:
            yield TokenRegistry(addr, ts)


# -- fault-injecting servers ------------------------------------------------------------------------


Route = Callable[[http.server.BaseHTTPRequestHandler, "FaultServer"], None]


class FaultServer:
    """An HTTP server on loopback that answers /v2/ and whatever routes a test installs.

    ``routes[(method, path)]`` is called with the handler; ``hits`` counts requests per path.
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.hits: dict[str, int] = {}
        self.headers: list[tuple[str, str, dict[str, str]]] = []
        self.stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def _dispatch(self, method: str) -> None:
                path = urllib.parse.urlsplit(self.path).path
                server.hits[path] = server.hits.get(path, 0) + 1
                server.headers.append((method, self.path, dict(self.headers)))
                route = server.routes.get((method, path))
                if route is None:  # a prefix route: ("PATCH", "/v2/r/blobs/uploads/*")
                    route = next(
                        (
                            r
                            for (m, p), r in server.routes.items()
                            if m == method and p.endswith("*") and path.startswith(p[:-1])
                        ),
                        None,
                    )
                if route is None and path == "/v2/":
                    return send(self, 200, b"{}")
                if route is None:
                    return send(
                        self,
                        404,
                        json.dumps(
                            {
                                "errors": [
                                    {
                                        "code": "NAME_UNKNOWN",
                                        "message": "repository name not known to registry",
                                    }
                                ]
                            }
                        ).encode(),
                    )
                route(self, server)

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_HEAD(self) -> None:
                self._dispatch("HEAD")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_PATCH(self) -> None:
                self._dispatch("PATCH")

            def do_PUT(self) -> None:
                self._dispatch("PUT")

            def do_DELETE(self) -> None:
                self._dispatch("DELETE")

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.addr = f"127.0.0.1:{self.srv.server_address[1]}"
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.srv.shutdown()
        self.srv.server_close()


def send(
    h: http.server.BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> None:
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    s = FaultServer()
    try:
        yield s
    finally:
        s.close()


# -- the small refimage as blobs -------------------------------------------------------------------


@dataclass
class Layout:
    """An OCI layout read as the blobs and manifest a push needs."""

    path: Path
    manifest_raw: bytes
    manifest_digest: Digest
    media_type: str

    def blob(self, digest: str) -> bytes:
        return (self.path / "blobs" / digest.replace(":", "/")).read_bytes()

    @property
    def manifest(self):
        return parse(self.manifest_raw, self.media_type)

    def descriptors(self):
        m = self.manifest
        return [m.config, *m.layers]


@pytest.fixture(scope="session")
def small(small_layout: Path) -> Layout:
    index = json.loads((small_layout / "index.json").read_text())
    top = index["manifests"][0]
    raw = (small_layout / "blobs" / top["digest"].replace(":", "/")).read_bytes()
    return Layout(small_layout, raw, Digest(top["digest"]), top["mediaType"])
