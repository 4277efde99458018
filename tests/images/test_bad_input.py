"""Bad input through the CLI: one clear error line, a nonzero exit, and a store that still works after."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from pallet import images
from pallet.context import Context
from pallet.store import Store
from tests.images.conftest import pallet
from tests.support.peers import skopeo_copy


def _error_line(res) -> str:  # type: ignore[no-untyped-def]
    lines = res.stderr.decode().strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {lines}"
    assert lines[0].startswith("Error: ")
    return lines[0]


def _store_state(ctx: Context) -> tuple[list[str], set[str]]:
    with Store.open(ctx) as s:
        return sorted(n for i in s.images() for n in i.names), set(s.blobs.walk())


def _still_works(ctx: Context, before: tuple[list[str], set[str]]) -> None:
    assert _store_state(ctx) == before, "a failed command must leave the store as it was"
    res = pallet(ctx, "images", "--format", "{{.Repository}}:{{.Tag}}", check=True)
    assert sorted(res.stdout.decode().split()) == before[0]
    assert pallet(ctx, "image", "exists", "small").returncode == 0


def _oci_archive(layout: Path, out: Path, mutate=None) -> Path:  # type: ignore[no-untyped-def]
    """A tar of ``layout`` (as skopeo's oci-archive), with ``mutate(name, data)`` applied per file."""
    with tarfile.open(out, "w") as tf:
        for p in sorted(layout.rglob("*")):
            if p.is_file():
                data = p.read_bytes()
                name = str(p.relative_to(layout))
                if mutate:
                    data = mutate(name, data)
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return out


@pytest.fixture
def before(ctx: Context, small: images.Image) -> tuple[list[str], set[str]]:
    return _store_state(ctx)


def test_corrupted_archives(ctx: Context, before, small_layout: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(os.urandom(10_000))
    res = pallet(ctx, "load", "-i", str(garbage))
    assert res.returncode == 125 and "not a tar archive" in _error_line(res)
    good = _oci_archive(small_layout, tmp_path / "good.tar")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    res = pallet(ctx, "load", "-i", str(cut))
    assert res.returncode == 125 and "corrupted or truncated" in _error_line(res)
    cutgz = tmp_path / "cut.tar.gz"
    cutgz.write_bytes(gzip.compress(good.read_bytes())[:300_000])
    res = pallet(ctx, "load", "-i", str(cutgz))
    assert res.returncode == 125 and "truncated" in _error_line(res)
    notimage = tmp_path / "notimage.tar"
    with tarfile.open(notimage, "w") as tf:
        ti = tarfile.TarInfo("hello.txt")
        ti.size = 2
        tf.addfile(ti, io.BytesIO(b"hi"))
    res = pallet(ctx, "load", "-i", str(notimage))
    assert res.returncode == 125 and "not an image archive" in _error_line(res)
    res = pallet(ctx, "load", "-i", str(tmp_path / "absent.tar"))
    assert res.returncode == 125 and "no such file" in _error_line(res)
    _still_works(ctx, before)


def test_blob_not_matching_its_digest(ctx: Context, before, small_layout: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def flip(name: str, data: bytes) -> bytes:
        if name.startswith("blobs/") and len(data) > 100_000:  # a layer: same size, different bytes
            return data[:5000] + bytes([data[5000] ^ 0xFF]) + data[5001:]
        return data

    bad = _oci_archive(small_layout, tmp_path / "bad.tar", flip)
    res = pallet(ctx, "load", "-i", str(bad))
    assert res.returncode == 125 and "does not match its digest" in _error_line(res)
    _still_works(ctx, before)


def test_docker_archive_with_wrong_diff_id(ctx: Context, before, small_layout: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "d.tar"
    skopeo_copy(f"oci:{small_layout}:latest", f"docker-archive:{good}:evil/image:1")
    bad = tmp_path / "bad-docker.tar"
    with tarfile.open(good) as src, tarfile.open(bad, "w") as dst:
        for m in src.getmembers():
            f = src.extractfile(m) if m.isfile() else None
            data = f.read() if f else None
            if data is not None and m.name.endswith(".tar") and len(data) > 100_000:
                data = (
                    data[:-2000] + b"\x01" + data[-1999:]
                )  # tampered layer; config still names the old diff
            if data is not None:
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    res = pallet(ctx, "load", "-i", str(bad))
    assert res.returncode == 125 and "unpacks to diff ID" in _error_line(res)
    _still_works(ctx, before)


def test_unknown_and_ambiguous_images(ctx: Context, before, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for args, code in (
        (["rmi", "nosuch"], 1),
        (["image", "inspect", "nosuch"], 125),
        (["history", "nosuch"], 125),
        (["tag", "nosuch", "x"], 125),
        (["save", "-o", str(tmp_path / "o.tar"), "nosuch"], 125),
        (["image", "tree", "nosuch"], 125),
    ):
        res = pallet(ctx, *args)
        assert res.returncode == code, args
        assert "no such image: nosuch" in _error_line(res)
    # the top-level inspect looks for containers, images and volumes: docker's "no such object"
    res = pallet(ctx, "inspect", "nosuch")
    assert res.returncode == 125 and "no such object: nosuch" in _error_line(res)
    assert not (tmp_path / "o.tar").exists()
    res = pallet(ctx, "image", "exists", "nosuch")
    assert res.returncode == 1 and res.stderr == b"" and res.stdout == b""
    # a second image whose ID shares the first hex digit with small's makes that prefix ambiguous
    small_id = images.lookup("small", ctx=ctx).id.encoded
    rootfs = tmp_path / "r"
    rootfs.mkdir()
    for i in range(200):
        (rootfs / "f").write_text(str(i))
        img = images.import_(rootfs, ctx=ctx)
        if img.id.encoded[0] == small_id[0]:
            break
        images.remove([img.id], ctx=ctx)
    res = pallet(ctx, "inspect", small_id[0])
    assert res.returncode == 125 and "is ambiguous" in _error_line(res)
    res = pallet(ctx, "rmi", small_id[0])
    assert res.returncode == 125 and "is ambiguous" in _error_line(res)
    images.remove([img.id], ctx=ctx)
    _still_works(ctx, before)


def test_bad_flags_and_templates(ctx: Context, before) -> None:  # type: ignore[no-untyped-def]
    res = pallet(ctx, "images", "--bogus")
    assert res.returncode == 125 and "unrecognized arguments" in _error_line(res)
    res = pallet(ctx, "images", "--format", "{{.Nope}}")
    assert res.returncode == 125 and "can't evaluate field Nope" in _error_line(res)
    res = pallet(ctx, "inspect", "-f", "{{.Config.Cmd", "small")
    assert res.returncode == 125 and "unclosed action" in _error_line(res)
    res = pallet(ctx, "images", "--filter", "colour=red")
    assert res.returncode == 125 and "invalid filter" in _error_line(res)
    res = pallet(ctx, "save", "--format", "tarball", "small")
    assert res.returncode == 125
    res = pallet(ctx, "import", "-c", "FROM scratch", "/", "x")
    assert res.returncode == 125 and "unknown instruction" in _error_line(res)
    res = pallet(ctx, "tag", "small", "Bad/Name")
    assert res.returncode == 125 and "lowercase" in _error_line(res)
    _still_works(ctx, before)


def test_rmi_in_use_exit_code(ctx: Context, before) -> None:  # type: ignore[no-untyped-def]
    with Store.open(ctx) as s:
        s.add_holder(s.lookup("small").id, "abcdef0123456789")
    res = pallet(ctx, "rmi", "small")
    assert res.returncode == 2 and "in use by container(s) abcdef012345" in _error_line(res)
    _still_works(ctx, before)
    res = pallet(ctx, "rmi", "-f", "small", check=True)
    assert res.stdout.decode().splitlines()[0] == "Untagged: localhost/small:latest"
    assert json.loads(pallet(ctx, "images", "--format", "json").stdout) == []


@pytest.fixture
def tiny_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 1 MiB tmpfs of our own (root only), unmounted afterwards whatever happens."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "pallet-test-tiny", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk(ctx: Context, before, small_layout: Path, tiny_fs: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # saving to a full disk: one error line, and no partial archive left behind
    res = pallet(ctx, "save", "-o", str(tiny_fs / "small.tar"), "small")
    assert res.returncode == 125 and "No space left on device" in _error_line(res)
    assert list(tiny_fs.iterdir()) == []
    _still_works(ctx, before)
    # a store on a full disk: the load fails cleanly and the store is still usable afterwards
    full = Context(root=tiny_fs / "root", runroot=tmp_path / "run-full")
    archive = tmp_path / "small.tar"
    skopeo_copy(f"oci:{small_layout}:latest", f"oci-archive:{archive}:small")
    res = pallet(full, "load", "-i", str(archive))
    assert res.returncode == 125 and "No space left on device" in _error_line(res)
    assert pallet(full, "images", "-q", check=True).stdout == b""
    res = pallet(full, "import", str(small_layout), "toobig")  # a directory bigger than the disk
    assert res.returncode == 125 and "No space left on device" in _error_line(res)
    res = pallet(full, "import", "-", "tiny", input=_tiny_tar())
    assert res.returncode == 0, res.stderr
    assert pallet(full, "image", "exists", "tiny").returncode == 0


def _tiny_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("hello")
        ti.size = 5
        tf.addfile(ti, io.BytesIO(b"hello"))
    return buf.getvalue()


def test_kill_9_mid_load(ctx: Context, before, small_layout: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import signal
    import subprocess
    import sys
    import time

    archive = _oci_archive(_random_layout(tmp_path / "rnd"), tmp_path / "a.tar").read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pallet.cli.main", "--root", str(ctx.root), "load"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(archive[: len(archive) * 2 // 3])  # most of it: some blobs in, one half-written
        proc.stdin.flush()
        ingest = ctx.root / "images" / "ingest"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(ingest.glob("blob-*")):
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdin:
            proc.stdin.close()
    assert _store_state(ctx)[0] == before[0], "no image appeared"
    leftovers = list((ctx.root / "images" / "ingest").iterdir())
    assert leftovers, "the killed load left its half-written blob (proof the kill hit mid-ingest)"
    res = pallet(ctx, "image", "prune", "-f", check=True)  # gc: the dead load's lease, blobs and temp go
    assert res.stdout == b""
    assert _store_state(ctx) == before
    assert list((ctx.root / "images" / "ingest").iterdir()) == []
    assert list((ctx.root / "images" / "leases").iterdir()) == [], "the dead process's lease is gone"
    _still_works(ctx, before)


def _random_layout(out: Path) -> Path:
    """An OCI layout of one image whose blobs the store does not have yet (4 MB of random data)."""
    import hashlib

    def put(data: bytes) -> dict:
        h = hashlib.sha256(data).hexdigest()
        (out / "blobs/sha256" / h).write_bytes(data)
        return {"digest": f"sha256:{h}", "size": len(data)}

    (out / "blobs/sha256").mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("random.bin")
        payload = os.urandom(4 << 20)
        ti.size = len(payload)
        tf.addfile(ti, io.BytesIO(payload))
    raw = buf.getvalue()
    layer = put(gzip.compress(raw, compresslevel=1))
    cfg = put(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
            }
        ).encode()
    )
    man = put(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
            }
        ).encode()
    )
    (out / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **man}],
            }
        )
    )
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return out
