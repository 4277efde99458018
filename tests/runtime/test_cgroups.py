"""cgroups on this host with real processes: limits read back from the cgroup files and observed
in the processes (forks refused, OOM kills counted, frozen tasks, throttled CPU, denied devices)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from pallet.errors import RuntimeFailure
from pallet.runtime import cgroups
from pallet.runtime.cgroups import _layout, devices, ebpf
from tests.runtime.cgroup_helpers import Cgroups, cpu_ticks, proc_state, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")


@pytest.fixture
def cg():
    c = Cgroups()
    try:
        yield c
    finally:
        c.cleanup()


def read(d: str, name: str) -> str:
    with open(os.path.join(d, name)) as f:
        return f.read().strip()


def own_cgroups(pid: int) -> dict[str, str]:
    """/proc/PID/cgroup as {controllers: path} ("" for the unified hierarchy)."""
    out = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            out[ctrls] = path
    return out


def v2_only() -> _layout.Layout:
    """This host's unified hierarchy alone: the Manager then behaves as on a cgroup2-only host."""
    lay = _layout.layout()
    if lay.unified is None:
        pytest.skip("no cgroup2 mounted")
    return _layout.Layout([], lay.unified)


# --- layout and paths ----------------------------------------------------------------------------

def test_layout_matches_findmnt_and_proc_cgroups():
    """Every cgroup mount findmnt (util-linux) reports is found, with its controllers."""
    out = subprocess.run(["findmnt", "-n", "-l", "-t", "cgroup,cgroup2", "-o", "TARGET,FSTYPE,OPTIONS"],
                         capture_output=True, text=True, check=True).stdout
    lay = _layout.layout()
    by_mount = {h.mountpoint: h for h in lay.hierarchies()}
    enabled = set()
    with open("/proc/cgroups") as f:
        for line in f:
            if not line.startswith("#"):
                name, hier, _, en = line.split()
                if hier != "0" and en == "1":
                    enabled.add(name)
    seen_v1 = set()
    for line in out.splitlines():
        target, fstype, opts = line.split()
        assert target in by_mount, f"{target} not found in the layout"
        h = by_mount[target]
        if fstype == "cgroup2":
            assert h.version == 2
            assert h.controllers == frozenset(read(target, "cgroup.controllers").split())
        else:
            assert h.version == 1
            assert h.controllers == frozenset(o for o in opts.split(",") if o in enabled)
            seen_v1 |= h.controllers
    assert seen_v1 <= enabled
    assert len(out.splitlines()) == len(lay.hierarchies())  # nothing found that is not mounted
    has_v1 = bool(seen_v1)
    expect = ("hybrid" if has_v1 else "v2") if lay.unified else "v1"
    assert lay.mode == expect
    avail = cgroups.controllers_available()
    for c in seen_v1:
        assert avail[c] == "v1"
    if lay.unified:
        for c in lay.unified.controllers:
            assert avail[c] == "v2"
    feats = cgroups.features()
    assert feats["v1"] == bool(seen_v1) and feats["v2"] == (lay.unified is not None)
    assert feats["rdma"] == ("rdma" in avail)


def test_parse_container_style_mountinfo():
    """A cgroup2-only container: the mount shows a sub-cgroup as its root; escaped mountpoints."""
    mi = ("30 25 0:26 /kubepods/pod1/ctr /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
          "31 25 0:27 / /mnt/with\\040space rw - cgroup cgroup rw,name=systemd\n"
          "32 25 0:28 / /mnt/cc rw - cgroup cgroup rw,cpu,cpuacct\n")
    pc = "1:cpu,cpuacct:/a\n2:name=systemd:/b\n0::/kubepods/pod1/ctr\n"
    lay = _layout.parse(mi, pc, frozenset({"cpu", "cpuacct"}), read_controllers=False)
    u = lay.unified
    assert u is not None and u.root == "/kubepods/pod1/ctr" and u.own == "/kubepods/pod1/ctr"
    assert u.dir_for("/kubepods/pod1/ctr/x") == "/sys/fs/cgroup/x"
    with pytest.raises(RuntimeFailure, match="outside"):
        u.dir_for("/other")
    named = next(h for h in lay.v1 if h.key == "name=systemd")
    assert named.mountpoint == "/mnt/with space" and named.own == "/b" and named.name == "systemd"
    cc = next(h for h in lay.v1 if h.key == "cpu,cpuacct")
    assert cc.controllers == {"cpu", "cpuacct"} and cc.own == "/a"
    assert lay.mode == "hybrid"
    m = cgroups.Manager(lay, "sub", True)
    assert m.dirs[""] == "/sys/fs/cgroup/sub"  # relative: next to our own cgroup on ... hybrid
    assert m.dirs["cpu,cpuacct"] == "/mnt/cc/a/sub"
    assert m.symlinks_for_container() == [("cpu", "cpu,cpuacct"), ("cpuacct", "cpu,cpuacct")]


