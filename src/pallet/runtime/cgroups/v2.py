"""cgroup v2 (the unified hierarchy): controllers, freezer, stats, unified key/values.

The runtime-spec resources are shaped after v1; they are converted the way runc converts them
(memory+swap to memory.swap.max, shares to cpu.weight, blkio weight to io.weight ...), so a
config means the same thing on either version.
"""

from __future__ import annotations

import errno
import time

from pallet.runtime.cgroups import _files
from pallet.runtime.cgroups._files import CgroupError
from pallet.runtime.cgroups.common import check_int, check_uint


def enable_controllers(dirs: list[str], wanted: frozenset[str]) -> None:
    """Write +ctrl to cgroup.subtree_control of each dir (root first) so the next level gets them.

    A controller that cannot be enabled (a level has processes of its own, or the controller is
    not delegated) is skipped: setting a limit that needs it then fails naming the missing file.
    """
    for d in dirs:
        have = set((_files.read_or_none(d, "cgroup.subtree_control") or "").split())
        avail = set((_files.read_or_none(d, "cgroup.controllers") or "").split())
        need = sorted((wanted & avail) - have)
        if not need:
            continue
        if _files.try_write(d, "cgroup.subtree_control", " ".join("+" + c for c in need)) is None:
            continue
        for c in need:
            _files.try_write(d, "cgroup.subtree_control", "+" + c)


def _num(v: int) -> str:
    return "max" if v == -1 else str(v)


def set_memory(d: str, mem: dict) -> None:
    limit = check_int(mem, "limit", "memory")
    swap = check_int(mem, "swap", "memory")
    reservation = check_int(mem, "reservation", "memory")
    if mem.get("checkBeforeUpdate"):
        usage = _files.uint_or_zero(d, "memory.current")
        for name, v in (("memory", limit), ("memory+swap", swap)):
            if v is not None and 0 < v <= usage:
                raise CgroupError(f"cgroup memory: rejecting {name} limit {v}: not above the "
                                  f"current usage {usage}")
    # the spec's swap is memory+swap; v2's memory.swap.max is swap alone
    swap_v2: int | None
    limit_n = limit or 0
    swap_n = swap or 0
    if limit_n == -1 and swap_n == 0:
        swap_v2 = -1
    elif swap_n in (-1, 0):
        swap_v2 = swap_n if swap is not None else None
    elif limit_n == -1:
        swap_v2 = swap_n
    elif limit_n == 0:
        raise CgroupError("cgroup memory: cannot set a swap limit without a memory limit")
    elif swap_n < limit_n:
        raise CgroupError(f"cgroup memory: swap (memory+swap) {swap_n} is below the memory limit "
                          f"{limit_n}")
    else:
        swap_v2 = swap_n - limit_n
    if swap_v2 is not None and not (swap_v2 == 0 and swap == 0):
        err = _files.try_write(d, "memory.swap.max", _num(swap_v2))
        if err is not None and not (err.errno == errno.ENOENT and swap_v2 in (-1, 0)):
            raise CgroupError(f"cgroup memory: cannot set memory.swap.max to {_num(swap_v2)}: "
                              f"{_files.strerror(err)}")
    if limit not in (None, 0):
        _files.write(d, "memory.max", _num(limit), "memory")
    if reservation not in (None, 0):
        _files.write(d, "memory.low", _num(reservation), "memory")
    if mem.get("swappiness") not in (None, -1):
        # no per-cgroup swappiness in v2 (runc ignores it too); refusing would break docker configs
        pass
    if mem.get("disableOOMKiller"):
        raise CgroupError("cgroup memory: disableOOMKiller is not supported on cgroup v2")
    for key in ("kernel", "kernelTCP"):
        if mem.get(key) not in (None, 0):
            pass  # deprecated; v2 accounts kernel memory as part of memory.max


