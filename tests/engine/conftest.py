"""Fixtures for the engine's tests: a private pallet root, the CLI as a subprocess, leak checks.

Images come from refimage.py's ``small`` layout through the test ImageSource
(tests/engine/support/layout_source.py: umoci unpack + overlayfs), until the store and storage
components are merged. Containers run with real runtimes (runc; pallet-runtime when installed).
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
SOURCE = "tests.engine.support.layout_source:LayoutImageSource"


def available_runtimes() -> list[str]:
    """The OCI runtimes the pluggable-runtime tests run against: runc, and pallet-runtime if present."""
    out = []
    for name in ("runc", "pallet-runtime"):
        path = shutil.which(name)
        if path is None:
            continue
        if name == "pallet-runtime":
            res = subprocess.run([path, "--version"], capture_output=True, text=True)
            if res.returncode != 0:
                continue
        out.append(name)
    return out


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"rc={self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err}"


class Pallet:
    """Runs ``pallet`` against one private root, as a user would (a new process each time)."""

    def __init__(self, root: Path, runroot: Path, layouts: Path, cache: Path | None, runtime: str = "runc"):
        self.root, self.runroot, self.layouts = root, runroot, layouts
        self.runtime = runtime
        self.env = dict(os.environ)
        self.env.update(
            {
                "PALLET_ROOT": str(root),
                "PALLET_RUNROOT": str(runroot),
                "PALLET_IMAGE_SOURCE": SOURCE,
                "PALLET_TEST_LAYOUTS": str(layouts),
                "PYTHONPATH": str(REPO) + os.pathsep + self.env.get("PYTHONPATH", ""),
            }
        )
        if cache is not None:
            self.env["PALLET_TEST_CACHE"] = str(cache)

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

    # -- leak checks ------------------------------------------------------------------------------
    def leaks(self, ids: list[str] | None = None) -> list[str]:
        """Everything a removed container could leave behind, as readable lines (empty: clean)."""
        from pallet.engine import cgroups

        found = []
        root = str(self.root)
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4]
                if mp.startswith(root) or mp.startswith(str(self.runroot)):
                    found.append(f"mount {mp}")
        for d in (
            self.root / "layout-source" / "containers",
            self.root / "engine" / "containers",
            self.runroot / "engine",
        ):
            if d.is_dir():
                found += [f"dir {d / n}" for n in os.listdir(d)]
        rtdir = self.runroot / "runtime"
        if rtdir.is_dir():
            for rt in os.listdir(rtdir):
                found += [f"runtime state {rtdir / rt / n}" for n in os.listdir(rtdir / rt)]
        db = self.root / "engine" / "engine.db"
        if db.exists():
            import sqlite3

            with sqlite3.connect(db) as conn:
                found += [f"row {r[0]}" for r in conn.execute("SELECT id FROM containers")]
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


@pytest.fixture(scope="session")
def layouts(small_layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of OCI layouts by repository name: ``small`` (refimage.py)."""
    d = tmp_path_factory.mktemp("layouts")
    os.symlink(small_layout, d / "small")
    return d


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Unpacked images shared by every test's root (each unpack costs a umoci run)."""
    return tmp_path_factory.mktemp("image-cache")


def _short_dir(prefix: str) -> Path:
    # unix socket paths are limited to 108 bytes: keep the runroot short
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture
def pallet(layouts: Path, image_cache: Path) -> Pallet:
    """``pallet`` on a private root; every container is force-removed afterwards."""
    base = _short_dir("pe-")
    p = Pallet(base / "root", base / "run", layouts, image_cache)
    try:
        yield p
    finally:
        try:
            p.cleanup()
        finally:
            _unmount_all(base)
            shutil.rmtree(base, ignore_errors=True)


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
    """The same ``pallet`` fixture, once per installed OCI runtime."""
    pallet.runtime = request.param
    return pallet
