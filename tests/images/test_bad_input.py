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
        (["inspect", "nosuch"], 125),
        (["history", "nosuch"], 125),
        (["tag", "nosuch", "x"], 125),
        (["save", "-o", str(tmp_path / "o.tar"), "nosuch"], 125),
        (["image", "tree", "nosuch"], 125),
    ):
        res = pallet(ctx, *args)
        assert res.returncode == code, args
        assert "no such image: nosuch" in _error_line(res)
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
