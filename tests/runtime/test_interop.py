"""Real clients drive pallet-runtime as their OCI runtime: podman (run, -it, exec, stop, rm),
buildah run, and containerd (ctr run --runc-binary through containerd-shim-runc-v2)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.conftest import runtime_binary
from tests.support import terminal

pytestmark = [pytest.mark.peer, pytest.mark.slow]

#: containerd namespace for this test run: its containers' cgroups are /<namespace>/<id>
CTR_NS = f"pallet-rt-{os.getpid()}"


class Podman:
    def __init__(self, base: Path, image: str) -> None:
        self.base, self.image = base, image
        self.env = dict(os.environ, CONTAINERS_CONF=str(base / "containers.conf"))

    def argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root",
            str(self.base / "root"),
            "--runroot",
            str(self.base / "run"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--runtime",
            runtime_binary(),
            *args,
        ]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
        return res


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory, small_layout: Path) -> Iterator[Podman]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    base = tmp_path_factory.mktemp("rt-podman")
    (base / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
    )
    pm = Podman(base, "")
    out = pm("pull", "-q", f"oci:{small_layout}:latest").stdout.split()
    pm.image = out[-1]
    try:
        yield pm
    finally:
        pm("rm", "-af", "-t", "0", check=False)
        subprocess.run(
            [
                "podman",
                "--root",
                str(base / "root"),
                "--runroot",
                str(base / "run"),
                "--storage-driver",
                "vfs",
                "system",
                "reset",
                "-f",
            ],
            capture_output=True,
            env=pm.env,
        )


def test_podman_run_rm(podman: Podman) -> None:
    res = podman("run", "--rm", "--network", "none", podman.image, "echo", "ok")
    assert res.stdout == "ok\n"
    res = podman("run", "--rm", "--network", "none", podman.image, "sh", "-c", "exit 7", check=False)
    assert res.returncode == 7
    res = podman("run", "--rm", "--network", "none", podman.image, "nosuchcmd", check=False)
    assert res.returncode == 127 and "executable file not found" in res.stderr


def test_podman_default_network(podman: Podman) -> None:
    assert podman("run", "--rm", podman.image, "echo", "ok").stdout == "ok\n"


def test_podman_exec_stop_rm(podman: Podman) -> None:
    cid = podman("run", "-d", "--network", "none", podman.image, "sleep", "60").stdout.strip()
    try:
        res = podman("exec", cid, "sh", "-c", "echo in-exec $(hostname)")
        assert res.stdout.split() == ["in-exec", cid[:12]]
        assert podman("exec", cid, "nosuch", check=False).returncode == 127
        assert podman("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "running"
        podman("stop", "-t", "1", cid)
        assert podman("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "exited"
    finally:
        podman("rm", "-f", cid)
    assert cid not in podman("ps", "-aq", "--no-trunc").stdout


def test_podman_interactive_tty(podman: Podman) -> None:
    out, status = terminal.converse(
        podman.argv("run", "-it", "--rm", "--network", "none", podman.image, "sh"),
        b"# ", b"tty; echo hi-$((6*7)); exit 3\n", env={**os.environ, **podman.env},
    )
    assert b"/dev/pts/0" in out and b"hi-42" in out, out
    assert status == 3


def test_buildah_run(tmp_path: Path, small_layout: Path) -> None:
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed")
    env = dict(os.environ)
    b = [
        "buildah",
        "--root",
        str(tmp_path / "root"),
        "--runroot",
        str(tmp_path / "run"),
        "--storage-driver",
        "vfs",
    ]
    ctr = subprocess.run(
        [*b, "from", "-q", f"oci:{small_layout}:latest"], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    try:
        res = subprocess.run(
            [
                *b,
                "run",
                "--runtime",
                runtime_binary(),
                "--isolation",
                "oci",
                ctr,
                "--",
                "sh",
                "-c",
                "echo buildah-ok; touch /made-by-run",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "buildah-ok"
        res = subprocess.run(
            [*b, "run", "--runtime", runtime_binary(), ctr, "--", "ls", "/made-by-run"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert res.stdout.strip() == "/made-by-run", res.stderr
    finally:
        subprocess.run([*b, "rm", ctr], capture_output=True, env=env)
        subprocess.run([*b, "rmi", "-af"], capture_output=True, env=env)


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if shutil.which("containerd") is None or shutil.which("containerd-shim-runc-v2") is None:
        pytest.skip("containerd is not installed")
    base = tmp_path_factory.mktemp("rt-ctd")
    sock = base / "containerd.sock"
    (base / "config.toml").write_text(
        f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
        f'[debug]\n  address = "{base}/debug.sock"\n[metrics]\n  address = ""\n'
    )
    log = open(base / "containerd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["containerd", "--config", str(base / "config.toml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"containerd exited: {(base / 'containerd.log').read_text()[-2000:]}")
            if subprocess.run(["ctr", "-a", str(sock), "version"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        yield sock
    finally:
        subprocess.run(
            ["ctr", "-a", str(sock), "-n", CTR_NS, "tasks", "kill", "-a", "-s", "KILL"],
            capture_output=True,
        )
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", str(base / "state")], capture_output=True)
        subprocess.run(["umount", "-R", str(base / "root")], capture_output=True)
        from pallet.runtime.cgroups import _layout

        for h in _layout.layout().hierarchies():  # the namespace's parent cgroup (empty by now)
            try:
                os.rmdir(h.dir_for(f"/{CTR_NS}"))
            except OSError:
                pass


def test_ctr_run_with_runc_binary(containerd: Path, tmp_path: Path, small_layout: Path) -> None:
    ctr = ["ctr", "-a", str(containerd), "-n", CTR_NS]
    archive = tmp_path / "img.tar"
    with tarfile.open(archive, "w") as tf:
        for p in sorted(small_layout.iterdir()):
            tf.add(p, arcname=p.name)
    subprocess.run(
        [*ctr, "images", "import", "--index-name", "pallet-rt/small:latest", str(archive)],
        check=True,
        capture_output=True,
        text=True,
    )
    ref = "pallet-rt/small:latest"
    res = subprocess.run(
        [*ctr, "run", "--rm", "--runc-binary", runtime_binary(), ref, "ctr-ok", "echo", "ctr-ok"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ctr-ok"
    res = subprocess.run(
        [*ctr, "run", "--rm", "--runc-binary", runtime_binary(), ref, "ctr-exit", "sh", "-c", "exit 5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 5, res.stderr


def test_podman_limits_seccomp_pause_stats_top(podman: Podman) -> None:
    """podman passes cgroup limits and Docker's seccomp profile; pause goes through the runtime,
    stats and top read what the runtime set up."""
    res = podman(
        "run", "--rm", "--network", "none", "--memory", "64m", "--pids-limit", "50", podman.image,
        "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; "
        "grep Seccomp: /proc/self/status",
    )
    assert res.stdout.split() == [str(64 * 1024 * 1024), "50", "Seccomp:", "2"], res.stdout
    cid = podman(
        "run", "-d", "--network", "none", "--memory", "96m", podman.image, "sleep", "60"
    ).stdout.strip()
    try:
        podman("pause", cid)
        assert podman("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "paused"
        podman("unpause", cid)
        assert podman("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "running"
        stats = podman("stats", "--no-stream", "--format", "{{.MemUsage}}|{{.PIDs}}", cid).stdout.strip()
        usage, pids = stats.split("|")
        assert usage.split("/")[1].strip() == "100.7MB", stats  # podman prints 96 MiB in SI units
        assert pids.strip() == "1", stats
        top = podman("top", cid, "pid", "args").stdout.splitlines()
        assert any("sleep 60" in ln for ln in top[1:]), top
    finally:
        podman("rm", "-f", "-t", "0", cid)
