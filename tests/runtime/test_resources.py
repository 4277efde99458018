"""Verbs and features that go through the cgroups and seccomp packages, observed from inside the
container and from the host: pause/resume, update, ps, kill --all, events, cgroup limits, the
cgroup mount and namespace, seccomp (actions, exec, NOTIFY) and cleanup of the cgroup."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pallet.runtime.cgroups import _layout
from tests.runtime.conftest import Runtime, pid_alive, wait_for

# a container that bumps a counter in a host-visible file every 50 ms
COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /out/n; sleep 0.05; done"
DOCKER_PROFILE = Path(__file__).parent / "data" / "docker-default-seccomp.json"


def _with_out(tmp: Path):
    def edit(cfg: dict) -> None:
        cfg["mounts"].append(
            {"destination": "/out", "type": "bind", "source": str(tmp), "options": ["rbind"]}
        )

    return edit


def _read(p: Path) -> int:
    try:
        return int(p.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def host_dirs(path: str) -> dict[str, str]:
    """Hierarchy name -> the host directory of cgroup ``path`` in it (every mounted hierarchy)."""
    return {h.name: h.dir_for(path) for h in _layout.layout().hierarchies()}


class CgroupTop:
    """A unique top-level cgroup for a test's containers; removed (when empty) at teardown."""

    def __init__(self) -> None:
        self.top = f"/pallet-rt-test-{secrets.token_hex(4)}"

    def path(self, name: str) -> str:
        return f"{self.top}/{name}"

    def remove(self) -> None:
        for d in host_dirs(self.top).values():
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass


@pytest.fixture
def cgtop(rt: Runtime) -> Iterator[CgroupTop]:
    top = CgroupTop()
    try:
        yield top
    finally:
        rt.cleanup()  # the containers first: their cgroups live under ours
        top.remove()


def test_pause_resume(rt: Runtime, tmp_path: Path) -> None:
    out = tmp_path / "share"
    out.mkdir()
    rt("run", "--detach", "--bundle", str(rt.bundle(["/bin/sh", "-c", COUNTER], edit=_with_out(out))), "pz")
    wait_for(lambda: _read(out / "n") > 2, what="counter running")
    rt("pause", "pz")
    assert rt.state("pz")["status"] == "paused"
    freezer = Path(host_dirs("/pallet/pz")["freezer"]) / "freezer.state"
    assert freezer.read_text().strip() == "FROZEN"
    a = _read(out / "n")
    time.sleep(0.5)
    assert _read(out / "n") == a, "a paused container kept running"
    res = rt("delete", "pz", check=False)
    assert res.returncode == 1 and "paused" in res.stderr
    res = rt("exec", "pz", "true", check=False)
    assert res.returncode == 1 and "paused" in res.stderr
    rt("resume", "pz")
    assert rt.state("pz")["status"] == "running"
    assert freezer.read_text().strip() == "THAWED"
    wait_for(lambda: _read(out / "n") > a + 2, what="counter resumed")
    rt("pause", "pz")
    rt("delete", "--force", "pz")  # a paused container is thawed so SIGKILL takes effect
    assert not freezer.parent.exists()


def test_cgroup_limits_seen_from_inside(rt: Runtime, cgtop: CgroupTop) -> None:
    path = cgtop.path("limits")

    def edit(cfg: dict) -> None:
        cfg["linux"]["resources"] = {
            "memory": {"limit": 128 * 1024 * 1024},
            "pids": {"limit": 77},
            "cpu": {"shares": 512},
            "devices": [{"allow": False, "access": "rwm"}],
        }
        cfg["linux"]["cgroupsPath"] = path
        cfg["linux"]["namespaces"].append({"type": "cgroup"})

    code, out, err = rt.run_output(
        [
            "/bin/sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max "
            "/sys/fs/cgroup/cpu/cpu.shares; echo ---; cat /proc/self/cgroup; echo ---; "
            "ls /sys/fs/cgroup; echo ---; grep ' /sys/fs/cgroup' /proc/self/mountinfo; echo ---; "
            "cat /sys/fs/cgroup/devices/devices.list; echo ---; "
            "mkdir /sys/fs/cgroup/memory/x 2>&1; head -c1 /dev/zero | wc -c",
        ],
        edit=edit,
    )
    assert code == 0, err
    limits, own, listing, mounts, devs, rest = (part.strip().splitlines() for part in out.split("---"))
    assert limits == [str(128 * 1024 * 1024), "77", "512"]
    # a cgroup namespace: the container's cgroup is the root of every hierarchy it sees
    assert own and all(ln.endswith(":/") for ln in own if "net_cls" not in ln), own
    # runc's layout (one directory per v1 hierarchy) plus the unified hierarchy of this hybrid host
    assert sorted(listing) == sorted(host_dirs(path)), listing
    by_dir = {ln.split()[4]: ln for ln in mounts}
    assert by_dir["/sys/fs/cgroup"].split(" - ")[1].startswith("tmpfs")
    mem = by_dir["/sys/fs/cgroup/memory"]
    assert mem.split()[3] == "/" and " - cgroup " in mem and mem.split()[5].startswith("ro,")
    assert " - cgroup2 " in by_dir["/sys/fs/cgroup/unified"]
    # default-deny devices, then runc's default allow list (null, zero, full, tty, random, ...)
    assert "c 1:3 rwm" in devs and "c 1:9 rwm" in devs and "c *:* m" in devs and "a *:* rwm" not in devs
    assert "Read-only file system" in rest[0] and rest[1] == "1"
    # the run deleted the container: its cgroup is gone from every hierarchy
    assert [d for d in host_dirs(path).values() if os.path.exists(d)] == []


