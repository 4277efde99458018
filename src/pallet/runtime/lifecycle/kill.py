"""``kill``: signal the init, or with ``--all`` every process of the container."""

from __future__ import annotations

import os

from pallet.errors import RuntimeFailure
from pallet.runtime import log
from pallet.runtime.state import Container

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pallet.runtime.cgroups import Manager


def manager(c: Container) -> Manager:
    """The container's cgroups (a Manager is only paths: made again from the saved config)."""
    from pallet.runtime import cgroups

    return cgroups.manager(((c.data.get("config") or {}).get("linux") or {}).get("cgroupsPath"), c.id)


def container_pids(c: Container) -> list[int]:
    """Every process of the container: everything in its cgroup and the cgroups below it."""
    return manager(c).pids()


def kill(c: Container, sig: int, all_processes: bool = False) -> None:
    status = c.status()
    if status == "stopped" and not all_processes:
        raise RuntimeFailure(f"container {c.id} is not running")
    if all_processes:
        signal_all(c, sig)
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


def signal_all(c: Container, sig: int) -> None:
    """``kill --all``: every process in the cgroup. Frozen first (as runc), so nothing forks a
    child we would miss; a paused container is thawed after SIGKILL so the kill takes effect."""
    mgr = manager(c)
    paused = c.status() == "paused"
    frozen = False
    if not paused:
        try:
            mgr.freeze()
            frozen = True
        except RuntimeFailure as e:
            log.debug(f"kill --all: not frozen first: {e}")
    try:
        for pid in mgr.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            except OSError as e:
                log.warning(f"kill {pid}: {e.strerror}")
    finally:
        if frozen or (paused and sig == 9):
            mgr.thaw()
            if paused:
                c.data["_paused"] = False
                c.save()
