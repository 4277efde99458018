"""100 create/start/delete cycles, 10 at a time: nothing may be left behind (mounts, cgroups in every
hierarchy, state dirs, fds, processes or zombies). The containers carry what engines send: resource
limits and Docker's seccomp profile."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pallet.runtime.cgroups import _layout
from tests.runtime.conftest import Runtime, wait_for

DOCKER_PROFILE = Path(__file__).parent / "data" / "docker-default-seccomp.json"


def _cgroup_dirs(cid: str) -> list[str]:
    """The container's cgroup (default cgroupsPath /pallet/<id>) in every mounted hierarchy."""
    return [h.dir_for(f"/pallet/{cid}") for h in _layout.layout().hierarchies()]


def _leftover_cgroups(prefix: str) -> list[str]:
    found = []
    for h in _layout.layout().hierarchies():
        for top, dirs, _ in os.walk(h.mountpoint):
            found += [os.path.join(top, d) for d in dirs if d.startswith(prefix)]
    return found


@pytest.mark.slow
def test_create_start_delete_cycles_leave_nothing(rt: Runtime, tmp_path: Path) -> None:
    prefix = f"leak-{os.getpid()}-"

    def edit(cfg: dict) -> None:
        cfg["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 50},
                                     "cpu": {"shares": 512}}
        cfg["linux"]["seccomp"] = json.loads(DOCKER_PROFILE.read_text())

    bundle = rt.bundle(["true"], edit=edit)
    hierarchies = len(_layout.layout().hierarchies())
    assert hierarchies >= 2  # v1 controllers and the unified hierarchy on this host
    # other suites mount things concurrently: only mounts touching our paths count
    ours = (str(tmp_path), str(rt.rootfs))

    def our_mounts() -> list[str]:
        return [
            ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if any(p in ln for p in ours)
        ]

    mounts_before = our_mounts()
    fds_before = sorted(os.listdir("/proc/self/fd"))

    def cycle(i: int) -> None:
        cid = f"{prefix}{i}"
        env = dict(os.environ)
        base = [rt.exe, "--root", str(rt.root)]
        for args in (["create", "--bundle", str(bundle), cid], ["start", cid]):
            # a file, not a pipe, for stderr: the container inherits it and keeps it open
            with open(tmp_path / f"{cid}.err", "w+") as err:
                r = subprocess.run(base + args, stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=60)
                err.seek(0)
                assert r.returncode == 0, f"{args[0]} {cid}: {err.read()}"
            if args[0] == "create":  # it really had a cgroup everywhere
                missing = [d for d in _cgroup_dirs(cid) if not os.path.isdir(d)]
                assert missing == [], missing

        def stopped() -> bool:
            r = subprocess.run([*base, "state", cid], capture_output=True, text=True)
            return '"stopped"' in r.stdout

        wait_for(stopped, 30, f"{cid} stopped")
        r = subprocess.run([*base, "delete", cid], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(cycle, range(100)))

    # nothing but the seccomp compile cache: one compiled filter for the hundred containers
    assert os.listdir(rt.root) == ["@seccomp-cache"]
    assert len(os.listdir(rt.root / "@seccomp-cache")) == 1
    assert our_mounts() == mounts_before
    assert sorted(os.listdir("/proc/self/fd")) == fds_before
    assert _leftover_cgroups(prefix) == []
    ps = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    assert str(rt.root) not in ps
    # no zombies among our children (the runtime reaps its intermediates; inits reparent away)
    zombies = [ln for ln in ps.splitlines()[1:] if ln.split()[1].startswith("Z") and prefix in ln]
    assert zombies == []
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    for c in children:
        assert Path(f"/proc/{c}/stat").read_text().split(") ")[1][0] != "Z"
