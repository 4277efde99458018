"""``delete``: remove a stopped container (``--force``: kill it first); runs poststop hooks."""

from __future__ import annotations

import os

from pallet.errors import RuntimeFailure
from pallet.runtime import hooks, log, spec
from pallet.runtime.lifecycle.create import _wait_gone
from pallet.runtime.lifecycle.kill import manager
from pallet.runtime.state import Container, rmtree


def delete(c: Container, force: bool = False) -> None:
    """Caller holds the container lock."""
    status = c.status()
    if status in ("running", "paused", "creating") and not force:
        raise RuntimeFailure(f"cannot delete container {c.id} that is not stopped: {status}")
    if status != "stopped" and c.pid > 0:
        mgr = manager(c)
        for pid in [c.pid, *mgr.pids()]:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        if status == "paused":
            mgr.thaw()  # v1 frozen tasks do not die of SIGKILL until thawed
            c.data["_paused"] = False
        _wait_gone(c.pid)
    destroy(c)


def destroy(c: Container) -> None:
    """Everything a stopped container still holds: cgroup, state dir; then poststop hooks."""
    cfg = c.data.get("config") or {}
    mgr = manager(c)
    # what outlived the init (a container without its own pid namespace) goes with it
    for pid in mgr.pids():
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    if c.data.get("_paused"):
        mgr.thaw()  # v1 frozen tasks do not die of SIGKILL until thawed
    mgr.destroy()
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
