"""One test suite for every graph driver (containerd's snapshotter testsuite, in spirit):
the same lifecycle, isolation and mount checks run against overlay, vfs and fuse-overlayfs."""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.storage.conftest import DRIVERS, needs_root, unmount_all

from pallet.errors import StorageError
from pallet.storage.driver import Driver, Kind, SnapshotExists, SnapshotNotFound
from pallet.storage.layers import make_driver, resolve_driver
from pallet.storage.mount import Mount, is_mountpoint, mount_all, unmount

pytestmark = needs_root


@pytest.fixture(params=DRIVERS)
def drv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Driver]:
    from pallet.context import Context
    from pallet.storage.conf import StorageConf

    name, opts = resolve_driver(Context(root=tmp_path, storage_driver=request.param), StorageConf())
    try:
        yield make_driver(name, tmp_path / "home", opts)
    finally:
        unmount_all(tmp_path)


class Mounted:
    """Mount a snapshot's mounts on a fresh directory for the duration of a with-block."""

    def __init__(self, mounts: list[Mount], base: Path) -> None:
        self.mounts = mounts
        self.path = base / f"mnt-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True)
        mount_all(self.mounts, self.path)
        return self.path

    def __exit__(self, *exc: object) -> None:
        unmount(self.path)


def write(root: Path, files: dict[str, bytes | None]) -> None:
    """Apply changes through a mount: bytes write a file, None removes (recursively)."""
    import shutil

    for name, data in files.items():
        p = root / name
        if data is None:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)


