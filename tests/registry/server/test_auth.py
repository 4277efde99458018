"""htpasswd Basic auth, bearer tokens from our own /token realm, read-only mode, TLS."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.registry.server.conftest import errors_of, htpasswd_file, image_manifest, put_manifest
from tests.support import peers


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return htpasswd_file(tmp_path_factory.mktemp("auth") / "htpasswd",
                         {"alice": "wonderland", "reader": "onlylooks"})


@pytest.fixture(scope="module")
def basic_server(tmp_path_factory: pytest.TempPathFactory, users: Path) -> Iterator[str]:
    cfg = tmp_path_factory.mktemp("basic") / "registry.toml"
    cfg.write_text('[registry]\nreaders = ["reader"]\n')
    with peers.pallet_registry(cfg.parent, htpasswd=users, config=cfg) as addr:
        yield addr


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory, users: Path) -> Iterator[str]:
    cfg = tmp_path_factory.mktemp("token") / "registry.toml"
    cfg.write_text('readers = ["reader"]\ntoken-ttl = 2\n')
    with peers.pallet_registry(cfg.parent, htpasswd=users, auth="token", anonymous_pull=True,
                               config=cfg) as addr:
        yield addr


def test_basic_auth(basic_server: str) -> None:
    base = f"http://{basic_server}"
    r = httpx.get(f"{base}/v2/")
    assert r.status_code == 401 and errors_of(r) == ["UNAUTHORIZED"]
    assert r.headers["www-authenticate"].startswith("Basic realm=")
    r = httpx.get(f"{base}/v2/", auth=("alice", "wrong"))
    assert r.status_code == 401 and errors_of(r) == ["UNAUTHORIZED"]
    r = httpx.get(f"{base}/v2/", auth=("mallory", "wonderland"))
    assert r.status_code == 401
    assert httpx.get(f"{base}/v2/", auth=("alice", "wonderland")).status_code == 200
    with httpx.Client(base_url=base, auth=("alice", "wonderland")) as c:
        raw = image_manifest(c, "secure/app")
        assert put_manifest(c, "secure/app", "v1", raw).status_code == 201
    assert httpx.get(f"{base}/v2/secure/app/manifests/v1").status_code == 401  # no anonymous pull
    with httpx.Client(base_url=base, auth=("reader", "onlylooks")) as c:
        assert c.get("/v2/secure/app/manifests/v1").status_code == 200
        r = c.post("/v2/secure/app/blobs/uploads/")
        assert r.status_code == 403 and errors_of(r) == ["DENIED"]
        r = c.delete("/v2/secure/app/manifests/v1")
        assert r.status_code == 403 and errors_of(r) == ["DENIED"]
    r = httpx.get(f"{base}/v2/", headers={"authorization": "Basic !!!notbase64"})
    assert r.status_code == 401


def test_skopeo_with_basic_auth(basic_server: str, small_layout: Path, tmp_path: Path) -> None:
    dest = f"docker://{basic_server}/auth/small:1"
    with pytest.raises(subprocess.CalledProcessError) as e:
        peers.skopeo_copy(f"oci:{small_layout}:latest", dest, "--dest-creds", "alice:wrong")
    assert "unauthorized" in e.value.stderr.lower() or "401" in e.value.stderr
    peers.skopeo_copy(f"oci:{small_layout}:latest", dest, "--dest-creds", "alice:wonderland")
    peers.skopeo_copy(dest, f"oci:{tmp_path / 'back'}:x", "--src-creds", "reader:onlylooks")
    assert (tmp_path / "back" / "index.json").exists()


def _token(base: str, scope: str, auth: tuple[str, str] | None = None) -> str:
    r = httpx.get(f"{base}/token", params={"service": "pallet-registry", "scope": scope}, auth=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 2
    return body["token"]


def test_bearer_tokens(token_server: str) -> None:
    base = f"http://{token_server}"
    r = httpx.get(f"{base}/v2/")
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and f'realm="{base}/token"' in challenge
    assert 'service="pallet-registry"' in challenge
    r = httpx.post(f"{base}/v2/tok/app/blobs/uploads/")
    assert r.status_code == 401 and 'scope="repository:tok/app:pull,push"' in r.headers["www-authenticate"]
    # wrong password at the token endpoint
    r = httpx.get(f"{base}/token", params={"scope": "repository:tok/app:pull,push"}, auth=("alice", "nope"))
    assert r.status_code == 401 and errors_of(r) == ["UNAUTHORIZED"]
    push = _token(base, "repository:tok/app:pull,push", ("alice", "wonderland"))
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {push}"}) as c:
        raw = image_manifest(c, "tok/app")
        assert put_manifest(c, "tok/app", "v1", raw).status_code == 201
        # the token names one repository: another needs another token
        r = c.post("/v2/tok/other/blobs/uploads/")
        assert r.status_code == 401 and 'error="insufficient_scope"' in r.headers["www-authenticate"]
    # anonymous pull is on: a token without credentials pulls, but cannot push
    anon = _token(base, "repository:tok/app:pull,push")
    claims = json.loads(base64.urlsafe_b64decode(anon.split(".")[1] + "=="))
    assert claims["access"] == [{"type": "repository", "name": "tok/app", "actions": ["pull"]}]
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {anon}"}) as c:
        assert c.get("/v2/tok/app/manifests/v1").status_code == 200
        r = c.post("/v2/tok/app/blobs/uploads/")
        assert r.status_code == 401 and errors_of(r) == ["UNAUTHORIZED"]
    # a known user asking for more than allowed: the refusal is final (403), not "log in"
    ro = _token(base, "repository:tok/app:pull,push", ("reader", "onlylooks"))
    r = httpx.post(f"{base}/v2/tok/app/blobs/uploads/", headers={"authorization": f"Bearer {ro}"})
    assert r.status_code == 403 and errors_of(r) == ["DENIED"]
    # a forged token (signature of another key) and a tampered one
    header, _payload, sig = push.split(".")
    forged = ".".join([header, base64.urlsafe_b64encode(json.dumps(
        {**claims, "access": [{"type": "repository", "name": "tok/app", "actions": ["push"]}]}).encode()
    ).decode().rstrip("="), sig])
    r = httpx.post(f"{base}/v2/tok/app/blobs/uploads/", headers={"authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    # expiry (token-ttl = 2 s)
    time.sleep(3)
    r = httpx.get(f"{base}/v2/tok/app/manifests/v1", headers={"authorization": f"Bearer {push}"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert "expired" in r.json()["errors"][0]["message"]


def test_catalog_needs_a_login_with_tokens(token_server: str) -> None:
    base = f"http://{token_server}"
    tok = _token(base, "registry:catalog:*", ("alice", "wonderland"))
    r = httpx.get(f"{base}/v2/_catalog", headers={"authorization": f"Bearer {tok}"})
    assert r.status_code == 200 and "repositories" in r.json()
    anon = _token(base, "registry:catalog:*")
    assert httpx.get(f"{base}/v2/_catalog", headers={"authorization": f"Bearer {anon}"}).status_code == 401


def test_skopeo_through_the_token_flow(token_server: str, small_layout: Path, tmp_path: Path) -> None:
    """skopeo does what docker does: 401 → GET /token with Basic → Bearer on every request."""
    dest = f"docker://{token_server}/tok/small:1"
    peers.skopeo_copy(f"oci:{small_layout}:latest", dest, "--dest-creds", "alice:wonderland")
    peers.skopeo_copy(dest, f"oci:{tmp_path / 'anon'}:x")  # anonymous pull
    with pytest.raises(subprocess.CalledProcessError):
        peers.skopeo_copy(f"oci:{small_layout}:latest", f"docker://{token_server}/tok/nope:1")


def test_read_only(tmp_path: Path, small_layout: Path) -> None:
    data = tmp_path / "ro"
    with peers.pallet_registry(data) as addr:
        peers.skopeo_copy(f"oci:{small_layout}:latest", f"docker://{addr}/ro/small:1")
    with peers.pallet_registry(data, read_only=True) as addr:
        with httpx.Client(base_url=f"http://{addr}") as c:
            assert c.get("/v2/ro/small/manifests/1").status_code == 200
            for method, url in (("POST", "/v2/ro/small/blobs/uploads/"),
                                ("DELETE", "/v2/ro/small/manifests/1"),
                                ("PUT", "/v2/ro/small/manifests/2")):
                r = c.request(method, url, content=b"{}")
                assert r.status_code == 405 and errors_of(r) == ["UNSUPPORTED"], method
        peers.skopeo_copy(f"docker://{addr}/ro/small:1", f"oci:{tmp_path / 'out'}:x")


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_tls(tmp_path: Path, small_layout: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with peers.pallet_registry(tmp_path / "tls", tls=(cert, key)) as addr:
        ca = ssl.create_default_context(cafile=str(cert))
        r = httpx.get(f"https://{addr}/v2/", verify=ca)
        assert r.status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://{addr}/v2/")  # not a CA the system trusts
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"http://{addr}/v2/")  # plain HTTP to a TLS port
        certs = tmp_path / "certs.d"
        certs.mkdir()
        (certs / "ca.crt").write_bytes(cert.read_bytes())
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-cert-dir", str(certs),
                        f"oci:{small_layout}:latest",
                        f"docker://{addr}/tls/small:1"], check=True, capture_output=True)
        r = httpx.get(f"https://{addr}/v2/tls/small/tags/list", verify=ca)
        assert r.json()["tags"] == ["1"]