def test_cgroups_path_forms():
    assert _layout.resolve(None, "abc") == ("/pallet/abc", False)
    assert _layout.resolve("/a/b", "x") == ("/a/b", False)
    assert _layout.resolve("/a/../../../etc", "x") == ("/etc", False)
    assert _layout.resolve("../../x/y", "x") == ("x/y", True)
    assert _layout.resolve("system.slice:docker:abc", "x") == ("/system.slice/docker-abc.scope", False)
    assert _layout.resolve(":pallet:abc", "x") == ("/system.slice/pallet-abc.scope", False)
    assert _layout.resolve("user-1000.slice::abc", "x") == (
        "/user.slice/user-1000.slice/abc.scope", False)
    assert _layout.resolve("a-b.slice:p:c-d.slice", "x") == ("/a.slice/a-b.slice/c-d.slice", False)
    for bad, msg in (("/", "root cgroup"), ("a--b.slice:p:n", "slice"), ("nope:p:n", "slice"),
                     ("..", "names no cgroup")):
        with pytest.raises(RuntimeFailure, match=msg):
            _layout.resolve(bad, "x")
    with pytest.raises(RuntimeFailure, match="slice:prefix:name"):
        _layout.resolve("a:b", "x", systemd=True)


# --- create / apply / destroy --------------------------------------------------------------------

def test_create_apply_joins_every_hierarchy_and_destroy_removes_all(cg):
    m = cg.manager("c")
    m.create()
    m.create()  # idempotent
    child = cg.child("import time; time.sleep(30)")
    m.apply(child.pid)
    seen = own_cgroups(child.pid)
    lay = _layout.layout()
    for h in lay.hierarchies():
        key = "" if h.version == 2 else ",".join(sorted(h.controllers)) or h.key
        match = [p for k, p in seen.items() if (k == key if h.version == 2 else
                                                 set(k.split(",")) == set(key.split(",")))]
        assert match == [m.paths[h.key]], (h, seen)
        assert str(child.pid) in read(m.dirs[h.key], "cgroup.procs").split()
    assert m.pids() == [child.pid]
    # a sub-cgroup the container made itself goes too
    os.mkdir(os.path.join(m.dirs["memory" if "memory" in m.dirs else ""], "inner"))
    child.kill()
    m.destroy()  # the child's exit may still be in progress: destroy waits it out
    for d in m.dirs.values():
        assert not os.path.exists(d)
    m.destroy()  # idempotent


def test_relative_path_nests_under_own_cgroup(cg):
    name = f"{cg.prefix}-rel"
    m = cgroups.manager(f"{cg.prefix}/rel", name)
    cg.managers.append(m)
    lay = _layout.layout()
    for h in lay.v1:
        assert m.paths[h.key] == os.path.join(h.own, cg.prefix, "rel")
    m.create()
    child = cg.child("import time; time.sleep(30)")
    m.apply(child.pid)
    mem = lay.by_controller.get("memory")
    if mem is not None and mem.version == 1:
        assert own_cgroups(child.pid)["memory"] == os.path.join(mem.own, cg.prefix, "rel")
    child.kill()
    m.destroy()
    # the relative top dir under our own cgroups
    cgroups.Manager(lay, cg.prefix, True).destroy()


