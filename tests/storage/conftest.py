"""Storage fixtures: a LayerStore per driver in a private root, unmounted whatever happens."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pallet.context import Context
from pallet.storage.layers import LayerStore
from pallet.storage.mount import mountpoints_under, unmount


def fuse_works() -> tuple[bool, str]:
    if shutil.which("fuse-overlayfs") is None:
        return False, "fuse-overlayfs is not installed"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return False, "/dev/fuse is not usable"
    return True, ""


_FUSE_OK, _FUSE_WHY = fuse_works()
DRIVERS = ["overlay", "vfs",
           pytest.param("fuse-overlayfs", marks=pytest.mark.skipif(not _FUSE_OK, reason=_FUSE_WHY))]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, mknod, chown)")


def unmount_all(path: Path) -> None:
    """Unmount everything at or below ``path``, deepest first."""
    for mp in sorted(mountpoints_under(path), key=len, reverse=True):
        unmount(mp, detach=True)


def make_store(tmp: Path, driver: str) -> LayerStore:
    ctx = Context(root=tmp / "root", runroot=tmp / "run", storage_driver=driver)
    return LayerStore(ctx)


@pytest.fixture(params=DRIVERS)
def driver_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(tmp_path: Path, driver_name: str) -> Iterator[LayerStore]:
    try:
        yield make_store(tmp_path, driver_name)
    finally:
        unmount_all(tmp_path)


@pytest.fixture
def stores(tmp_path: Path, driver_name: str) -> Iterator[callable]:
    """Make more stores (fresh roots) of the same driver: stores("name")."""
    def make(name: str) -> LayerStore:
        return make_store(tmp_path / name, driver_name)

    try:
        yield make
    finally:
        unmount_all(tmp_path)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory whose mounts are undone at the end."""
    try:
        yield tmp_path
    finally:
        unmount_all(tmp_path)
