"""Named and anonymous volumes: ``ROOT/volumes/<name>/_data``, rows in the engine database.

A volume is filled from the image's content at its mount point the first time a container
mounts it while it is empty (docker's copy-up), unless the mount says ``nocopy``. The local
driver's ``-o type=... -o device=... -o o=...`` options are honoured by mounting the device on
``_data`` at first use; ``volume rm`` unmounts it. Anonymous volumes (``-v /path``, an image's
VOLUME) have random 64-hex names and go with ``rm -v`` / ``--rm``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pallet.engine.errors import NoSuchVolume, VolumeInUse
from pallet.engine.options import parse_kv_list, validate_volume_name
from pallet.engine.state import Volume, now_rfc3339, state_for
from pallet.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pallet.context import Context


def _ctx(ctx: Context | None) -> Context:
    if ctx is None:
        from pallet.context import default

        return default()
    return ctx


def volumes_dir(ctx: Context) -> Path:
    return Path(ctx.root) / "volumes"


def data_path(ctx: Context, name: str) -> Path:
    return volumes_dir(ctx) / name / "_data"


def create(
    name: str | None = None,
    ctx: Context | None = None,
    *,
    driver: str = "local",
    labels: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
    anonymous: bool = False,
) -> Volume:
    """Create a volume (or return the existing one of that name, as docker does)."""
    ctx = _ctx(ctx)
    if driver != "local":
        raise UsageError(f"volume driver {driver!r} is not supported: only 'local'")
    if name is None:
        name, anonymous = os.urandom(32).hex(), True
    validate_volume_name(name)
    opts = dict(options or {})
    for k in opts:
        if k not in ("type", "device", "o"):
            raise UsageError(f"invalid option {k!r} for the local volume driver: use type, device and o")
    if opts and ("type" not in opts or "device" not in opts):
        raise UsageError("the local volume driver needs both type= and device= options")
    st = state_for(ctx.root)
    vol = Volume(
        name=name,
        created=now_rfc3339(),
        driver=driver,
        labels=dict(labels or {}),
        options=opts,
        anonymous=anonymous,
    )
    path = data_path(ctx, name)
    path.mkdir(parents=True, exist_ok=True)
    if not st.insert_volume(vol):
        return st.get_volume(name)
    return vol


def ensure(
    ctx: Context, name: str, *, anonymous: bool = False, labels: dict[str, str] | None = None
) -> Volume:
    """The volume ``name``, created on first use (``-v name:/path``)."""
    st = state_for(ctx.root)
    try:
        vol = st.get_volume(name)
    except NoSuchVolume:
        return create(name, ctx, labels=labels, anonymous=anonymous)
    path = data_path(ctx, name)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
    return vol


def _mount_options(ctx: Context, vol: Volume) -> None:
    """Mount a volume with local-driver options on its _data directory (once)."""
    from pallet.engine import mounts

    path = str(data_path(ctx, vol.name))
    if not vol.options or mounts.is_mountpoint(path):
        return
    o = vol.options.get("o", "")
    flags = 0
    data = []
    for part in [p for p in o.split(",") if p]:
        if part == "bind":
            flags |= mounts.MS_BIND
        elif part == "rbind":
            flags |= mounts.MS_BIND | mounts.MS_REC
        elif part == "ro":
            flags |= mounts.MS_RDONLY
        else:
            data.append(part)
    try:
        mounts.mount(vol.options["device"], path, vol.options["type"], flags, ",".join(data) or None)
    except OSError as e:
        raise UsageError(
            f"cannot mount volume {vol.name} ({vol.options['type']} {vol.options['device']}): {e.strerror}"
        ) from None


def prepare(ctx: Context, name: str, *, image_path: str | None, nocopy: bool) -> str:
    """The host path to bind for ``name``; copies the image's content up on first use."""
    st = state_for(ctx.root)
    vol = ensure(ctx, name)
    _mount_options(ctx, vol)
    path = data_path(ctx, name)
    if (
        vol.needs_copy_up
        and not nocopy
        and image_path
        and os.path.isdir(image_path)
        and not os.path.islink(image_path)
    ):
        if not any(path.iterdir()) and st.copied_up(name):
            _copy_tree(image_path, str(path))
        else:
            st.copied_up(name)
    return str(path)


def _copy_tree(src: str, dst: str) -> None:
    """Copy a directory's content and its own owner/mode, preserving everything (cp -a)."""
    if not os.listdir(src):
        st = os.lstat(src)
        os.chown(dst, st.st_uid, st.st_gid)
        os.chmod(dst, st.st_mode & 0o7777)
        return
    import subprocess

    res = subprocess.run(
        ["cp", "-a", "--", src.rstrip("/") + "/.", dst + "/"], capture_output=True, text=True
    )
    if res.returncode != 0:
        from pallet.errors import EngineError

        raise EngineError(f"copying the image's content into a volume failed: {res.stderr.strip()}")


