"""The pluggable runtime: the same lifecycle subset against runc and pallet-runtime, on images
pulled from the loopback registry. Everything goes through runc's command line and its --log."""

from __future__ import annotations

import re
import time

from tests.engine.conftest import Pallet


def test_run_exit_status_and_streams(any_runtime: Pallet) -> None:
    p = any_runtime
    r = p("run", "--rm", "small", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.rc, r.out, r.err) == (3, "out\n", "err\n")
    assert p("run", "--rm", "small", "missing-cmd").rc == 127
    assert p("run", "--rm", "small", "/etc/motd").rc == 126


def test_detached_exec_stop_rm(any_runtime: Pallet) -> None:
    p = any_runtime
    cid = p.ok(
        "run",
        "-d",
        "--name",
        "d",
        "-u",
        "app",
        "-m",
        "32m",
        "small",
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.1; done",
    ).strip()
    assert p.inspect("d")["OCIRuntime"] == p.runtime
    assert p.ok("exec", "d", "id", "-u") == "1000\n"
    status = p.ok("exec", "d", "cat", "/proc/self/status")
    assert re.search(r"^Seccomp:\s*2$", status, re.M)
    t0 = time.monotonic()
    p.ok("stop", "-t", "1", "d")
    assert time.monotonic() - t0 >= 1
    assert p.inspect("d")["State"]["ExitCode"] == 137
    p.ok("rm", "d")
    assert p.leaks([cid]) == []


def test_pause_restart_policy(any_runtime: Pallet) -> None:
    p = any_runtime
    p.ok("run", "-d", "--name", "pp", "small", "sleep", "300")
    p.ok("pause", "pp")
    p.ok("unpause", "pp")
    assert p.ok("exec", "pp", "echo", "ok") == "ok\n"
    r = p("run", "--name", "rp", "--restart", "on-failure:2", "small", "sh", "-c", "exit 1")
    assert r.rc == 1
    p.wait_for("rp", "{{.RestartCount}} {{.State.Status}}", "2 exited")


def test_oom_kill_is_137_and_oomkilled(any_runtime: Pallet) -> None:
    p = any_runtime
    limit = p.ok("run", "--rm", "-m", "8m", "--memory-swap", "8m", "small",
                 "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes").strip()
    if limit != str(8 << 20):
        # never start the memory hog without its limit: it would eat the host's memory
        raise AssertionError(f"{p.runtime}: -m 8m gave a memory limit of {limit}")
    r = p(
        "run",
        "--name",
        "om",
        "-m",
        "8m",
        "--memory-swap",
        "8m",
        "small",
        "sh",
        "-c",
        "x=aaaaaaaa; while true; do x=$x$x; done",
    )
    assert r.rc == 137, r
    info = p.inspect("om")
    assert info["State"]["OOMKilled"] is True and info["State"]["ExitCode"] == 137
    p.ok("rm", "om")
    assert p.leaks([info["Id"]]) == []


def _ignored(status: str) -> int:
    """The standard signals (1-31) a /proc/PID/status says are ignored."""
    line = next(ln for ln in status.splitlines() if ln.startswith("SigIgn:"))
    return int(line.split()[1], 16) & ((1 << 31) - 1)


def test_container_signals_start_at_their_defaults(any_runtime: Pallet) -> None:
    """Neither the monitor's own ignored signals (SIGHUP, SIGINT, SIGQUIT, job control) nor
    CPython's (SIGPIPE, SIGXFSZ) reach the container, in `run` and in `exec`, as under podman."""
    p = any_runtime
    assert _ignored(p.ok("run", "--rm", "small", "cat", "/proc/self/status")) == 0
    p.ok("run", "-d", "--name", "sigs", "small", "sleep", "300")
    assert _ignored(p.ok("exec", "sigs", "cat", "/proc/self/status")) == 0
    assert p.ok("exec", "sigs", "sh", "-c", "yes | head -n1") == "y\n"
    p.ok("rm", "-f", "sigs")


def test_pallet_runtime_called_in_process_or_executed(pallet: Pallet) -> None:
    """The monitor forks pallet-runtime's CLI in process; PALLET_RUNTIME_EXEC=1 executes it: the
    same container either way (status, streams, exit code, failures classified alike)."""
    pallet.runtime = "pallet-runtime"
    for exec_mode in ("", "1"):
        pallet.env["PALLET_RUNTIME_EXEC"] = exec_mode
        r = pallet("run", "--rm", "small", "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (r.rc, r.out, r.err) == (3, "out\n", "err\n"), exec_mode
        assert pallet("run", "--rm", "small", "missing-cmd").rc == 127
        r = pallet("run", "--rm", "small", "sh", "-c", "ls /proc/self/fd")
        assert r.out.split() == ["0", "1", "2", "3"], (exec_mode, r)  # 3: ls's own directory fd
        assert _ignored(pallet.ok("run", "--rm", "small", "cat", "/proc/self/status")) == 0
