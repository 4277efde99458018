"""Reading a container's cgroup: OOM kills, processes, and the figures ``stats`` shows.

Works on cgroup v1 (and hybrid hosts: v1 controllers at /sys/fs/cgroup/<controller>) and on
unified v2. The runtime creates the cgroup from config.json's ``cgroupsPath``; the engine only
reads it (``top``, ``stats``, OOM detection) and checks it is gone after ``rm``.
"""

from __future__ import annotations

import os
from functools import cache

CGROUP_ROOT = "/sys/fs/cgroup"
#: parent of every container's cgroup (a runtime's cgroupfs cgroupsPath)
DEFAULT_PARENT = "/pallet"


@cache
def is_v2() -> bool:
    """True on a unified (v2-only) host."""
    return os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers"))


def cgroups_path(container_id: str, parent: str | None = None) -> str:
    parent = (parent or DEFAULT_PARENT).rstrip("/") or ""
    if not parent.startswith("/"):
        parent = "/" + parent
    return f"{parent}/{container_id}"


def controller_dir(path: str, controller: str) -> str:
    """Directory of ``path`` in ``controller``'s hierarchy (v1), or the unified one (v2)."""
    if is_v2():
        return CGROUP_ROOT + path
    return os.path.join(CGROUP_ROOT, controller) + path


def all_dirs(path: str) -> list[str]:
    """Every directory the runtime may have made for ``path`` (for leak checks)."""
    if is_v2():
        return [CGROUP_ROOT + path]
    out = []
    try:
        names = os.listdir(CGROUP_ROOT)
    except OSError:
        return out
    for name in names:
        base = os.path.join(CGROUP_ROOT, name)
        if os.path.isdir(base) and not os.path.islink(base):
            out.append(base + path)
    return out


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _kv(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def oom_kills(path: str) -> int:
    """How many processes the OOM killer killed in this cgroup."""
    if is_v2():
        return _kv(_read(CGROUP_ROOT + path + "/memory.events")).get("oom_kill", 0)
    return _kv(_read(controller_dir(path, "memory") + "/memory.oom_control")).get("oom_kill", 0)


def pids(path: str) -> list[int]:
    """Processes in the container's cgroup (and its children)."""
    base = controller_dir(path, "pids")
    if not os.path.isdir(base):
        base = controller_dir(path, "memory")
    out: list[int] = []
    for dirpath, _dirs, files in os.walk(base):
        if "cgroup.procs" in files:
            for line in (_read(os.path.join(dirpath, "cgroup.procs")) or "").split():
                if line.isdigit():
                    out.append(int(line))
    return sorted(set(out))


def stats(path: str) -> dict[str, int]:
    """Raw counters: cpu_ns, mem_usage, mem_limit, mem_cache, pids, blk_read, blk_write."""
    out = {
        "cpu_ns": 0,
        "mem_usage": 0,
        "mem_limit": 0,
        "mem_cache": 0,
        "pids": 0,
        "blk_read": 0,
        "blk_write": 0,
    }
    if is_v2():
        d = CGROUP_ROOT + path
        cpu = _kv(_read(d + "/cpu.stat"))
        out["cpu_ns"] = cpu.get("usage_usec", 0) * 1000
        out["mem_usage"] = int((_read(d + "/memory.current") or "0").strip() or 0)
        lim = (_read(d + "/memory.max") or "max").strip()
        out["mem_limit"] = int(lim) if lim.isdigit() else 0
        out["mem_cache"] = _kv(_read(d + "/memory.stat")).get("inactive_file", 0)
        out["pids"] = int((_read(d + "/pids.current") or "0").strip() or 0)
        for line in (_read(d + "/io.stat") or "").splitlines():
            for field in line.split()[1:]:
                k, _, v = field.partition("=")
                if k == "rbytes":
                    out["blk_read"] += int(v)
                elif k == "wbytes":
                    out["blk_write"] += int(v)
        return out
    cpu_text = _read(controller_dir(path, "cpuacct") + "/cpuacct.usage")
    out["cpu_ns"] = int(cpu_text.strip()) if cpu_text and cpu_text.strip().isdigit() else 0
    mem = controller_dir(path, "memory")
    usage = _read(mem + "/memory.usage_in_bytes")
    out["mem_usage"] = int(usage.strip()) if usage and usage.strip().isdigit() else 0
    limit = _read(mem + "/memory.limit_in_bytes")
    lim = int(limit.strip()) if limit and limit.strip().isdigit() else 0
    out["mem_limit"] = lim if lim < (1 << 62) else 0
    out["mem_cache"] = _kv(_read(mem + "/memory.stat")).get("total_inactive_file", 0)
    p = _read(controller_dir(path, "pids") + "/pids.current")
    out["pids"] = int(p.strip()) if p and p.strip().isdigit() else 0
    for line in (
        _read(controller_dir(path, "blkio") + "/blkio.throttle.io_service_bytes") or ""
    ).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            if parts[1] == "Read":
                out["blk_read"] += int(parts[2])
            elif parts[1] == "Write":
                out["blk_write"] += int(parts[2])
    return out


def host_memory() -> int:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def freezer_state(path: str) -> str:
    """FROZEN / THAWED (v1) or 1 / 0 (v2) — '' when unknown."""
    if is_v2():
        return (_read(CGROUP_ROOT + path + "/cgroup.freeze") or "").strip()
    return (_read(controller_dir(path, "freezer") + "/freezer.state") or "").strip()