def set_cpu(d: str, cpu: dict) -> None:
    from pallet.runtime.cgroups.common import shares_to_weight

    if cpu.get("idle") is not None:
        _files.write(d, "cpu.idle", check_int(cpu, "idle", "cpu"), "cpu")
    shares = check_uint(cpu, "shares", "cpu")
    if shares not in (None, 0):
        _files.write(d, "cpu.weight", shares_to_weight(shares), "cpu")
    quota = check_int(cpu, "quota", "cpu")
    period = check_uint(cpu, "period", "cpu")
    burst = check_uint(cpu, "burst", "cpu")
    pending_burst = None
    if burst is not None:
        err = _files.try_write(d, "cpu.max.burst", burst)
        if err is not None:
            if err.errno != errno.EINVAL or quota in (None, 0):
                raise CgroupError(f"cgroup cpu: cannot set cpu.max.burst to {burst}: "
                                  f"{_files.strerror(err)}")
            pending_burst = burst
    if quota not in (None, 0) or period not in (None, 0):
        q = str(quota) if quota and quota > 0 else "max"
        if quota is None:  # keep the current quota when only the period changes
            q = (_files.read_or_none(d, "cpu.max") or "max").split()[0]
        _files.write(d, "cpu.max", f"{q} {period or 100000}", "cpu")
        if pending_burst is not None:
            _files.write(d, "cpu.max.burst", pending_burst, "cpu")
    if cpu.get("realtimeRuntime") not in (None, 0) or cpu.get("realtimePeriod") not in (None, 0):
        raise CgroupError("cgroup cpu: realtimeRuntime/realtimePeriod are not supported on cgroup v2")


def set_io(d: str, bio: dict) -> None:
    from pallet.runtime.cgroups.common import blkio_to_io_weight
    from pallet.runtime.cgroups.v1 import THROTTLES, _dev

    weight = check_uint(bio, "weight", "io")
    bfq = _files.exists(d, "io.bfq.weight")
    if weight not in (None, 0):
        if bfq:
            _files.write(d, "io.bfq.weight", weight, "io")
        else:
            _files.write(d, "io.weight", blkio_to_io_weight(weight), "io")
    if bio.get("leafWeight") not in (None, 0):
        raise CgroupError("cgroup io: leafWeight is not supported on cgroup v2")
    for wd in bio.get("weightDevice") or []:
        if wd.get("weight") is not None:
            if bfq:
                _files.write(d, "io.bfq.weight", f"{_dev(wd, 'io')} {wd['weight']}", "io")
            else:
                _files.write(d, "io.weight",
                             f"{_dev(wd, 'io')} {blkio_to_io_weight(wd['weight'])}", "io")
    for key, _, v2key in THROTTLES:
        for td in bio.get(key) or []:
            rate = td.get("rate")
            if not isinstance(rate, int) or rate < 0:
                raise CgroupError(f"cgroup io: {key} entry {td!r} needs a rate")
            _files.write(d, "io.max", f"{_dev(td, 'io')} {v2key}={rate or 'max'}", "io")


def set_hugetlb(d: str, limits: list) -> None:
    rsvd = True
    for hl in limits:
        size, limit = hl.get("pageSize"), hl.get("limit")
        if not isinstance(size, str) or not isinstance(limit, int):
            raise CgroupError(f"cgroup hugetlb: bad hugepageLimits entry {hl!r}")
        name = f"hugetlb.{size}.max"
        if not _files.exists(d, name):
            why = ("the hugetlb controller is not enabled here" if not _files.exists(
                d, "hugetlb.2MB.max") else f"no {size} huge pages on this host")
            raise CgroupError(f"cgroup hugetlb: cannot set {name} to {limit}: {why}")
        _files.write(d, name, limit, "hugetlb")
        if rsvd:
            err = _files.try_write(d, f"hugetlb.{size}.rsvd.max", limit)
            if err is not None:
                if err.errno != errno.ENOENT:
                    raise CgroupError(f"cgroup hugetlb: cannot set hugetlb.{size}.rsvd.max to {limit}: "
                                      f"{_files.strerror(err)}")
                rsvd = False


def set_unified(d: str, unified: dict, v1_controllers: frozenset[str]) -> None:
    """linux.resources.unified: write each key to the file of that name in the v2 cgroup."""
    for key, value in unified.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise CgroupError(f"cgroup unified: {key!r}: keys and values must be strings")
        if "/" in key or key.startswith(".") or "." not in key:
            raise CgroupError(f"cgroup unified: {key!r} is not a CONTROLLER.PARAMETER file name")
        ctrl = key.split(".", 1)[0]
        if not _files.exists(d, key):
            if ctrl in v1_controllers:
                raise CgroupError(f"cgroup unified: cannot set {key}: the {ctrl} controller is on "
                                  "cgroup v1 on this host (use the matching linux.resources field)")
            if ctrl != "cgroup" and ctrl not in set(
                    (_files.read_or_none(d, "cgroup.controllers") or "").split()):
                raise CgroupError(f"cgroup unified: cannot set {key}: controller {ctrl!r} is not "
                                  "available in this cgroup v2 hierarchy")
            raise CgroupError(f"cgroup unified: cannot set {key}: no such file in {d}")
        # multi-line values (io.max for several devices) are one write per line
        for line in value.split("\n") or [""]:
            if line or value == "":
                _files.write(d, key, line, "unified")


