"""Fixtures for the registry server's tests: a real `pallet registry serve` on loopback, httpx."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import peers

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One open (no auth) server shared by the API tests; each test uses its own repositories."""
    with peers.pallet_registry(tmp_path_factory.mktemp("pallet-registry")) as addr:
        yield addr


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server}", timeout=30) as c:
        yield c


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test uses."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60].strip("-")
    return f"t/{slug}"


def push_blob(c: httpx.Client, repo: str, data: bytes) -> str:
    digest = sha256(data)
    r = c.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    r = c.put(r.headers["location"], params={"digest": digest}, content=data,
              headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return digest


def image_manifest(c: httpx.Client, repo: str, layers: list[bytes] | None = None, *,
                   media_type: str = OCI_MANIFEST, extra: dict | None = None) -> bytes:
    """Push a config and layers; return manifest bytes referencing them (not pushed)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
                        ).encode()
    cfg_digest = push_blob(c, repo, config)
    layer_descs = []
    for data in layers if layers is not None else [b"layer-" + repo.encode()]:
        layer_descs.append({"mediaType": OCI_LAYER if media_type == OCI_MANIFEST else
                            "application/vnd.docker.image.rootfs.diff.tar.gzip",
                            "digest": push_blob(c, repo, data), "size": len(data)})
    doc = {"schemaVersion": 2, "mediaType": media_type,
           "config": {"mediaType": OCI_CONFIG if media_type == OCI_MANIFEST else
                      "application/vnd.docker.container.image.v1+json",
                      "digest": cfg_digest, "size": len(config)},
           "layers": layer_descs}
    doc.update(extra or {})
    return json.dumps(doc, indent=1).encode()


def put_manifest(c: httpx.Client, repo: str, ref: str, raw: bytes, media_type: str = OCI_MANIFEST,
                 **kw: object) -> httpx.Response:
    return c.put(f"/v2/{repo}/manifests/{ref}", content=raw, headers={"content-type": media_type}, **kw)


def errors_of(r: httpx.Response) -> list[str]:
    return [e["code"] for e in r.json()["errors"]]


def htpasswd_file(path: Path, users: dict[str, str]) -> Path:
    """An htpasswd file made by Apache's htpasswd (bcrypt), not by us."""
    import subprocess

    for i, (user, password) in enumerate(users.items()):
        args = ["htpasswd", "-B", "-b", "-C", "4"] + (["-c"] if i == 0 else []) + [str(path), user, password]
        subprocess.run(args, check=True, capture_output=True)
    return path