def test_cgroup_mount_without_cgroup_namespace(rt: Runtime, cgtop: CgroupTop) -> None:
    path = cgtop.path("nons")

    def edit(cfg: dict) -> None:
        cfg["linux"]["resources"] = {"pids": {"limit": 33}}
        cfg["linux"]["cgroupsPath"] = path
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "cgroup"]

    code, out, err = rt.run_output(
        ["/bin/sh", "-c", "cat /sys/fs/cgroup/pids/pids.max; grep :pids: /proc/self/cgroup; "
         "ls /sys/fs/cgroup/pids/ | grep -c cgroup.procs"],
        edit=edit,
    )
    assert code == 0, err
    # without a namespace the host's path shows, and the bind is the container's own cgroup
    limit, own, procs = out.split()
    assert limit == "33" and own.endswith(f":pids:{path}") and procs == "1"


def test_update_live(rt: Runtime, tmp_path: Path, cgtop: CgroupTop) -> None:
    path = cgtop.path("update")

    def edit(cfg: dict) -> None:
        cfg["linux"]["resources"] = {
            "memory": {"limit": 256 * 1024 * 1024},
            "pids": {"limit": 100},
            "devices": [{"allow": False, "access": "rwm"}],
        }
        cfg["linux"]["cgroupsPath"] = path

    rt("run", "--detach", "--bundle", str(rt.bundle(["sleep", "60"], edit=edit)), "up")
    devices = Path(host_dirs(path)["devices"]) / "devices.list"
    devs_before = devices.read_text()
    rt("update", "--memory", "64m", "--pids-limit", "50", "up")
    res = rt(
        "exec", "up", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/pids/pids.max"
    )
    assert res.stdout.split() == [str(64 * 1024 * 1024), "50"]
    (tmp_path / "r.json").write_text(json.dumps({"pids": {"limit": 42}}))
    rt("update", "-r", str(tmp_path / "r.json"), "up")
    res = rt(
        "exec", "up", "cat", "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    )
    # only the keys given change: the memory limit stays, the device rules are not touched
    assert res.stdout.split() == ["42", str(64 * 1024 * 1024)]
    assert devices.read_text() == devs_before and "a *:* rwm" not in devs_before
    # the new values are remembered (a later `update` starts from them)
    saved = json.loads((rt.root / "up" / "state.json").read_text())["config"]["linux"]["resources"]
    assert saved["pids"] == {"limit": 42} and saved["memory"]["limit"] == 64 * 1024 * 1024
    res = rt("update", "--cpu-share", "1", "up", check=False)
    assert res.returncode == 1 and "cpu.shares" in res.stderr


def test_ps_lists_container_processes(rt: Runtime) -> None:
    rt("run", "--detach", "--bundle", str(rt.bundle(["sleep", "60"])), "psc")
    init = rt.state("psc")["pid"]
    rt("exec", "--detach", "psc", "sleep", "61")
    wait_for(lambda: len(json.loads(rt("ps", "--format", "json", "psc").stdout)) == 2, what="two processes")
    pids = json.loads(rt("ps", "--format", "json", "psc").stdout)
    assert init in pids and os.getpid() not in pids
    table = rt("ps", "psc").stdout.splitlines()
    assert "PID" in table[0].split() and len(table) == 3
    assert any("sleep 61" in ln for ln in table)


def test_kill_all(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        # no pid namespace of its own: only the cgroup knows which processes are the container's
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "pid"]

    rt(
        "run",
        "--detach",
        "--bundle",
        str(rt.bundle(["/bin/sh", "-c", "sleep 60 & sleep 61 & wait"], edit=edit)),
        "ka",
    )
    wait_for(lambda: len(json.loads(rt("ps", "--format", "json", "ka").stdout)) == 3, what="3 processes")
    pids = json.loads(rt("ps", "--format", "json", "ka").stdout)
    rt("kill", "--all", "ka", "KILL")
    wait_for(lambda: not any(pid_alive(p) for p in pids), what="all processes killed")
    assert rt.state("ka")["status"] == "stopped"
    rt("delete", "ka")
    assert not Path(host_dirs("/pallet/ka")["pids"]).exists()


def test_exec_joins_the_container_cgroup(rt: Runtime, cgtop: CgroupTop) -> None:
    path = cgtop.path("exec")

    def edit(cfg: dict) -> None:
        cfg["linux"]["cgroupsPath"] = path
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "cgroup"]

    rt("run", "--detach", "--bundle", str(rt.bundle(["sleep", "60"], edit=edit)), "exc")
    out = rt("exec", "exc", "cat", "/proc/self/cgroup").stdout.splitlines()
    # every hierarchy, v1 and unified (the exec'd process is born in the cgroup2 part)
    assert len(out) >= len(host_dirs(path)) and all(
        ln.endswith(path) for ln in out if "net_cls" not in ln
    ), out


