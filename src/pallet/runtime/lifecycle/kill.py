"""``kill``: signal the init, or with ``--all`` every process of the container."""

from __future__ import annotations

import os

from pallet.errors import RuntimeFailure
from pallet.runtime import ext, log
from pallet.runtime.state import Container


def container_pids(c: Container) -> list[int]:
    """Every process of the container: its cgroup (Manager.pids), else its own pid namespace."""
    cfg = c.data.get("config") or {}
    mgr = ext.cgroup_manager((cfg.get("linux") or {}).get("cgroupsPath"), c.id)
    if mgr is not None:
        pids = ext.call(mgr.pids)
        if pids is not None:
            return list(pids)
    return pidns_members(c)


def pidns_members(c: Container) -> list[int]:
    """Fallback: processes sharing the init's pid namespace (when the container has its own)."""
    if not c.alive():
        return []
    try:
        target = os.readlink(f"/proc/{c.pid}/ns/pid")
    except OSError:
        return [c.pid]
    if target == os.readlink("/proc/self/ns/pid"):
        return [c.pid]  # shares the host's pid namespace: only the init is known to be ours
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") == target:
                    out.append(int(name))
            except OSError:
                continue
    return sorted(out)


def kill(c: Container, sig: int, all_processes: bool = False) -> None:
    status = c.status()
    if status == "stopped" and not all_processes:
        raise RuntimeFailure(f"container {c.id} is not running")
    if all_processes:
        for pid in container_pids(c):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            except OSError as e:
                log.warning(f"kill {pid}: {e.strerror}")
        return
    try:
        fd = os.pidfd_open(c.pid)
    except ProcessLookupError:
        raise RuntimeFailure(f"container {c.id} is not running") from None
    try:
        if not c.alive():
            raise RuntimeFailure(f"container {c.id} is not running")
        import signal

        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        raise RuntimeFailure(f"container {c.id} is not running") from None
    finally:
        os.close(fd)