def test_destroy_with_live_process_names_it(cg):
    m = cg.manager("busy")
    m.create()
    child = cg.child("import time; time.sleep(30)")
    m.apply(child.pid)
    with pytest.raises(RuntimeFailure, match=f"processes still inside: {child.pid}"):
        m.destroy(timeout=0.2)
    child.kill()
    m.destroy()


def test_systemd_style_path_without_systemd(cg):
    slice_name = cg.prefix.replace("-", "")  # a dash would nest the slice
    m = cgroups.manager(f"{slice_name}-ctr.slice:pallet:abc", "abc")
    cg.managers.append(m)
    assert m.path == f"/{slice_name}.slice/{slice_name}-ctr.slice/pallet-abc.scope"
    m.create()
    child = cg.child("import time; time.sleep(30)")
    m.apply(child.pid)
    assert m.path in own_cgroups(child.pid).values()
    child.kill()
    m.destroy()
    cgroups.manager(f"/{slice_name}.slice", "x").destroy()
    for h in _layout.layout().hierarchies():
        assert not os.path.exists(h.dir_for(f"/{slice_name}.slice"))


# --- resources, observed --------------------------------------------------------------------------

FORKER = """
import os, sys, time
made, refused = [], 0
for _ in range(12):
    try:
        pid = os.fork()
    except BlockingIOError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    made.append(pid)
print(len(made), refused, flush=True)
for p in made:
    os.kill(p, 9)
    os.waitpid(p, 0)
"""


def test_pids_limit_refuses_forks_and_updates_live(cg):
    m = cg.manager("pids")
    m.create()
    m.set({"pids": {"limit": 5}})
    assert read(m._dir("pids"), "pids.max") == "5"
    child = cg.child(FORKER)
    m.apply(child.pid)
    child.go()
    rc, out, err = child.result()
    made, refused = map(int, out.split())
    assert rc == 0, err
    assert made == 4 and refused == 8  # the forker itself is the 5th task: fork() got EAGAIN
    # live update: more room
    m.set({"pids": {"limit": 100}}, update=True)
    assert read(m._dir("pids"), "pids.max") == "100"
    child2 = cg.child(FORKER)
    m.apply(child2.pid)
    child2.go()
    rc, out, _ = child2.result()
    assert out.split() == ["12", "0"]
    m.set({"pids": {"limit": -1}}, update=True)
    assert read(m._dir("pids"), "pids.max") == "max"
    assert m.stats()["pids"]["limit"] == 0


def test_memory_limit_oom_kill_is_counted(cg):
    m = cg.manager("oom")
    m.create()
    limit = 48 << 20
    m.set({"memory": {"limit": limit, "swap": limit, "reservation": 16 << 20, "swappiness": 0}})
    h = _layout.layout().by_controller["memory"]
    d = m.dirs[h.key]
    if h.version == 1:
        assert int(read(d, "memory.limit_in_bytes")) == limit
        assert int(read(d, "memory.soft_limit_in_bytes")) == 16 << 20
        assert read(d, "memory.swappiness") == "0"
        if os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes")):
            assert int(read(d, "memory.memsw.limit_in_bytes")) == limit
    assert not m.oom_killed()
    child = cg.child("b = bytearray(200 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('survived')")
    m.apply(child.pid)
    child.go()
    rc, out, _ = child.result()
    assert rc == -9 and "survived" not in out
    assert m.oom_killed() and m.oom_kill_count() >= 1
    st = m.stats()["memory"]
    assert st["usage"]["limit"] == limit
    assert st["usage"]["max"] >= limit * 0.9  # it ran into the limit


def test_memory_limit_below_usage_names_file_value_and_error(cg):
    m = cg.manager("busy")
    m.create()
    m.set({"memory": {"limit": 256 << 20, "swap": 256 << 20}})
    child = cg.child("b = bytearray(64 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
                     "print('ready', flush=True)\nimport time; time.sleep(30)")
    m.apply(child.pid)
    child.go()
    assert child.proc.stdout.readline().strip() == "ready"
    h = _layout.layout().by_controller["memory"]
    name = "memory.limit_in_bytes" if h.version == 1 else "memory.max"
    with pytest.raises(RuntimeFailure) as e:
        m.set({"memory": {"limit": 4 << 20, "swap": 4 << 20}}, update=True)
    assert f"cgroup memory: cannot set {name} to {4 << 20}: device or resource busy" in str(e.value)
    assert child.proc.poll() is None  # still running, limit unchanged
    assert int(read(m.dirs[h.key], name)) == 256 << 20
    with pytest.raises(RuntimeFailure, match=r"rejecting memory limit 1048576: not above"):
        m.set({"memory": {"limit": 1 << 20, "checkBeforeUpdate": True}}, update=True)