def test_create_failure_removes_the_cgroup(rt: Runtime, cgtop: CgroupTop) -> None:
    path = cgtop.path("bad")

    def edit(cfg: dict) -> None:
        cfg["linux"]["cgroupsPath"] = path
        cfg["linux"]["resources"] = {"pids": {"limit": 10}, "memory": {"useHierarchy": False}}

    res = rt("create", "--bundle", str(rt.bundle(["true"], edit=edit)), "bad", check=False)
    assert res.returncode == 1
    assert "memory.use_hierarchy" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert rt.ids() == []
    assert [d for d in host_dirs(path).values() if os.path.exists(d)] == []


def test_events_stats_and_oom(rt: Runtime, cgtop: CgroupTop) -> None:
    path = cgtop.path("events")

    def edit(cfg: dict) -> None:
        cfg["linux"]["cgroupsPath"] = path
        cfg["linux"]["resources"] = {"memory": {"limit": 32 * 1024 * 1024, "swap": 32 * 1024 * 1024},
                                     "pids": {"limit": 20}}
        cfg["mounts"].append({"destination": "/go", "type": "tmpfs", "source": "tmpfs", "options": []})

    # waits for /go/now, then grows a shell variable past the limit: the kernel OOM-kills it (its
    # oom_score_adj makes it the victim, not the init, whose death would end the container)
    script = ("echo 1000 > /proc/self/oom_score_adj; while [ ! -e /go/now ]; do sleep 0.05; done; "
              "x=$(yes | head -c 200000000); sleep 60")
    rt("run", "--detach", "--bundle", str(rt.bundle(["/bin/sh", "-c", f"({script}) & sleep 60"], edit=edit)),
       "ev")
    ev = json.loads(rt("events", "--stats", "ev").stdout)
    assert ev["type"] == "stats" and ev["id"] == "ev"
    data = ev["data"]
    assert data["memory"]["usage"]["limit"] == 32 * 1024 * 1024 and data["memory"]["usage"]["usage"] > 0
    assert data["pids"]["limit"] == 20 and data["pids"]["current"] >= 2
    assert data["cpu"]["usage"]["total"] > 0
    # streaming: stats every interval, and an "oom" event when the kernel kills in the container
    stream = subprocess.Popen(
        [rt.exe, "--root", str(rt.root), "events", "--interval", "200ms", "ev"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert stream.stdout is not None
        first = json.loads(stream.stdout.readline())
        assert first["type"] == "stats"
        init = rt.state("ev")["pid"]
        Path(f"/proc/{init}/root/go/now").write_text("")
        kinds = []
        deadline = time.monotonic() + 30
        while "oom" not in kinds and time.monotonic() < deadline:
            kinds.append(json.loads(stream.stdout.readline())["type"])
        assert "oom" in kinds and "stats" in kinds
        rt("kill", "ev", "KILL")
        stream.wait(10)  # the stream ends when the container stops
        assert stream.returncode == 0, stream.stderr.read() if stream.stderr else ""
    finally:
        if stream.poll() is None:
            stream.kill()
            stream.wait()


def test_events_reports_the_oom_kill_that_ends_the_container(rt: Runtime, cgtop: CgroupTop) -> None:
    """The init itself OOM-killed: the stream reports "oom" before it ends (with the container)."""
    path = cgtop.path("events-init")

    def edit(cfg: dict) -> None:
        cfg["linux"]["cgroupsPath"] = path
        cfg["linux"]["resources"] = {"memory": {"limit": 32 * 1024 * 1024, "swap": 32 * 1024 * 1024}}
        cfg["mounts"].append({"destination": "/go", "type": "tmpfs", "source": "tmpfs", "options": []})

    script = "while [ ! -e /go/now ]; do sleep 0.05; done; x=$(yes | head -c 200000000); sleep 60"
    rt("run", "--detach", "--bundle", str(rt.bundle(["/bin/sh", "-c", script], edit=edit)), "evi")
    stream = subprocess.Popen(
        [rt.exe, "--root", str(rt.root), "events", "--interval", "5s", "evi"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert stream.stdout is not None
        assert json.loads(stream.stdout.readline())["type"] == "stats"
        Path(f"/proc/{rt.state('evi')['pid']}/root/go/now").write_text("")
        out, err = stream.communicate(timeout=30)
        assert stream.returncode == 0, err
        kinds = [json.loads(line)["type"] for line in out.splitlines()]
        assert "oom" in kinds, kinds
        assert rt.state("evi")["status"] == "stopped"
    finally:
        if stream.poll() is None:
            stream.kill()
            stream.wait()
        rt("delete", "--force", "evi", check=False)


def test_seccomp_errno_and_status(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
        }
        cfg["mounts"].append({"destination": "/w", "type": "tmpfs", "source": "tmpfs", "options": []})

    code, out, err = rt.run_output(
        ["/bin/sh", "-c", "grep Seccomp: /proc/self/status; mkdir /w/d 2>&1 || echo refused"], edit=edit
    )
    assert code == 0, err
    assert "Seccomp:\t2" in out
    assert "Operation not permitted" in out and "refused" in out
    # compiled filters are cached under the runtime root, not next to containers' state
    assert any((rt.root / "@seccomp-cache").iterdir())


def test_seccomp_kill_action(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}],
        }

    code, _, err = rt.run_output(["/bin/sh", "-c", "echo $PPID; /bin/sh -c 'echo $PPID'"], edit=edit)
    assert code == 128 + 31, err  # SIGSYS


def test_seccomp_in_exec(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}],
        }

    rt("run", "--detach", "--bundle", str(rt.bundle(["sleep", "60"], edit=edit)), "secx")
    res = rt(
        "exec",
        "secx",
        "/bin/sh",
        "-c",
        "grep Seccomp: /proc/self/status; hostname x 2>&1; echo rc=$?",
        check=False,
    )
    assert "Seccomp:\t2" in res.stdout and "rc=1" in res.stdout


