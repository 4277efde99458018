"""``run``/``create`` options, each checked from inside the container (/proc, cgroup files, mounts,
id, env) and from outside (inspect)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
from pathlib import Path

import pytest

from tests.engine.conftest import Pallet


def run_out(pallet: Pallet, *args: str) -> str:
    return pallet.ok("run", "--rm", *args)


def caps_of(status: str, field: str = "CapEff") -> int:
    m = re.search(rf"^{field}:\s*([0-9a-f]+)$", status, re.M)
    assert m, status
    return int(m.group(1), 16)


def test_defaults_inside_the_container(pallet: Pallet) -> None:
    out = run_out(
        pallet,
        "small",
        "sh",
        "-c",
        "cat /proc/self/status; echo ---; cat /proc/mounts; echo ---; hostname; echo ---; env; "
        "echo ---; cat /proc/net/dev; echo ---; cat /etc/hosts; echo ---; id",
    )
    status, mounts, hostname, env, netdev, hosts, ident = out.split("---\n")
    # docker's default capability set, nothing more
    from pallet.engine.security import CAP_NAMES, DEFAULT_CAPS

    want = sum(1 << CAP_NAMES.index(c) for c in DEFAULT_CAPS)
    assert caps_of(status) == want == caps_of(status, "CapBnd")
    assert caps_of(status, "CapInh") == 0
    assert re.search(r"^Seccomp:\s*2$", status, re.M), "docker's default seccomp profile is loaded"
    assert re.search(r"^NoNewPrivs:\s*0$", status, re.M)
    # default mounts
    table = {line.split()[1]: line.split() for line in mounts.splitlines()}
    assert table["/proc"][2] == "proc"
    assert table["/dev"][2] == "tmpfs"
    assert table["/dev/pts"][2] == "devpts"
    assert table["/dev/shm"][2] == "tmpfs" and "size=65536k" in table["/dev/shm"][3]
    assert table["/dev/mqueue"][2] == "mqueue"
    assert table["/sys"][2] == "sysfs" and table["/sys"][3].split(",")[0] == "ro"
    assert any(p.startswith("/sys/fs/cgroup") for p in table)
    for f in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf"):
        assert f in table, f
    # masked and read-only paths
    assert "/proc/keys" in table and "/sys/firmware" in table
    assert table["/proc/sys"][3].startswith("ro")
    # hostname is the short ID, in /etc/hosts too; env has HOSTNAME, PATH and HOME
    assert re.fullmatch(r"[0-9a-f]{12}\n", hostname)
    assert f"HOSTNAME={hostname.strip()}" in env
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in env and "HOME=/root" in env
    assert hostname.strip() in hosts and "localhost" in hosts
    # the default bridge network: loopback and eth0 (tests/network has the rest)
    ifaces = [line.split(":")[0].strip() for line in netdev.splitlines()[2:]]
    assert sorted(ifaces) == ["eth0", "lo"]
    assert ident.startswith("uid=0(root) gid=0(root)")


def test_masked_paths_are_unreadable(pallet: Pallet) -> None:
    out = run_out(
        pallet,
        "small",
        "sh",
        "-c",
        "wc -c < /proc/keys; ls /sys/firmware | wc -l; "
        "echo 1 > /proc/sys/kernel/domainname && echo writable || echo refused",
    )
    size, firmware, write = out.split("\n")[:3]
    assert size.strip() == "0" and firmware.strip() == "0" and write == "refused"


def test_env_env_file_workdir_user_hostname_entrypoint(pallet: Pallet, tmp_path: Path) -> None:
    envfile = tmp_path / "env"
    envfile.write_text("# comment\nFROM_FILE=yes\nOVERRIDE=file\nHOST_VAR\n")
    pallet.env["HOST_VAR"] = "from-host"
    out = run_out(
        pallet,
        "--env-file",
        str(envfile),
        "-e",
        "OVERRIDE=flag",
        "-e",
        "PATH=/bin",
        "-w",
        "/made/by/workdir",
        "-u",
        "app",
        "-h",
        "myhost",
        "small",
        "sh",
        "-c",
        "env; pwd; id; hostname; ls -ld /made/by/workdir",
    )
    assert "FROM_FILE=yes" in out and "OVERRIDE=flag" in out and "HOST_VAR=from-host" in out
    assert "PATH=/bin\n" in out, "the user's PATH replaces the image's"
    assert "/made/by/workdir\n" in out
    assert "uid=1000(app) gid=1000(app)" in out
    assert "HOME=/home/app" in out
    assert "myhost\n" in out
    out = run_out(pallet, "-u", "1234:65534", "small", "id")
    assert out.startswith("uid=1234 gid=65534(nobody)")
    out = run_out(pallet, "-u", "nobody:app", "--group-add", "root", "small", "id")
    assert out.startswith("uid=65534(nobody) gid=1000(app)") and "0(root)" in out
    r = pallet("run", "--rm", "-u", "nosuchuser", "small", "id")
    assert r.rc == 125 and "unable to find user nosuchuser" in r.err
    # --entrypoint replaces the image's entrypoint and clears its Cmd
    assert run_out(pallet, "--entrypoint", "echo", "small") == "\n"
    assert run_out(pallet, "--entrypoint", "echo", "small", "a", "b") == "a b\n"
    r = pallet("run", "--rm", "-w", "relative", "small", "true")
    assert r.rc == 125 and "absolute" in r.err


def test_labels_and_image_defaults_in_inspect(pallet: Pallet) -> None:
    pallet.ok("create", "--name", "lab", "-l", "a=1", "-l", "org.example.fixture=override", "small")
    cfg = pallet.inspect("lab")["Config"]
    assert cfg["Labels"] == {"a": "1", "org.example.fixture": "override"}
    assert cfg["Cmd"] == ["/bin/sh"], "the image's Cmd"
    assert cfg["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def test_read_only_rootfs_and_tmpfs(pallet: Pallet) -> None:
    out = run_out(
        pallet,
        "--read-only",
        "--tmpfs",
        "/run:size=1m,mode=700",
        "--mount",
        "type=tmpfs,target=/scratch,tmpfs-size=2m",
        "small",
        "sh",
        "-c",
        "touch /x 2>&1 || echo rootfs-ro; touch /run/ok && echo run-rw; touch /scratch/ok && "
        "echo scratch-rw; grep -E ' /(run|scratch) ' /proc/mounts",
    )
    assert "rootfs-ro" in out and "run-rw" in out and "scratch-rw" in out
    run_line = next(line for line in out.splitlines() if " /run " in line)
    assert run_line.split()[2] == "tmpfs" and "noexec" in run_line and "size=1024k" in run_line
    assert "mode=700" in run_line
    scratch = next(line for line in out.splitlines() if " /scratch " in line)
    assert "size=2048k" in scratch


def test_bind_mounts_ro_and_rw(pallet: Pallet, tmp_path: Path) -> None:
    host = tmp_path / "shared"
    host.mkdir()
    (host / "in.txt").write_text("from host\n")
    out = run_out(
        pallet,
        "-v",
        f"{host}:/ro:ro,z",
        "--mount",
        f"type=bind,source={host},target=/rw",
        "small",
        "sh",
        "-c",
        "cat /ro/in.txt; touch /ro/x 2>/dev/null || echo ro-refused; echo hi > /rw/out",
    )
    assert out == "from host\nro-refused\n"
    assert (host / "out").read_text() == "hi\n"
    r = pallet("run", "--rm", "--mount", f"type=bind,source={tmp_path}/missing,target=/x", "small", "true")
    assert r.rc == 125 and "does not exist" in r.err
    # -v creates a missing host directory, as docker does
    run_out(pallet, "-v", f"{tmp_path}/created:/c", "small", "true")
    assert (tmp_path / "created").is_dir()
    r = pallet("run", "--rm", "-v", "rel/path:/x", "small", "true")
    assert r.rc == 125


def test_named_volume_copy_up_and_persistence(pallet: Pallet) -> None:
    out = run_out(
        pallet, "-v", "data1:/data", "small", "sh", "-c", "cat /data/keep/a.txt; echo mine > /data/mine"
    )
    assert out == "kept\n", "the image's content at /data was copied into the empty volume"
    assert run_out(pallet, "-v", "data1:/elsewhere", "small", "cat", "/elsewhere/mine") == "mine\n"
    info = json.loads(pallet.ok("volume", "inspect", "data1"))[0]
    data = Path(info["Mountpoint"])
    assert (data / "keep" / "a.txt").read_text() == "kept\n"
    # copy-up keeps owners and modes; no copy-up with nocopy
    assert os.stat(data / "owned-by-app").st_uid == 1000
    assert os.stat(data / "setuid-bin").st_mode & 0o4000
    out = run_out(
        pallet, "--mount", "type=volume,source=data2,target=/data,volume-nocopy", "small", "ls", "/data"
    )
    assert out == ""


def test_anonymous_and_image_volumes(pallet: Pallet) -> None:
    pallet.ok("run", "--name", "mk", "small", "sh", "-c", "mkdir -p /vol && echo seeded > /vol/seed")
    pallet.ok("commit", "-c", "VOLUME /vol", "mk", "withvol")
    cid = pallet.ok("run", "-d", "--name", "usesvol", "withvol", "sleep", "300").strip()
    mounts = pallet.inspect("usesvol")["Mounts"]
    assert len(mounts) == 1 and mounts[0]["Destination"] == "/vol" and mounts[0]["Type"] == "volume"
    anon = mounts[0]["Name"]
    assert len(anon) == 64
    assert pallet.ok("exec", "usesvol", "cat", "/vol/seed") == "seeded\n"
    assert anon in pallet.ok("volume", "ls", "-q")
    r = pallet("volume", "rm", anon)
    assert r.rc == 2 and "in use" in r.err
    pallet.ok("rm", "-f", "-v", "usesvol", "mk")
    assert anon not in pallet.ok("volume", "ls", "-q")
    assert pallet.leaks([cid]) == []


def test_memory_cpu_pids_limits_in_cgroup_files(pallet: Pallet) -> None:
    from pallet.engine import cgroups

    if cgroups.is_v2():
        pytest.skip("checks cgroup v1 files")
    out = run_out(
        pallet,
        "-m",
        "64m",
        "--memory-swap",
        "128m",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--cpuset-cpus",
        "0",
        "--pids-limit",
        "42",
        "small",
        "sh",
        "-c",
        "cd /sys/fs/cgroup; cat memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes "
        "cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpu/cpu.shares cpuset/cpuset.cpus pids/pids.max",
    )
    assert out.split() == [str(64 << 20), str(128 << 20), "50000", "100000", "512", "0", "42"]
    pallet.ok("create", "--name", "lim", "-m", "64m", "--cpus", "1.5", "small")
    hc = pallet.inspect("lim")["HostConfig"]
    assert hc["Memory"] == 64 << 20 and hc["MemorySwap"] == 128 << 20 and hc["NanoCpus"] == 1_500_000_000


def test_ulimits_clamped_to_the_host(pallet: Pallet) -> None:
    import resource

    out = run_out(
        pallet,
        "--ulimit",
        "nofile=100:200",
        "--ulimit",
        "nproc=999999999",
        "small",
        "cat",
        "/proc/self/limits",
    )
    nofile = next(line for line in out.splitlines() if line.startswith("Max open files")).split()
    assert nofile[3:5] == ["100", "200"]
    hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = next(line for line in out.splitlines() if line.startswith("Max processes")).split()
    want = "unlimited" if hard == resource.RLIM_INFINITY else str(min(hard, 999999999))
    assert nproc[2:4] == [want, want]
    r = pallet("run", "--rm", "--ulimit", "nofile=10:5", "small", "true")
    assert r.rc == 125 and "soft limit" in r.err


def test_capabilities_add_drop_privileged(pallet: Pallet) -> None:
    from pallet.engine.security import CAP_NAMES

    status = run_out(
        pallet, "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "small", "cat", "/proc/self/status"
    )
    assert caps_of(status) == 1 << CAP_NAMES.index("CAP_NET_ADMIN")
    status = run_out(pallet, "--cap-drop", "chown", "small", "cat", "/proc/self/status")
    assert not caps_of(status) & (1 << CAP_NAMES.index("CAP_CHOWN"))
    out = run_out(
        pallet,
        "--privileged",
        "small",
        "sh",
        "-c",
        "cat /proc/self/status; ls /dev | wc -l; grep ' /sys ' /proc/mounts",
    )
    own = caps_of(Path("/proc/self/status").read_text(), "CapBnd")
    assert caps_of(out) == own, "every capability pallet holds itself"
    assert re.search(r"^Seccomp:\s*0$", out, re.M)
    assert " rw," in next(line for line in out.splitlines() if " /sys " in line)
    r = pallet("run", "--rm", "--cap-add", "CAP_NOT_A_THING", "small", "true")
    assert r.rc == 125 and "unknown capability" in r.err
    # the non-root user has no effective capabilities (docker drops them on exec)
    status = run_out(pallet, "-u", "app", "small", "cat", "/proc/self/status")
    assert caps_of(status) == 0


def test_security_opts(pallet: Pallet, tmp_path: Path) -> None:
    out = run_out(
        pallet,
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "no-new-privileges",
        "small",
        "cat",
        "/proc/self/status",
    )
    assert re.search(r"^Seccomp:\s*0$", out, re.M) and re.search(r"^NoNewPrivs:\s*1$", out, re.M)
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    (tmp_path / "deny-mkdir.json").write_text(json.dumps(profile))
    r = pallet(
        "run", "--rm", "--security-opt", f"seccomp={tmp_path / 'deny-mkdir.json'}", "small", "mkdir", "/x"
    )
    assert r.rc == 1 and "Operation not permitted" in r.err
    # the default profile refuses mount(2) without CAP_SYS_ADMIN, allows it with it
    r = pallet("run", "--rm", "small", "mount", "-t", "tmpfs", "t", "/mnt")
    assert r.rc != 0
    r = pallet(
        "run", "--rm", "--cap-add", "SYS_ADMIN", "small", "sh", "-c", "mkdir /m && mount -t tmpfs t /m"
    )
    assert r.rc == 0, r
    r = pallet("run", "--rm", "--security-opt", "apparmor=docker-default", "small", "true")
    assert r.rc == 125 and "AppArmor is not enabled" in r.err
    assert pallet("run", "--rm", "--security-opt", "label=disable", "small", "true").rc == 0
    r = pallet("run", "--rm", "--security-opt", "seccomp=/nonexistent.json", "small", "true")
    assert r.rc == 125 and "seccomp profile" in r.err


def test_device_and_init(pallet: Pallet) -> None:
    out = run_out(
        pallet,
        "--device",
        "/dev/null:/dev/mynull:rw",
        "--init",
        "small",
        "sh",
        "-c",
        "stat -c '%t:%T %F' /dev/mynull; echo x > /dev/mynull && echo wrote; cat /proc/1/cmdline | "
        "tr '\\0' ' '",
    )
    lines = out.splitlines()
    assert lines[0] == "1:3 character special file" and lines[1] == "wrote"
    assert lines[2].startswith("/dev/init -- sh -c")


def test_dns_add_host_sysctl_shm(pallet: Pallet) -> None:
    out = run_out(
        pallet,
        "--add-host",
        "db.local:10.1.2.3",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        "corp.example",
        "--dns-option",
        "ndots:2",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--shm-size",
        "8m",
        "small",
        "sh",
        "-c",
        "cat /etc/hosts /etc/resolv.conf /proc/sys/net/ipv4/ip_forward; grep ' /dev/shm ' /proc/mounts",
    )
    assert "10.1.2.3\tdb.local" in out
    assert "nameserver 192.0.2.53" in out and "search corp.example" in out and "options ndots:2" in out
    assert "\n1\n" in out
    assert "size=8192k" in out
    r = pallet("run", "--rm", "--sysctl", "vm.swappiness=1", "small", "true")
    assert r.rc == 125 and "not allowed" in r.err
    r = pallet("run", "--rm", "--network", "host", "--sysctl", "net.ipv4.ip_forward=1", "small", "true")
    assert r.rc == 125


def _ifaces(netdev: str) -> set[str]:
    return {line.split(":")[0].strip() for line in netdev.splitlines()[2:]}


def test_network_host_and_container(pallet: Pallet) -> None:
    # other suites on the machine add and remove interfaces meanwhile: the container must see
    # the host's, as they were just before or just after
    before = _ifaces(Path("/proc/net/dev").read_text())
    out = run_out(pallet, "--network", "host", "small", "sh", "-c", "cat /proc/net/dev; echo ---; hostname")
    after = _ifaces(Path("/proc/net/dev").read_text())
    netdev, hostname = out.split("---\n")
    assert before & after <= _ifaces(netdev) <= before | after
    assert hostname.strip() == platform.node()
    pallet.ok("run", "-d", "--name", "netowner", "--sysctl", "net.ipv4.ip_forward=1", "small", "sleep", "300")
    out = run_out(pallet, "--network", "container:netowner", "small", "cat", "/proc/sys/net/ipv4/ip_forward")
    assert out == "1\n", "joined the other container's network namespace"
    r = pallet("run", "--rm", "--network", "nosuchnet", "small", "true")
    assert r.rc == 125 and "not found" in r.err


def test_stop_timeout_and_health_options_in_inspect(pallet: Pallet) -> None:
    pallet.ok(
        "create",
        "--name",
        "opts",
        "--stop-timeout",
        "3",
        "--health-cmd",
        "true",
        "--health-interval",
        "2s",
        "--health-retries",
        "4",
        "--health-timeout",
        "500ms",
        "--restart",
        "on-failure:5",
        "--log-opt",
        "max-size=1m",
        "--log-opt",
        "max-file=2",
        "small",
    )
    info = pallet.inspect("opts")
    assert info["Config"]["StopTimeout"] == 3
    assert info["Config"]["Healthcheck"] == {
        "Test": ["CMD-SHELL", "true"],
        "Interval": 2_000_000_000,
        "Timeout": 500_000_000,
        "Retries": 4,
    }
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
    assert info["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "1m", "max-file": "2"},
    }


def test_healthcheck_status_in_ps_and_inspect(pallet: Pallet) -> None:
    pallet.ok(
        "run",
        "-d",
        "--name",
        "hc",
        "--health-cmd",
        "test -f /tmp/healthy",
        "--health-interval",
        "300ms",
        "--health-retries",
        "2",
        "small",
        "sh",
        "-c",
        "sleep 1; touch /tmp/healthy; sleep 300",
    )
    assert "(health: starting)" in pallet.ok("ps")
    pallet.wait_for("hc", "{{.State.Health.Status}}", "healthy")
    assert "(healthy)" in pallet.ok("ps")
    assert pallet.ok("ps", "--filter", "health=healthy", "--format", "{{.Names}}") == "hc\n"
    pallet.ok("exec", "hc", "rm", "/tmp/healthy")
    pallet.wait_for("hc", "{{.State.Health.Status}}", "unhealthy")
    health = pallet.inspect("hc")["State"]["Health"]
    assert health["FailingStreak"] >= 2
    assert health["Log"][-1]["ExitCode"] == 1
    assert "(unhealthy)" in pallet.ok("ps")


def test_runtime_flag_and_unknown_runtime(pallet: Pallet) -> None:
    pallet.ok("create", "--name", "rt", "--runtime", "runc", "small", "true")
    assert pallet.inspect("rt")["OCIRuntime"] == "runc"
    r = pallet("create", "--runtime", "kata", "small", "true")
    if shutil.which("kata-runtime") is None:
        assert r.rc == 125 and "not installed" in r.err
