"""Fixtures for the engine's tests: a private pallet root, the CLI as a subprocess, leak checks.

Images are real: refimage.py's ``small`` layout is pushed with skopeo to a docker-registry on
loopback once per session, and ``pallet pull`` brings it into a seed root (image store + layer
storage). Each test gets its own root, a copy of the seed (``cp -a``: a few MB, a few ms), so
tests cannot see each other's containers, volumes, layers or image tags, and the pull is paid
once. Containers run with real runtimes: runc, and pallet-runtime (the default).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import peers

REPO = peers.REPO
PALLET = [sys.executable, "-m", "pallet.cli.main"]
#: the venv's scripts (pallet-runtime, pallet), on PATH for the CLI under test
BIN_DIR = str(Path(sys.executable).parent)


def _search_path() -> str:
    return BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def available_runtimes() -> list[str]:
    """The OCI runtimes the pluggable-runtime tests run against: runc and pallet-runtime (both are
    required: a missing one fails the tests that need it rather than skipping them)."""
    return ["runc", "pallet-runtime"]


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"rc={self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err}"


class Pallet:
    """Runs ``pallet`` against one private root, as a user would (a new process each time)."""

    def __init__(self, root: Path, runroot: Path, registry: str = "", runtime: str = "runc") -> None:
        self.root, self.runroot = root, runroot
        base = root.parent
        #: HOST:PORT of the session's loopback registry (``small:latest`` is there)
        self.registry = registry
        self.runtime = runtime
        self.env = dict(os.environ)
        self.env.pop("PALLET_IMAGE_SOURCE", None)
        self.env.update(
            {
                "PALLET_ROOT": str(root),
                "PALLET_RUNROOT": str(runroot),
                "PATH": _search_path(),
                # short names are searched on the loopback registry only (never docker.io), and
                # the short-name alias cache stays in the test's directory
                "CONTAINERS_REGISTRIES_CONF": str(_registries_conf(base, registry)),
                "XDG_CACHE_HOME": str(base / "cache"),
                "PYTHONPATH": str(REPO) + os.pathsep + self.env.get("PYTHONPATH", ""),
            }
        )

    def argv(self, *args: str) -> list[str]:
        return [*PALLET, "--runtime", self.runtime, *args]

    def __call__(self, *args: str, input: str | bytes | None = None, timeout: float = 60) -> Result:
        text = not isinstance(input, bytes)
        res = subprocess.run(
            self.argv(*args),
            input=input,
            capture_output=True,
            text=text,
            env=self.env,
            timeout=timeout,
            cwd=str(REPO),
        )
        out, err = res.stdout, res.stderr
        if not text:
            out, err = out.decode(errors="replace"), err.decode(errors="replace")
        return Result(res.returncode, out, err)

    def ok(self, *args: str, input: str | bytes | None = None, timeout: float = 60) -> str:
        r = self(*args, input=input, timeout=timeout)
        assert r.rc == 0, f"pallet {' '.join(args)} failed:\n{r}"
        return r.out

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.env, cwd=str(REPO), **kw)

    def inspect(self, ref: str) -> dict:
        return json.loads(self.ok("container", "inspect", ref))[0]

    def ctx(self):
        from pallet.context import Context

        return Context(root=self.root, runroot=self.runroot, runtime=self.runtime)

    def wait_for(self, ref: str, template: str, want: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        got = ""
        while time.monotonic() < deadline:
            r = self("container", "inspect", "-f", template, ref)
            got = r.out.strip()
            if r.rc == 0 and got == want:
                return got
            time.sleep(0.1)
        raise AssertionError(f"{ref}: {template} is {got!r}, wanted {want!r}")

    # -- storage views --------------------------------------------------------------------------
    def snapshots(self) -> list[dict]:
        """Every snapshot of layer storage (image layers, container layers, views), from disk."""
        out = []
        for driver in ("overlay", "vfs"):
            d = self.root / "storage" / driver / "snapshots"
            if not d.is_dir():
                continue
            for name in os.listdir(d):
                try:
                    out.append(json.loads((d / name / "info.json").read_text()))
                except (OSError, ValueError):
                    out.append({"name": f"<unreadable {d / name}>", "kind": "?"})
        return out

    def container_layers(self) -> list[str]:
        return sorted(s["name"] for s in self.snapshots() if s.get("kind") != "committed")

    def image_layers(self) -> list[str]:
        return sorted(s["name"] for s in self.snapshots() if s.get("kind") == "committed")

    # -- leak checks ------------------------------------------------------------------------------
    def leaks(self, ids: list[str] | None = None) -> list[str]:
        """Everything a removed container could leave behind, as readable lines (empty: clean):
        mounts under the root or runroot (container root filesystems, volumes), container layers
        and their mount directories, engine files, runtime state, database rows, cgroups, and
        processes (monitors, containers) of this root."""
        from pallet.engine import cgroups

        found = []
        root = str(self.root)
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4]
                if mp.startswith(root) or mp.startswith(str(self.runroot)):
                    found.append(f"mount {mp}")
        found += [f"container layer {n}" for n in self.container_layers()]
        dirs = [self.root / "engine" / "containers", self.runroot / "engine"]
        for drv in ("overlay", "vfs", "fuse-overlayfs"):
            dirs.append(self.runroot / "storage" / drv / "containers")
        for d in dirs:
            if d.is_dir():
                found += [f"dir {d / n}" for n in os.listdir(d)]
        rtdir = self.runroot / "runtime"
        if rtdir.is_dir():
            for rt in os.listdir(rtdir):
                # names starting with '@' are the runtime's own (pallet-runtime's seccomp cache)
                found += [f"runtime state {rtdir / rt / n}" for n in os.listdir(rtdir / rt)
                          if not n.startswith("@")]
        db = self.root / "engine" / "engine.db"
        if db.exists():
            import sqlite3

            with sqlite3.connect(db) as conn:
                found += [f"row {r[0]}" for r in conn.execute("SELECT id FROM containers")]
        idx = self.root / "images" / "index.db"
        if idx.exists():
            import sqlite3

            with sqlite3.connect(idx) as conn:
                found += [f"image holder {r[0]}" for r in conn.execute("SELECT holder FROM holders")]
        for cid in ids or []:
            for d in cgroups.all_dirs(cgroups.cgroups_path(cid)):
                if os.path.isdir(d):
                    found.append(f"cgroup {d}")
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read()
            except OSError:
                continue
            if f"PALLET_ROOT={root}\0".encode() in env + b"\0":
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    continue
                if ") Z " not in stat:
                    found.append(f"process {pid}")
        return found

    def cleanup(self) -> None:
        r = self("ps", "-aq", "--no-trunc")
        ids = r.out.split() if r.rc == 0 else []
        if ids:
            self("rm", "-f", "-v", *ids, timeout=120)
        self("volume", "prune", "-a", "-f")


def _registries_conf(base: Path, registry: str) -> Path:
    conf = base / "registries.conf"
    if not conf.exists():
        base.mkdir(parents=True, exist_ok=True)
        search = f'"{registry}"' if registry else ""
        conf.write_text(f'unqualified-search-registries = [{search}]\nshort-name-mode = "permissive"\n')
    return conf


def _short_dir(prefix: str) -> Path:
    # unix socket paths are limited to 108 bytes: keep the runroot short
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture(scope="session")
def image_registry(registry: str, small_layout: Path) -> str:
    """The session's loopback docker-registry with refimage ``small`` pushed by skopeo as
    ``HOST:PORT/small:latest``; yields HOST:PORT."""
    peers.skopeo_copy(f"oci:{small_layout}:latest", f"docker://{registry}/small:latest")
    return registry


@pytest.fixture(scope="session")
def seed_root(image_registry: str) -> Path:
    """A root into which ``pallet pull`` brought ``small`` from the registry (store + unpacked
    layers); per-test roots are copies of it."""
    base = _short_dir("pe-seed-")
    seed = Pallet(base / "root", base / "run", image_registry)
    try:
        seed.ok("pull", "-q", f"{image_registry}/small:latest", timeout=120)
        yield seed.root
    finally:
        _unmount_all(base)
        shutil.rmtree(base, ignore_errors=True)


def new_root(seed: Path | None, registry: str, prefix: str = "pe-") -> Pallet:
    """A Pallet on a fresh root under /tmp: a copy of ``seed`` (images pulled), or empty."""
    base = _short_dir(prefix)
    p = Pallet(base / "root", base / "run", registry)
    if seed is not None:
        subprocess.run(["cp", "-a", str(seed), str(p.root)], check=True)
    return p


def discard(p: Pallet) -> None:
    """Remove every container of ``p`` and its whole root, even after a failed test."""
    base = p.root.parent
    try:
        p.cleanup()
    finally:
        _unmount_all(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pallet(seed_root: Path, image_registry: str) -> Pallet:
    """``pallet`` on a private root that has ``small`` (pulled); everything is removed afterwards."""
    p = new_root(seed_root, image_registry)
    try:
        yield p
    finally:
        discard(p)


@pytest.fixture
def empty_pallet(image_registry: str) -> Pallet:
    """``pallet`` on a private root with no image yet."""
    p = new_root(None, image_registry)
    try:
        yield p
    finally:
        discard(p)


def _unmount_all(base: Path) -> None:
    """Last resort after a failed test: detach whatever is still mounted under ``base``."""
    from pallet.engine import mounts

    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if line.split()[4].startswith(str(base))]
    for mp in sorted(points, key=len, reverse=True):
        try:
            mounts.umount(mp, mounts.MNT_DETACH)
        except OSError:
            pass


@pytest.fixture(params=available_runtimes())
def any_runtime(request: pytest.FixtureRequest, pallet: Pallet) -> Pallet:
    """The same ``pallet`` fixture, once per OCI runtime (runc, pallet-runtime)."""
    pallet.runtime = request.param
    return pallet


def derive_layout(src: Path, dst: Path, change) -> str:
    """Copy OCI layout ``src`` to ``dst`` with its image config edited by ``change(config)``
    (same layers, new config and manifest: a different image ID). Returns the new image ID."""
    import hashlib

    shutil.copytree(src, dst, symlinks=True)
    index = json.loads((dst / "index.json").read_text())
    mdesc = index["manifests"][0]
    blobs = dst / "blobs" / "sha256"
    manifest = json.loads((blobs / mdesc["digest"].split(":")[1]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_bytes())
    change(config)
    raw = json.dumps(config).encode()
    config_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    (blobs / config_id[7:]).write_bytes(raw)
    manifest["config"] = {**manifest["config"], "digest": config_id, "size": len(raw)}
    mraw = json.dumps(manifest).encode()
    (blobs / hashlib.sha256(mraw).hexdigest()).write_bytes(mraw)
    mdigest = "sha256:" + hashlib.sha256(mraw).hexdigest()
    index["manifests"][0] = {**mdesc, "digest": mdigest, "size": len(mraw)}
    (dst / "index.json").write_text(json.dumps(index))
    return config_id
