"""Fixtures for the OCI runtime: a busybox rootfs from refimage `small` (unpacked with umoci), bundles
that point at it, and a runner for the real `pallet-runtime` binary with a private --root.

Every container a test makes is force-deleted at teardown, pass or fail.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import peers

if os.geteuid() != 0:
    pytest.skip("the runtime tests need root (real namespaces and mounts)", allow_module_level=True)


def runtime_binary() -> str:
    """The installed launcher beside this venv's python (what podman/containerd would exec)."""
    cand = Path(sys.executable).parent / "pallet-runtime"
    if cand.exists():
        return str(cand)
    found = shutil.which("pallet-runtime")
    if not found:
        pytest.fail("pallet-runtime is not installed: run `make venv`")
    return found


@pytest.fixture(scope="session")
def rootfs_bundle(tmp_path_factory: pytest.TempPathFactory, small_layout: Path) -> Path:
    """umoci's bundle of refimage small (busybox): its rootfs is shared by every test, read-only."""
    out = tmp_path_factory.mktemp("rt-umoci") / "bundle"
    peers.umoci_unpack(small_layout, "latest", out)
    return out


def base_config(rootfs: Path) -> dict[str, Any]:
    """umoci's config, made runnable here: no terminal, no rlimits above the host's, read-only root."""
    cfg = json.loads((rootfs.parent / "config.json").read_text())
    cfg["root"] = {"path": str(rootfs), "readonly": True}
    p = cfg["process"]
    p["terminal"] = False
    p.pop("rlimits", None)
    p["args"] = ["/bin/true"]
    return cfg


class Runtime:
    """Runs `pallet-runtime --root ROOT ...`; tracks ids for cleanup."""

    def __init__(self, root: Path, tmp: Path, rootfs: Path) -> None:
        self.root, self.tmp, self.rootfs = root, tmp, rootfs
        self.exe = runtime_binary()
        self.n = 0

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        # files, not pipes: a container started by create/run --detach inherits (and keeps) them
        self.n += 1
        out, err = self.tmp / f".out{self.n}", self.tmp / f".err{self.n}"
        with open(out, "w+") as fo, open(err, "w+") as fe:
            proc = subprocess.run(
                [self.exe, "--root", str(self.root), *args],
                stdout=fo,
                stderr=fe,
                text=True,
                timeout=timeout,
                input=input,
                **kw,
            )
        res = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())
        if check and res.returncode != 0:
            raise AssertionError(
                f"pallet-runtime {' '.join(args)} exited {res.returncode}: "
                f"{res.stderr.strip()} {res.stdout.strip()}"
            )
        return res

    def bundle(self, args: list[str] | None = None, *, edit: Any = None, name: str | None = None) -> Path:
        """A bundle dir with config.json over the shared rootfs; ``edit(cfg)`` adjusts the config."""
        self.n += 1
        b = self.tmp / (name or f"bundle{self.n}")
        b.mkdir()
        cfg = copy.deepcopy(base_config(self.rootfs))
        if args:
            cfg["process"]["args"] = args
        if edit:
            edit(cfg)
        (b / "config.json").write_text(json.dumps(cfg))
        return b

    def run_output(self, args: list[str], edit: Any = None, cid: str | None = None) -> tuple[int, str, str]:
        """`run` a container in the foreground; returns (status, stdout, stderr)."""
        b = self.bundle(args, edit=edit)
        self.n += 1
        res = self(  # the container writes straight to our pipes
            "run", "--bundle", str(b), cid or f"c{os.getpid()}-{self.n}", check=False
        )
        return res.returncode, res.stdout, res.stderr

    def state(self, cid: str) -> dict[str, Any]:
        return json.loads(self("state", cid).stdout)

    def ids(self) -> list[str]:
        return [c["id"] for c in json.loads(self("list", "--format", "json").stdout or "[]")]

    def cleanup(self) -> None:
        if not self.root.exists():
            return
        for cid in os.listdir(self.root):
            self("delete", "--force", cid, check=False)


@pytest.fixture
def rt(tmp_path: Path, rootfs_bundle: Path) -> Iterator[Runtime]:
    r = Runtime(tmp_path / "state", tmp_path, rootfs_bundle / "rootfs")
    try:
        yield r
    finally:
        r.cleanup()


def wait_for(cond: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.fixture(scope="session")
def userns_rootfs(rootfs_bundle: Path) -> Iterator[Path]:
    """A copy of the rootfs under a world-searchable dir: a mapped root (host uid 100000...) must be
    able to reach it, and pytest's tmp dirs are 0700."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="pallet-rt-userns-"))
    try:
        d.chmod(0o755)
        subprocess.run(["cp", "-a", str(rootfs_bundle / "rootfs"), str(d / "rootfs")], check=True)
        yield d / "rootfs"
    finally:
        shutil.rmtree(d, ignore_errors=True)