def test_freeze_stops_a_busy_child_and_thaw_resumes(cg):
    m = cg.manager("frz")
    m.create()
    child = cg.child("while True: pass")
    m.apply(child.pid)
    child.go()
    assert wait_for(lambda: cpu_ticks(child.pid) > 5)
    m.freeze()
    assert m.frozen()
    t0 = cpu_ticks(child.pid)
    time.sleep(0.4)
    assert cpu_ticks(child.pid) == t0
    h = _layout.layout().by_controller.get("freezer")
    if h is not None and h.version == 1:
        assert read(m.dirs[h.key], "freezer.state") == "FROZEN"
        assert proc_state(child.pid) == "D"
    m.thaw()
    assert not m.frozen()
    assert wait_for(lambda: cpu_ticks(child.pid) > t0 + 5)


def test_cpu_quota_caps_a_busy_loop(cg):
    m = cg.manager("cpu")
    m.create()
    m.set({"cpu": {"quota": 20000, "period": 100000, "shares": 512}})
    h = _layout.layout().by_controller["cpu"]
    if h.version == 1:
        d = m.dirs[h.key]
        assert read(d, "cpu.cfs_quota_us") == "20000"
        assert read(d, "cpu.cfs_period_us") == "100000"
        assert read(d, "cpu.shares") == "512"
    child = cg.child("import time\nend = time.monotonic() + 1.5\n"
                     "while time.monotonic() < end: pass\n"
                     "print(time.process_time())")
    m.apply(child.pid)
    child.go()
    rc, out, _ = child.result()
    used = float(out)
    assert rc == 0 and 0.1 < used < 0.5, used  # 20% of 1.5 s, not 1.5 s
    st = m.stats()["cpu"]
    assert st["throttling"]["throttledPeriods"] > 0
    assert st["usage"]["total"] > 0.1e9
    # live update: lift the cap
    m.set({"cpu": {"quota": -1}}, update=True)
    if h.version == 1:
        assert read(m.dirs[h.key], "cpu.cfs_quota_us") == "-1"


def test_cpuset_pins_the_child(cg):
    m = cg.manager("cpuset")
    m.create()
    m.set({"cpu": {"cpus": "0", "mems": "0"}})
    child = cg.child("import time; time.sleep(30)")
    m.apply(child.pid)
    assert os.sched_getaffinity(child.pid) == {0}
    assert m.stats()["cpuset"]["cpus"] == [0]
    if os.cpu_count() and os.cpu_count() > 1:
        m.set({"cpu": {"cpus": "1"}}, update=True)
        assert os.sched_getaffinity(child.pid) == {1}


OPENER = """
import os
res = []
for dev, flags in DEVS:
    try:
        os.close(os.open(dev, flags))
        res.append("ok")
    except OSError as e:
        res.append(str(e.errno))
print(" ".join(res))
"""


def opener(*devs: tuple[str, int]) -> str:
    return f"DEVS = {list(devs)!r}\n" + OPENER


