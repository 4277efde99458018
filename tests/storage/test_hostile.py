"""Hostile layers, crafted with tarfile: nothing outside the layer root may change.

Names that climb out with ``..`` (and hardlinks whose target does) are rejected with an error
naming the entry; absolute names and symlinks met on the way are *contained* (resolved inside the
root, as containerd and umoci do), never followed out. Each case checks that a sentinel tree
next to the store, and the host's /etc/passwd, stay byte-for-byte identical.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.storage.conftest import make_store, needs_root, unmount_all
from tests.storage.helpers import E, d, f, hard, make_tar, snapshot, sym

from pallet.content import mediatypes as mt
from pallet.errors import StorageError, UnsafePathError
from pallet.storage.driver import Kind

pytestmark = needs_root

DEEP = "../" * 40


class Env:
    def __init__(self, tmp: Path, driver: str) -> None:
        self.tmp = tmp
        self.outside = tmp / "outside"
        (self.outside / "dir").mkdir(parents=True)
        (self.outside / "secret").write_bytes(b"do not touch\n")
        (self.outside / "dir" / "keep").write_bytes(b"keep\n")
        os.symlink("secret", self.outside / "link")
        self.store = make_store(tmp / "s", driver)
        self.before = snapshot(tmp, exclude=["s"])
        self.passwd = os.stat("/etc/passwd")
        self.layers: list[str] = []

    @property
    def out(self) -> str:
        return str(self.outside)

    def apply(self, *layers: list[E]) -> Path:
        """Apply layers on top of each other; returns the mounted merged view."""
        for entries in layers:
            raw = make_tar(entries)
            parent = self.layers[-1] if self.layers else None
            layer = self.store.apply(parent, io.BytesIO(raw), mt.OCI_LAYER)
            self.layers.append(layer.chain_id)
        return self.store.mount_image("hostile", self.layers[-1])

    def inside(self, root: Path, host_path: Path) -> Path:
        """Where a contained write aimed at ``host_path`` lands in the merged view."""
        return root / str(host_path).lstrip("/")

    def check_untouched(self) -> None:
        self.store.unmount_image("hostile", force=True)
        assert snapshot(self.tmp, exclude=["s"]) == self.before
        after = os.stat("/etc/passwd")
        assert (after.st_nlink, after.st_mtime_ns, after.st_size) == \
               (self.passwd.st_nlink, self.passwd.st_mtime_ns, self.passwd.st_size)
        # no half-applied layer or extraction left behind
        assert [i.name for i in self.store.driver.walk() if i.kind != Kind.COMMITTED] == []


@pytest.fixture(params=["overlay", "vfs"])
def env(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Env]:
    e = Env(tmp_path, request.param)
    try:
        yield e
        e.check_untouched()
    finally:
        unmount_all(tmp_path)


def rejected(env: Env, entry: str, *layers: list[E], exc: type[Exception] = StorageError) -> None:
    before = set(x.chain_id for x in env.store.layers())
    with pytest.raises(exc) as info:
        env.apply(*layers)
    assert entry in str(info.value), f"error does not name the entry {entry!r}: {info.value}"
    # the failed layer is not in storage
    assert set(x.chain_id for x in env.store.layers()) <= before | set(env.layers)


# ------------------------------------------------------------------------------ .. in names


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "./../escape", "a/b/../../../escape"])
def test_dotdot_file_rejected(env: Env, name: str) -> None:
    rejected(env, name, [d("a"), d("a/b"), f(name, b"pwned")], exc=UnsafePathError)


def test_dotdot_dir_rejected(env: Env) -> None:
    rejected(env, "../escape-dir", [d("../escape-dir")], exc=UnsafePathError)


def test_absolute_names_are_contained(env: Env) -> None:
    root = env.apply([f("/abs.txt", b"abs"), f("/../../clamped.txt", b"clamped"),
                      f(env.out + "/secret", b"pwned")])
    assert (root / "abs.txt").read_bytes() == b"abs"
    assert (root / "clamped.txt").read_bytes() == b"clamped"
    assert env.inside(root, env.outside / "secret").read_bytes() == b"pwned"


# ------------------------------------------------------------------------------ symlinks


def test_write_through_absolute_symlink_is_contained(env: Env) -> None:
    root = env.apply([sym("evil", env.out), f("evil/secret", b"pwned"), f("evil/new", b"new")])
    assert os.readlink(root / "evil") == env.out
    assert env.inside(root, env.outside / "secret").read_bytes() == b"pwned"
    assert env.inside(root, env.outside / "new").read_bytes() == b"new"


def test_write_through_relative_symlink_is_contained(env: Env) -> None:
    root = env.apply([d("a"), sym("a/evil", DEEP + env.out.lstrip("/")), f("a/evil/secret", b"pwned")])
    assert env.inside(root, env.outside / "secret").read_bytes() == b"pwned"


def test_symlink_to_root_then_etc_passwd(env: Env) -> None:
    root = env.apply([sym("evil", "/"), d("evil/etc"), f("evil/etc/passwd", b"root::0:0::/:/bin/sh\n")])
    assert (root / "etc" / "passwd").read_bytes() == b"root::0:0::/:/bin/sh\n"


def test_symlink_chain_is_contained(env: Env) -> None:
    root = env.apply([sym("a", "b"), sym("b", DEEP + env.out.lstrip("/")), f("a/x", b"x")])
    assert env.inside(root, env.outside / "x").read_bytes() == b"x"


def test_symlink_loop_rejected(env: Env) -> None:
    rejected(env, "a/x", [sym("a", "b"), sym("b", "a"), f("a/x", b"x")], exc=UnsafePathError)


def test_dotdot_symlink_in_subdir_is_contained(env: Env) -> None:
    root = env.apply([d("a"), sym("a/up", "../../../.."), f("a/up/x", b"x")])
    assert (root / "x").read_bytes() == b"x"


def test_symlink_replaced_by_file_not_written_through(env: Env) -> None:
    root = env.apply([sym("f", env.out + "/secret"), f("f", b"pwned")])
    assert not (root / "f").is_symlink()
    assert (root / "f").read_bytes() == b"pwned"


def test_directory_replaced_by_symlink_then_written_through(env: Env) -> None:
    root = env.apply([d("d"), f("d/a", b"a"), sym("d", env.out), f("d/secret", b"pwned"), d("d/dir"),
                      f("d/dir/keep", b"pwned")])
    assert os.readlink(root / "d") == env.out
    assert env.inside(root, env.outside / "secret").read_bytes() == b"pwned"
    assert env.inside(root, env.outside / "dir" / "keep").read_bytes() == b"pwned"


def test_symlink_from_earlier_layer_then_write(env: Env) -> None:
    root = env.apply([sym("evil", env.out)],
                     [f("evil/secret", b"pwned"), d("evil/sub"), f("evil/sub/x", b"x")])
    if env.store.driver_name == "vfs":
        # a full copy has the symlink: followed inside the root
        assert env.inside(root, env.outside / "secret").read_bytes() == b"pwned"
    else:
        # a per-layer diff does not: the new directory shadows the lower symlink (as docker/podman)
        assert (root / "evil" / "secret").read_bytes() == b"pwned"


def test_fifo_replaced_by_file_never_opened(env: Env) -> None:
    root = env.apply([E("p", tarfile.FIFOTYPE, mode=0o644), f("p", b"data")])
    assert (root / "p").read_bytes() == b"data"


# ------------------------------------------------------------------------------ hardlinks


def test_hardlink_to_host_etc_passwd_rejected(env: Env) -> None:
    rejected(env, "h", [hard("h", "/etc/passwd")])


def test_hardlink_to_absolute_name_links_inside(env: Env) -> None:
    root = env.apply([d("etc"), f("etc/passwd", b"inside"), hard("h", "/etc/passwd")])
    assert (root / "h").read_bytes() == b"inside"
    assert (root / "h").stat().st_ino == (root / "etc/passwd").stat().st_ino


@pytest.mark.parametrize("target", ["../../../../etc/passwd", "a/../../outside/secret"])
def test_hardlink_dotdot_rejected(env: Env, target: str) -> None:
    rejected(env, "h", [d("a"), hard("h", target)], exc=UnsafePathError)


def test_hardlink_through_symlink_to_outside_rejected(env: Env) -> None:
    rejected(env, "h", [sym("l", env.out), hard("h", "l/secret")])


def test_hardlink_to_symlink_links_the_symlink(env: Env) -> None:
    root = env.apply([sym("l", env.out + "/secret"), hard("h", "l")])
    assert os.readlink(root / "h") == env.out + "/secret"


def test_hardlink_to_directory_rejected(env: Env) -> None:
    rejected(env, "h", [d("dd"), hard("h", "dd")])


# ------------------------------------------------------------------------------ whiteouts


@pytest.mark.parametrize("name", ["../.wh.secret", "a/../../.wh.secret", ".wh...", "a/.wh.."])
def test_whiteout_escape_rejected(env: Env, name: str) -> None:
    rejected(env, name, [d("a"), f(name, b"")], exc=UnsafePathError)


def test_whiteout_through_earlier_layer_symlink(env: Env) -> None:
    root = env.apply([sym("evil", env.out)], [f("evil/.wh.secret", b""), f("evil/dir/.wh.keep", b"")])
    assert root.exists()


def test_whiteout_through_same_layer_symlink(env: Env) -> None:
    env.apply([sym("evil", env.out), f("evil/.wh.secret", b""), f("evil/.wh.dir", b"")])


def test_opaque_through_symlink(env: Env) -> None:
    env.apply([sym("evil", env.out)], [f("evil/.wh..wh..opq", b""), f("evil/dir/.wh..wh..opq", b"")])
    env.apply([sym("evil2", env.out), f("evil2/.wh..wh..opq", b"")])


# ------------------------------------------------------------------------------ device nodes


def test_device_node_escape_rejected(env: Env) -> None:
    rejected(env, "../dev-escape",
             [E("../dev-escape", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)], exc=UnsafePathError)


def test_device_nodes_created_inside(env: Env) -> None:
    root = env.apply([d("dev"), E("dev/zero", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=5),
                      E("dev/loop-ish", tarfile.BLKTYPE, mode=0o600, devmajor=7, devminor=200),
                      E(env.out + "/devnode", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)])
    st = os.lstat(root / "dev" / "zero")
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 5)
    assert os.path.exists(env.inside(root, env.outside / "devnode"))


def test_device_node_replaced_by_file_not_written_through(env: Env) -> None:
    root = env.apply([E("dev-null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
                      f("dev-null", b"data")])
    assert (root / "dev-null").read_bytes() == b"data"


def test_parent_is_a_file_rejected(env: Env) -> None:
    rejected(env, "file/child", [f("file", b"x"), f("file/child", b"y")])
