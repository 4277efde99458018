"""cgroup v1 controllers: runtime-spec resources to interface files, freezer, stats.

Each ``set_*`` takes the directory of the container's cgroup in the controller's hierarchy and
the matching part of ``linux.resources``; keys that are absent are left alone (``update``).
Write orders follow the kernel's validation rules as runc learned them (memory before or after
memsw, quota before period ...).
"""

from __future__ import annotations

import errno
import os
import time

from pallet.runtime.cgroups import _files
from pallet.runtime.cgroups._files import CgroupError
from pallet.runtime.cgroups.common import check_int, check_uint


def set_memory(d: str, mem: dict) -> None:
    limit = check_int(mem, "limit", "memory")
    swap = check_int(mem, "swap", "memory")
    reservation = check_int(mem, "reservation", "memory")
    swappiness = mem.get("swappiness")
    if mem.get("useHierarchy") is not None:
        want = "1" if mem["useHierarchy"] else "0"
        if (_files.read_or_none(d, "memory.use_hierarchy") or "").strip() != want:
            _files.write(d, "memory.use_hierarchy", want, "memory")
    if mem.get("checkBeforeUpdate"):
        usage = _files.uint_or_zero(d, "memory.usage_in_bytes")
        for name, v in (("memory", limit), ("memory+swap", swap)):
            if v is not None and 0 < v <= usage:
                raise CgroupError(f"cgroup memory: rejecting {name} limit {v}: not above the "
                                  f"current usage {usage}")
    has_memsw = _files.exists(d, "memory.memsw.limit_in_bytes")
    if limit == -1 and swap is None and has_memsw:
        swap = -1  # "unlimited memory" means unlimited memory+swap too (runc)
    if swap not in (None, 0) and not has_memsw:
        if swap != -1:
            raise CgroupError("cgroup memory: cannot set memory.memsw.limit_in_bytes to "
                              f"{swap}: swap accounting is not enabled in this kernel")
        swap = None
    limit = None if limit == 0 else limit
    swap = None if swap == 0 else swap
    if limit is not None and swap is not None:
        current = _files.read_uint(d, "memory.limit_in_bytes")
        if swap == -1 or current < swap:  # raise memsw first, or the new memory limit is refused
            _set_swap(d, swap)
            _set_limit(d, limit)
        else:
            _set_limit(d, limit)
            _set_swap(d, swap)
    elif limit is not None:
        _set_limit(d, limit)
    elif swap is not None:
        _set_swap(d, swap)
    if reservation not in (None, 0):
        _files.write(d, "memory.soft_limit_in_bytes", reservation, "memory")
    for key, name in (("kernel", "memory.kmem.limit_in_bytes"),
                      ("kernelTCP", "memory.kmem.tcp.limit_in_bytes")):
        v = check_int(mem, key, "memory")
        if v not in (None, 0):
            err = _files.try_write(d, name, v)
            # deprecated by the spec and gone from new kernels: ignored there, as runc does
            if err is not None and err.errno not in (errno.ENOENT, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise CgroupError(f"cgroup memory: cannot set {name} to {v}: {_files.strerror(err)}")
    if swappiness is not None and swappiness != -1:
        if not isinstance(swappiness, int) or not 0 <= swappiness <= 100:
            raise CgroupError(f"cgroup memory: swappiness {swappiness!r} is not in 0..100")
        _files.write(d, "memory.swappiness", swappiness, "memory")
    if mem.get("disableOOMKiller") is not None:
        _files.write(d, "memory.oom_control", "1" if mem["disableOOMKiller"] else "0", "memory")


def _set_limit(d: str, limit: int) -> None:
    err = _files.try_write(d, "memory.limit_in_bytes", limit)
    if err is None:
        return
    if err.errno == errno.EBUSY:
        usage = _files.uint_or_zero(d, "memory.usage_in_bytes")
        peak = _files.uint_or_zero(d, "memory.max_usage_in_bytes")
        raise CgroupError(f"cgroup memory: cannot set memory.limit_in_bytes to {limit}: device or "
                          f"resource busy (current usage {usage}, peak {peak})")
    raise CgroupError(f"cgroup memory: cannot set memory.limit_in_bytes to {limit}: "
                      f"{_files.strerror(err)}")


def _set_swap(d: str, swap: int) -> None:
    _files.write(d, "memory.memsw.limit_in_bytes", swap, "memory")


def set_cpu(d: str, cpu: dict) -> None:
    shares = check_uint(cpu, "shares", "cpu")
    if shares not in (None, 0):
        _files.write(d, "cpu.shares", shares, "cpu")
        got = _files.read_uint(d, "cpu.shares")
        if got != shares:
            raise CgroupError(f"cgroup cpu: cannot set cpu.shares to {shares}: the kernel clamped it "
                              f"to {got} (allowed range 2..262144)")
    quota = check_int(cpu, "quota", "cpu")
    period = check_uint(cpu, "period", "cpu")
    burst = check_uint(cpu, "burst", "cpu")
    pending_period = None
    if period not in (None, 0):
        err = _files.try_write(d, "cpu.cfs_period_us", period)
        if err is not None:
            # a shorter period can be refused until the quota shrinks: retry after the quota
            if err.errno != errno.EINVAL or quota in (None, 0):
                raise CgroupError(f"cgroup cpu: cannot set cpu.cfs_period_us to {period}: "
                                  f"{_files.strerror(err)}")
            pending_period = period
    pending_burst = None
    if burst is not None:
        err = _files.try_write(d, "cpu.cfs_burst_us", burst)
        if err is not None:
            if err.errno != errno.EINVAL or quota in (None, 0):
                raise CgroupError(f"cgroup cpu: cannot set cpu.cfs_burst_us to {burst}: "
                                  f"{_files.strerror(err)}")
            pending_burst = burst
    if quota not in (None, 0):
        _files.write(d, "cpu.cfs_quota_us", quota, "cpu")
        if pending_period is not None:
            _files.write(d, "cpu.cfs_period_us", pending_period, "cpu")
        if pending_burst is not None:
            _files.write(d, "cpu.cfs_burst_us", pending_burst, "cpu")
    if cpu.get("idle") is not None:
        _files.write(d, "cpu.idle", check_int(cpu, "idle", "cpu"), "cpu")
    set_rt(d, cpu)


def set_rt(d: str, cpu: dict) -> None:
    """Realtime bandwidth (CONFIG_RT_GROUP_SCHED); the parent must have runtime to hand out."""
    runtime = check_int(cpu, "realtimeRuntime", "cpu")
    period = check_uint(cpu, "realtimePeriod", "cpu")
    pending = None
    if period not in (None, 0):
        err = _files.try_write(d, "cpu.rt_period_us", period)
        if err is not None:
            if err.errno != errno.EINVAL or runtime in (None, 0):
                raise CgroupError(f"cgroup cpu: cannot set cpu.rt_period_us to {period}: "
                                  f"{_files.strerror(err)}")
            pending = period
    if runtime not in (None, 0):
        _files.write(d, "cpu.rt_runtime_us", runtime, "cpu")
        if pending is not None:
            _files.write(d, "cpu.rt_period_us", pending, "cpu")


def set_cpuset(d: str, cpu: dict) -> None:
    for key, name in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        v = cpu.get(key)
        if v:
            if not isinstance(v, str):
                raise CgroupError(f"cgroup cpuset: {key} must be a string like '0-1,3'")
            _files.write(d, name, v, "cpuset")


def ensure_cpuset(d: str) -> None:
    """A new v1 cpuset has empty cpus/mems and refuses tasks: inherit the parent's (already
    there when the parent has cgroup.clone_children: both are copied then)."""
    if (_files.read_or_none(d, "cpuset.cpus") or "").strip():
        return
    parent = os.path.dirname(d)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if (_files.read_or_none(d, name) or "").strip() == "":
            value = (_files.read_or_none(parent, name) or "").strip()
            if value:
                _files.write(d, name, value, "cpuset")


def set_pids(d: str, pids: dict) -> None:
    limit = check_int(pids, "limit", "pids")
    if limit is not None:
        _files.write(d, "pids.max", pids_value(limit), "pids")


def pids_value(limit: int) -> str:
    # 0 cannot mean "no process at all": like runc (and systemd's TasksMax) it becomes 1
    return "max" if limit < 0 else str(limit or 1)


def _dev(entry: dict, what: str) -> str:
    ma, mi = entry.get("major"), entry.get("minor")
    if not isinstance(ma, int) or not isinstance(mi, int) or ma < 0 or mi < 0:
        raise CgroupError(f"cgroup {what}: device entries need numeric major and minor, got {entry!r}")
    return f"{ma}:{mi}"


THROTTLES = (("throttleReadBpsDevice", "read_bps_device", "rbps"),
             ("throttleWriteBpsDevice", "write_bps_device", "wbps"),
             ("throttleReadIOPSDevice", "read_iops_device", "riops"),
             ("throttleWriteIOPSDevice", "write_iops_device", "wiops"))


def set_blkio(d: str, bio: dict) -> None:
    weight = check_uint(bio, "weight", "blkio")
    # CFQ's blkio.weight is gone from modern kernels; BFQ offers blkio.bfq.weight (same 1..1000)
    wfile = "blkio.weight" if _files.exists(d, "blkio.weight") else "blkio.bfq.weight"
    if weight not in (None, 0):
        _files.write(d, wfile, weight, "blkio")
    leaf = check_uint(bio, "leafWeight", "blkio")
    if leaf not in (None, 0):
        _files.write(d, "blkio.leaf_weight", leaf, "blkio")
    for wd in bio.get("weightDevice") or []:
        dev = _dev(wd, "blkio")
        if wd.get("weight") is not None:
            _files.write(d, wfile + "_device", f"{dev} {wd['weight']}", "blkio")
        if wd.get("leafWeight") is not None:
            _files.write(d, "blkio.leaf_weight_device", f"{dev} {wd['leafWeight']}", "blkio")
    for key, name, _ in THROTTLES:
        for td in bio.get(key) or []:
            rate = td.get("rate")
            if not isinstance(rate, int) or rate < 0:
                raise CgroupError(f"cgroup blkio: {key} entry {td!r} needs a rate")
            _files.write(d, "blkio.throttle." + name, f"{_dev(td, 'blkio')} {rate}", "blkio")


def set_hugetlb(d: str, limits: list) -> None:
    rsvd = True
    for hl in limits:
        size, limit = hl.get("pageSize"), hl.get("limit")
        if not isinstance(size, str) or not isinstance(limit, int):
            raise CgroupError(f"cgroup hugetlb: bad hugepageLimits entry {hl!r}")
        prefix = f"hugetlb.{size}"
        if not _files.exists(d, prefix + ".limit_in_bytes"):
            raise CgroupError(f"cgroup hugetlb: cannot set {prefix}.limit_in_bytes to {limit}: no "
                              f"{size} huge pages on this host")
        _files.write(d, prefix + ".limit_in_bytes", limit, "hugetlb")
        if rsvd:
            err = _files.try_write(d, prefix + ".rsvd.limit_in_bytes", limit)
            if err is not None:
                if err.errno != errno.ENOENT:
                    raise CgroupError(f"cgroup hugetlb: cannot set {prefix}.rsvd.limit_in_bytes to "
                                      f"{limit}: {_files.strerror(err)}")
                rsvd = False


def set_net_cls(d: str, classid: int) -> None:
    _files.write(d, "net_cls.classid", classid, "net_cls")


def set_net_prio(d: str, priorities: list) -> None:
    for p in priorities:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not isinstance(
                p.get("priority"), int):
            raise CgroupError(f"cgroup net_prio: bad priorities entry {p!r}")
        _files.write(d, "net_prio.ifpriomap", f"{p['name']} {p['priority']}", "net_prio")


def set_rdma(d: str, rdma: dict) -> None:
    for dev, lim in rdma.items():
        parts = [f"{k}={lim[s]}" for s, k in (("hcaHandles", "hca_handle"), ("hcaObjects", "hca_object"))
                 if lim.get(s) is not None]
        if parts:
            _files.write(d, "rdma.max", f"{dev} {' '.join(parts)}", "rdma")


# --- freezer -----------------------------------------------------------------------------------

def freeze(d: str, timeout: float = 10.0) -> None:
    """Write FROZEN until the kernel reports FROZEN (tasks in uninterruptible sleep can keep a
    cgroup FREEZING; thawing briefly and retrying gets them, as runc found)."""
    deadline = time.monotonic() + timeout
    i = 0
    while True:
        _files.write(d, "freezer.state", "FROZEN", "freezer")
        state = _files.read(d, "freezer.state").strip()
        if state == "FROZEN":
            return
        if state != "FREEZING":
            raise CgroupError(f"cgroup freezer: unexpected freezer.state {state!r} while freezing")
        i += 1
        if time.monotonic() > deadline:
            _files.try_write(d, "freezer.state", "THAWED")
            raise CgroupError(f"cgroup freezer: {d} still FREEZING after {timeout:g}s")
        if i % 50 == 49:
            _files.try_write(d, "freezer.state", "THAWED")
            time.sleep(0.01)
        elif i % 10 == 9:
            time.sleep(0.001)


def thaw(d: str) -> None:
    _files.write(d, "freezer.state", "THAWED", "freezer")


def frozen(d: str) -> bool:
    while True:
        state = (_files.read_or_none(d, "freezer.state") or "").strip()
        if state == "FREEZING":
            time.sleep(0.001)
            continue
        if state != "FROZEN":
            return False
        # FROZEN because a parent is frozen is not "paused" for this container
        return (_files.read_or_none(d, "freezer.self_freezing") or "1").strip() == "1"


# --- stats -------------------------------------------------------------------------------------

def _entry(d: str, prefix: str) -> dict:
    out = {"limit": _files.uint_or_zero(d, prefix + ".limit_in_bytes"),
           "usage": _files.uint_or_zero(d, prefix + ".usage_in_bytes"),
           "max": _files.uint_or_zero(d, prefix + ".max_usage_in_bytes"),
           "failcnt": _files.uint_or_zero(d, prefix + ".failcnt")}
    return out


def memory_stats(d: str) -> dict:
    raw = _files.read_kv(d, "memory.stat")
    out: dict = {"cache": raw.get("cache", 0), "usage": _entry(d, "memory")}
    if _files.exists(d, "memory.memsw.usage_in_bytes"):
        out["swap"] = _entry(d, "memory.memsw")
    if _files.exists(d, "memory.kmem.usage_in_bytes"):
        out["kernel"] = _entry(d, "memory.kmem")
    if _files.exists(d, "memory.kmem.tcp.usage_in_bytes"):
        out["kernelTCP"] = _entry(d, "memory.kmem.tcp")
    out["raw"] = raw
    return out


def cpu_stats(cpu_dir: str | None, cpuacct_dir: str | None) -> dict:
    usage: dict = {}
    throttling: dict = {}
    if cpuacct_dir:
        usage["total"] = _files.uint_or_zero(cpuacct_dir, "cpuacct.usage")
        for key, name in (("percpu", "cpuacct.usage_percpu"),
                          ("percpu_kernel", "cpuacct.usage_percpu_sys"),
                          ("percpu_user", "cpuacct.usage_percpu_user")):
            text = _files.read_or_none(cpuacct_dir, name)
            if text:
                usage[key] = [int(x) for x in text.split()]
        # cpuacct.stat is in USER_HZ ticks; runc reports nanoseconds
        stat = _files.read_kv(cpuacct_dir, "cpuacct.stat")
        tick = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100)
        usage["kernel"] = stat.get("system", 0) * tick
        usage["user"] = stat.get("user", 0) * tick
    if cpu_dir:
        st = _files.read_kv(cpu_dir, "cpu.stat")
        throttling = {"periods": st.get("nr_periods", 0), "throttledPeriods": st.get("nr_throttled", 0),
                      "throttledTime": st.get("throttled_time", 0)}
    return {"usage": usage, "throttling": throttling}


