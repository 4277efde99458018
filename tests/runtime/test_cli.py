"""The command line: runc's verbs, flags, errors (one line, exit 1) and the JSON it prints."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.runtime.conftest import Runtime, runtime_binary


def test_features_is_runtime_spec_json(rt: Runtime) -> None:
    f = json.loads(rt("features").stdout)
    assert f["ociVersionMin"] == "1.0.0"
    assert set(f["hooks"]) == {
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    }
    assert {"rbind", "ro", "nosuid", "rprivate", "tmpcopyup"} <= set(f["mountOptions"])
    assert set(f["linux"]["namespaces"]) == {
        "pid",
        "network",
        "mount",
        "ipc",
        "uts",
        "user",
        "cgroup",
        "time",
    }
    caps = f["linux"]["capabilities"]
    assert "CAP_SYS_ADMIN" in caps and "CAP_CHOWN" in caps
    assert f["linux"]["apparmor"] == {"enabled": False}
    assert f["linux"]["selinux"] == {"enabled": False}


def test_spec_writes_default_config(tmp_path: Path, rt: Runtime) -> None:
    rt("spec", "--bundle", str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["process"]["args"] == ["sh"] and cfg["root"]["path"] == "rootfs"
    res = rt("spec", "--bundle", str(tmp_path), check=False)
    assert res.returncode == 1 and "exists" in res.stderr
    rl = tmp_path / "rootless"
    rl.mkdir()
    rt("spec", "--rootless", "--bundle", str(rl))
    cfg = json.loads((rl / "config.json").read_text())
    assert {"type": "user"} in cfg["linux"]["namespaces"] and cfg["linux"]["uidMappings"]


def test_bad_flag_is_one_line_exit_1(rt: Runtime) -> None:
    res = rt("create", "--no-such-flag", "x", check=False)
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "no-such-flag" in res.stderr
    res = rt("frobnicate", check=False)
    assert res.returncode == 1 and "frobnicate" in res.stderr


def test_unknown_container_errors(rt: Runtime) -> None:
    for verb in ("state", "start", "kill", "delete", "ps", "pause", "exec"):
        args = [verb, "nope"] + (["true"] if verb == "exec" else [])
        res = rt(*args, check=False)
        assert res.returncode == 1, verb
        assert "nope does not exist" in res.stderr, (verb, res.stderr)
        assert "Traceback" not in res.stderr


def test_invalid_ids_are_refused(rt: Runtime) -> None:
    b = rt.bundle()
    for bad in ("../x", "a/b", "..", "a b"):
        res = rt("create", "--bundle", str(b), bad, check=False)
        assert res.returncode == 1 and "invalid container id" in res.stderr, bad
    assert not any(p.name != "lock" for p in rt.root.glob("*")) if rt.root.exists() else True


def test_bad_config_is_one_clear_line(rt: Runtime, tmp_path: Path) -> None:
    b = tmp_path / "badcfg"
    b.mkdir()
    (b / "config.json").write_text("{not json")
    res = rt("create", "--bundle", str(b), "bad1", check=False)
    assert res.returncode == 1 and "not valid JSON" in res.stderr and "Traceback" not in res.stderr
    (b / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "process": {"args": []}}))
    res = rt("create", "--bundle", str(b), "bad2", check=False)
    assert res.returncode == 1 and "process.args" in res.stderr
    res = rt("create", "--bundle", str(tmp_path / "missing"), "bad3", check=False)
    assert res.returncode == 1 and "config.json not found" in res.stderr
    assert rt.ids() == []


def test_log_json_format(rt: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    res = subprocess.run(
        [
            runtime_binary(),
            "--root",
            str(rt.root),
            "--log",
            str(log),
            "--log-format",
            "json",
            "state",
            "ghost",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries[-1]["level"] == "error" and "ghost" in entries[-1]["msg"] and entries[-1]["time"]


def test_version_and_list_empty(rt: Runtime) -> None:
    assert "pallet-runtime version" in rt("--version").stdout
    assert json.loads(rt("list", "--format", "json").stdout) == []
    assert rt("list").stdout.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