def test_docker_default_profile(rt: Runtime) -> None:
    """Docker's profile (what engines send with every container) is in force: with CAP_SYS_ADMIN
    granted, unshare(2) is still refused by the filter, while the shell itself runs normally."""
    profile = json.loads(DOCKER_PROFILE.read_text())

    def caps(cfg: dict) -> None:
        for k in ("bounding", "effective", "permitted"):
            cfg["process"]["capabilities"][k].append("CAP_SYS_ADMIN")

    def edit(cfg: dict) -> None:
        caps(cfg)
        cfg["linux"]["seccomp"] = profile

    cmd = ["/bin/sh", "-c", "grep Seccomp: /proc/self/status; busybox unshare -u true 2>&1; echo rc=$?"]
    code, out, err = rt.run_output(cmd, edit=caps)
    assert code == 0 and "Seccomp:\t0" in out and "rc=0" in out, (out, err)
    code, out, err = rt.run_output(cmd, edit=edit)
    assert code == 0, err
    assert "Seccomp:\t2" in out and "Operation not permitted" in out and "rc=1" in out, out


def test_seccomp_notify_reaches_the_listener(rt: Runtime, tmp_path: Path) -> None:
    """SCMP_ACT_NOTIFY: the runtime sends the listener fd with the container state to listenerPath;
    the agent's answer becomes the syscall's result in the container."""
    from tests.runtime.test_seccomp import listener

    sock = str(tmp_path / "agent.sock")

    def edit(cfg: dict) -> None:
        cfg["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock,
            "listenerMetadata": "meta-42",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}],
        }
        cfg["mounts"].append({"destination": "/w", "type": "tmpfs", "source": "tmpfs", "options": []})

    box: dict = {}
    ready = threading.Event()
    agent = threading.Thread(target=listener, args=(sock, box, ready), daemon=True)
    agent.start()
    assert ready.wait(10)
    code, _, err = rt.run_output(["mkdir", "/w/d"], edit=edit, cid="notif")
    agent.join(10)
    assert code == 1 and "Invalid cross-device link" in err, err  # the agent answers EXDEV
    st = box["state"]
    assert st["fds"] == ["seccompFd"] and st["metadata"] == "meta-42"
    assert st["state"]["id"] == "notif" and st["state"]["status"] == "creating"
    assert st["pid"] == st["state"]["pid"] == box["notif"]["pid"] and st["pid"] > 0
