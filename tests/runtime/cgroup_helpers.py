"""Helpers for the cgroup tests: uniquely named cgroups that are always removed, and real child
processes that wait on stdin until they have been moved into a cgroup."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time

from pallet.runtime import cgroups
from pallet.runtime.cgroups import _layout


def unique_prefix() -> str:
    return "pallet-test-" + secrets.token_hex(4)


class Child:
    """A Python child that blocks on stdin; ``go()`` lets it run ``code`` (it then prints to a pipe)."""

    def __init__(self, code: str) -> None:
        gate = "import sys\nsys.stdin.readline()\n"
        self.proc = subprocess.Popen([sys.executable, "-c", gate + code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def result(self, timeout: float = 60) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.communicate(timeout=10)


class Cgroups:
    """Makes managers under one unique top-level cgroup and removes everything at the end."""

    def __init__(self) -> None:
        self.prefix = unique_prefix()
        self.children: list[Child] = []
        self.managers: list[cgroups.Manager] = []

    def manager(self, name: str = "c", layout: _layout.Layout | None = None) -> cgroups.Manager:
        m = cgroups.manager(f"/{self.prefix}/{name}", name, layout=layout)
        self.managers.append(m)
        return m

    def child(self, code: str) -> Child:
        c = Child(code)
        self.children.append(c)
        return c

    def cleanup(self) -> None:
        for c in self.children:
            c.kill()
        for m in self.managers:
            # processes we started may have forked: kill whatever is still in our cgroups
            with contextlib.suppress(Exception):
                if m.frozen():
                    m.thaw()
            for _ in range(50):
                try:
                    pids = m.pids()
                except Exception:
                    break
                if not pids:
                    break
                for p in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
                time.sleep(0.02)
            with contextlib.suppress(Exception):
                m.destroy()
        top = cgroups.manager(f"/{self.prefix}", "top")
        top.destroy()
        for h in _layout.layout().hierarchies():
            d = h.dir_for(f"/{self.prefix}")
            assert not os.path.exists(d), f"left behind {d}"


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def wait_for(pred, timeout: float = 5.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()
