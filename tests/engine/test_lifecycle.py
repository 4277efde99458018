"""The container lifecycle through the CLI, with real containers: run, create/start, stop, kill, rm,
wait, restart, pause, rename, exit statuses, restart policies, OOM, reconciliation, leaks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.engine.conftest import Pallet


def test_run_output_and_exit_status(pallet: Pallet) -> None:
    r = pallet("run", "--rm", "small", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert r.rc == 3
    assert r.out == "out\n"
    assert r.err == "err\n"
    assert pallet.leaks() == []


def test_exit_status_of_a_signal_is_128_plus_signal(pallet: Pallet) -> None:
    # PID 1 ignores signals it has no handler for, except SIGKILL from outside its namespace
    pallet.ok("run", "-d", "--name", "sig", "small", "sleep", "300")
    pallet.ok("kill", "-s", "KILL", "sig")
    assert pallet.ok("wait", "sig") == f"{128 + signal.SIGKILL}\n"


def test_missing_command_is_127_and_not_executable_is_126(pallet: Pallet) -> None:
    r = pallet("run", "--rm", "small", "no-such-command")
    assert r.rc == 127, r
    assert "executable file not found" in r.err
    assert r.err.count("\n") == 1, "one error line, not the runtime's and ours"
    r = pallet("run", "--rm", "small", "/etc/motd")  # exists, mode 0644
    assert r.rc == 126, r
    assert "permission denied" in r.err
    r = pallet("run", "--name", "nx", "small", "/does/not/exist")
    assert r.rc == 127
    info = pallet.inspect("nx")
    assert info["State"]["Status"] == "created"
    assert info["State"]["ExitCode"] == 127
    assert "no such file or directory" in info["State"]["Error"]
    pallet.ok("rm", "nx")
    assert pallet.leaks() == []


def test_engine_errors_are_125(pallet: Pallet) -> None:
    r = pallet("run", "--rm", "no-such-image")
    assert r.rc == 125
    # podman's order: the attempt, then one error line
    trying, error = r.err.splitlines()
    assert trying == f"Trying to pull {pallet.registry}/no-such-image:latest..."
    assert error.startswith("Error: ") and "no-such-image" in error and "manifest unknown" in error
    r = pallet("run", "--rm", "--restart", "sometimes", "small", "true")
    assert r.rc == 125 and "restart policy" in r.err
    r = pallet("run", "--bogus-flag", "small")
    assert r.rc == 125
    r = pallet("run", "--rm", "--runtime", "no-such-runtime", "small", "true")
    assert r.rc == 125 and "no-such-runtime" in r.err
    assert pallet.leaks() == []


def test_detached_container_ps_inspect_stop_rm(pallet: Pallet) -> None:
    cid = pallet.ok("run", "-d", "--name", "web", "-l", "tier=front", "small", "sleep", "300").strip()
    assert len(cid) == 64
    ps = pallet.ok("ps")
    assert "web" in ps and cid[:12] in ps and '"sleep 300"' in ps and "Up " in ps
    info = pallet.inspect("web")
    assert info["Id"] == cid and info["Name"] == "/web"
    assert info["State"]["Running"] is True and info["State"]["Pid"] > 0
    assert info["Config"]["Labels"]["tier"] == "front"
    assert info["Config"]["Labels"]["org.example.fixture"] == "latest", "image labels are kept"
    assert info["Path"] == "sleep" and info["Args"] == ["300"]
    pid = info["State"]["Pid"]
    assert os.path.exists(f"/proc/{pid}")
    # the container's init is a child of its monitor, which outlived the CLI that started it
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert "pallet" in Path(f"/proc/{ppid}/cmdline").read_text()
    assert pallet.ok("ps", "-q") == cid[:12] + "\n"
    assert pallet.ok("ps", "-q", "--no-trunc") == cid + "\n"
    assert pallet.ok("ps", "--filter", "label=tier=front", "--format", "{{.Names}}") == "web\n"
    assert pallet.ok("ps", "--filter", "label=tier=back", "--format", "{{.Names}}") == ""
    r = pallet("rm", "web")
    assert r.rc == 2 and "running" in r.err
    assert pallet.ok("stop", "-t", "1", "web") == "web\n"
    info = pallet.inspect("web")
    assert info["State"]["Status"] == "exited" and info["State"]["Running"] is False
    assert info["State"]["FinishedAt"] > info["State"]["StartedAt"]
    assert "Exited (" in pallet.ok("ps", "-a")
    assert pallet.ok("ps", "-q") == ""
    assert pallet.ok("rm", "web") == "web\n"
    assert pallet("rm", "web").rc == 1
    assert pallet.leaks([cid]) == []


def test_create_then_start_attached(pallet: Pallet) -> None:
    cid = pallet.ok("create", "--name", "c1", "small", "sh", "-c", "echo started; exit 7").strip()
    assert pallet.inspect("c1")["State"]["Status"] == "created"
    assert "Created" in pallet.ok("ps", "-a")
    r = pallet("start", "-a", "c1")
    assert r.rc == 7 and r.out == "started\n"
    assert pallet.ok("logs", "c1") == "started\n"
    assert pallet.ok("start", "c1") == "c1\n"  # an exited container starts again
    assert pallet.ok("wait", "c1") == "7\n"
    assert pallet.ok("logs", "c1") == "started\nstarted\n"
    pallet.ok("rm", cid[:10])  # a unique ID prefix names it
    assert pallet.leaks([cid]) == []


def test_stop_escalates_sigterm_to_sigkill_after_the_timeout(pallet: Pallet) -> None:
    pallet.ok(
        "run",
        "-d",
        "--name",
        "stubborn",
        "small",
        "sh",
        "-c",
        "trap 'echo got TERM' TERM; while true; do sleep 0.1; done",
    )
    time.sleep(0.3)
    t0 = time.monotonic()
    pallet.ok("stop", "-t", "2", "stubborn")
    took = time.monotonic() - t0
    assert 2.0 <= took < 8, took
    info = pallet.inspect("stubborn")
    assert info["State"]["ExitCode"] == 137
    assert "got TERM" in pallet.ok("logs", "stubborn")


def test_stop_uses_the_stop_signal_and_returns_quickly(pallet: Pallet) -> None:
    pallet.ok(
        "run",
        "-d",
        "--name",
        "polite",
        "--stop-signal",
        "USR1",
        "small",
        "sh",
        "-c",
        "trap 'exit 42' USR1; while true; do sleep 0.1; done",
    )
    time.sleep(0.3)
    t0 = time.monotonic()
    pallet.ok("stop", "-t", "20", "polite")
    assert time.monotonic() - t0 < 5
    info = pallet.inspect("polite")
    assert info["State"]["ExitCode"] == 42
    assert info["Config"]["StopSignal"] == "USR1"


def test_kill_with_a_signal(pallet: Pallet) -> None:
    pallet.ok("run", "-d", "--name", "k", "--init", "small", "sleep", "300")
    pallet.ok("kill", "-s", "TERM", "k")
    assert pallet.ok("wait", "k") == "143\n"
    r = pallet("kill", "k")
    assert r.rc != 0 and "not running" in r.err
    pallet.ok("start", "k")
    pallet.ok("kill", "k")
    assert pallet.inspect("k")["State"]["ExitCode"] == 137


def test_wait_blocks_until_exit(pallet: Pallet) -> None:
    pallet.ok("run", "-d", "--name", "w", "small", "sh", "-c", "sleep 1; exit 5")
    t0 = time.monotonic()
    assert pallet.ok("wait", "w") == "5\n"
    assert time.monotonic() - t0 >= 0.5


def test_restart_and_rename(pallet: Pallet) -> None:
    pallet.ok("run", "-d", "--name", "r1", "small", "sleep", "300")
    first = pallet.inspect("r1")["State"]
    pallet.ok("restart", "-t", "0", "r1")
    second = pallet.inspect("r1")["State"]
    assert second["Running"] and second["Pid"] != first["Pid"] and second["StartedAt"] > first["StartedAt"]
    pallet.ok("rename", "r1", "r2")
    assert pallet.inspect("r2")["Name"] == "/r2"
    assert pallet("container", "inspect", "r1").rc != 0
    pallet.ok("run", "-d", "--name", "other", "small", "sleep", "300")
    r = pallet("rename", "r2", "other")
    assert r.rc == 125 and "already in use" in r.err
    r = pallet("run", "-d", "--name", "other", "small", "true")
    assert r.rc == 125 and "already in use" in r.err


def test_pause_and_unpause_freeze_the_cgroup(pallet: Pallet) -> None:
    from pallet.engine import cgroups

    cid = pallet.ok("run", "-d", "--name", "p", "small", "sleep", "300").strip()
    pallet.ok("pause", "p")
    assert pallet.inspect("p")["State"]["Status"] == "paused"
    assert "(Paused)" in pallet.ok("ps")
    assert cgroups.freezer_state(cgroups.cgroups_path(cid)) in ("FROZEN", "1")
    r = pallet("exec", "p", "true")
    assert r.rc != 0 and "paused" in r.err
    pallet.ok("unpause", "p")
    assert pallet.inspect("p")["State"]["Status"] == "running"
    assert pallet.ok("exec", "p", "echo", "alive") == "alive\n"
    pallet.ok("pause", "p")
    pallet.ok("rm", "-f", "p")  # a paused container can be force-removed
    assert pallet.leaks([cid]) == []


def test_run_rm_removes_container_and_anonymous_volumes(pallet: Pallet) -> None:
    pallet.ok("run", "--rm", "-v", "/anon", "small", "true")
    assert pallet.ok("ps", "-aq") == ""
    assert pallet.ok("volume", "ls", "-q") == ""
    cid = pallet.ok("run", "-d", "--rm", "small", "sh", "-c", "sleep 0.5").strip()
    assert pallet.ok("wait", cid) == "0\n"
    deadline = time.monotonic() + 10
    while pallet.ok("ps", "-aq") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pallet.ok("ps", "-aq") == ""
    assert pallet.leaks([cid]) == []


def test_restart_policy_on_failure_restarts_and_counts(pallet: Pallet) -> None:
    r = pallet("run", "--name", "flaky", "--restart", "on-failure:3", "small", "sh", "-c", "echo try; exit 4")
    assert r.rc == 4
    pallet.wait_for("flaky", "{{.RestartCount}} {{.State.Status}}", "3 exited")
    assert pallet.inspect("flaky")["State"]["ExitCode"] == 4
    assert pallet.ok("logs", "flaky") == "try\n" * 4


def test_restart_policy_always_is_cancelled_by_stop(pallet: Pallet) -> None:
    pallet.ok("run", "-d", "--name", "loop", "--restart", "always", "small", "sh", "-c", "sleep 0.2; exit 0")
    deadline = time.monotonic() + 15
    while pallet.inspect("loop")["RestartCount"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pallet.inspect("loop")["RestartCount"] >= 2
    pallet.ok("stop", "-t", "1", "loop")
    count = pallet.inspect("loop")["RestartCount"]
    time.sleep(1.0)
    info = pallet.inspect("loop")
    assert info["State"]["Status"] == "exited" and info["RestartCount"] == count


def test_restart_policy_on_success_does_not_restart(pallet: Pallet) -> None:
    pallet.ok("run", "--name", "fine", "--restart", "on-failure", "small", "true")
    time.sleep(0.5)
    info = pallet.inspect("fine")
    assert info["RestartCount"] == 0 and info["State"]["Status"] == "exited"


def test_oom_killed_container_reports_137(pallet: Pallet) -> None:
    cid = pallet(
        "run",
        "--name",
        "hog",
        "-m",
        "8m",
        "--memory-swap",
        "8m",
        "small",
        "sh",
        "-c",
        "x=aaaaaaaa; while true; do x=$x$x; done",
    )
    assert cid.rc == 137, cid
    info = pallet.inspect("hog")
    assert info["State"]["OOMKilled"] is True
    assert info["State"]["ExitCode"] == 137
    assert pallet.ok("container", "inspect", "-f", "{{.State.OOMKilled}}", "hog") == "true\n"


def test_reconcile_after_monitor_and_container_are_killed(pallet: Pallet) -> None:
    cid = pallet.ok("run", "-d", "--name", "orphan", "small", "sleep", "300").strip()
    import sqlite3

    with sqlite3.connect(pallet.root / "engine" / "engine.db") as conn:
        mon, pid = conn.execute("SELECT monitor_pid, pid FROM containers WHERE id=?", (cid,)).fetchone()
    os.kill(mon, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)  # as after a reboot: nothing of the container is left
    from pallet.engine.monitor import alive

    deadline = time.monotonic() + 5
    while alive(pid, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    ps = pallet.ok("ps", "-a", "--format", "{{.Names}} {{.Status}}")
    assert ps.startswith("orphan Exited (255)"), ps
    assert pallet.ok("ps", "-q") == ""
    # its storage was released; start works again, and rm cleans everything
    assert pallet.ok("start", "orphan") == "orphan\n"
    pallet.ok("rm", "-f", "orphan")
    assert pallet.leaks([cid]) == []


def test_monitor_killed_container_keeps_running(pallet: Pallet) -> None:
    cid = pallet.ok("run", "-d", "--name", "survivor", "small", "sleep", "300").strip()
    import sqlite3

    with sqlite3.connect(pallet.root / "engine" / "engine.db") as conn:
        (mon,) = conn.execute("SELECT monitor_pid FROM containers WHERE id=?", (cid,)).fetchone()
    os.kill(mon, signal.SIGKILL)
    time.sleep(0.2)
    assert pallet.inspect("survivor")["State"]["Running"] is True
    pallet.ok("rm", "-f", "survivor")
    assert pallet.leaks([cid]) == []


@pytest.mark.slow
def test_parallel_run_and_rm_cycles_leave_nothing_behind(pallet: Pallet) -> None:
    def cycle(i: int) -> str:
        cid = pallet.ok("run", "-d", "--name", f"par{i}", "small", "sleep", "300", timeout=120).strip()
        pallet.ok("rm", "-f", cid, timeout=120)
        return cid

    with ThreadPoolExecutor(max_workers=20) as pool:
        ids = list(pool.map(cycle, range(20)))
    assert len(set(ids)) == 20
    assert pallet.ok("ps", "-aq") == ""
    assert pallet.leaks(ids) == []


def test_container_prune_removes_only_stopped(pallet: Pallet) -> None:
    pallet.ok("run", "--name", "done1", "small", "true")
    pallet.ok("create", "--name", "made", "small", "true")
    pallet.ok("run", "-d", "--name", "alive", "small", "sleep", "300")
    out = pallet.ok("container", "prune", "-f")
    assert out.startswith("Deleted Containers:") and "Total reclaimed space:" in out
    names = pallet.ok("ps", "-a", "--format", "{{.Names}}").split()
    assert names == ["alive"]


def test_system_prune_with_volumes(pallet: Pallet) -> None:
    pallet.ok("run", "--name", "old", "-v", "/anon", "small", "true")
    pallet.ok("rm", "old")
    pallet.ok("volume", "create", "keepme")
    assert len(pallet.ok("volume", "ls", "-q").split()) == 2
    out = pallet.ok("system", "prune", "-f", "--volumes")
    assert "Deleted Volumes:" in out
    assert pallet.ok("volume", "ls", "-q") == "keepme\n"


def test_name_and_reference_resolution(pallet: Pallet) -> None:
    cid = pallet.ok("create", "small", "true").strip()
    name = pallet.inspect(cid)["Name"].lstrip("/")
    assert "_" in name, "a generated adjective_surname name"
    assert pallet.inspect(name)["Id"] == cid
    assert pallet.inspect("/" + name)["Id"] == cid
    r = pallet("container", "inspect", "nosuch")
    assert r.rc == 125 and "no such container" in r.err.lower()


def test_inspect_format_and_json_shape(pallet: Pallet) -> None:
    pallet.ok("create", "--name", "shape", "small", "sh", "-c", "true")
    info = pallet.inspect("shape")
    for key in (
        "Id",
        "Created",
        "Path",
        "Args",
        "State",
        "Image",
        "ResolvConfPath",
        "HostnamePath",
        "HostsPath",
        "LogPath",
        "Name",
        "RestartCount",
        "Driver",
        "HostConfig",
        "GraphDriver",
        "Mounts",
        "Config",
        "NetworkSettings",
    ):
        assert key in info, key
    assert info["Image"].startswith("sha256:")
    assert info["Config"]["Cmd"] == ["sh", "-c", "true"]
    assert info["HostConfig"]["NetworkMode"] == "bridge"
    out = pallet.ok(
        "container", "inspect", "-f", "{{.Name}} {{json .Config.Cmd}} {{.State.Running}}", "shape"
    )
    assert out == '/shape ["sh","-c","true"] false\n'
    # "json" is the JSON array, as without -f; maps are Go maps (an absent key is no error)
    assert json.loads(pallet.ok("container", "inspect", "-f", "json", "shape"))[0]["Name"] == "/shape"
    out = pallet.ok("container", "inspect", "-f",
                    '{{.Config.Labels.nope}}|{{index .Config.Labels "org.example.fixture"}}', "shape")
    assert out == "<no value>|latest\n"
    r = pallet("container", "inspect", "-f", "{{.Nope}}", "shape")
    assert r.rc == 125 and "can't evaluate field Nope" in r.err and r.out == ""


def test_monitor_is_a_small_process_that_outlives_the_cli(pallet: Pallet) -> None:
    """The monitor is forked by ``pallet run`` before the engine is imported (no sqlite3 or
    store in it), shows as ``pallet-monitor ID`` in ps, and lives in its own session."""
    import sqlite3

    cid = pallet.ok(
        "run",
        "-d",
        "-i",
        "--name",
        "slim",
        "small",
        "sh",
        "-c",
        "while read line; do echo got $line; done; exit 9",
    ).strip()
    with sqlite3.connect(pallet.root / "engine" / "engine.db") as conn:
        (mon,) = conn.execute("SELECT monitor_pid FROM containers WHERE id=?", (cid,)).fetchone()
    cmdline = Path(f"/proc/{mon}/cmdline").read_bytes().rstrip(b"\0")
    assert cmdline == f"pallet-monitor {cid[:12]}".encode(), cmdline
    assert Path(f"/proc/{mon}/comm").read_text().strip() == "pallet-monitor"
    stat = Path(f"/proc/{mon}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(stat[3]) != os.getsid(0), "the monitor is in a session of its own, away from our terminal"
    assert int(stat[3]) != mon, "and not its leader, so it can never acquire a controlling terminal"
    modules = {
        line.split()[-1] for line in Path(f"/proc/{mon}/maps").read_text().splitlines() if ".so" in line
    }
    assert not any("_sqlite3" in m for m in modules), "sqlite3 is loaded only when the monitor writes state"
    p = pallet.popen("attach", "--sig-proxy=false", "slim", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdin is not None and p.stdout is not None
        time.sleep(0.3)
        p.stdin.write(b"hello\n")
        p.stdin.flush()
        assert p.stdout.readline() == b"got hello\n"
    finally:
        p.kill()
        p.wait()
    assert pallet.ok("logs", "slim") == "got hello\n"
    pallet.ok("kill", "slim")
    info = pallet.inspect("slim")
    assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 137


def test_attached_run_forwards_signals_to_the_container(pallet: Pallet) -> None:
    p = pallet.popen(
        "run",
        "--rm",
        "small",
        "sh",
        "-c",
        "trap 'echo got INT; exit 3' INT; echo ready; while true; do sleep 0.1; done",
        stdout=subprocess.PIPE,
    )
    assert p.stdout is not None
    assert p.stdout.readline() == b"ready\n"
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 3 and out == b"got INT\n"


def test_unless_stopped_cgroup_parent_oom_score_and_ps_flags(pallet: Pallet) -> None:
    from pallet.engine import cgroups

    cid = pallet.ok(
        "run",
        "-d",
        "--name",
        "us",
        "--restart",
        "unless-stopped",
        "--cgroup-parent",
        "/pallet-test",
        "--oom-score-adj",
        "500",
        "small",
        "sh",
        "-c",
        "cat /proc/self/oom_score_adj; sleep 0.3",
    ).strip()
    deadline = time.monotonic() + 10
    while pallet.inspect("us")["RestartCount"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pallet.inspect("us")["RestartCount"] >= 1, "unless-stopped restarts a container that exits"
    assert pallet.ok("logs", "--tail", "1", "us") == "500\n"
    pallet.ok("stop", "-t", "0", "us")
    assert pallet.inspect("us")["State"]["Status"] == "exited"
    pallet.ok("create", "--name", "newest", "small", "true")
    assert pallet.ok("ps", "-l", "--format", "{{.Names}}") == "newest\n"
    assert pallet.ok("ps", "-n", "2", "--format", "{{.Names}}").split() == ["newest", "us"]
    assert pallet.ok("ps", "-a", "--filter", "status=created", "--format", "{{.Names}}") == "newest\n"
    assert pallet.ok("ps", "-a", "--filter", "status=exited", "--format", "{{.State}}") == "exited\n"
    sized = pallet.ok("ps", "-a", "-s", "--filter", "name=us")
    assert sized.splitlines()[0].split()[-1] == "SIZE" and "virtual" in sized
    assert pallet("ps", "--filter", "status=bogus").rc == 125
    pallet.ok("rm", "us", "newest")
    cg = pallet.ok("run", "-d", "--cgroup-parent", "/pallet-test", "small", "sleep", "300").strip()
    assert os.path.isdir(cgroups.controller_dir(f"/pallet-test/{cg}", "memory"))
    pallet.ok("rm", "-f", cg)
    for d in cgroups.all_dirs(f"/pallet-test/{cg}") + cgroups.all_dirs(f"/pallet-test/{cid}"):
        assert not os.path.isdir(d)
    for d in cgroups.all_dirs("/pallet-test"):
        if os.path.isdir(d):
            os.rmdir(d)  # our test parent, now empty


def test_run_through_the_installed_launcher(pallet: Pallet) -> None:
    """The installed `pallet` (what users run; the tests otherwise use `python -m`): its monitor
    is forked before the engine is imported, with the cycle collector the launcher turned off
    back on in it; an attached --rm run and a detached one work and leave nothing behind."""
    launcher = str(Path(sys.executable).with_name("pallet"))
    res = subprocess.run([launcher, "run", "--rm", "small", "sh", "-c", "echo ok; exit 3"],
                         env=pallet.env, capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stdout) == (3, "ok\n"), res
    res = subprocess.run([launcher, "run", "-d", "--name", "viala", "small", "sleep", "300"],
                         env=pallet.env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res
    assert pallet.inspect("viala")["State"]["Running"] is True
    pallet.ok("rm", "-f", "viala")
    assert pallet.leaks() == []