@pytest.fixture
def loopdev(tmp_path):
    """A loop block device of our own (this host's disks are off limits even to root)."""
    if shutil.which("losetup") is None:
        pytest.skip("no losetup(8)")
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    r = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot make a loop device: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_devices_v1_deny_all_then_allow_live(cg):
    lay = _layout.layout()
    h = lay.by_controller.get("devices")
    if h is None or h.version != 1:
        pytest.skip("no v1 devices controller")
    m = cg.manager("dev")
    m.create()
    m.set({"devices": [{"allow": False, "access": "rwm"}]}, default_devices=False)
    d = m.dirs[h.key]
    assert read(d, "devices.list") == ""
    child = cg.child(opener(("/dev/null", os.O_RDONLY), ("/dev/zero", os.O_RDONLY)))
    m.apply(child.pid)
    child.go()
    assert child.result()[1].split() == ["1", "1"]  # EPERM
    # update: allow /dev/null for reading only, keep the rest denied
    m.set({"devices": [{"allow": False, "access": "rwm"},
                       {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "r"}]},
          update=True, default_devices=False)
    assert read(d, "devices.list") == "c 1:3 r"
    child = cg.child(opener(("/dev/null", os.O_RDONLY), ("/dev/null", os.O_WRONLY)))
    m.apply(child.pid)
    child.go()
    assert child.result()[1].split() == ["ok", "1"]


def test_devices_v1_defaults_allow_dev_null_not_disks(cg, loopdev):
    h = _layout.layout().by_controller.get("devices")
    disk = loopdev
    if h is None or h.version != 1:
        pytest.skip("no v1 devices controller")
    m = cg.manager("dev")
    m.create()
    m.set({})  # create: default deny + the default devices, even with no devices listed
    listed = read(m.dirs[h.key], "devices.list").splitlines()
    # the defaults, in runc's order (the kernel lists exceptions in the order they were written)
    defaults = ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:8 rwm", "c 1:7 rwm", "c 5:0 rwm",
                "c 1:5 rwm", "c 1:9 rwm", "c 136:* rwm", "c 5:2 rwm", "c 10:200 rwm"]
    assert listed == defaults
    # on create, the config's rules land in the order it lists them, then the defaults
    other = cg.manager("dev2")
    other.create()
    order = [{"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
             {"allow": True, "type": "b", "major": 8, "minor": 20, "access": "rw"},
             {"allow": True, "type": "b", "major": 10, "minor": 200, "access": "r"}]
    other.set({"devices": [{"allow": False, "access": "rwm"}, *order]})
    assert read(other.dirs[h.key], "devices.list").splitlines() == [
        "c 10:229 rwm", "b 8:20 rw", "b 10:200 r", *defaults]
    child = cg.child(opener(("/dev/null", os.O_RDWR), ("/dev/urandom", os.O_RDONLY), (disk, os.O_RDONLY)))
    m.apply(child.pid)
    child.go()
    assert child.result()[1].split() == ["ok", "ok", "1"]
    # an update that adds one rule writes only that rule: no deny-all window for the running
    # container (the transition from the kernel's list to the target has no "a" reset)
    current = devices.Emulator.from_list(read(m.dirs[h.key], "devices.list"))
    target = devices.Emulator.from_rules(devices.target_rules(
        [{"allow": True, "type": "c", "major": 4, "minor": 1, "access": "rw"}]))
    assert current.transition(target) == [(True, "c", 4, 1, "rw")]
    m.set({"devices": [{"allow": True, "type": "c", "major": 4, "minor": 1, "access": "rw"}]}, update=True)
    assert "c 4:1 rw" in read(m.dirs[h.key], "devices.list").splitlines()


def test_devices_refuses_hole_in_wildcard():
    with pytest.raises(RuntimeFailure, match="punch a hole"):
        devices.Emulator.from_rules([(True, "a", -1, -1, "rwm"), (True, "c", 1, -1, "rwm"),
                                     (False, "a", -1, -1, "rwm"), (True, "c", 1, -1, "rwm"),
                                     (False, "c", 1, 3, "r")])
    with pytest.raises(RuntimeFailure, match="entry 0: access"):
        devices.parse_rules([{"allow": True, "access": "rx"}])
    with pytest.raises(RuntimeFailure, match="entry 1: type"):
        devices.parse_rules([{"allow": True, "access": "r"}, {"allow": True, "type": "p", "access": "r"}])


def test_devices_v2_ebpf_filter(cg):
    """The v2 device filter (an eBPF program on the unified cgroup) works on this hybrid host: the
    kernel checks both the v1 devices controller and the v2 programs."""
    m = cg.manager("bpf", layout=v2_only())
    m.create()
    m.set({"devices": [{"allow": False, "access": "rwm"},
                       {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}]},
          default_devices=False)
    d = m.dirs[""]
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(ebpf.attached_programs(fd)) == 1
    finally:
        os.close(fd)
    child = cg.child(opener(("/dev/null", os.O_RDONLY), ("/dev/zero", os.O_RDONLY),
                            ("/dev/zero", os.O_RDWR)))
    m.apply(child.pid)
    child.go()
    assert child.result()[1].split() == ["1", "ok", "1"]
    # update: default-allow with a write deny on /dev/null; the old program is replaced
    m.set({"devices": [{"allow": True, "access": "rwm"},
                       {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]},
          update=True, default_devices=False)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(ebpf.attached_programs(fd)) == 1
    finally:
        os.close(fd)
    child = cg.child(opener(("/dev/null", os.O_RDONLY), ("/dev/null", os.O_RDWR),
                            ("/dev/zero", os.O_RDWR)))
    m.apply(child.pid)
    child.go()
    assert child.result()[1].split() == ["ok", "1", "ok"]


def test_v2_freezer_pids_and_stats(cg):
    m = cg.manager("v2", layout=v2_only())
    m.create()
    m.set({}, update=True)
    child = cg.child("while True: pass")
    m.apply(child.pid)
    child.go()
    assert m.pids() == [child.pid]
    assert wait_for(lambda: cpu_ticks(child.pid) > 5)
    m.freeze()
    assert m.frozen()
    assert read(m.dirs[""], "cgroup.freeze") == "1"
    t0 = cpu_ticks(child.pid)
    time.sleep(0.3)
    assert cpu_ticks(child.pid) == t0
    m.thaw()
    assert not m.frozen()
    assert wait_for(lambda: cpu_ticks(child.pid) > t0 + 5)
    st = m.stats()
    assert st["cpu"]["usage"]["total"] > 0 and st["pids"]["current"] == 1


def test_hugetlb_goes_to_whichever_hierarchy_has_it(cg):
    lay = _layout.layout()
    h = lay.by_controller.get("hugetlb")
    if h is None:
        pytest.skip("no hugetlb controller")
    m = cg.manager("huge")
    m.create()
    m.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 8 << 21}]}, update=True)
    d = m.dirs[h.key]
    name = "hugetlb.2MB.max" if h.version == 2 else "hugetlb.2MB.limit_in_bytes"
    assert int(read(d, name)) == 8 << 21
    assert "2MB" in m.stats()["hugetlb"]
    with pytest.raises(RuntimeFailure, match="no 3MB huge pages"):
        m.set({"hugepageLimits": [{"pageSize": "3MB", "limit": 0}]}, update=True)


