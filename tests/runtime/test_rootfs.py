"""The root filesystem, checked from inside: mounts and options, symlink escapes, devices, masked and
read-only paths, sysctls, propagation, pivot_root and --no-pivot."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.runtime.conftest import Runtime


def _mountinfo_line(out: str, mountpoint: str) -> list[str]:
    for line in out.splitlines():
        f = line.split()
        if len(f) > 4 and f[4] == mountpoint:
            return f
    raise AssertionError(f"{mountpoint} not mounted:\n{out}")


def test_default_mounts_and_options(rt: Runtime) -> None:
    code, out, err = rt.run_output(["cat", "/proc/self/mountinfo"])
    assert code == 0, err
    assert _mountinfo_line(out, "/")[5].startswith("ro")  # root.readonly
    proc = _mountinfo_line(out, "/proc")
    assert proc[-3] == "proc"
    shm = _mountinfo_line(out, "/dev/shm")
    assert {"nosuid", "nodev", "noexec"} <= set(shm[5].split(","))
    sys_ = _mountinfo_line(out, "/sys")
    assert "ro" in sys_[5].split(",") and sys_[-3] == "sysfs"
    pts = _mountinfo_line(out, "/dev/pts")
    assert "ptmxmode=666" in pts[-1] and "gid=5" in pts[-1]
    assert _mountinfo_line(out, "/dev/mqueue")[-3] == "mqueue"
    # masked and read-only paths from umoci's config
    assert _mountinfo_line(out, "/proc/timer_list")
    assert "ro" in _mountinfo_line(out, "/proc/sys")[5].split(",")
    assert "ro" in _mountinfo_line(out, "/sys/firmware")[5].split(",")


def test_bind_mounts_ro_and_propagation(rt: Runtime, tmp_path: Path) -> None:
    src = tmp_path / "share"
    src.mkdir()
    (src / "file").write_text("from host\n")
    single = tmp_path / "single.txt"
    single.write_text("one file\n")

    def edit(cfg: dict) -> None:
        cfg["mounts"] += [
            {
                "destination": "/mnt/ro",
                "type": "bind",
                "source": str(src),
                "options": ["rbind", "ro", "rprivate"],
            },
            {"destination": "/mnt/rw", "type": "none", "source": str(src), "options": ["bind", "nosuid"]},
            {
                "destination": "/etc/single.txt",
                "type": "bind",
                "source": str(single),
                "options": ["bind", "ro"],
            },
            {
                "destination": "/scratch",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["size=1m", "mode=700", "noexec"],
            },
        ]

    script = (
        "cat /mnt/ro/file; echo x > /mnt/ro/no 2>/dev/null || echo ro-refused; echo w > /mnt/rw/new; "
        "cat /etc/single.txt; echo x > /scratch/f && stat -c %a /scratch; cat /proc/self/mountinfo"
    )
    code, out, err = rt.run_output(["/bin/sh", "-c", script], edit=edit)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:4] == ["from host", "ro-refused", "one file", "700"]
    assert (src / "new").read_text() == "w\n"
    mi = "\n".join(lines[4:])
    assert "ro" in _mountinfo_line(mi, "/mnt/ro")[5].split(",")
    assert "nosuid" in _mountinfo_line(mi, "/mnt/rw")[5].split(",")
    scratch = _mountinfo_line(mi, "/scratch")
    assert "noexec" in scratch[5] and "size=1024k" in scratch[-1]


def test_symlinked_destination_stays_inside_rootfs(rt: Runtime, tmp_path: Path, userns_rootfs: Path) -> None:
    """A rootfs symlink pointing at a host path must resolve inside the rootfs (no escape)."""
    rootfs = tmp_path / "evil-rootfs"
    name = f"pallet-escape-{os.getpid()}"
    subprocess.run(["cp", "-a", str(userns_rootfs), str(rootfs)], check=True)
    host_target = tmp_path / "host-target"
    host_target.mkdir()
    (rootfs / "escape").symlink_to(str(host_target))  # absolute: must mean <rootfs>/<host_target>
    (rootfs / "up").symlink_to("../../../../../../../../tmp")

    def edit(cfg: dict) -> None:
        cfg["root"] = {"path": str(rootfs), "readonly": False}
        cfg["mounts"] += [
            {"destination": "/escape/inner", "type": "tmpfs", "source": "tmpfs", "options": []},
            {"destination": f"/up/{name}", "type": "tmpfs", "source": "tmpfs", "options": []},
        ]

    code, _out, err = rt.run_output(["/bin/sh", "-c", "cat /proc/self/mountinfo"], edit=edit)
    assert code == 0, err
    assert not (host_target / "inner").exists()
    assert not Path("/tmp", name).exists()
    assert (rootfs / str(host_target).lstrip("/") / "inner").is_dir()
    assert (rootfs / "tmp" / name).is_dir()


def test_default_devices_and_symlinks(rt: Runtime) -> None:
    code, out, err = rt.run_output(
        [
            "/bin/sh",
            "-c",
            "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T %a' /dev/$d; done;"
            " for l in fd stdin ptmx; do readlink /dev/$l; done; ls /dev",
        ]
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "/dev/null character special file 1:3 666"
    assert lines[1] == "/dev/zero character special file 1:5 666"
    assert lines[5] == "/dev/tty character special file 5:0 666"
    assert lines[6:9] == ["/proc/self/fd", "/proc/self/fd/0", "pts/ptmx"]
    assert "sda" not in out and "kmsg" not in out  # only what the spec lists


def test_config_devices(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["linux"]["devices"] = [
            {
                "path": "/dev/fuse",
                "type": "c",
                "major": 10,
                "minor": 229,
                "fileMode": 0o600,
                "uid": 3,
                "gid": 4,
            },
            {"path": "/dev/sub/loopish", "type": "b", "major": 7, "minor": 200},
            {"path": "/dev/mypipe", "type": "p"},
        ]

    code, out, err = rt.run_output(
        ["/bin/sh", "-c", "stat -c '%F %t:%T %a %u %g' /dev/fuse /dev/sub/loopish; stat -c %F /dev/mypipe"],
        edit=edit,
    )
    assert code == 0, err
    assert out.splitlines() == [
        "character special file a:e5 600 3 4",
        "block special file 7:c8 666 0 0",
        "fifo",
    ]


def test_masked_and_readonly_paths(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["linux"]["maskedPaths"] = ["/proc/meminfo", "/sys/firmware", "/proc/does-not-exist"]
        cfg["linux"]["readonlyPaths"] = ["/proc/sys", "/proc/sysrq-trigger"]

    code, out, err = rt.run_output(
        [
            "/bin/sh",
            "-c",
            "wc -c < /proc/meminfo; ls /sys/firmware | wc -l; "
            "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo writable || echo ro",
        ],
        edit=edit,
    )
    assert code == 0, err
    assert out.split() == ["0", "0", "ro"]


def test_readonly_root_and_writable_root(rt: Runtime) -> None:
    _code, out, _ = rt.run_output(["/bin/sh", "-c", "touch /x 2>/dev/null && echo rw || echo ro"])
    assert out.strip() == "ro"


def test_sysctls(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.msgmax": "4096"}

    host_fwd = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    code, out, err = rt.run_output(
        ["cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/msgmax"], edit=edit
    )
    assert code == 0, err
    assert out.split() == ["1", "4096"]
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_fwd


def test_bad_sysctl_is_clear(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["linux"]["sysctl"] = {"kernel.no_such_knob": "1"}

    code, _, err = rt.run_output(["true"], edit=edit)
    assert code == 1 and "sysctl kernel.no_such_knob=1" in err
    assert rt.ids() == []


def test_rootfs_propagation_and_no_pivot(rt: Runtime) -> None:
    def edit(cfg: dict) -> None:
        cfg["linux"]["rootfsPropagation"] = "rprivate"

    code, out, err = rt.run_output(["cat", "/proc/self/mountinfo"], edit=edit)
    assert code == 0, err
    assert "shared:" not in _mountinfo_line(out, "/")[6]
    # shared and unbindable reach the new root (it is bound from a private parent for pivot_root)
    for prop, want in (("rshared", "shared:"), ("unbindable", "unbindable")):

        def edit2(cfg: dict, prop: str = prop) -> None:
            cfg["linux"]["rootfsPropagation"] = prop

        code, out, err = rt.run_output(["cat", "/proc/self/mountinfo"], edit=edit2)
        assert code == 0, err
        root = _mountinfo_line(out, "/")
        assert any(f.startswith(want) for f in root[6:]), (prop, root)
    b = rt.bundle(["/bin/sh", "-c", "ls /; readlink /proc/self/root"])
    res = rt("run", "--no-pivot", "--bundle", str(b), "nopivot")
    assert "bin" in res.stdout.split() and "proc" in res.stdout.split()


def test_no_mount_leaks_on_host(rt: Runtime) -> None:
    def ours() -> list[str]:
        return [
            ln
            for ln in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(rt.tmp) in ln or str(rt.rootfs) in ln
        ]

    before = ours()
    code, _, err = rt.run_output(["true"])
    assert code == 0, err
    assert ours() == before
    assert os.listdir(rt.root) == []
