"""Real clients push to and pull from `pallet registry serve`: skopeo, podman, buildah.

The docker CLI is installed without an engine here, so it cannot push; the project's own client
(pallet.registry.client) gets its interop tests once it lands (see docs/registry-server.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import peers

pytestmark = pytest.mark.peer


def _run(args: list[str], env: dict[str, str] | None = None) -> str:
    r = subprocess.run(args, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(args)} exited {r.returncode}: {r.stderr}"
    return r.stdout.strip()


def _index_digest(layout: Path) -> str:
    return json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]


def test_skopeo_round_trip_keeps_every_byte(server: str, small_layout: Path, tmp_path: Path) -> None:
    src_digest = _index_digest(small_layout)
    peers.skopeo_copy(f"oci:{small_layout}:latest", f"docker://{server}/peers/skopeo:v1")
    r = httpx.head(f"http://{server}/v2/peers/skopeo/manifests/v1")
    assert r.headers["docker-content-digest"] == src_digest
    peers.skopeo_copy(f"docker://{server}/peers/skopeo:v1", f"oci:{tmp_path / 'back'}:v1")
    assert _index_digest(tmp_path / "back") == src_digest
    # every blob came back identical
    for blob in (small_layout / "blobs" / "sha256").iterdir():
        assert (tmp_path / "back" / "blobs" / "sha256" / blob.name).read_bytes() == blob.read_bytes()
    out = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{server}/peers/skopeo"],
                         check=True, capture_output=True, text=True).stdout
    assert json.loads(out)["Tags"] == ["v1"]
    subprocess.run(["skopeo", "delete", "--tls-verify=false", f"docker://{server}/peers/skopeo:v1"],
                   check=True,
                   capture_output=True)
    assert httpx.get(f"http://{server}/v2/peers/skopeo/manifests/{src_digest}").status_code == 404


def test_skopeo_docker_schema2_and_cross_repo_mount(server: str, small_layout: Path, tmp_path: Path) -> None:
    peers.skopeo_copy(f"oci:{small_layout}:latest", f"docker://{server}/peers/v2s2:v1", "--format", "v2s2")
    r = httpx.get(f"http://{server}/v2/peers/v2s2/manifests/v1",
                  headers={"accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert r.headers["content-type"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert r.json()["mediaType"] == r.headers["content-type"]
    # registry-to-registry copy within one server: skopeo mounts the layers instead of uploading
    peers.skopeo_copy(f"docker://{server}/peers/v2s2:v1", f"docker://{server}/peers/v2s2-copy:v1")
    peers.skopeo_copy(f"docker://{server}/peers/v2s2-copy:v1", f"docker-archive:{tmp_path / 'img.tar'}")
    with tarfile.open(tmp_path / "img.tar") as tf:
        assert any(n.endswith("manifest.json") for n in tf.getnames())


@pytest.fixture
def podman_env(tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    conf = tmp_path / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
                    '[engine]\nruntime = "runc"\n')
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    runroot = tempfile.mkdtemp(prefix="plt-reg-")  # podman wants a runroot under 50 characters
    base = ["--root", str(tmp_path / "storage"), "--runroot", runroot, "--storage-driver", "vfs"]
    try:
        yield base, env
    finally:
        # only what lives in our private --root/--runroot (not `system reset`: that also removes the
        # host's podman networks, which other tests may be using)
        subprocess.run(["podman", *base, "rmi", "--all", "--force"], env=env, capture_output=True)
        if shutil.which("buildah"):
            subprocess.run(["buildah", *base, "rm", "--all"], env=env, capture_output=True)
        shutil.rmtree(runroot, ignore_errors=True)


def test_podman_pull_and_push(server: str, small_layout: Path, podman_env) -> None:
    base, env = podman_env
    peers.skopeo_copy(f"oci:{small_layout}:latest", f"docker://{server}/peers/podman-src:v1")

    def podman(*args: str) -> str:
        return _run(["podman", *base, *args], env)

    podman("pull", "--tls-verify=false", f"{server}/peers/podman-src:v1")
    podman("tag", f"{server}/peers/podman-src:v1", f"{server}/peers/podman-dst:pushed")
    podman("push", "--tls-verify=false", f"{server}/peers/podman-dst:pushed")
    r = httpx.get(f"http://{server}/v2/peers/podman-dst/manifests/pushed",
                  headers={"accept": "application/vnd.oci.image.manifest.v1+json, "
                                     "application/vnd.docker.distribution.manifest.v2+json"})
    assert r.status_code == 200
    manifest = r.json()
    for desc in [manifest["config"], *manifest["layers"]]:
        h = httpx.head(f"http://{server}/v2/peers/podman-dst/blobs/{desc['digest']}")
        assert h.status_code == 200 and int(h.headers["content-length"]) == desc["size"]
    podman("rmi", "-a", "-f")
    podman("pull", "--tls-verify=false", f"{server}/peers/podman-dst:pushed")
    assert f"{server}/peers/podman-dst" in podman("images", "--format", "{{.Repository}}")


def test_buildah_commit_and_push(server: str, tmp_path: Path, podman_env) -> None:
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed")
    base, env = podman_env

    def buildah(*args: str) -> str:
        return _run(["buildah", *base, *args], env)

    payload = tmp_path / "hello.txt"
    payload.write_text("made by buildah, served by pallet\n")
    ctr = buildah("from", "scratch")
    buildah("copy", ctr, str(payload), "/hello.txt")
    buildah("config", "--label", "org.example=pallet", ctr)
    buildah("commit", ctr, "localhost/buildah-img:1")
    buildah("push", "--tls-verify=false", "localhost/buildah-img:1", f"docker://{server}/peers/buildah:1")
    peers.skopeo_copy(f"docker://{server}/peers/buildah:1", f"oci:{tmp_path / 'out'}:1")
    layout = tmp_path / "out"
    manifest_digest = _index_digest(layout)
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_text())
    layer = layout / "blobs" / "sha256" / manifest["layers"][-1]["digest"].split(":")[1]
    with tarfile.open(layer) as tf:
        member = tf.extractfile("hello.txt")
        assert member is not None and member.read() == payload.read_bytes()