def test_unified_keys_on_hybrid(cg):
    lay = _layout.layout()
    if lay.unified is None:
        pytest.skip("no cgroup2")
    m = cg.manager("uni")
    m.create()
    m.set({"unified": {"cgroup.max.descendants": "3"}}, update=True)
    assert read(m.dirs[""], "cgroup.max.descendants") == "3"
    v1_ctrls = sorted(c for h in lay.v1 for c in h.controllers)
    if v1_ctrls:  # hybrid: a v2 key for a controller that lives in v1 here
        ctrl = "memory" if "memory" in v1_ctrls else v1_ctrls[0]
        with pytest.raises(RuntimeFailure, match=f"the {ctrl} controller is on cgroup v1"):
            m.set({"unified": {f"{ctrl}.max": "1G"}}, update=True)
    with pytest.raises(RuntimeFailure, match=r"not a CONTROLLER\.PARAMETER"):
        m.set({"unified": {"../x": "1"}}, update=True)
    with pytest.raises(RuntimeFailure, match="controller 'rdmaz' is not available"):
        m.set({"unified": {"rdmaz.max": "1"}}, update=True)


def test_blkio_throttle_slows_direct_reads(cg, loopdev):
    lay = _layout.layout()
    disk = loopdev
    h = lay.by_controller.get("blkio") or lay.by_controller.get("io")
    if h is None:
        pytest.skip("no blkio/io controller")
    st = os.stat(disk)
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    m = cg.manager("blk")
    m.create()
    rate = 2 << 20
    m.set({"blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": rate}]},
           "devices": [{"allow": True, "type": "b", "major": major, "minor": minor, "access": "r"}]})
    if h.version == 1:
        assert read(m.dirs[h.key], "blkio.throttle.read_bps_device") == f"{major}:{minor} {rate}"
    child = cg.child(
        "import os, mmap, time\n"
        f"fd = os.open({disk!r}, os.O_RDONLY | os.O_DIRECT)\n"
        "buf = mmap.mmap(-1, 1 << 20)\n"
        "t = time.monotonic()\n"
        "for i in range(6): os.preadv(fd, [buf], (i + 1) << 20)\n"
        "print(time.monotonic() - t)")
    m.apply(child.pid)
    child.go()
    rc, out, err = child.result()
    assert rc == 0, err
    assert float(out) > 1.5  # 6 MiB at 2 MiB/s (the first second's budget may come at once)
    assert m.stats()["blkio"]["ioServiceBytesRecursive"]


