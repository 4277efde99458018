"""pallet pull / push end to end: real registries on loopback, real peers, and broken registries.

Every failure case is followed by a clean pull of the same image, to show the store and layer
storage were left consistent by the failure.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import peers, terminal
from tests.support.layout_registry import LayoutRegistry


def pallet(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pallet.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, input=input)


def ok(*args: str, **kw) -> str:
    res = pallet(*args, **kw)
    assert res.returncode == 0, f"pallet {' '.join(args)} failed ({res.returncode}): {res.stderr}"
    return res.stdout


def tree(root: Path) -> dict[str, tuple[str, int, int, str]]:
    """path → (kind, mode, size, link target), as refimage.py expect lists a rootfs."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", 0o777, 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), 0, "")
            elif stat.S_ISFIFO(st.st_mode):
                out[rel] = ("fifo", stat.S_IMODE(st.st_mode), 0, "")
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, "")
    return out


@pytest.fixture(scope="module")
def pushed_small(small_layout: Path, registry: str) -> str:
    """refimage small pushed by skopeo (a peer) to docker-registry; returns its reference."""
    ref = f"{registry}/pulltest/small:v1"
    peers.skopeo_copy(f"oci:{small_layout}:latest", f"docker://{ref}")
    return ref


def test_pull_gives_exactly_the_expected_tree(pallet_root: Path, pushed_small: str, small_expect) -> None:
    image_id = ok("pull", "-q", pushed_small).strip()
    assert len(image_id) == 64
    listing = ok("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert f"{pushed_small} {image_id[:12]}" in listing
    mount = Path(ok("image", "mount", pushed_small).strip())
    try:
        got = tree(mount)
        want = {p: (k, m, s, t) for p, k, m, s, t in small_expect}
        assert got == want
    finally:
        ok("image", "unmount", pushed_small)


def test_pull_by_digest_and_repull_is_a_no_op(pallet_root: Path, pushed_small: str,
                                              small_layout: Path) -> None:
    digest = json.loads((small_layout / "index.json").read_text())["manifests"][0]["digest"]
    repo = pushed_small.rsplit(":", 1)[0]
    ok("pull", "-q", f"{repo}@{digest}")
    res = pallet("pull", pushed_small)
    assert res.returncode == 0
    assert "skipped: already exists" in res.stderr or "Copying blob" not in res.stderr
    inspect = json.loads(ok("inspect", pushed_small))
    assert f"{repo}@{digest}" in inspect[0]["RepoDigests"]


def test_push_is_read_intact_by_skopeo(pallet_root: Path, pushed_small: str, registry: str,
                                       tmp_path: Path, small_layout: Path) -> None:
    ok("pull", "-q", pushed_small)
    dest = f"{registry}/pushtest/again:v2"
    ok("push", "-q", pushed_small, dest, "--digestfile", str(tmp_path / "digest"))
    digest = (tmp_path / "digest").read_text()
    out = tmp_path / "copy"
    peers.skopeo_copy(f"docker://{dest}", f"oci:{out}:x")
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    # same blobs, byte for byte, as the fixture we started from
    src_blobs = {p.name for p in (small_layout / "blobs" / "sha256").iterdir()}
    got_blobs = {p.name for p in (out / "blobs" / "sha256").iterdir()}
    assert src_blobs <= got_blobs | {digest.split(":")[1]}
    # a second push finds everything there already
    res = pallet("push", pushed_small, dest)
    assert res.returncode == 0 and "skipped: already exists" in res.stderr


def test_push_as_docker_v2s2(pallet_root: Path, pushed_small: str, registry: str) -> None:
    ok("pull", "-q", pushed_small)
    dest = f"{registry}/pushtest/docker:v1"
    ok("push", "-q", "--format", "v2s2", pushed_small, dest)
    res = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{dest}"],
                         capture_output=True, text=True, check=True)
    doc = json.loads(res.stdout)
    assert doc["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert all(lay["mediaType"].startswith("application/vnd.docker.image.rootfs") for lay in doc["layers"])


def test_push_and_pull_through_pallet_registry(pallet_root: Path, pushed_small: str, tmp_path: Path,
                                               small_expect) -> None:
    ok("pull", "-q", pushed_small)
    with peers.pallet_registry(tmp_path / "reg") as addr:
        dest = f"{addr}/ours/small:v1"
        ok("push", "-q", pushed_small, dest)
        ok("rmi", pushed_small)  # push adds no local name for the destination (as podman)
        ok("pull", "-q", dest)
        mount = Path(ok("image", "mount", dest).strip())
        try:
            assert len(tree(mount)) == len(small_expect)
        finally:
            ok("image", "unmount", dest)


def test_short_name_resolution_through_registries_conf(pallet_root: Path, pushed_small: str,
                                                       tmp_path: Path) -> None:
    registry = pushed_small.split("/")[0]
    conf = tmp_path / "registries.conf"
    conf.write_text(f'unqualified-search-registries = ["{registry}"]\n')
    image_id = ok("--registries-conf", str(conf), "pull", "-q", "pulltest/small:v1").strip()
    assert image_id in ok("images", "-q", "--no-trunc")
    blocked = tmp_path / "blocked.conf"
    blocked.write_text(f'[[registry]]\nlocation = "{registry}"\nblocked = true\n')
    res = pallet("--registries-conf", str(blocked), "pull", pushed_small)
    assert res.returncode == 125 and "blocked" in res.stderr


def test_an_ambiguous_short_name_is_asked_about_on_a_terminal(pallet_root: Path, pushed_small: str,
                                                              tmp_path: Path) -> None:
    """short-name-mode enforcing with two search registries (one registry under two names): on a
    terminal the pull asks which one, pulls that, and remembers the answer in podman's alias
    cache; without a terminal, and without the answer, the name is refused as ambiguous."""
    from pallet.config import registries

    port = pushed_small.split("/")[0].rsplit(":", 1)[1]
    conf = tmp_path / "registries.conf"
    conf.write_text(
        'short-name-mode = "enforcing"\n'
        f'unqualified-search-registries = ["127.0.0.1:{port}", "localhost:{port}"]\n'
    )
    cache = registries.alias_cache_path()
    saved = cache.read_bytes() if cache.is_file() else None
    try:
        res = pallet("--registries-conf", str(conf), "pull", "pulltest/small:v1")
        assert res.returncode == 125 and "ambiguous" in res.stderr, res
        shown, status = terminal.converse(
            [sys.executable, "-m", "pallet.cli.main", "--registries-conf", str(conf), "pull", "-q",
             "pulltest/small:v1"],
            b"Enter a number", b"2\n",
        )
        text = shown.decode(errors="replace")
        assert status == 0, text
        assert f"1) 127.0.0.1:{port}/pulltest/small:v1" in text
        assert f"2) localhost:{port}/pulltest/small:v1" in text
        assert f"localhost:{port}/pulltest/small" in ok("images", "--format", "{{.Repository}}")
        assert f'"pulltest/small" = "localhost:{port}/pulltest/small"' in cache.read_text()
        # the answer stands: no terminal needed any more
        assert ok("--registries-conf", str(conf), "pull", "-q", "pulltest/small:v1").strip()
    finally:
        if saved is None:
            cache.unlink(missing_ok=True)
        else:
            cache.write_bytes(saved)


def test_bad_reference_is_one_clear_line(pallet_root: Path) -> None:
    res = pallet("pull", "Not/A_Valid//Name")
    assert res.returncode == 125
    assert res.stderr.strip().count("\n") == 0 and "invalid reference" in res.stderr


def test_dead_registry_fails_fast(pallet_root: Path) -> None:
    port = peers.free_port()
    res = pallet("pull", "--retry", "0", f"127.0.0.1:{port}/x/y:z", timeout=60)
    assert res.returncode == 125
    assert "127.0.0.1" in res.stderr and "Traceback" not in res.stderr


@pytest.fixture
def faulty(small_layout: Path):
    reg = LayoutRegistry(small_layout)
    try:
        yield reg
    finally:
        reg.close()


@pytest.mark.parametrize("fault,words", [
    ({"manifest": "malformed"}, "manifest"),
    ({"manifest": "wrong-digest"}, "hashes to"),
    ({"manifest": "500"}, "500"),
    ({"blob": "corrupt"}, "hashes to"),
    ({"blob": "truncate"}, ""),
    ({"blob": "500"}, "500"),
    ({"manifest": "hang"}, "did not answer"),
    ({"blob": "hang"}, "did not answer"),
    ({"auth": "basic"}, "auth"),
])
def test_broken_registry_then_clean_pull(pallet_root: Path, faulty: LayoutRegistry, small_expect,
                                         fault: dict[str, str], words: str) -> None:
    ref = f"{faulty.addr}/{faulty.repo}:latest"
    faulty.faults = dict(fault)
    env = {"PALLET_REGISTRY_TIMEOUT": "2", "PALLET_REGISTRY_RETRIES": "1"}
    res = pallet("pull", ref, env=env, timeout=90)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    if fault == {"blob": "truncate"}:
        # a dropped connection is resumed with Range: the pull may legitimately succeed
        assert res.returncode in (0, 125)
    else:
        assert res.returncode == 125, res.stderr
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert words.lower() in lines[0].lower(), lines[0]
        assert ok("images", "-q") == ""  # nothing half-registered
    faulty.faults = {}
    ok("pull", "-q", ref, env=env)
    mount = Path(ok("image", "mount", ref).strip())
    try:
        assert tree(mount) == {p: (k, m, s, t) for p, k, m, s, t in small_expect}
    finally:
        ok("image", "unmount", ref)


def test_wrong_credentials_then_right_ones(pallet_root: Path, faulty: LayoutRegistry, tmp_path: Path) -> None:
    faulty.faults = {"auth": "basic"}
    ref = f"{faulty.addr}/{faulty.repo}:latest"
    res = pallet("pull", "--creds", "user:wrong", "--retry", "0", ref)
    assert res.returncode == 125 and res.stderr.count("Error:") == 1
    authfile = tmp_path / "auth.json"
    ok("login", "-u", "user", "-p", "pass", "--authfile", str(authfile), faulty.addr)
    ok("pull", "-q", "--authfile", str(authfile), ref)
