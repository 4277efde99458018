"""The client against Debian's docker-registry (CNCF distribution 2.8), and skopeo on the other end."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from pallet.config.auth import Credentials
from pallet.content import Digest, canonical_json
from pallet.content import mediatypes as mt
from pallet.errors import DigestMismatch, NotFound, RegistryError
from pallet.registry.client import (
    AuthenticationError,
    NotFoundError,
    RegistryClient,
    RegistryUnavailable,
)
from tests.registry.client.conftest import PASSWORD, USER, Layout, registry_with_client_certs
from tests.support import peers

pytestmark = pytest.mark.peer


def push_layout(client: RegistryClient, repo: str, layout: Layout, tag: str = "latest", **kw) -> list[str]:
    results = [
        client.upload_blob(repo, layout.blob(d.digest), d.digest, d.size, **kw) for d in layout.descriptors()
    ]
    assert client.put_manifest(repo, tag, layout.manifest_raw, layout.media_type) == layout.manifest_digest
    return results


def skopeo_pull_digest(ref: str, dest: Path, *extra: str) -> str:
    peers.skopeo_copy(f"docker://{ref}", f"oci:{dest}:x", *extra)
    index = json.loads((dest / "index.json").read_text())
    return index["manifests"][0]["digest"]


def test_plain_http_loopback_push_then_skopeo_pulls_intact(
    registry: str, small: Layout, tmp_path: Path
) -> None:
    with RegistryClient(registry) as c:
        assert push_layout(c, "ic/mono", small) == ["uploaded"] * len(small.descriptors())
        assert c.scheme == "http"
        # a second push finds every blob already there
        assert push_layout(c, "ic/mono", small) == ["exists"] * len(small.descriptors())
    got = skopeo_pull_digest(f"{registry}/ic/mono:latest", tmp_path / "out")
    assert got == small.manifest_digest
    for d in small.descriptors():
        assert (tmp_path / "out/blobs" / d.digest.replace(":", "/")).read_bytes() == small.blob(d.digest)


def test_chunked_push_is_what_skopeo_pulls(registry: str, small: Layout, tmp_path: Path) -> None:
    with RegistryClient(registry) as c:
        biggest = max(small.descriptors(), key=lambda d: d.size)
        assert biggest.size > 3 * 65536  # several PATCHes
        push_layout(c, "ic/chunked", small, chunk_size=65536)
    assert skopeo_pull_digest(f"{registry}/ic/chunked:latest", tmp_path / "out") == small.manifest_digest
    assert (tmp_path / "out/blobs" / biggest.digest.replace(":", "/")).read_bytes() == small.blob(
        biggest.digest
    )


def test_streamed_file_upload_and_wrong_digest_refused(registry: str, small: Layout, tmp_path: Path) -> None:
    layer = small.manifest.layers[0]
    src = small.path / "blobs" / layer.digest.replace(":", "/")
    with RegistryClient(registry) as c:
        with open(src, "rb") as f:
            assert c.upload_blob("ic/stream", f, layer.digest, layer.size) == "uploaded"
        assert c.blob_exists("ic/stream", layer.digest)
        bogus = Digest.of(b"something else")
        with pytest.raises(DigestMismatch), open(src, "rb") as f:
            c.upload_blob("ic/stream", f, bogus, layer.size)
        with pytest.raises(DigestMismatch):
            c.upload_blob("ic/stream", small.blob(layer.digest), bogus, chunk_size=100_000)
        assert not c.blob_exists("ic/stream", bogus)


def test_cross_repository_mount(registry: str, small: Layout) -> None:
    with RegistryClient(registry) as c:
        push_layout(c, "ic/mount-src", small)
        layer = small.manifest.layers[0]
        assert (
            c.upload_blob("ic/mount-dst", small.blob(layer.digest), layer.digest, mount_from="ic/mount-src")
            == "mounted"
        )
        assert c.blob_exists("ic/mount-dst", layer.digest)


def test_pull_what_skopeo_pushed(registry: str, small: Layout) -> None:
    peers.skopeo_copy(f"oci:{small.path}:latest", f"docker://{registry}/ic/from-skopeo:v1")
    with RegistryClient(registry) as c:
        manifest, digest, index_digest = c.resolve_image("ic/from-skopeo", "v1")
        assert index_digest is None
        assert c.head_manifest("ic/from-skopeo", "v1").digest == digest
        # skopeo may rewrite the manifest, but the layers it points to are the layout's
        assert [layer.digest for layer in manifest.layers] == [
            layer.digest for layer in small.manifest.layers
        ]
        for d in [manifest.config, *manifest.layers]:
            with c.open_blob("ic/from-skopeo", d.digest, d.size) as r:
                assert r.read() == small.blob(d.digest)
        # by digest: verified against the digest asked for
        again, d2 = c.get_manifest("ic/from-skopeo", digest)
        assert d2 == digest and again.raw == manifest.raw


def test_index_platform_choice(registry: str, small: Layout) -> None:
    m = small.manifest
    entry = {"mediaType": small.media_type, "digest": small.manifest_digest, "size": len(small.manifest_raw)}
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {**entry, "platform": {"os": "linux", "architecture": "amd64"}},
                {**entry, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            ],
        }
    )
    with RegistryClient(registry) as c:
        push_layout(c, "ic/multi", small, tag="single")
        index_digest = c.put_manifest("ic/multi", "latest", index, mt.OCI_INDEX)
        res = c.resolve_image("ic/multi", "latest", "linux/arm64")
        assert (res.digest, res.index_digest) == (small.manifest_digest, index_digest)
        assert res.manifest.config.digest == m.config.digest
        with pytest.raises(NotFoundError, match=r"no image for platform linux/s390x .*linux/amd64"):
            c.resolve_image("ic/multi", "latest", "linux/s390x")


def test_tags_catalog_and_delete(tmp_path: Path, small: Layout) -> None:
    with peers.docker_registry(tmp_path / "reg") as addr, RegistryClient(addr) as c:
        push_layout(c, "ic/a", small, tag="t0")
        for i in range(1, 12):
            c.put_manifest("ic/a", f"t{i}", small.manifest_raw, small.media_type)
        assert sorted(c.tags("ic/a", page_size=5)) == sorted(f"t{i}" for i in range(12))
        for name in ("ic/b", "ic/c", "ic/d", "ic/e"):
            for d in small.descriptors():
                c.upload_blob(name, small.blob(d.digest), d.digest, mount_from="ic/a")
            c.put_manifest(name, "x", small.manifest_raw, small.media_type)
        # distribution paginates the catalog with n/last and a Link header
        assert list(c.catalog(page_size=2)) == ["ic/a", "ic/b", "ic/c", "ic/d", "ic/e"]
        c.delete_manifest("ic/b", small.manifest_digest)
        with pytest.raises(NotFoundError) as err:
            c.get_manifest("ic/b", "x")
        assert "MANIFEST_UNKNOWN" in err.value.codes and isinstance(err.value, NotFound)
        c.delete_blob("ic/c", small.manifest.layers[0].digest)
        assert not c.blob_exists("ic/c", small.manifest.layers[0].digest)
        with pytest.raises(NotFoundError, match="NAME_UNKNOWN"):
            list(c.tags("ic/nothing-here"))


def test_parallel_blob_downloads_share_one_client(registry: str, small: Layout) -> None:
    with RegistryClient(registry) as c:
        push_layout(c, "ic/parallel", small)
        results: dict[str, bytes] = {}
        errors: list[BaseException] = []

        def fetch(d) -> None:
            try:
                with c.open_blob("ic/parallel", d.digest, d.size) as r:
                    results[d.digest] = b"".join(r)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=fetch, args=(d,)) for d in small.descriptors() * 3]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert all(results[d.digest] == small.blob(d.digest) for d in small.descriptors())


# -- authentication ------------------------------------------------------------------------------


def test_htpasswd_basic_auth(htpasswd_registry: str, small: Layout) -> None:
    with RegistryClient(htpasswd_registry, auth=Credentials(USER, PASSWORD)) as c:
        c.check_login()
        push_layout(c, "ic/basic", small)
        assert list(c.tags("ic/basic")) == ["latest"]
    with (
        RegistryClient(htpasswd_registry, auth=Credentials(USER, "wrong")) as c,
        pytest.raises(AuthenticationError, match="invalid username/password"),
    ):
        c.check_login()
    with (
        RegistryClient(htpasswd_registry, auth=Credentials(USER, "wrong")) as c,
        pytest.raises(AuthenticationError, match="invalid username/password"),
    ):
        c.get_manifest("ic/basic", "latest")
    with RegistryClient(htpasswd_registry, auth=Credentials()) as c, pytest.raises(AuthenticationError):
        c.get_manifest("ic/basic", "latest")


def test_credentials_come_from_the_auth_file(htpasswd_registry: str, small: Layout, tmp_path: Path) -> None:
    from pallet.config import auth
    from pallet.context import Context

    ctx = Context(auth_file=tmp_path / "auth.json")
    with RegistryClient(htpasswd_registry, ctx, auth=Credentials(USER, PASSWORD)) as c:
        push_layout(c, "ic/from-file", small)
    auth.store(f"{htpasswd_registry}/ic", Credentials(USER, PASSWORD), ctx)
    with RegistryClient(htpasswd_registry, ctx) as c:
        assert c.get_manifest("ic/from-file", "latest")[1] == small.manifest_digest


def test_bearer_token_flow(token_registry, small: Layout) -> None:
    ts = token_registry.tokens
    with RegistryClient(token_registry.addr, auth=Credentials(USER, PASSWORD)) as c:
        c.check_login()
        push_layout(c, "ic/token", small)
        before = c.token_fetches
        assert c.get_manifest("ic/token", "latest")[1] == small.manifest_digest
        assert c.get_manifest("ic/token", small.manifest_digest)[1] == small.manifest_digest
        assert c.token_fetches == before + 1  # one pull token, cached for the second request
        assert "ic" in {r.split("/")[0] for r in c.catalog()}
    scopes = [s for r in ts.requests for s in r["query"].get("scope", [])]
    assert "repository:ic/token:pull,push" in scopes and "registry:catalog:*" in scopes
    assert all(r["query"].get("service") == [ts.service] for r in ts.requests)
    with (
        RegistryClient(token_registry.addr, auth=Credentials(USER, "nope")) as c,
        pytest.raises(AuthenticationError, match="invalid username/password"),
    ):
        c.get_manifest("ic/token", "latest")
    with (
        RegistryClient(token_registry.addr, auth=Credentials()) as c,
        pytest.raises(AuthenticationError, match="authentication required"),
    ):
        c.get_manifest("ic/token", "latest")


def test_bearer_token_refresh(token_registry, small: Layout) -> None:
    ts = token_registry.tokens
    with RegistryClient(token_registry.addr, auth=Credentials(USER, PASSWORD)) as c:
        push_layout(c, "ic/refresh", small)
    # the registry finds the first token expired (401): the client fetches a new one and goes on
    ts.exp_offsets[:] = [-ts.expires_in - 200]
    with RegistryClient(token_registry.addr, auth=Credentials(USER, PASSWORD)) as c:
        n = len(ts.requests)
        assert c.get_manifest("ic/refresh", "latest")[1] == small.manifest_digest
        assert len(ts.requests) == n + 2
    # expires_in runs out on our side: the next request fetches a fresh token first
    ts.expires_in = 1
    try:
        with RegistryClient(token_registry.addr, auth=Credentials(USER, PASSWORD)) as c:
            c.get_manifest("ic/refresh", "latest")
            n = c.token_fetches
            import time

            time.sleep(1.1)
            c.get_manifest("ic/refresh", "latest")
            assert c.token_fetches == n + 1
    finally:
        ts.expires_in = 300


# -- TLS -------------------------------------------------------------------------------------------


def test_tls_with_certs_dir(tls_registry, small: Layout, tmp_path: Path) -> None:
    from pallet.context import Context

    with RegistryClient(tls_registry.addr, Context(cert_dir=tls_registry.ca_dir)) as c:
        push_layout(c, "ic/tls", small)
        assert c.scheme == "https"
    # without the CA: refused with a message that says what to do, and no silent fallback to HTTP
    with (
        RegistryClient(tls_registry.addr, Context(cert_dir=tmp_path)) as c,
        pytest.raises(RegistryUnavailable, match=r"not trusted.*certs\.d"),
    ):
        c.ping()
    # tls_verify=False: no verification (as podman --tls-verify=false)
    with RegistryClient(tls_registry.addr, Context(cert_dir=tmp_path), tls_verify=False) as c:
        assert c.get_manifest("ic/tls", "latest")[1] == small.manifest_digest
        assert c.scheme == "https"
    # skopeo, given the same CA directory, reads what we pushed
    out = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--cert-dir",
            str(tls_registry.ca_dir),
            f"docker://{tls_registry.addr}/ic/tls:latest",
        ],
        capture_output=True,
        check=True,
    )
    assert Digest.of(out.stdout) == small.manifest_digest


def test_tls_verify_true_refuses_plain_http(registry: str) -> None:
    with (
        RegistryClient(registry, tls_verify=True, retries=0) as c,
        pytest.raises(RegistryUnavailable, match=r"does not speak TLS.*--tls-verify=false"),
    ):
        c.ping()


@pytest.mark.slow
def test_tls_client_certificate(tmp_path: Path, small: Layout) -> None:
    from pallet.context import Context

    with registry_with_client_certs(tmp_path) as reg:
        with RegistryClient(reg.addr, Context(cert_dir=reg.ca_dir)) as c:
            push_layout(c, "ic/mtls", small)
        only_ca = tmp_path / "only-ca"
        only_ca.mkdir()
        (only_ca / "ca.crt").write_bytes((reg.ca_dir / "ca.crt").read_bytes())
        with (
            RegistryClient(reg.addr, Context(cert_dir=only_ca), retries=0) as c,
            pytest.raises(RegistryError),
        ):
            c.ping()


def test_referrers_fall_back_to_the_tag_schema(registry: str, small: Layout) -> None:
    """distribution 2.8 has no referrers API: the client reads the ``sha256-HEX`` tag index instead."""
    subject = {
        "mediaType": small.media_type,
        "digest": small.manifest_digest,
        "size": len(small.manifest_raw),
    }
    empty = b"{}"
    with RegistryClient(registry) as c:
        push_layout(c, "ic/referred", small)
        assert c.referrers("ic/referred", small.manifest_digest) == []
        c.upload_blob("ic/referred", empty, Digest.of(empty))
        sbom = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "artifactType": "application/vnd.example.sbom",
                "config": {"mediaType": mt.OCI_EMPTY, "digest": Digest.of(empty), "size": 2},
                "layers": [],
                "subject": subject,
            }
        )
        sbom_digest = c.put_manifest("ic/referred", Digest.of(sbom), sbom, mt.OCI_MANIFEST)
        tag_index = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": mt.OCI_MANIFEST,
                        "digest": sbom_digest,
                        "size": len(sbom),
                        "artifactType": "application/vnd.example.sbom",
                    }
                ],
            }
        )
        c.put_manifest("ic/referred", f"sha256-{small.manifest_digest.encoded}", tag_index, mt.OCI_INDEX)
        found = c.referrers("ic/referred", small.manifest_digest)
        assert [d.digest for d in found] == [sbom_digest]
        assert c.referrers("ic/referred", small.manifest_digest, "application/vnd.example.sig") == []
