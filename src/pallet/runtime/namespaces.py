"""Linux namespaces: joined by path or created new, and the user namespace's id mappings.

Joining happens in the intermediate process (a pid namespace applies to children, so the init is
forked after). Paths are all opened first, before any setns changes what paths mean; the user
namespace is joined first so the others can be entered with its privileges.
"""

from __future__ import annotations

import os

from pallet.errors import RuntimeFailure
from pallet.runtime import syscalls as sc
from pallet.runtime.spec import NAMESPACES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# join order: user first, mount last (after it, host paths no longer resolve)
ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def open_paths(ns: dict[str, str | None]) -> list[tuple[str, int]]:
    """Open every namespace path (in join order); raises naming the bad one."""
    out: list[tuple[str, int]] = []
    try:
        for t in ORDER:
            p = ns.get(t)
            if p:
                try:
                    fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    raise RuntimeFailure(f"{t} namespace path {p}: {e.strerror}") from None
                out.append((t, fd))
    except BaseException:
        for _, fd in out:
            os.close(fd)
        raise
    return out


def join(fds: list[tuple[str, int]]) -> None:
    for t, fd in fds:
        try:
            sc.setns(fd, NAMESPACES[t])
        except OSError as e:
            raise RuntimeFailure(f"joining the {t} namespace: {e.strerror}") from None
        finally:
            os.close(fd)


def new_flags(ns: dict[str, str | None], exclude: tuple[str, ...] = ()) -> int:
    flags = 0
    for t, p in ns.items():
        if p is None and t not in exclude:
            flags |= NAMESPACES[t]
    return flags


def _map_text(maps: list[dict[str, Any]]) -> str:
    return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps)


def write_id_maps(pid: int, linux: dict[str, Any]) -> None:
    """Write uid_map/gid_map of ``pid`` (called by the runtime, the process's parent).

    As root we write the files; otherwise newuidmap/newgidmap (setuid helpers checking
    /etc/subuid) do it, and setgroups is denied only for a single self-mapping.
    """
    uids, gids = linux.get("uidMappings") or [], linux.get("gidMappings") or []
    if os.geteuid() == 0:
        for name, maps in (("uid_map", uids), ("gid_map", gids)):
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(_map_text(maps))
            except OSError as e:
                raise RuntimeFailure(f"writing {name} {_map_text(maps).strip()!r}: {e.strerror}") from None
        return
    for tool, maps, name in (("newuidmap", uids, "uid"), ("newgidmap", gids, "gid")):
        import shutil

        exe = shutil.which(tool)
        single_self = (
            len(maps) == 1
            and maps[0]["size"] == 1
            and maps[0]["hostID"] == (os.geteuid() if name == "uid" else os.getegid())
        )
        if single_self:
            if name == "gid":
                with open(f"/proc/{pid}/setgroups", "w") as f:
                    f.write("deny")
            with open(f"/proc/{pid}/{name}_map", "w") as f:
                f.write(_map_text(maps))
            continue
        if exe is None:
            raise RuntimeFailure(f"{tool} not found: needed to map {name}s as an unprivileged user")
        import subprocess

        args = [exe, str(pid)]
        for m in maps:
            args += [str(m["containerID"]), str(m["hostID"]), str(m["size"])]
        res = subprocess.run(args, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeFailure(f"{tool}: {res.stderr.strip() or 'failed'}")


def write_time_offsets(offsets: dict[str, Any]) -> None:
    """/proc/self/timens_offsets, after unshare(CLONE_NEWTIME) and before the first fork."""
    lines = []
    for clock, name in (("monotonic", "monotonic"), ("boottime", "boottime")):
        o = offsets.get(clock)
        if o:
            lines.append(f"{name} {int(o.get('secs', 0))} {int(o.get('nanosecs', 0))}\n")
    if lines:
        try:
            with open("/proc/self/timens_offsets", "w") as f:
                f.write("".join(lines))
        except OSError as e:
            raise RuntimeFailure(f"setting time namespace offsets: {e.strerror}") from None