def test_errors_name_the_setting(cg):
    lay = _layout.layout()
    m = cg.manager("err")
    m.create()
    with pytest.raises(RuntimeFailure, match=r"swappiness 200 is not in 0\.\.100"):
        m.set({"memory": {"swappiness": 200}}, update=True)
    with pytest.raises(RuntimeFailure, match=r"cgroup pids: limit must be an integer"):
        m.set({"pids": {"limit": "5"}}, update=True)
    if "net_cls" not in lay.by_controller:
        with pytest.raises(RuntimeFailure, match="the net_cls controller is not mounted"):
            m.set({"network": {"classID": 42}}, update=True)
    cpu = lay.by_controller.get("cpu")
    if cpu is not None and cpu.version == 1:
        with pytest.raises(RuntimeFailure, match=r"cgroup cpu: cannot set cpu.shares to 1: the "
                                                 r"kernel clamped it to 2"):
            m.set({"cpu": {"shares": 1}}, update=True)
        if os.path.exists(os.path.join(m.dirs[cpu.key], "cpu.rt_runtime_us")):
            # the parent (our prefix) has no realtime budget to hand out
            with pytest.raises(RuntimeFailure, match=r"cgroup cpu: cannot set cpu.rt_runtime_us to "
                                                     r"10000: invalid argument"):
                m.set({"cpu": {"realtimeRuntime": 10000}}, update=True)
    mem = lay.by_controller.get("memory")
    if mem is not None and mem.version == 1:
        with pytest.raises(RuntimeFailure, match=r"cannot set memory.use_hierarchy to 0: invalid argument"):
            m.set({"memory": {"useHierarchy": False}}, update=True)


def test_kernel_tcp_and_oom_killer_disable_v1(cg):
    mem = _layout.layout().by_controller.get("memory")
    if mem is None or mem.version != 1:
        pytest.skip("no v1 memory controller")
    m = cg.manager("kmem")
    m.create()
    m.set({"memory": {"kernelTCP": 16 << 20, "disableOOMKiller": True, "useHierarchy": True}}, update=True)
    d = m.dirs[mem.key]
    assert int(read(d, "memory.kmem.tcp.limit_in_bytes")) == 16 << 20
    assert "oom_kill_disable 1" in read(d, "memory.oom_control")


def test_stats_shape_like_runc_events(cg):
    m = cg.manager("st")
    m.create()
    m.set({"memory": {"limit": 128 << 20}, "pids": {"limit": 50}}, update=True)
    child = cg.child("b = bytearray(8 << 20)\nimport time\nend = time.monotonic() + 0.3\n"
                     "while time.monotonic() < end: pass\nprint('x', flush=True)\ntime.sleep(30)")
    m.apply(child.pid)
    child.go()
    child.proc.stdout.readline()
    st = m.stats()
    assert set(st) >= {"cpu", "memory", "pids", "blkio", "hugetlb", "cpuset"}
    assert st["pids"] == {"current": 1, "limit": 50}
    assert st["memory"]["usage"]["usage"] > 8 << 20 and st["memory"]["usage"]["limit"] == 128 << 20
    assert st["memory"]["raw"]
    assert st["cpu"]["usage"]["total"] > 0.1e9
    assert {"periods", "throttledPeriods", "throttledTime"} <= set(st["cpu"]["throttling"])


