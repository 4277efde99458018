"""Small helpers shared by the v1 and v2 code: value checks and list parsing."""

from __future__ import annotations

import os

from pallet.runtime.cgroups._layout import CgroupError


def check_int(obj: dict, key: str, what: str) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise CgroupError(f"cgroup {what}: {key} must be an integer, got {v!r}")
    return v


def check_uint(obj: dict, key: str, what: str) -> int | None:
    v = check_int(obj, key, what)
    if v is not None and v < 0:
        raise CgroupError(f"cgroup {what}: {key} must not be negative, got {v}")
    return v


def parse_list(text: str) -> list[int]:
    """"0-2,5" -> [0, 1, 2, 5] (cpuset lists)."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def hugepage_sizes() -> list[str]:
    """The huge page sizes the kernel offers, named as the hugetlb controller names them (2MB, 1GB)."""
    sizes = []
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except OSError:
        return sizes
    for n in names:
        if n.startswith("hugepages-") and n.endswith("kB"):
            kb = int(n[len("hugepages-"):-2])
            for unit, mult in (("GB", 1 << 20), ("MB", 1 << 10), ("KB", 1)):
                if kb % mult == 0:
                    sizes.append(f"{kb // mult}{unit}")
                    break
    return sorted(sizes, key=lambda s: int(s[:-2]) * {"KB": 1, "MB": 1 << 10, "GB": 1 << 20}[s[-2:]])


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000], fitting 1024 -> 100 (runc's
    quadratic in log2, so docker's --cpu-shares means the same on both)."""
    import math

    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    lg = math.log2(shares)
    return math.ceil(10 ** ((lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0))


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] to io.weight [1, 10000], linearly."""
    return 1 + (weight - 10) * 9999 // 990
