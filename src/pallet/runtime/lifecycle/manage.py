"""The rest of runc's verbs: state, list, ps, pause, resume, update, events, features, spec."""

from __future__ import annotations

from pallet.errors import RuntimeFailure
from pallet.runtime import jsonio, spec
from pallet.runtime.lifecycle.kill import container_pids, manager
from pallet.runtime.state import Container, list_ids

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def pause(c: Container) -> None:
    st = c.status()
    if st not in ("running", "created"):
        raise RuntimeFailure(f"cannot pause container {c.id}: it is {st}")
    manager(c).freeze()
    c.data["_paused"] = True
    c.save()


def resume(c: Container) -> None:
    st = c.status()
    if st != "paused":
        raise RuntimeFailure(f"cannot resume container {c.id}: it is {st}, not paused")
    manager(c).thaw()
    c.data["_paused"] = False
    c.save()


def ps(c: Container, fmt: str, ps_args: list[str]) -> str:
    if c.status() == "stopped":
        raise RuntimeFailure(f"container {c.id} is not running")
    pids = container_pids(c)
    if fmt == "json":
        return jsonio.dumps(pids)
    import subprocess

    res = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeFailure(f"ps: {res.stderr.strip()}")
    lines = res.stdout.splitlines()
    if not lines:
        return ""
    header = lines[0]
    cols = header.split()
    if "PID" not in cols:
        raise RuntimeFailure("ps output has no PID column")
    idx = cols.index("PID")
    want = set(pids)
    out = [header]
    for line in lines[1:]:
        f = line.split()
        if len(f) > idx and f[idx].isdigit() and int(f[idx]) in want:
            out.append(line)
    return "\n".join(out)


_SUFFIX = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
}


def parse_bytes(v: str) -> int:
    """ "512m", "1G", "1048576", "-1" → bytes (runc's units.RAMInBytes)."""
    s = v.strip().lower()
    if s == "-1":
        return -1
    num = s.rstrip("bkmgti")
    unit = s[len(num) :].replace("i", "")
    try:
        return int(float(num) * _SUFFIX[unit])
    except (KeyError, ValueError):
        raise RuntimeFailure(f"invalid size {v!r}") from None


def update_resources(flags: dict[str, str | None], resources_file: str | None) -> dict[str, Any]:
    """runc update's flags (or -r JSON, '-' for stdin) to runtime-spec linux.resources."""
    if resources_file:
        try:
            if resources_file == "-":
                import sys

                raw = sys.stdin.buffer.read()
            else:
                with open(resources_file, "rb") as f:
                    raw = f.read()
            res = jsonio.loads(raw)
        except OSError as e:
            raise RuntimeFailure(f"reading {resources_file}: {e.strerror}") from None
        except ValueError as e:
            raise RuntimeFailure(f"resources JSON: {e}") from None
        if not isinstance(res, dict):
            raise RuntimeFailure("resources JSON must be an object (runtime-spec linux.resources)")
        return res
    res: dict[str, Any] = {}

    def num(name: str) -> int:
        v = flags[name] or ""
        try:
            return int(v)
        except ValueError:
            raise RuntimeFailure(f"--{name}: {v!r} is not a number") from None

    cpu: dict[str, Any] = {}
    for flag, key in (
        ("cpu-period", "period"),
        ("cpu-quota", "quota"),
        ("cpu-share", "shares"),
        ("cpu-rt-period", "realtimePeriod"),
        ("cpu-rt-runtime", "realtimeRuntime"),
    ):
        if flags.get(flag) is not None:
            cpu[key] = num(flag)
    for flag, key in (("cpuset-cpus", "cpus"), ("cpuset-mems", "mems")):
        if flags.get(flag) is not None:
            cpu[key] = flags[flag]
    if cpu:
        res["cpu"] = cpu
    mem: dict[str, Any] = {}
    for flag, key in (
        ("memory", "limit"),
        ("memory-reservation", "reservation"),
        ("memory-swap", "swap"),
        ("kernel-memory", "kernel"),
        ("kernel-memory-tcp", "kernelTCP"),
    ):
        if flags.get(flag) is not None:
            mem[key] = parse_bytes(flags[flag] or "")
    if mem:
        res["memory"] = mem
    if flags.get("pids-limit") is not None:
        res["pids"] = {"limit": num("pids-limit")}
    if flags.get("blkio-weight") is not None:
        res["blockIO"] = {"weight": num("blkio-weight")}
    if not res and not any(flags.get(k) for k in ("l3-cache-schema", "mem-bw-schema")):
        raise RuntimeFailure("update: nothing to update (give resource flags or -r FILE)")
    return res


