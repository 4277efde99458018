"""cgroups for containers: v1, v2 and hybrid hierarchies (this host is hybrid), behind one Manager.

INTERFACE STUB: the lifecycle code calls exactly these; the cgroups work fills them in.
"""

from __future__ import annotations

from typing import Any


class Manager:
    """One container's cgroup across every mounted hierarchy (v1 controllers and/or unified)."""

    #: the cgroup path relative to each hierarchy's root, e.g. "/pallet/ID" or "/user.slice/x"
    path: str

    def create(self) -> None:
        """Create the cgroup in every hierarchy (idempotent)."""
        raise NotImplementedError

    def apply(self, pid: int) -> None:
        """Move ``pid`` (and so its future children) into the cgroup."""
        raise NotImplementedError

    def set(self, resources: dict[str, Any]) -> None:
        """Apply runtime-spec ``linux.resources`` (create and ``update`` both use this).

        Raises pallet.errors.RuntimeFailure naming the setting when the host refuses one.
        """
        raise NotImplementedError

    def freeze(self) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def frozen(self) -> bool:
        raise NotImplementedError

    def pids(self) -> list[int]:
        """Every process in the cgroup and its descendants."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """runc ``events --stats`` shaped numbers: cpu, memory, pids, blkio, hugetlb."""
        raise NotImplementedError

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed a process in this cgroup."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Remove the cgroup everywhere (processes must be gone); idempotent."""
        raise NotImplementedError

    def mounts_for_container(self) -> list[tuple[str, str, list[str]]]:
        """(hierarchy dir name under /sys/fs/cgroup, host source dir, options) for a cgroup mount
        inside the container, so /sys/fs/cgroup there shows this container's cgroup as its root."""
        raise NotImplementedError


def manager(cgroups_path: str | None, container_id: str) -> Manager:
    """The Manager for a config's ``linux.cgroupsPath`` (absolute, relative, or None → default)."""
    raise NotImplementedError


def controllers_available() -> dict[str, str]:
    """Controller name → "v1" or "v2" on this host (for ``features``)."""
    raise NotImplementedError
