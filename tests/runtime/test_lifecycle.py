"""The runtime-spec lifecycle on real containers: create → start → stopped → delete, hooks, cleanup."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from tests.runtime.conftest import Runtime, pid_alive, wait_for


def test_create_start_delete(rt: Runtime, tmp_path: Path) -> None:
    b = rt.bundle(["/bin/sh", "-c", "echo started > /dev/shm/x; sleep 30"])
    pidfile = tmp_path / "pid"
    rt("create", "--bundle", str(b), "--pid-file", str(pidfile), "lc1")
    st = rt.state("lc1")
    pid = int(pidfile.read_text())
    assert st["status"] == "created" and st["pid"] == pid and st["id"] == "lc1"
    assert st["bundle"] == str(b) and st["ociVersion"]
    assert pid_alive(pid)
    # the init is waiting before exec: still our program, not sh
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] != b"/bin/sh"
    assert stat.S_ISFIFO(os.stat(rt.root / "lc1" / "exec.fifo").st_mode)
    rt("start", "lc1")
    assert rt.state("lc1")["status"] == "running"
    wait_for(lambda: Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep"), what="exec of sleep")
    res = rt("delete", "lc1", check=False)
    assert res.returncode == 1 and "not stopped" in res.stderr
    res = rt("start", "lc1", check=False)
    assert res.returncode == 1
    rt("kill", "lc1", "KILL")
    wait_for(lambda: rt.state("lc1")["status"] == "stopped", what="stopped")
    assert rt.state("lc1")["pid"] == 0
    rt("delete", "lc1")
    assert rt.ids() == [] and not (rt.root / "lc1").exists()


def test_delete_force_running(rt: Runtime) -> None:
    rt("run", "--detach", "--bundle", str(rt.bundle(["sleep", "60"])), "lc2")
    pid = rt.state("lc2")["pid"]
    assert rt.state("lc2")["status"] == "running"
    rt("delete", "--force", "lc2")
    wait_for(lambda: not pid_alive(pid), what="init killed")
    assert rt.ids() == []


def test_delete_created_container(rt: Runtime) -> None:
    rt("create", "--bundle", str(rt.bundle(["sleep", "60"])), "lc3")
    pid = rt.state("lc3")["pid"]
    rt("delete", "lc3")  # a created container never ran its program: runc deletes it too
    wait_for(lambda: not pid_alive(pid), what="init gone")


def test_duplicate_id(rt: Runtime) -> None:
    b = rt.bundle(["sleep", "60"])
    rt("create", "--bundle", str(b), "dup")
    res = rt("create", "--bundle", str(b), "dup", check=False)
    assert res.returncode == 1 and "already exists" in res.stderr
    assert rt.state("dup")["status"] == "created"


def test_run_exit_status_and_output(rt: Runtime) -> None:
    code, out, _ = rt.run_output(["/bin/sh", "-c", "echo hi; exit 7"])
    assert (code, out) == (7, "hi\n")
    assert rt.ids() == []


def test_run_forwards_signals_and_reports_kill(rt: Runtime, tmp_path: Path) -> None:
    b = rt.bundle(["/bin/sh", "-c", "trap 'exit 42' TERM; sleep 30 & wait"])
    with open(tmp_path / "o", "w") as out:
        p = subprocess.Popen(
            [rt.exe, "--root", str(rt.root), "run", "--bundle", str(b), "sig"], stdout=out, stderr=out
        )
        try:
            wait_for(
                lambda: (rt.root / "sig").exists() and rt.state("sig")["status"] == "running", what="running"
            )
            import time

            time.sleep(0.2)  # let sh install its trap
            p.send_signal(15)
            assert p.wait(10) == 42
        finally:
            p.kill()
            p.wait()
    b2 = rt.bundle(["sleep", "30"])
    with open(tmp_path / "o2", "w") as out:
        p = subprocess.Popen(
            [rt.exe, "--root", str(rt.root), "run", "--bundle", str(b2), "sig2"], stdout=out, stderr=out
        )
        try:
            wait_for(
                lambda: (rt.root / "sig2").exists() and rt.state("sig2")["status"] == "running",
                what="running",
            )
            rt("kill", "sig2", "SIGKILL")
            assert p.wait(10) == 128 + 9
        finally:
            p.kill()
            p.wait()
    assert rt.ids() == []


def test_run_keep_and_list(rt: Runtime) -> None:
    b = rt.bundle(["true"])
    rt("run", "--keep", "--bundle", str(b), "kept")
    assert rt.state("kept")["status"] == "stopped"
    listing = json.loads(rt("list", "--format", "json").stdout)
    assert [c["id"] for c in listing] == ["kept"] and listing[0]["status"] == "stopped"
    assert "kept" in rt("list").stdout
    rt("delete", "kept")


def test_missing_executable_fails_create_cleanly(rt: Runtime) -> None:
    res = rt("create", "--bundle", str(rt.bundle(["/no/such/thing"])), "noexe", check=False)
    assert res.returncode == 1 and "no such file or directory" in res.stderr
    res = rt("create", "--bundle", str(rt.bundle(["nosuchcmd"])), "noexe2", check=False)
    assert "executable file not found in $PATH" in res.stderr
    assert rt.ids() == [] and list(rt.root.iterdir()) == []


def _hook(tmp: Path, name: str, body: str) -> dict:
    script = tmp / f"{name}.sh"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return {"path": str(script), "args": [name, "arg1"]}


def test_hooks_run_in_order_with_state(rt: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    hooks = {}
    for kind in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"):
        # each records its name, $0/arg and the state it got on stdin
        hooks[kind] = [_hook(tmp_path, kind, f'echo "{kind} $0 $1 $(cat)" >> {log}')]
    # startContainer's path resolves inside the container: the hook dir is bind-mounted at /hooks
    hooks["startContainer"] = [
        _hook(tmp_path, "startContainer", 'echo "startContainer $0 $1 $(cat)" >> /hooks/hooks.log')
    ]
    hooks["startContainer"][0]["path"] = "/hooks/startContainer.sh"

    def edit(cfg: dict) -> None:
        cfg["hooks"] = hooks
        cfg["mounts"].append(
            {"destination": "/hooks", "type": "bind", "source": str(tmp_path), "options": ["rbind"]}
        )

    b = rt.bundle(["true"], edit=edit)
    rt("create", "--bundle", str(b), "hk")
    lines = log.read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["prestart", "createRuntime", "createContainer"]
    state = json.loads(lines[0].split(" ", 3)[3])
    assert state["id"] == "hk" and state["status"] == "created" and state["pid"] == rt.state("hk")["pid"]
    assert json.loads(lines[1].split(" ", 3)[3])["status"] == "creating"  # createRuntime
    assert lines[0].split()[2] == "arg1"  # args after argv[0] reach the hook
    rt("start", "hk")
    wait_for(lambda: len(log.read_text().splitlines()) >= 5, what="start hooks")
    kinds = [ln.split()[0] for ln in log.read_text().splitlines()]
    assert kinds[3:] == ["startContainer", "poststart"]
    wait_for(lambda: rt.state("hk")["status"] == "stopped", what="stopped")
    rt("delete", "hk")
    last = log.read_text().splitlines()[-1]
    assert last.startswith("poststop") and json.loads(last.split(" ", 3)[3])["status"] == "stopped"


def test_failing_hook_removes_everything(rt: Runtime, tmp_path: Path) -> None:
    def edit(cfg: dict) -> None:
        cfg["hooks"] = {"createRuntime": [_hook(tmp_path, "bad", "echo broken >&2; exit 3")]}

    def ours() -> list[str]:
        return [
            ln
            for ln in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(rt.tmp) in ln or str(rt.rootfs) in ln
        ]

    before = ours()
    res = rt("create", "--bundle", str(rt.bundle(["sleep", "60"], edit=edit)), "hkfail", check=False)
    assert res.returncode == 1
    assert "createRuntime hook" in res.stderr and "exit status 3" in res.stderr and "broken" in res.stderr
    assert not (rt.root / "hkfail").exists()
    assert ours() == before
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(rt.root) not in out


def test_hook_timeout(rt: Runtime, tmp_path: Path) -> None:
    def edit(cfg: dict) -> None:
        h = _hook(tmp_path, "slow", "sleep 20")
        h["timeout"] = 1
        cfg["hooks"] = {"prestart": [h]}

    res = rt("create", "--bundle", str(rt.bundle(["true"], edit=edit)), "hkslow", check=False)
    assert res.returncode == 1 and "timed out" in res.stderr
    assert rt.ids() == []


def test_poststart_failure_is_only_a_warning(rt: Runtime, tmp_path: Path) -> None:
    def edit(cfg: dict) -> None:
        cfg["hooks"] = {"poststart": [_hook(tmp_path, "ps", "exit 1")]}

    code, _, err = rt.run_output(["true"], edit=edit)
    assert code == 0 and "poststart hook" in err


def test_config_changes_after_create_do_not_apply(rt: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "poststop.log"

    def edit(cfg: dict) -> None:
        cfg["hooks"] = {"poststop": [_hook(tmp_path, "stop", f"echo ran >> {log}")]}

    b = rt.bundle(["true"], edit=edit)
    rt("create", "--bundle", str(b), "cfgchg")
    cfg = json.loads((b / "config.json").read_text())
    cfg["hooks"] = {}
    (b / "config.json").write_text(json.dumps(cfg))
    rt("start", "cfgchg")
    wait_for(lambda: rt.state("cfgchg")["status"] == "stopped", what="stopped")
    rt("delete", "cfgchg")
    assert log.read_text() == "ran\n"
