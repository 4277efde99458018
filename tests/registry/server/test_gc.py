"""`pallet registry gc`: mark and sweep over a store a real server wrote."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import httpx

from tests.registry.server.conftest import image_manifest, push_blob, put_manifest, sha256
from tests.support import peers


def gc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pallet.cli.main", "registry", "gc", "--root", str(root),
                           *args],
                          capture_output=True, text=True, timeout=60)


def blob_path(root: Path, digest: str) -> Path:
    hexd = digest.split(":")[1]
    return root / "blobs" / "sha256" / hexd[:2] / hexd


def test_gc_sweeps_only_unreferenced_blobs_and_stale_uploads(tmp_path: Path, small_layout: Path) -> None:
    data = tmp_path / "data"
    with peers.pallet_registry(tmp_path) as addr, httpx.Client(base_url=f"http://{addr}") as c:
        peers.skopeo_copy(f"oci:{small_layout}:latest", f"docker://{addr}/gc/kept:1")
        kept = c.get("/v2/gc/kept/manifests/1",
                     headers={"accept": "application/vnd.oci.image.manifest.v1+json"})
        kept_blobs = [kept.json()["config"]["digest"], *[d["digest"] for d in kept.json()["layers"]]]
        # an image whose manifest is then deleted, and a blob nobody references
        raw = image_manifest(c, "gc/dropped", [b"only in the dropped image"])
        put_manifest(c, "gc/dropped", "1", raw)
        assert c.delete(f"/v2/gc/dropped/manifests/{sha256(raw)}").status_code == 202
        orphan = push_blob(c, "gc/orphan", b"never referenced")
        # the dropped image's layer, linked into another repository too: no manifest refers to it
        shared = push_blob(c, "gc/orphan", b"only in the dropped image")
        stale = c.post("/v2/gc/orphan/blobs/uploads/").headers["location"].rsplit("/", 1)[1]
        c.patch(f"/v2/gc/orphan/blobs/uploads/{stale}", content=b"half an upload")
    assert blob_path(data, orphan).exists()
    # a fresh push is protected by the grace period
    r = gc(data)
    assert r.returncode == 0, r.stderr
    assert "0 blobs" in r.stdout and blob_path(data, orphan).exists()
    dry = gc(data, "--grace", "0", "--upload-max-age", "0", "--dry-run")
    assert dry.returncode == 0
    assert f"would delete blob {orphan}" in dry.stdout and f"would delete upload {stale}" in dry.stdout
    assert blob_path(data, orphan).exists() and (data / "uploads" / stale).exists()
    r = gc(data, "--grace", "0", "--upload-max-age", "0")
    assert r.returncode == 0, r.stderr
    assert f"deleted blob {orphan}" in r.stdout and f"deleted blob {shared}" in r.stdout
    assert not blob_path(data, orphan).exists() and not blob_path(data, shared).exists()
    assert not (data / "uploads" / stale).exists()
    for d in kept_blobs:
        assert hashlib.sha256(blob_path(data, d).read_bytes()).hexdigest() == d.split(":")[1]
    # the store still serves what it kept, and forgets what it swept
    with peers.pallet_registry(tmp_path) as addr, httpx.Client(base_url=f"http://{addr}") as c:
        peers.skopeo_copy(f"docker://{addr}/gc/kept:1", f"oci:{tmp_path / 'back'}:1")
        assert c.head(f"/v2/gc/orphan/blobs/{orphan}").status_code == 404
        # the swept blob can be pushed again
        assert push_blob(c, "gc/orphan", b"never referenced") == orphan
    again = gc(data, "--grace", "0")
    assert again.returncode == 0 and f"deleted blob {orphan}" in again.stdout


def test_gc_refuses_a_directory_that_is_not_a_registry(tmp_path: Path) -> None:
    r = gc(tmp_path / "nothing")
    assert r.returncode == 125 and "not a registry root" in r.stderr
