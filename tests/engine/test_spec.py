"""The pure parts: docker's merge rules (compose), config.json generation (runtime_spec), seccomp
composition, option parsing, user resolution and path safety. No container is started here."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path

import pytest

from pallet.engine import options as o
from pallet.engine import security, spec, users
from pallet.engine.errors import PlatformMismatch
from pallet.engine.paths import mkdir_all_in_root, read_in_root, secure_join
from pallet.errors import EngineError, UnsafePathError, UsageError

IMAGE = {
    "architecture": security.native_arch(),
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/bin:/bin", "LANG=C"],
        "Entrypoint": ["/entry"],
        "Cmd": ["default", "arg"],
        "WorkingDir": "/srv",
        "User": "app",
        "Labels": {"from": "image"},
        "StopSignal": "SIGQUIT",
        "Volumes": {"/data": {}},
        "Healthcheck": {"Test": ["CMD", "check"], "Interval": 5_000_000_000},
    },
}


def compose(command=None, **kw):
    return spec.compose(IMAGE, command, o.CreateOptions(**kw), container_id="c" * 64, image_name="img")


def test_entrypoint_and_cmd_merge_as_docker() -> None:
    cfg = compose()["Config"]
    assert cfg["Entrypoint"] == ["/entry"] and cfg["Cmd"] == ["default", "arg"]
    cfg = compose(["mine"])["Config"]
    assert cfg["Entrypoint"] == ["/entry"] and cfg["Cmd"] == ["mine"]
    cfg = compose(entrypoint="/other")["Config"]
    assert cfg["Entrypoint"] == ["/other"] and cfg["Cmd"] is None, "--entrypoint clears the image's Cmd"
    cfg = compose(["x", "y"], entrypoint="")["Config"]
    assert cfg["Entrypoint"] is None and cfg["Cmd"] == ["x", "y"]
    cfg = compose(entrypoint='["/bin/sh", "-c"]')["Config"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    with pytest.raises(UsageError, match="no command"):
        spec.compose(
            {"architecture": "amd64", "config": {}},
            None,
            o.CreateOptions(),
            container_id="c" * 64,
            image_name="x",
        )


def test_env_labels_workdir_user_stop_signal_volumes_healthcheck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_HOST", "h")
    monkeypatch.delenv("UNSET_ON_HOST", raising=False)
    c = compose(
        env=["LANG=fr", "NEW=1", "FROM_HOST", "UNSET_ON_HOST"], labels=["a=b", "from=user"], health_retries=2
    )
    cfg = c["Config"]
    assert cfg["Env"] == ["PATH=/usr/bin:/bin", "LANG=fr", "NEW=1", "FROM_HOST=h"]
    assert cfg["Labels"] == {"from": "user", "a": "b"}
    assert cfg["WorkingDir"] == "/srv" and cfg["User"] == "app" and cfg["StopSignal"] == "SIGQUIT"
    assert cfg["Healthcheck"] == {"Test": ["CMD", "check"], "Interval": 5_000_000_000, "Retries": 2}
    anon = [m for m in c["MountSpecs"] if m.get("Anonymous")]
    assert [m["Target"] for m in anon] == ["/data"], "the image's VOLUME becomes an anonymous volume"
    c = compose(volumes=["named:/data"])
    assert [m["Source"] for m in c["MountSpecs"]] == ["named"], "an explicit mount replaces it"
    assert compose(no_healthcheck=True)["Config"]["Healthcheck"] == {"Test": ["NONE"]}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"restart": "bogus"}, "restart policy"),
        ({"restart": "always:3"}, "retry count"),
        ({"ulimits": ["nofile"]}, "ulimit"),
        ({"ulimits": ["nofile=9:3"]}, "soft limit"),
        ({"memory": "4k"}, "minimum memory"),
        ({"memory_swap": "1g"}, "memory limit"),
        ({"memory": "1g", "memory_swap": "512m"}, "larger than the memory"),
        ({"cpus": 0}, "positive"),
        ({"cpus": 1000}, "range of CPUs"),
        ({"cpuset_cpus": "0-99"}, "cpuset"),
        ({"volumes": ["a:b:c:d"]}, "volume specification"),
        ({"volumes": ["/x:relative"]}, "unknown option"),
        ({"volumes": ["bad name!:/x"]}, "invalid volume name"),
        ({"mounts": ["type=nfs,target=/x"]}, "type must be"),
        ({"mounts": ["type=bind,source=rel,target=/x"]}, "absolute source"),
        ({"mounts": ["type=tmpfs,target=/x,bogus=1"]}, "unknown field"),
        ({"tmpfs": ["relative"]}, "absolute"),
        ({"volumes": ["/a:/same", "/b:/same"]}, "duplicate mount point"),
        ({"security_opt": ["bogus=1"]}, "security-opt"),
        ({"sysctls": ["kernel.panic=1"]}, "not allowed"),
        ({"log_driver": "syslog"}, "log driver"),
        ({"log_opts": ["max-size=-1"]}, "max-size"),
        ({"log_opts": ["max-file=3"]}, "needs max-size"),
        ({"add_hosts": ["nocolon"]}, "add-host"),
        ({"add_hosts": ["h:not-an-ip"]}, "not an IP"),
        ({"dns": ["example.com"]}, "not an IP"),
        ({"network": "none,host"}, "cannot be combined"),
        ({"network": "none", "publish": ["80:80"]}, "port publishing"),
        ({"stop_signal": "SIGNOPE"}, "invalid signal"),
        ({"health_interval": "soon"}, "duration"),
        ({"auto_remove": True, "restart": "always"}, "conflicting"),
        ({"devices": ["/dev/does-not-exist"]}, "no such file"),
        ({"cap_add": ["NOT_A_CAP"]}, "unknown capability"),
        ({"pull": "sometimes"}, "--pull"),
        ({"workdir": "rel"}, "absolute"),
    ],
)
def test_bad_options_get_one_clear_error(kw: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        compose(**kw)


def test_option_parsers() -> None:
    assert o.parse_bytes("512m", "x") == 512 << 20 and o.parse_bytes("1.5g", "x") == int(1.5 * (1 << 30))
    assert o.parse_bytes("100", "x") == 100 and o.parse_bytes("-1", "x") == -1
    assert o.parse_duration("1m30s", "x") == 90_000_000_000 and o.parse_duration("250ms", "x") == 250_000_000
    assert o.parse_duration("2", "x") == 2_000_000_000
    assert o.signal_number("TERM") == 15 == o.signal_number("SIGTERM") == o.signal_number("15")
    assert o.signal_number("SIGRTMIN+1") == int(__import__("signal").SIGRTMIN) + 1
    assert o.parse_restart("on-failure:4") == {"Name": "on-failure", "MaximumRetryCount": 4}
    assert o.parse_restart("no") == {"Name": "", "MaximumRetryCount": 0}
    assert o.parse_device("/dev/fuse") == {
        "PathOnHost": "/dev/fuse",
        "PathInContainer": "/dev/fuse",
        "CgroupPermissions": "rwm",
    }
    assert o.parse_device("/dev/a:/dev/b:r")["CgroupPermissions"] == "r"
    assert o.parse_device("/dev/a:rw")["PathInContainer"] == "/dev/a"
    v = o.parse_volume("/host:/ctr:ro,z,rshared")
    assert (v["Type"], v["Source"], v["Target"], v["ReadOnly"], v["Propagation"]) == (
        "bind",
        "/host",
        "/ctr",
        True,
        "rshared",
    )
    assert o.parse_volume("name:/ctr")["Type"] == "volume"
    assert o.parse_volume("/only")["Source"] == ""
    m = o.parse_mount('type=volume,src=v,dst=/d,readonly,"volume-label=a=b"')
    assert m["ReadOnly"] and m["Source"] == "v" and m["Labels"] == {"a": "b"}
    assert o.parse_tmpfs("/run:rw,size=1m")["TmpfsOptions"] == ["rw", "size=1m"]
    assert o.merge_env(["A=1", "B=2"], ["B=3", "C=4"]) == ["A=1", "B=3", "C=4"]


def test_env_file_parsing(tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_text("# c\n\nA=1\n  B=two words\nC=\n")
    assert o.parse_env_file(str(f)) == ["A=1", "B=two words", "C="]
    f.write_text("BAD KEY=1\n")
    with pytest.raises(UsageError, match="whitespace"):
        o.parse_env_file(str(f))
    with pytest.raises(UsageError, match="cannot read env file"):
        o.parse_env_file(str(tmp_path / "missing"))


def test_platform_check() -> None:
    assert spec.check_platform(IMAGE) == f"linux/{security.native_arch()}"
    with pytest.raises(PlatformMismatch, match="does not match the host"):
        spec.check_platform({"architecture": "mips64", "os": "linux"})
    with pytest.raises(PlatformMismatch, match="windows"):
        spec.check_platform({"architecture": security.native_arch(), "os": "windows"})


def _inputs(**kw):
    base = dict(
        rootfs="/r",
        uid=1000,
        gid=1000,
        additional_gids=(4,),
        home="/home/app",
        mounts=[],
        hosts_path="/h",
        resolv_path="/rv",
        hostname_path="/hn",
        cgroups_path="/pallet/x",
    )
    base.update(kw)
    return spec.StartInputs(**base)


def test_runtime_spec_defaults() -> None:
    stored = compose(["run"], tty=True)
    cj = spec.runtime_spec(stored, _inputs(console_size=(24, 80)), process_args=["/entry", "run"])
    p = cj["process"]
    assert p["args"] == ["/entry", "run"] and p["terminal"] is True
    assert p["consoleSize"] == {"height": 24, "width": 80}
    assert p["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [4]}
    assert p["env"][:3] == ["PATH=/usr/bin:/bin", "HOSTNAME=cccccccccccc", "TERM=xterm"]
    assert "HOME=/home/app" in p["env"] and p["cwd"] == "/srv"
    assert p["capabilities"]["bounding"] == [c for c in security.DEFAULT_CAPS if c in security.host_caps()]
    assert "inheritable" not in p["capabilities"]
    dests = [m["destination"] for m in cj["mounts"]]
    assert dests[:7] == ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue", "/dev/shm"]
    assert {"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"} <= set(dests)
    lx = cj["linux"]
    assert lx["cgroupsPath"] == "/pallet/x"
    assert {n["type"] for n in lx["namespaces"]} >= {"pid", "ipc", "uts", "mount", "network"}
    assert lx["maskedPaths"][:2] == ["/proc/asound", "/proc/acpi"] and "/proc/sys" in lx["readonlyPaths"]
    assert lx["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    assert lx["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert cj["root"] == {"path": "/r", "readonly": False}
    assert cj["hostname"] == "cccccccccccc"


def test_runtime_spec_user_mounts_override_defaults_and_sort_by_depth() -> None:
    stored = compose(["x"], tmpfs=["/dev/shm:size=1m"])
    mounts = [
        {"Type": "bind", "Source": "/h/b", "Target": "/a/b/c", "ReadOnly": True, "Propagation": "rprivate"},
        {"Type": "bind", "Source": "/h/a", "Target": "/a", "ReadOnly": False, "Propagation": "rslave"},
        {"Type": "tmpfs", "Source": "", "Target": "/dev/shm", "TmpfsOptions": ["size=1m"]},
    ]
    cj = spec.runtime_spec(stored, _inputs(mounts=mounts), process_args=["x"])
    shm = [m for m in cj["mounts"] if m["destination"] == "/dev/shm"]
    assert len(shm) == 1 and "size=1m" in shm[0]["options"] and "noexec" in shm[0]["options"]
    user = [m["destination"] for m in cj["mounts"] if m["destination"].startswith("/a")]
    assert user == ["/a", "/a/b/c"]
    a = next(m for m in cj["mounts"] if m["destination"] == "/a")
    assert a["options"] == ["rbind", "rslave", "rw"]


def test_runtime_spec_resources_and_rlimits() -> None:
    stored = compose(
        ["x"],
        memory="64m",
        cpus=0.5,
        cpu_shares=256,
        cpuset_cpus="0",
        pids_limit=50,
        ulimits=["nofile=10:20", "core=-1"],
        read_only=True,
        sysctls=["net.ipv4.ip_forward=1"],
    )
    cj = spec.runtime_spec(stored, _inputs(), process_args=["x"])
    r = cj["linux"]["resources"]
    assert r["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert r["cpu"] == {"period": 100000, "quota": 50000, "shares": 256, "cpus": "0"}
    assert r["pids"] == {"limit": 50}
    assert cj["root"]["readonly"] is True
    assert cj["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"}
    limits = {x["type"]: (x["soft"], x["hard"]) for x in cj["process"]["rlimits"]}
    assert limits["RLIMIT_NOFILE"] == (10, 20)
    host_nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    if host_nproc != resource.RLIM_INFINITY:
        assert limits["RLIMIT_NPROC"] == (min(4194304, host_nproc),) * 2, "clamped to the host's hard limit"
    host_core = resource.getrlimit(resource.RLIMIT_CORE)[1]
    want = 2**64 - 1 if host_core == resource.RLIM_INFINITY else host_core
    assert limits["RLIMIT_CORE"] == (want, want)


def test_rlimit_clamping_never_exceeds_the_host() -> None:
    for name, const in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(const)[1]
        if hard == resource.RLIM_INFINITY:
            continue
        out = spec.rlimits([{"Name": name, "Soft": hard * 10, "Hard": hard * 10}])
        entry = next(x for x in out if x["type"] == f"RLIMIT_{name.upper()}")
        assert entry["hard"] == hard and entry["soft"] == hard


def test_privileged_spec() -> None:
    stored = compose(["x"], privileged=True)
    cj = spec.runtime_spec(stored, _inputs(), process_args=["x"])
    assert cj["process"]["capabilities"]["bounding"] == security.host_caps()
    assert "seccomp" not in cj["linux"] and cj["linux"]["maskedPaths"] == []
    assert cj["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in cj["linux"]["devices"])
    sysfs = next(m for m in cj["mounts"] if m["destination"] == "/sys")
    assert "rw" in sysfs["options"]


def test_network_modes_in_spec() -> None:
    host = spec.runtime_spec(compose(["x"], network="host"), _inputs(), process_args=["x"])
    assert "network" not in {n["type"] for n in host["linux"]["namespaces"]}
    joined = spec.runtime_spec(
        compose(["x"], network="container:abc"), _inputs(netns_path="/proc/9/ns/net"), process_args=["x"]
    )
    assert {"type": "network", "path": "/proc/9/ns/net"} in joined["linux"]["namespaces"]


def test_seccomp_composition_follows_capabilities_and_arch() -> None:
    def allowed(profile: dict, name: str) -> bool:
        return any(
            name in r["names"] and r["action"] == "SCMP_ACT_ALLOW" and not r.get("args")
            for r in profile["syscalls"]
        )

    base = security.default_seccomp(security.DEFAULT_CAPS)
    assert base["defaultAction"] == "SCMP_ACT_ERRNO" and base["defaultErrnoRet"] == 1
    if security.native_arch() == "amd64":
        assert base["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        assert allowed(base, "arch_prctl")
    assert allowed(base, "read") and allowed(base, "ptrace")
    assert not allowed(base, "mount") and not allowed(base, "reboot")
    clone3 = [r for r in base["syscalls"] if "clone3" in r["names"]]
    assert clone3 and clone3[0]["action"] == "SCMP_ACT_ERRNO" and clone3[0]["errnoRet"] == 38
    admin = security.default_seccomp([*security.DEFAULT_CAPS, "CAP_SYS_ADMIN", "CAP_SYS_BOOT"])
    assert allowed(admin, "mount") and allowed(admin, "reboot")
    assert not [r for r in admin["syscalls"] if "clone3" in r["names"] and r["action"] != "SCMP_ACT_ALLOW"]
    for r in base["syscalls"]:
        assert set(r) <= {"names", "action", "args", "errnoRet"}, "only runtime-spec fields remain"


def test_seccomp_template_is_mobys() -> None:
    raw = json.loads((Path(security.__file__).with_name("seccomp_default.json")).read_text())
    assert raw["defaultAction"] == "SCMP_ACT_ERRNO" and "archMap" in raw and len(raw["syscalls"]) > 20


def test_capabilities() -> None:
    assert security.capabilities([], [], False) == [
        c for c in security.DEFAULT_CAPS if c in security.host_caps()
    ]
    assert security.capabilities(["net_admin"], ["ALL"], False) == ["CAP_NET_ADMIN"]
    assert "CAP_CHOWN" not in security.capabilities([], ["chown"], False)
    assert security.capabilities(["ALL"], ["CAP_KILL"], False) == [
        c for c in security.host_caps() if c != "CAP_KILL"
    ]


# -- users and paths ------------------------------------------------------------------------------------


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
        "# comment\nweb:x:33:33::/var/www:/bin/false\n"
    )
    (r / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nwww:x:33:app\nextra:x:2000:app,web\n")
    return r


def test_user_resolution(rootfs: Path) -> None:
    r = str(rootfs)
    assert users.resolve(r, "") == users.ExecUser(0, 0, (), "/root", "root")
    u = users.resolve(r, "app")
    assert (u.uid, u.gid, u.additional_gids, u.home) == (1000, 1000, (33, 2000), "/home/app")
    assert users.resolve(r, "33").name == "web"
    u = users.resolve(r, "4242")
    assert (u.uid, u.gid, u.home) == (4242, 0, "/")
    assert users.resolve(r, "app:www").gid == 33
    assert users.resolve(r, "app:5555").gid == 5555
    assert users.resolve(r, "web", ["app", "7"]).additional_gids == (2000, 1000, 7)
    with pytest.raises(EngineError, match="unable to find user ghost"):
        users.resolve(r, "ghost")
    with pytest.raises(EngineError, match="unable to find group ghosts"):
        users.resolve(r, "app:ghosts")


def test_user_resolution_does_not_follow_symlinks_out_of_the_root(rootfs: Path, tmp_path: Path) -> None:
    hostfile = tmp_path / "host-passwd"
    hostfile.write_text("evil:x:0:0::/:/bin/sh\n")
    (rootfs / "etc" / "passwd").unlink()
    os.symlink(str(hostfile), rootfs / "etc" / "passwd")  # absolute: resolves inside the root
    with pytest.raises(EngineError, match="unable to find user evil"):
        users.resolve(str(rootfs), "evil")
    os.unlink(rootfs / "etc" / "passwd")
    os.symlink("../../../../../.." + str(hostfile), rootfs / "etc" / "passwd")
    with pytest.raises(EngineError):
        users.resolve(str(rootfs), "evil")


def test_secure_join(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "a" / "b").mkdir(parents=True)
    os.symlink("/", root / "toroot")
    os.symlink("../../../../..", root / "a" / "up")
    os.symlink("b", root / "a" / "rel")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    r = str(root)
    assert secure_join(r, "/toroot/etc/passwd") == f"{r}/etc/passwd"
    assert secure_join(r, "/a/up/etc") == f"{r}/etc"
    assert secure_join(r, "../../..") == r
    assert secure_join(r, "/a/rel/x") == f"{r}/a/b/x"
    assert secure_join(r, "/a/rel", follow_last=False) == f"{r}/a/rel"
    with pytest.raises(UnsafePathError, match="too many levels"):
        secure_join(r, "/loop1")
    made = mkdir_all_in_root(r, "/toroot/new/dir")
    assert made == f"{r}/new/dir" and os.path.isdir(made)
    assert read_in_root(r, "/missing") is None
    (root / "f").write_text("data")
    os.symlink("/f", root / "flink")
    assert read_in_root(r, "/flink") == b"data"
