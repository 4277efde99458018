"""storage.conf and driver selection."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.storage.conftest import needs_root

from pallet.context import Context
from pallet.errors import ConfigError
from pallet.storage import conf
from pallet.storage.layers import LayerStore, resolve_driver


def write(tmp: Path, text: str) -> Path:
    p = tmp / "storage.conf"
    p.write_text(text)
    return p


def test_parses_driver_and_overlay_options(tmp_path: Path) -> None:
    c = conf.load(write(tmp_path, """
[storage]
driver = "overlay"
graphroot = "/var/lib/containers/storage"
runroot = "/run/containers/storage"

[storage.options.overlay]
mount_program = "/usr/bin/fuse-overlayfs"
mountopt = "nodev, noatime"
"""))
    assert c.driver == "overlay"
    assert c.mount_program == "/usr/bin/fuse-overlayfs"
    assert c.mountopt == ("nodev", "noatime")
    assert c.ignored == ("graphroot", "runroot")


def test_older_options_table(tmp_path: Path) -> None:
    c = conf.load(write(tmp_path, '[storage]\ndriver = "vfs"\n[storage.options]\nmountopt = "nodev"\n'))
    assert (c.driver, c.mountopt) == ("vfs", ("nodev",))


@pytest.mark.parametrize("text,msg", [
    ('[storage]\ndriver = "btrfs"\n', "unsupported storage driver 'btrfs'"),
    ("[storage\n", "cannot parse"),
    ('[storage]\ndriver = 3\n', "must be a string"),
    ('[storage.options.overlay]\nmountopt = ["a"]\n', "comma-separated"),
])
def test_bad_files_give_one_clear_error(tmp_path: Path, text: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        conf.load(write(tmp_path, text))


def test_env_var_locates_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, '[storage]\ndriver = "vfs"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(p))
    assert conf.conf_path() == p
    assert conf.load().driver == "vfs"
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(tmp_path / "missing.conf"))
    with pytest.raises(ConfigError, match="does not exist"):
        conf.load()


@needs_root
def test_driver_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_DRIVER", raising=False)
    file_vfs = conf.StorageConf(driver="vfs")
    ctx = Context(root=tmp_path / "root", runroot=tmp_path / "run")
    assert resolve_driver(ctx, file_vfs)[0] == "vfs"
    monkeypatch.setenv("STORAGE_DRIVER", "overlay")
    assert resolve_driver(ctx, file_vfs)[0] == "overlay"
    assert resolve_driver(ctx.with_(storage_driver="vfs"), file_vfs)[0] == "vfs"
    monkeypatch.delenv("STORAGE_DRIVER")
    # nothing configured: overlay works on this filesystem, so it is the default
    assert resolve_driver(ctx, conf.StorageConf())[0] == "overlay"
    assert (tmp_path / "root" / "storage" / "overlay-probe").read_text().startswith("ok")
    with pytest.raises(ConfigError, match="unknown storage driver 'zfs'"):
        resolve_driver(ctx.with_(storage_driver="zfs"), conf.StorageConf())


@needs_root
def test_fuse_overlayfs_shares_the_overlay_layers(tmp_path: Path) -> None:
    ctx = Context(root=tmp_path / "root", runroot=tmp_path / "run")
    a = LayerStore(ctx, driver="overlay")
    b = LayerStore(ctx, driver="fuse-overlayfs")
    assert a.home == b.home
    assert b.driver.name == "fuse-overlayfs" and a.driver.name == "overlay"


def test_mountopt_that_breaks_diffs_is_refused(tmp_path: Path) -> None:
    from pallet.storage.driver import DriverOptions
    from pallet.storage.overlay import OverlayDriver

    with pytest.raises(Exception, match="metacopy=on"):
        OverlayDriver(tmp_path, DriverOptions(mountopt=("metacopy=on",)))
