"""storage.conf (containers-storage.conf(5)): which graph driver, and its options.

Read from ``$CONTAINERS_STORAGE_CONF``, else (rootless) ``$XDG_CONFIG_HOME/containers/storage.conf``,
else ``/etc/containers/storage.conf``, else ``/usr/share/containers/storage.conf``. Keys pallet
honours::

    [storage]
    driver = "overlay"                # overlay | vfs | fuse-overlayfs
    [storage.options.overlay]
    mount_program = "/usr/bin/fuse-overlayfs"
    mountopt = "nodev"

``[storage.options] mount_program``/``mountopt`` (the older place) are read too. ``graphroot``
and ``runroot`` are *not* used: pallet keeps its own ``--root``/``--runroot`` (PALLET_ROOT), so
pallet and podman never share or corrupt each other's stores. ``$STORAGE_DRIVER`` overrides the
file's driver, as in podman; ``--storage-driver`` overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path

from pallet.errors import ConfigError
from pallet.records import dataclass, field

DRIVERS = ("overlay", "vfs", "fuse-overlayfs")


@dataclass(frozen=True)
class StorageConf:
    """The parts of storage.conf that pallet uses."""

    driver: str | None = None
    mount_program: str | None = None
    mountopt: tuple[str, ...] = ()
    path: Path | None = None
    ignored: tuple[str, ...] = field(default_factory=tuple)


def conf_path() -> Path | None:
    """The storage.conf in effect, or None."""
    env = os.environ.get("CONTAINERS_STORAGE_CONF")
    if env:
        return Path(env)
    candidates = []
    if os.geteuid() != 0:
        xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        candidates.append(Path(xdg) / "containers" / "storage.conf")
    candidates += [Path("/etc/containers/storage.conf"), Path("/usr/share/containers/storage.conf")]
    for c in candidates:
        if c.is_file():
            return c
    return None


def load(path: Path | None = None) -> StorageConf:
    """Parse storage.conf (``path``, or the one :func:`conf_path` finds). Missing: defaults."""
    path = path or conf_path()
    if path is None:
        return StorageConf()
    import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if os.environ.get("CONTAINERS_STORAGE_CONF"):
            raise ConfigError(f"storage.conf {path} (from $CONTAINERS_STORAGE_CONF) does not exist") from None
        return StorageConf()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot parse {path}: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    storage = data.get("storage", {})
    if not isinstance(storage, dict):
        raise ConfigError(f"{path}: [storage] must be a table")
    driver = storage.get("driver") or None
    if driver is not None:
        if not isinstance(driver, str):
            raise ConfigError(f"{path}: [storage] driver must be a string")
        if driver not in DRIVERS:
            raise ConfigError(f"{path}: unsupported storage driver {driver!r} "
                              f"(pallet has {', '.join(DRIVERS)})")
    options = storage.get("options", {}) or {}
    overlay = options.get("overlay", {}) or {}
    mount_program = overlay.get("mount_program") or options.get("mount_program") or None
    mountopt_raw = overlay.get("mountopt") or options.get("mountopt") or ""
    if not isinstance(mountopt_raw, str):
        raise ConfigError(f"{path}: mountopt must be a comma-separated string")
    if mount_program is not None and not isinstance(mount_program, str):
        raise ConfigError(f"{path}: mount_program must be a string")
    mountopt = tuple(o.strip() for o in mountopt_raw.split(",") if o.strip())
    ignored = tuple(k for k in ("graphroot", "runroot", "rootless_storage_path") if k in storage)
    return StorageConf(driver, mount_program, mountopt, path, ignored)
