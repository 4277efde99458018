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