def test_cgroup_namespace_mount_shows_own_cgroup(cg, tmp_path):
    """mounts_for_container(): inside a new cgroup namespace the listed cgroup mounts show the
    container's cgroup as their root."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    m = cg.manager("ns")
    m.create()
    script = ["set -e"]
    for name, src, opts in m.mounts_for_container():
        assert os.path.isdir(src)
        target = tmp_path / (name or "root")
        target.mkdir()
        if opts:
            script.append(f"mount -t cgroup -o {','.join(opts)} cgroup {target}")
        else:
            script.append(f"mount -t cgroup2 cgroup2 {target}")
        script.append(f"echo {name or 'root'} $(cat {target}/cgroup.procs)")
    script.append("cat /proc/self/cgroup")
    child = cg.child(
        "import os, sys\n"
        f"os.execvp('unshare', ['unshare', '-C', '-m', '--propagation', 'private', 'sh', '-c', "
        f"{chr(10).join(script)!r}])")
    m.apply(child.pid)
    child.go()
    rc, out, err = child.result()
    assert rc == 0, err
    lines = out.splitlines()
    for name, _, _ in m.mounts_for_container():
        row = [ln for ln in lines if ln.startswith((name or "root") + " ")]
        assert row and str(child.pid) in row[0].split()[1:], (name, out)
    for line in lines:
        if line[:1].isdigit() and line.count(":") >= 2:
            assert line.split(":", 2)[2] == "/", line  # every hierarchy: we are at its root


def test_net_cls_and_net_prio_on_a_private_hierarchy(tmp_path):
    """net_cls/net_prio are not mounted on this host: mount their hierarchy in a private mount
    namespace and set classID and priorities there.

    Only when the kernel already has a v1 hierarchy for them (hierarchy id != 0 in /proc/cgroups):
    mounting creates one otherwise, and the kernel keeps an emptied, unmounted v1 hierarchy alive,
    which would change the host for everyone.
    """
    lay = _layout.layout()
    if "net_cls" in lay.by_controller:
        pytest.skip("net_cls already mounted: covered by the normal paths")
    hier = {}
    with open("/proc/cgroups") as f:
        for line in f:
            if not line.startswith("#"):
                name, h, *_ = line.split()
                hier[name] = h
    if hier.get("net_cls", "0") == "0" or hier.get("net_cls") != hier.get("net_prio"):
        pytest.skip("no existing net_cls,net_prio v1 hierarchy (making one would outlive the test)")
    mnt = tmp_path / "net_cls,net_prio"
    mnt.mkdir()
    prog = f"""
import os, subprocess, sys
subprocess.run(["mount", "-t", "cgroup", "-o", "net_cls,net_prio", "cgroup", {str(mnt)!r}], check=True)
try:
    from pallet.runtime import cgroups
    from pallet.runtime.cgroups import _layout
    lay = _layout.layout()
    h = lay.by_controller["net_cls"]
    assert h is lay.by_controller["net_prio"] and h.mountpoint == {str(mnt)!r}
    m = cgroups.Manager(_layout.Layout([h], None), "/pallet-test-net/c", False)
    m.create()
    try:
        m.set({{"network": {{"classID": 1048577, "priorities": [{{"name": "lo", "priority": 7}}]}}}},
              update=True)
        d = m.dirs[h.key]
        print(open(d + "/net_cls.classid").read().strip())
        print([l for l in open(d + "/net_prio.ifpriomap").read().splitlines() if l.startswith("lo ")][0])
    finally:
        m.destroy()
        os.rmdir({str(mnt)!r} + "/pallet-test-net")
finally:
    subprocess.run(["umount", {str(mnt)!r}], check=True)
"""
    r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", prog],
                       capture_output=True, text=True)
    if r.returncode != 0 and "mount" in r.stderr and "busy" in r.stderr.lower():
        pytest.skip(f"cannot mount net_cls,net_prio here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["1048577", "lo 7"]
