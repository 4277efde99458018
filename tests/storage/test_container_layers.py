"""Container layers: create, mount (refcounted), unmount, remove; diff and its round trip."""

from __future__ import annotations

import io
import os
import shutil
import socket
import stat
import tarfile
from pathlib import Path

import pytest
from tests.storage.conftest import needs_root
from tests.storage.helpers import blob, read_layout, tree
from tests.storage.test_refimage import sources

from pallet.content import mediatypes as mt
from pallet.errors import StorageError
from pallet.storage.layers import ContainerLayerNotFound, LayerStore
from pallet.storage.mount import is_mountpoint

pytestmark = needs_root

MTIME_NS = 1_600_000_000_123_456_789


def tar_names(raw: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return tf.getnames()


def base_image(store: LayerStore, layout: Path) -> str:
    return store.apply_image(sources(layout))[-1].chain_id


def test_create_mount_unmount_remove(store: LayerStore, small_layout: Path) -> None:
    top = base_image(store, small_layout)
    c = store.create_container_layer("c1", top, labels={"pallet.image": "img"})
    assert (c.id, c.parent) == ("c1", top)
    assert [x.id for x in store.container_layers()] == ["c1"]
    p1 = store.mount_container("c1")
    p2 = store.mount_container("c1")
    assert p1 == p2 and is_mountpoint(p1)
    assert (p1 / "bin" / "busybox").stat().st_size > 0
    (p1 / "written-by-container").write_bytes(b"hello")
    assert not store.unmount_container("c1")  # one reference left
    assert is_mountpoint(p1)
    assert store.unmount_container("c1")
    assert not is_mountpoint(p1)
    # the write went to the container's layer only
    p = store.mount_container("c1")
    assert (p / "written-by-container").read_bytes() == b"hello"
    view = store.mount_image("img", top)
    assert not (view / "written-by-container").exists()
    store.unmount_image("img")
    with pytest.raises(StorageError):
        store.remove_layer(top)  # a container uses it
    store.remove_container_layer("c1")  # unmounts first
    assert not is_mountpoint(p)
    assert store.container_layers() == []
    with pytest.raises(ContainerLayerNotFound):
        store.container_layer("c1")
    with pytest.raises(StorageError, match="invalid container layer id"):
        store.create_container_layer("../evil", top)


def test_container_mounts_are_data_for_a_runtime(store: LayerStore, small_layout: Path) -> None:
    top = base_image(store, small_layout)
    store.create_container_layer("c2", top)
    mounts = store.container_mounts("c2")
    assert len(mounts) == 1
    spec = mounts[0].to_oci("/")
    assert spec["destination"] == "/" and spec["source"]


def make_changes(root: Path) -> None:
    """Every kind of change a container can make."""
    (root / "new.txt").write_bytes(b"new file\n")
    (root / "newdir" / "sub").mkdir(parents=True)
    (root / "newdir" / "sub" / "deep.txt").write_bytes(b"deep\n")
    (root / "etc" / "motd").write_bytes(b"modified motd\n")
    (root / "data" / "keep" / "a.txt").unlink()
    shutil.rmtree(root / ("data/" + "d" * 60))
    shutil.rmtree(root / "data" / "replaced")
    (root / "data" / "replaced").write_bytes(b"a file where a directory was\n")
    (root / "data" / "random.bin").unlink()
    (root / "data" / "random.bin").mkdir()
    (root / "data" / "random.bin" / "inside").write_bytes(b"a directory where a file was\n")
    shutil.rmtree(root / "home")
    (root / "home" / "fresh").mkdir(parents=True)  # recreated: opaque over the lower one
    os.chmod(root / "data" / "setuid-bin", 0o4700)
    os.chown(root / "data" / "owned-by-app", 2000, 2001)
    os.chmod(root / "tmp", 0o1770)
    os.link(root / "bin" / "busybox", root / "usr" / "bin" / "bb")  # a new link to a lower file
    (root / "pair-a").write_bytes(b"pair\n")
    os.link(root / "pair-a", root / "pair-b")
    os.symlink("/new/target", root / "new-link")
    (root / "data" / "rel-link").unlink()
    os.symlink("changed/target", root / "data" / "rel-link")
    os.setxattr(root / "new.txt", "user.pallet", b"\x00binary\xff")
    os.mkfifo(root / "new-fifo", 0o640)
    os.mknod(root / "new-dev", stat.S_IFCHR | 0o600, os.makedev(1, 7))
    fd = os.open(os.fsencode(root) + b"/caf\xe9-latin1", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"non-utf8 name\n")
    os.close(fd)
    (root / "timed").write_bytes(b"t")
    os.utime(root / "timed", ns=(MTIME_NS, MTIME_NS))
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX) as s:  # bound through the fd: the path may be long
            s.bind(f"/proc/self/fd/{dfd}/a.sock")
    finally:
        os.close(dfd)


