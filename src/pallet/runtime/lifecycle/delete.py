"""``delete``: remove a stopped container (``--force``: kill it first); runs poststop hooks."""

from __future__ import annotations

import os

from pallet.errors import RuntimeFailure
from pallet.runtime import ext, hooks, log, spec
from pallet.runtime.lifecycle.create import _wait_gone
from pallet.runtime.lifecycle.kill import container_pids
from pallet.runtime.state import Container, rmtree


def delete(c: Container, force: bool = False) -> None:
    """Caller holds the container lock."""
    status = c.status()
    cfg = c.data.get("config") or {}
    if status in ("running", "paused", "creating") and not force:
        raise RuntimeFailure(f"cannot delete container {c.id} that is not stopped: {status}")
    if status != "stopped" and c.pid > 0:
        mgr = ext.cgroup_manager((cfg.get("linux") or {}).get("cgroupsPath"), c.id)
        if status == "paused" and mgr is not None:
            ext.call(mgr.thaw)
        for pid in [c.pid, *container_pids(c)]:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        _wait_gone(c.pid)
    destroy(c)


def destroy(c: Container) -> None:
    """Everything a stopped container still holds: cgroup, state dir; then poststop hooks."""
    cfg = c.data.get("config") or {}
    linux = cfg.get("linux") or {}
    mgr = ext.cgroup_manager(linux.get("cgroupsPath"), c.id)
    if mgr is not None:
        for pid in ext.call(mgr.pids, default=[]) or []:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        ext.call(mgr.destroy)
    if "mount" not in spec.namespaces(cfg):
        from pallet.runtime import rootfs

        rootfs.unmount_under(c.data.get("rootfs") or "")
    state = {**c.oci_state(), "status": "stopped"}
    rmtree(c.dir)
    if os.path.exists(c.dir):
        raise RuntimeFailure(f"removing state directory {c.dir} failed")
    if hooks.has(cfg, "poststop"):
        hooks.run("poststop", cfg["hooks"]["poststop"], state, warn_only=True)
    log.debug(f"container {c.id} deleted")
