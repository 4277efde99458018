"""Namespaces, checked from inside real containers: new ones, joined ones, id mappings."""

from __future__ import annotations

import os
from pathlib import Path

from tests.runtime.conftest import Runtime


def _ns(name: str) -> str:
    return os.readlink(f"/proc/self/ns/{name}")


def test_new_namespaces_differ_from_host(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["linux"]["namespaces"] = [
            {"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")
        ]

    code, out, err = rt.run_output(
        ["/bin/sh", "-c", "for n in pid net ipc uts mnt cgroup; do readlink /proc/self/ns/$n; done; echo $$"],
        edit=edit,
    )
    assert code == 0, err
    lines = out.split()
    for name, inside in zip(("pid", "net", "ipc", "uts", "mnt", "cgroup"), lines, strict=False):
        assert inside != _ns(name), name
    assert lines[-1] == "1"  # the process is pid 1 of its pid namespace


def test_shared_namespaces_when_not_listed(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["linux"]["namespaces"] = [{"type": "mount"}]
        cfg.pop("hostname", None)

    code, out, err = rt.run_output(
        ["/bin/sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/uts"], edit=edit
    )
    assert code == 0, err
    assert out.split() == [_ns("net"), _ns("uts")]


def test_hostname_and_domainname(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["hostname"] = "boxy"
        cfg["domainname"] = "example.test"

    code, out, err = rt.run_output(["/bin/sh", "-c", "hostname; cat /proc/sys/kernel/domainname"], edit=edit)
    assert code == 0, err
    assert out.split() == ["boxy", "example.test"]


def test_hostname_without_uts_namespace_is_refused(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "uts"]
        cfg["hostname"] = "nope"

    code, _, err = rt.run_output(["true"], edit=edit)
    assert code == 1 and "UTS namespace" in err
    assert rt.ids() == []


def test_network_namespace_has_only_loopback(rt: Runtime) -> None:
    code, out, err = rt.run_output(["/bin/sh", "-c", "ls /sys/class/net"])
    assert code == 0, err
    assert out.split() == ["lo"]


def test_join_namespace_by_path(rt: Runtime) -> None:
    rt("run", "--detach", "--bundle", str(rt.bundle(["sleep", "60"])), "holder")
    pid = rt.state("holder")["pid"]
    net, ipc = os.readlink(f"/proc/{pid}/ns/net"), os.readlink(f"/proc/{pid}/ns/ipc")

    def edit(cfg: dict) -> None:
        for n in cfg["linux"]["namespaces"]:
            if n["type"] in ("network", "ipc"):
                n["path"] = f"/proc/{pid}/ns/{'net' if n['type'] == 'network' else 'ipc'}"

    code, out, err = rt.run_output(
        ["/bin/sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc"], edit=edit
    )
    assert code == 0, err
    assert out.split() == [net, ipc]


def test_bad_namespace_path_is_clear(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["linux"]["namespaces"].append({"type": "cgroup", "path": "/proc/nonexistent/ns/cgroup"})

    code, _, err = rt.run_output(["true"], edit=edit)
    assert code == 1 and "cgroup namespace path /proc/nonexistent/ns/cgroup" in err
    assert rt.ids() == []


def test_user_namespace_mappings(rt: Runtime, userns_rootfs: Path) -> None:
    def edit(cfg: dict) -> None:
        cfg["root"]["path"] = str(userns_rootfs)
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["process"]["user"] = {"uid": 0, "gid": 0}

    code, out, err = rt.run_output(
        ["/bin/sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; ls -ln /dev/null"], edit=edit
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["0", "100000", "65536"]
    assert lines[1].split() == ["0", "100000", "65536"]
    assert lines[2] == "0"
    # /dev/null is the host's node bind-mounted (mknod is refused in a user namespace)
    assert lines[3].startswith("crw-rw-rw-")


def test_user_namespace_process_is_mapped_on_host(rt: Runtime, userns_rootfs: Path) -> None:
    def edit(cfg: dict) -> None:
        cfg["root"]["path"] = str(userns_rootfs)
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 1000}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 1000}]
        cfg["process"]["user"] = {"uid": 5, "gid": 7}

    rt("run", "--detach", "--bundle", str(rt.bundle(["sleep", "60"], edit=edit)), "usr")
    pid = rt.state("usr")["pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()
    gid_line = next(ln for ln in status.splitlines() if ln.startswith("Gid:")).split()
    assert uid_line[1] == "200005" and gid_line[1] == "200007"


def test_time_namespace_offsets(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["linux"]["namespaces"].append({"type": "time"})
        cfg["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365}, "monotonic": {"secs": 1000}}

    code, out, err = rt.run_output(
        ["/bin/sh", "-c", "cat /proc/self/timens_offsets; cut -d. -f1 /proc/uptime"], edit=edit
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["monotonic", "1000", "0"]
    assert lines[1].split() == ["boottime", str(86400 * 365), "0"]
    host_up = int(float(Path("/proc/uptime").read_text().split()[0]))
    assert int(lines[2]) >= host_up + 86400 * 365 - 5


def test_no_namespaces_at_all(rt: Runtime) -> None:
    """Every namespace inherited (runc allows it): the process is chrooted into the rootfs, and the
    mounts it asked for are made under the rootfs in the host's namespace and removed on delete."""

    def edit(cfg: dict) -> None:
        cfg["linux"]["namespaces"] = []
        cfg.pop("hostname", None)
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] in ("/proc", "/dev")]
        cfg["root"]["readonly"] = False

    code, out, err = rt.run_output(
        ["/bin/sh", "-c", "for n in pid net ipc uts mnt cgroup; do readlink /proc/self/ns/$n; done; ls /"],
        edit=edit,
    )
    assert code == 0, err
    lines = out.split()
    assert lines[:6] == [_ns(n) for n in ("pid", "net", "ipc", "uts", "mnt", "cgroup")]
    assert "bin" in lines[6:]
    assert str(rt.rootfs) not in Path("/proc/self/mountinfo").read_text()