def test_diff_round_trip(store: LayerStore, stores, small_layout: Path) -> None:
    """Changes in a container → diff → applied on the parent in a fresh store → same tree."""
    top = base_image(store, small_layout)
    store.create_container_layer("c", top)
    root = store.mount_container("c")
    make_changes(root)
    store.unmount_container("c")
    # read back through a fresh mount (a live FUSE mount may show cached attributes)
    want = tree(store.mount_container("c"), mtimes=True)
    del want["a.sock"]  # sockets cannot be archived (skipped, as tar does)
    store.unmount_container("c")

    with store.container_diff("c") as stream:
        raw = stream.read()
    names = tar_names(raw)
    assert "data/keep/.wh.a.txt" in names and "data/.wh." + "d" * 60 in names
    assert "a.sock" not in names

    fresh = stores("fresh")
    top2 = base_image(fresh, small_layout)
    assert top2 == top
    layer = fresh.apply(top2, io.BytesIO(raw), mt.OCI_LAYER)
    got_root = fresh.mount_image("committed", layer.chain_id)
    got = tree(got_root, mtimes=True)
    assert got.keys() == want.keys()
    differences = {k: (v, want[k]) for k, v in got.items() if v != want[k]}
    assert differences == {}


def test_diff_of_untouched_container_is_empty(store: LayerStore, small_layout: Path) -> None:
    top = base_image(store, small_layout)
    store.create_container_layer("c", top)
    store.mount_container("c")
    store.unmount_container("c")
    with store.container_diff("c") as s:
        assert tar_names(s.read()) == []
    assert store.container_changes("c") == []


def test_changes_list(store: LayerStore, small_layout: Path) -> None:
    top = base_image(store, small_layout)
    store.create_container_layer("c", top)
    root = store.mount_container("c")
    (root / "new.txt").write_bytes(b"n")
    (root / "etc" / "motd").write_bytes(b"m")
    (root / "data" / "gone-now").write_bytes(b"x")
    (root / "data" / "linked.txt").unlink()
    store.unmount_container("c")
    changes = {(c.kind, c.path) for c in store.container_changes("c")}
    assert {("A", "/new.txt"), ("C", "/etc/motd"), ("A", "/data/gone-now"),
            ("D", "/data/linked.txt")} <= changes
    assert not any(p.startswith("/bin") for _, p in changes)


def test_diff_error_surfaces_on_read(store: LayerStore) -> None:
    store.create_container_layer("c", None)
    upper = store.driver.data_dir("container-c")
    shutil.rmtree(upper)  # sabotage: the diff cannot be read
    with pytest.raises(StorageError, match="diff of container c"), store.container_diff("c") as s:
        s.read()


def test_container_layer_without_image(store: LayerStore) -> None:
    store.create_container_layer("scratch", None)
    p = store.mount_container("scratch")
    (p / "only").write_bytes(b"1")
    store.unmount_container("scratch")
    with store.container_diff("scratch") as s:
        assert tar_names(s.read()) == ["only"]


def test_blob_layout_helper_sanity(small_layout: Path) -> None:
    layers, diff_ids = read_layout(small_layout)
    assert len(layers) == len(diff_ids) == 3
    assert all(blob(small_layout, x["digest"]).is_file() for x in layers)
