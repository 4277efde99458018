"""The pluggable runtime: the same lifecycle subset against every installed OCI runtime (runc now;
pallet-runtime once it is on PATH). Everything goes through runc's command line and its --log."""

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


def test_pause_restart_policy_oom(any_runtime: Pallet) -> None:
    p = any_runtime
    p.ok("run", "-d", "--name", "pp", "small", "sleep", "300")
    p.ok("pause", "pp")
    p.ok("unpause", "pp")
    assert p.ok("exec", "pp", "echo", "ok") == "ok\n"
    r = p("run", "--name", "rp", "--restart", "on-failure:2", "small", "sh", "-c", "exit 1")
    assert r.rc == 1
    p.wait_for("rp", "{{.RestartCount}} {{.State.Status}}", "2 exited")
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
    assert r.rc == 137 and p.inspect("om")["State"]["OOMKilled"] is True