# --- freezer -----------------------------------------------------------------------------------

def freeze(d: str, timeout: float = 10.0) -> None:
    _files.write(d, "cgroup.freeze", "1", "freezer")
    deadline = time.monotonic() + timeout
    while not _events_frozen(d):
        if time.monotonic() > deadline:
            _files.try_write(d, "cgroup.freeze", "0")
            raise CgroupError(f"cgroup freezer: {d} not frozen after {timeout:g}s")
        time.sleep(0.001)


def thaw(d: str) -> None:
    _files.write(d, "cgroup.freeze", "0", "freezer")


def _events_frozen(d: str) -> bool:
    return _files.read_kv(d, "cgroup.events").get("frozen") == 1


def frozen(d: str) -> bool:
    return (_files.read_or_none(d, "cgroup.freeze") or "0").strip() == "1" and _events_frozen(d)


# --- stats -------------------------------------------------------------------------------------

def memory_stats(d: str) -> dict:
    raw = _files.read_kv(d, "memory.stat")
    usage = {"limit": _files.uint_or_zero(d, "memory.max"),
             "usage": _files.uint_or_zero(d, "memory.current"),
             "max": _files.uint_or_zero(d, "memory.peak"),
             "failcnt": _files.read_kv(d, "memory.events").get("max", 0)}
    out: dict = {"cache": raw.get("file", 0), "usage": usage}
    if _files.exists(d, "memory.swap.current"):
        swap_limit = _files.uint_or_zero(d, "memory.swap.max")
        out["swap"] = {"limit": swap_limit if swap_limit == 2**64 - 1 else swap_limit + usage["limit"],
                       "usage": _files.uint_or_zero(d, "memory.swap.current") + usage["usage"],
                       "failcnt": _files.read_kv(d, "memory.swap.events").get("max", 0)}
    out["raw"] = raw
    return out


def cpu_stats(d: str) -> dict:
    st = _files.read_kv(d, "cpu.stat")
    return {"usage": {"total": st.get("usage_usec", 0) * 1000,
                      "kernel": st.get("system_usec", 0) * 1000,
                      "user": st.get("user_usec", 0) * 1000},
            "throttling": {"periods": st.get("nr_periods", 0),
                           "throttledPeriods": st.get("nr_throttled", 0),
                           "throttledTime": st.get("throttled_usec", 0) * 1000}}


def pids_stats(d: str) -> dict:
    if _files.exists(d, "pids.current"):
        limit = _files.uint_or_zero(d, "pids.max")
        return {"current": _files.uint_or_zero(d, "pids.current"),
                "limit": 0 if limit == 2**64 - 1 else limit}
    procs = _files.read_or_none(d, "cgroup.procs") or ""
    return {"current": len(procs.split()), "limit": 0}


def io_stats(d: str) -> dict:
    out: dict = {}
    for line in (_files.read_or_none(d, "io.stat") or "").splitlines():
        f = line.split()
        if not f or ":" not in f[0]:
            continue
        ma, mi = (int(x) for x in f[0].split(":"))
        for item in f[1:]:
            k, _, v = item.partition("=")
            target = {"rbytes": ("ioServiceBytesRecursive", "Read"),
                      "wbytes": ("ioServiceBytesRecursive", "Write"),
                      "rios": ("ioServicedRecursive", "Read"),
                      "wios": ("ioServicedRecursive", "Write")}.get(k)
            if target:
                out.setdefault(target[0], []).append(
                    {"major": ma, "minor": mi, "op": target[1], "value": int(v)})
    return out


def hugetlb_stats(d: str, sizes: list[str]) -> dict:
    out = {}
    for size in sizes:
        p = f"hugetlb.{size}"
        if _files.exists(d, p + ".current"):
            out[size] = {"usage": _files.uint_or_zero(d, p + ".current"),
                         "failcnt": _files.read_kv(d, p + ".events").get("max", 0)}
    return out


def oom_kills(d: str) -> int:
    return _files.read_kv(d, "memory.events").get("oom_kill", 0)


def procs(d: str) -> list[int]:
    """Every pid in the cgroup and below (v2: cgroup.procs is per cgroup, so walk)."""
    out: list[int] = []
    todo = [d]
    while todo:
        cur = todo.pop()
        text = _files.read_or_none(cur, "cgroup.procs")
        if text is None:
            continue  # gone (or never made)
        out.extend(int(x) for x in text.split())
        try:
            todo.extend(_files.subdirs(cur))
        except OSError:
            pass
    return out