def inspect(name: str, ctx: Context | None = None) -> dict[str, Any]:
    ctx = _ctx(ctx)
    vol = state_for(ctx.root).get_volume(name)
    return _to_dict(ctx, vol)


def _to_dict(ctx: Context, vol: Volume) -> dict[str, Any]:
    return {
        "CreatedAt": vol.created,
        "Driver": vol.driver,
        "Labels": vol.labels or {},
        "Mountpoint": str(data_path(ctx, vol.name)),
        "Name": vol.name,
        "Options": vol.options or {},
        "Scope": "local",
        "Anonymous": vol.anonymous,
    }


def list_volumes(ctx: Context | None = None, filters: list[str] | None = None) -> list[dict[str, Any]]:
    """Volumes matching docker's filters: dangling=true|false, name=, label=KEY[=VALUE], driver=."""
    ctx = _ctx(ctx)
    st = state_for(ctx.root)
    users = st.all_volume_users()
    out = []
    flt = _parse_filters(filters or [])
    for vol in st.list_volumes():
        if not _match(vol, flt, users):
            continue
        out.append(_to_dict(ctx, vol))
    return out


def _parse_filters(filters: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in filters:
        k, sep, v = f.partition("=")
        if not sep:
            raise UsageError(f"bad filter {f!r}: expected KEY=VALUE")
        if k not in ("dangling", "name", "label", "driver", "label!"):
            raise UsageError(f"invalid filter {k!r}: use dangling, name, label or driver")
        out.setdefault(k, []).append(v)
    return out


def _match(vol: Volume, flt: dict[str, list[str]], users: dict[str, list[str]]) -> bool:
    for v in flt.get("dangling", []):
        want = v.lower() in ("true", "1")
        if (vol.name not in users) != want:
            return False
    if flt.get("name") and not any(n in vol.name for n in flt["name"]):
        return False
    if flt.get("driver") and vol.driver not in flt["driver"]:
        return False
    for lab in flt.get("label", []):
        k, sep, val = lab.partition("=")
        if k not in vol.labels or (sep and vol.labels[k] != val):
            return False
    for lab in flt.get("label!", []):
        k, sep, val = lab.partition("=")
        if k in vol.labels and (not sep or vol.labels[k] == val):
            return False
    return True


def remove(name: str, ctx: Context | None = None, *, force: bool = False) -> None:
    """Remove a volume and its data; refuses while a container uses it (even with force, as docker)."""
    ctx = _ctx(ctx)
    st = state_for(ctx.root)
    try:
        st.get_volume(name)
    except NoSuchVolume:
        if force:
            return
        raise
    users = st.volume_users(name)
    if users:
        raise VolumeInUse(f"remove {name}: volume is in use - [{', '.join(u[:12] for u in users)}]")
    if not st.delete_volume(name):
        raise VolumeInUse(f"remove {name}: volume is in use")
    _remove_data(ctx, name)


def _remove_data(ctx: Context, name: str) -> None:
    from pallet.engine import mounts

    path = data_path(ctx, name)
    with contextlib.suppress(OSError):
        mounts.umount(str(path), mounts.MNT_DETACH)
    import shutil

    shutil.rmtree(volumes_dir(ctx) / name, ignore_errors=True)


def size(ctx: Context, name: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(data_path(ctx, name)):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def prune(
    ctx: Context | None = None, *, all_volumes: bool = False, filters: list[str] | None = None
) -> tuple[list[str], int]:
    """Remove unused volumes: anonymous ones only, or all with ``all_volumes`` (docker 23+)."""
    ctx = _ctx(ctx)
    st = state_for(ctx.root)
    flt = _parse_filters(filters or [])
    flt.pop("dangling", None)
    users = st.all_volume_users()
    removed, reclaimed = [], 0
    for vol in st.list_volumes():
        if vol.name in users or (not all_volumes and not vol.anonymous) or not _match(vol, flt, users):
            continue
        n = size(ctx, vol.name)
        if st.delete_volume(vol.name):
            _remove_data(ctx, vol.name)
            removed.append(vol.name)
            reclaimed += n
    return removed, reclaimed


def remove_anonymous(ctx: Context, names: list[str]) -> None:
    """After a container is gone: delete its anonymous volumes no other container uses."""
    st = state_for(ctx.root)
    for name in names:
        try:
            vol = st.get_volume(name)
        except NoSuchVolume:
            continue
        if vol.anonymous and st.delete_volume(name):
            _remove_data(ctx, name)


def parse_options(opts: list[str]) -> dict[str, str]:
    return parse_kv_list(opts, "volume option")