def update(c: Container, resources: dict[str, Any]) -> None:
    if c.status() == "stopped":
        raise RuntimeFailure(f"cannot update container {c.id}: it has stopped")
    manager(c).set(resources, update=True)
    cfg = c.data.setdefault("config", {})
    linux = cfg.setdefault("linux", {})
    merged = dict(linux.get("resources") or {})
    for k, v in resources.items():
        merged[k] = (
            {**merged.get(k, {}), **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
        )
    linux["resources"] = merged
    c.save()


def list_containers(root: str) -> list[dict[str, Any]]:
    out = []
    for cid in list_ids(root):
        try:
            c = Container.load(root, cid)
        except RuntimeFailure:
            continue
        st = c.oci_state()
        out.append(st)
    return out


def features() -> dict[str, Any]:
    from pallet.runtime import capabilities, cgroups, lsm, seccomp

    cg = cgroups.features()
    sec = seccomp.features()
    mount_opts = sorted({*spec.MOUNT_FLAGS, *spec.PROPAGATION, *spec.RECURSIVE, *spec.EXTRA_OPTIONS})
    return {
        "ociVersionMin": spec.OCI_VERSION_MIN,
        "ociVersionMax": spec.OCI_VERSION,
        "hooks": list(spec.HOOK_NAMES),
        "mountOptions": mount_opts,
        "linux": {
            "namespaces": sorted(spec.NAMESPACES),
            "capabilities": capabilities.all_known(),
            "cgroup": cg,
            "seccomp": sec,
            "apparmor": {"enabled": lsm.apparmor_enabled()},
            "selinux": {"enabled": lsm.selinux_enabled()},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"org.opencontainers.runtime-spec.features": "pallet-runtime"},
    }


def events(c: Container, stats_once: bool, interval: float) -> None:
    """runc ``events``: JSON lines on stdout. ``--stats``: one "stats" event and return; else a
    "stats" event every ``interval`` seconds plus an "oom" event whenever the kernel OOM-kills in
    the container, until the container stops (then exit 0, as runc)."""
    import sys
    import time

    if c.status() == "stopped":
        raise RuntimeFailure(f"container {c.id} is not running")
    mgr = manager(c)

    def emit(kind: str, data: dict[str, Any] | None = None) -> None:
        ev: dict[str, Any] = {"type": kind, "id": c.id}
        if data is not None:
            ev["data"] = data
        sys.stdout.write(jsonio.dumps(ev) + "\n")
        sys.stdout.flush()

    if stats_once:
        emit("stats", runc_stats(mgr.stats()))
        return
    ooms = mgr.oom_kill_count()
    next_stats = time.monotonic()
    while c.alive():
        now = time.monotonic()
        n = mgr.oom_kill_count()
        if n > ooms:
            emit("oom")
            ooms = n
        if now >= next_stats:
            emit("stats", runc_stats(mgr.stats()))
            next_stats = now + interval
        time.sleep(min(0.2, interval))
    # a kill in the last interval (perhaps of the init itself, which ended the container) is
    # still reported, as runc's OOM notification would have been
    if mgr.oom_kill_count() > ooms:
        emit("oom")


def runc_stats(s: dict[str, Any]) -> dict[str, Any]:
    """Manager.stats() in runc's ``events`` types (what containerd/podman decode): the same
    groups, plus the keys runc always writes."""
    return {
        "cpu": s.get("cpu") or {"usage": {}, "throttling": {}},
        "cpuset": s.get("cpuset") or {},
        "memory": s.get("memory") or {},
        "pids": s.get("pids") or {},
        "blkio": s.get("blkio") or {},
        "hugetlb": s.get("hugetlb") or {},
        "intel_rdt": {},
        "network_interfaces": None,
    }


def parse_interval(v: str) -> float:
    """Go durations as runc takes them ("5s", "500ms", "1m"); a bare number is seconds."""
    units = (("ms", 0.001), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    num, mult = v, 1.0
    for suffix, scale in units:
        if v.endswith(suffix):
            num, mult = v[: -len(suffix)], scale
            break
    try:
        out = float(num) * mult
    except ValueError:
        raise RuntimeFailure(f"invalid --interval {v!r}: use a duration like 5s or 500ms") from None
    if out <= 0:
        raise RuntimeFailure(f"invalid --interval {v!r}: must be positive")
    return out