def contents(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames:
            out[os.path.relpath(os.path.join(dirpath, n), root) + "/"] = None
        for n in filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = Path(p).read_bytes()
    return out


def committed(drv: Driver, tmp: Path, name: str, parent: str, files: dict[str, bytes | None]) -> None:
    key = f"active-{name}"
    with Mounted(drv.prepare(key, parent), tmp) as root:
        write(root, files)
    drv.commit(name, key)


def test_basic_lifecycle(drv: Driver, tmp_path: Path) -> None:
    with Mounted(drv.prepare("preparing", ""), tmp_path) as root:
        write(root, {"foo": b"foo\n", "a/b/c/keep": b"c"})
    assert drv.stat("preparing").kind == Kind.ACTIVE
    info = drv.commit("committed", "preparing")
    assert (info.kind, info.parent) == (Kind.COMMITTED, "")
    with pytest.raises(SnapshotNotFound):
        drv.stat("preparing")

    with Mounted(drv.prepare("next", "committed"), tmp_path) as root:
        assert contents(root) == {"foo": b"foo\n", "a/": None, "a/b/": None, "a/b/c/": None,
                                  "a/b/c/keep": b"c"}
        write(root, {"bar": b"bar\n", "foo": b"bar\n", "a/b": None})
    assert drv.stat("next").parent == "committed"
    drv.commit("committed-next", "next")
    assert {i.name: (i.kind, i.parent) for i in drv.walk()} == {
        "committed": (Kind.COMMITTED, ""), "committed-next": (Kind.COMMITTED, "committed")}

    with Mounted(drv.view("view", "committed-next"), tmp_path) as root:
        assert contents(root) == {"foo": b"bar\n", "bar": b"bar\n", "a/": None}
        with pytest.raises(OSError) as e:
            (root / "new").write_bytes(b"x")
        assert e.value.errno == errno.EROFS
    drv.remove("view")

    with pytest.raises(StorageError, match="remove"):
        drv.remove("committed")
    drv.remove("committed-next")
    drv.remove("committed")
    assert list(drv.walk()) == []


def test_transitivity_and_stat(drv: Driver, tmp_path: Path) -> None:
    committed(drv, tmp_path, "A", "", {"foo": b"foo"})
    committed(drv, tmp_path, "B", "A", {"foo": b"foo bar"})
    committed(drv, tmp_path, "C", "B", {"baz": b"baz"})
    assert drv.parents("C") == ["B", "A"]
    assert drv.stat("B").parent == "A" and drv.stat("A").parent == ""
    with Mounted(drv.view("v", "C"), tmp_path) as root:
        assert contents(root) == {"foo": b"foo bar", "baz": b"baz"}


def test_same_key_twice_fails(drv: Driver, tmp_path: Path) -> None:
    committed(drv, tmp_path, "A", "", {})
    drv.prepare("k", "A")
    with pytest.raises(SnapshotExists):
        drv.view("k", "A")
    with pytest.raises(SnapshotExists):
        drv.prepare("k", "A")
    drv.view("v", "A")
    with pytest.raises(SnapshotExists):
        drv.view("v", "A")
    with pytest.raises(SnapshotExists):
        drv.commit("A", "k")  # a committed name cannot be reused


def test_commit_rules(drv: Driver, tmp_path: Path) -> None:
    committed(drv, tmp_path, "A", "", {"x": b"x"})
    drv.view("v", "A")
    with pytest.raises(StorageError, match="view"):
        drv.commit("B", "v")
    with pytest.raises(StorageError, match="active"):
        drv.commit("B", "A")
    with pytest.raises(SnapshotNotFound):
        drv.prepare("k", "missing-parent")
    drv.prepare("k2", "")
    with pytest.raises(StorageError):
        drv.prepare("k3", "k2")  # an active snapshot cannot be a parent


def test_remove_intermediate_fails(drv: Driver, tmp_path: Path) -> None:
    committed(drv, tmp_path, "base", "", {"a": b"a"})
    drv.prepare("intermediate", "base")
    drv.commit("inter", "intermediate")
    drv.prepare("top", "inter")
    with pytest.raises(StorageError):
        drv.remove("inter")
    drv.remove("top")
    drv.remove("inter")
    drv.remove("base")


def test_deleted_files_and_dirs_in_child(drv: Driver, tmp_path: Path) -> None:
    committed(drv, tmp_path, "l1", "", {"foo": b"foo", "foobar": b"foobar", "d/e/f": b"f"})
    committed(drv, tmp_path, "l2", "l1", {"foobar": None, "d": None})
    committed(drv, tmp_path, "l3", "l2", {"d/new": b"new"})
    with Mounted(drv.view("v", "l3"), tmp_path) as root:
        assert contents(root) == {"foo": b"foo", "d/": None, "d/new": b"new"}


def test_move_file_from_lower_layer(drv: Driver, tmp_path: Path) -> None:
    committed(drv, tmp_path, "l1", "", {"a/f": b"f", "b/x": b"x"})
    with Mounted(drv.prepare("k", "l1"), tmp_path) as root:
        os.rename(root / "a" / "f", root / "b" / "f")
    drv.commit("l2", "k")
    with Mounted(drv.view("v", "l2"), tmp_path) as root:
        assert contents(root) == {"a/": None, "b/": None, "b/x": b"x", "b/f": b"f"}


def test_chown_and_dir_permission_on_commit(drv: Driver, tmp_path: Path) -> None:
    with Mounted(drv.prepare("k", ""), tmp_path) as root:
        (root / "dir").mkdir()
        os.chmod(root / "dir", 0o700)
        (root / "owned").write_bytes(b"o")
        os.chown(root / "owned", 1234, 5678)
    drv.commit("l1", "k")
    with Mounted(drv.prepare("k2", "l1"), tmp_path) as root:
        os.chown(root / "dir", 42, 43)
        os.chmod(root / "dir", 0o750)
    drv.commit("l2", "k2")
    with Mounted(drv.view("v", "l2"), tmp_path) as root:
        st = os.stat(root / "dir")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (42, 43, 0o750)
        st = os.stat(root / "owned")
        assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_usage_counts_own_files(drv: Driver, tmp_path: Path) -> None:
    committed(drv, tmp_path, "l1", "", {"a": b"x" * 1000, "b/c": b"y" * 24})
    u = drv.usage("l1")
    assert u.size == 1024
    assert u.inodes >= 3  # fuse-overlayfs keeps opaque markers in new directories


def test_walk_and_update_labels(drv: Driver, tmp_path: Path) -> None:
    committed(drv, tmp_path, "l1", "", {})
    drv.prepare("a", "l1", labels={"x": "1"})
    drv.update("a", {"x": "2", "y": "3"})
    infos = {i.name: i for i in drv.walk()}
    assert infos["a"].labels == {"x": "2", "y": "3"} and infos["a"].kind == Kind.ACTIVE


def test_cannot_remove_or_commit_mounted(drv: Driver, tmp_path: Path) -> None:
    m = drv.prepare("k", "")
    with Mounted(m, tmp_path):
        with pytest.raises(StorageError, match="mounted"):
            drv.remove("k")
        with pytest.raises(StorageError, match="mounted"):
            drv.commit("l", "k")
    drv.commit("l", "k")


def test_128_layers_mount(drv: Driver, tmp_path: Path) -> None:
    """More lowerdirs than one page of mount options holds with absolute paths."""
    parent = ""
    for i in range(128):
        key = f"extract-{i}"
        m = drv.prepare(key, parent)[0]
        target = Path(m.option("upperdir") or m.source)  # write the layer straight into its diff
        (target / f"f{i}").write_bytes(str(i).encode())
        drv.commit(f"layer-{i}", key)
        parent = f"layer-{i}"
    with Mounted(drv.view("v", parent), tmp_path) as root:
        names = sorted(os.listdir(root))
    assert len(names) == 128
    assert "f127" in names and "f0" in names


def test_cleanup_removes_crash_leftovers(drv: Driver, tmp_path: Path) -> None:
    committed(drv, tmp_path, "keep", "", {"a": b"a"})
    # a half-made snapshot in staging, and a commit interrupted between its two steps
    (drv.home / "tmp" / "deadbeef").mkdir()
    (drv.home / "tmp" / "deadbeef" / "junk").write_bytes(b"j")
    drv.prepare("half", "keep")
    d = drv.dir_of("half")
    (d / "info.json").write_text((d / "info.json").read_text().replace('"half"', '"other-name"'))
    removed = drv.cleanup()
    assert any("deadbeef" in r for r in removed)
    assert not d.exists()
    assert [i.name for i in drv.walk()] == ["keep"]


def test_mounts_are_data(drv: Driver, tmp_path: Path) -> None:
    committed(drv, tmp_path, "l1", "", {"a": b"a"})
    committed(drv, tmp_path, "l2", "l1", {"b": b"b"})
    mounts = drv.prepare("c", "l2")
    assert all(isinstance(m, Mount) for m in mounts)
    assert drv.mounts("c") == mounts
    target = tmp_path / "manual"
    target.mkdir()
    mount_all(mounts, target)
    try:
        assert is_mountpoint(target)
        assert sorted(os.listdir(target)) == ["a", "b"]
    finally:
        unmount(target)
    assert not is_mountpoint(target)