def pids_stats(d: str) -> dict:
    limit = _files.uint_or_zero(d, "pids.max")
    return {"current": _files.uint_or_zero(d, "pids.current"),
            "limit": 0 if limit == 2**64 - 1 else limit}


def _blkio_entries(d: str, name: str) -> list[dict]:
    out = []
    for line in (_files.read_or_none(d, name) or "").splitlines():
        f = line.split()
        if len(f) == 3 and ":" in f[0]:
            ma, mi = f[0].split(":")
            out.append({"major": int(ma), "minor": int(mi), "op": f[1], "value": int(f[2])})
    return out


def blkio_stats(d: str) -> dict:
    out = {}
    for key, names in (("ioServiceBytesRecursive", ("blkio.io_service_bytes_recursive",
                                                    "blkio.bfq.io_service_bytes_recursive",
                                                    "blkio.throttle.io_service_bytes_recursive")),
                       ("ioServicedRecursive", ("blkio.io_serviced_recursive",
                                                "blkio.bfq.io_serviced_recursive",
                                                "blkio.throttle.io_serviced_recursive"))):
        for name in names:  # CFQ, then BFQ, then the throttle layer (always there)
            entries = _blkio_entries(d, name)
            if entries:
                out[key] = entries
                break
    return out


def hugetlb_stats(d: str, sizes: list[str]) -> dict:
    out = {}
    for size in sizes:
        p = f"hugetlb.{size}"
        if _files.exists(d, p + ".usage_in_bytes"):
            out[size] = {"usage": _files.uint_or_zero(d, p + ".usage_in_bytes"),
                         "max": _files.uint_or_zero(d, p + ".max_usage_in_bytes"),
                         "failcnt": _files.uint_or_zero(d, p + ".failcnt")}
    return out


def cpuset_stats(d: str) -> dict:
    from pallet.runtime.cgroups.common import parse_list

    out: dict = {}
    for key in ("cpus", "mems"):
        text = (_files.read_or_none(d, "cpuset." + key) or "").strip()
        if text:
            out[key] = parse_list(text)
    for key in ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate",
                "memory_spread_page", "memory_spread_slab", "memory_pressure", "sched_load_balance"):
        out[key] = _files.uint_or_zero(d, "cpuset." + key)
    try:
        out["sched_relax_domain_level"] = int(_files.read(d, "cpuset.sched_relax_domain_level"))
    except (OSError, ValueError):
        out["sched_relax_domain_level"] = 0
    return out


def oom_kills(d: str) -> int:
    return _files.read_kv(d, "memory.oom_control").get("oom_kill", 0)
