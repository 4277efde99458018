"""Container state under ``--root`` (default /run/pallet-runtime): one directory per container with
an atomically replaced ``state.json``, the ``exec.fifo`` that holds the init until ``start``, and an
flock per container so concurrent commands on one container serialise.

The recorded status is refined with what the kernel says: a dead (or reused) init pid means
``stopped``; a live init with the fifo still present means ``created``.
"""

from __future__ import annotations

import fcntl
import os
import time

from pallet.errors import NotFound, RuntimeFailure
from pallet.runtime import jsonio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_ROOT = "/run/pallet-runtime"
FIFO = "exec.fifo"


class ContainerNotFound(RuntimeFailure, NotFound):
    """No container with that id under this root."""


class ContainerExists(RuntimeFailure):
    """create with an id already in use."""


def check_id(cid: str) -> None:
    """runc's rule: letters, digits, ``_+-.``; not ``.`` or ``..`` (the id names a directory)."""
    ok = (
        cid not in ("", ".", "..")
        and len(cid) <= 1024
        and all(c.isascii() and (c.isalnum() or c in "_+-.") for c in cid)
    )
    if not ok:
        raise RuntimeFailure(f"invalid container id {cid!r}: use letters, digits, '_', '+', '-' and '.'")


def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (boot-relative start ticks): tells a pid from its reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2 :].split()
    if rest[0] == b"Z" or rest[0] == b"X":
        return None  # a zombie has finished: the container is stopped
    return int(rest[19])


class Container:
    """One container's directory and recorded state."""

    def __init__(self, root: str, cid: str, data: dict[str, Any] | None = None) -> None:
        self.root, self.id = root, cid
        self.dir = os.path.join(root, cid)
        self.data: dict[str, Any] = data or {}

    # ---- paths
    @property
    def state_file(self) -> str:
        return os.path.join(self.dir, "state.json")

    @property
    def fifo(self) -> str:
        return os.path.join(self.dir, FIFO)

    # ---- persistence
    @classmethod
    def load(cls, root: str, cid: str) -> Container:
        check_id(cid)
        c = cls(root, cid)
        try:
            with open(c.state_file, "rb") as f:
                c.data = jsonio.loads(f.read())
        except FileNotFoundError:
            if os.path.isdir(c.dir):
                # ``create`` has made the directory and not yet written the first state (it does
                # once the init's pid is known, a millisecond or two later)
                c.data = {"id": cid, "status": "creating", "pid": 0}
                return c
            raise ContainerNotFound(f"container {cid} does not exist") from None
        except (OSError, ValueError) as e:
            raise RuntimeFailure(f"container {cid}: unreadable state: {e}") from None
        return c

    def save(self) -> None:
        atomic_write(self.state_file, jsonio.dumps(self.data).encode())

    def lock(self) -> _Lock:
        """Exclusive per-container lock (flock: released if we die); a context manager."""
        return _Lock(self)

    # ---- live status
    @property
    def pid(self) -> int:
        return int(self.data.get("pid") or 0)

    def alive(self) -> bool:
        pid = self.pid
        if pid <= 0:
            return False
        st = proc_start_time(pid)
        return st is not None and st == self.data.get("_start_time", st)

    def status(self) -> str:
        recorded = self.data.get("status", "stopped")
        if recorded == "creating":
            return "creating" if self.alive() or not self.data.get("pid") else "stopped"
        if not self.alive():
            return "stopped"
        if os.path.exists(self.fifo):
            return "created"
        if self.data.get("_paused"):
            return "paused"
        return "running"

    def oci_state(self) -> dict[str, Any]:
        """The runtime-spec state object (what ``state`` prints and hooks read on stdin)."""
        status = self.status()
        d = self.data
        out: dict[str, Any] = {
            "ociVersion": d.get("ociVersion", "1.2.0"),
            "id": self.id,
            "status": status,
            "pid": self.pid if status != "stopped" else 0,
            "bundle": d.get("bundle", ""),
            "rootfs": d.get("rootfs", ""),
            "created": d.get("created", ""),
            "owner": d.get("owner", ""),
        }
        if d.get("annotations"):
            out["annotations"] = d["annotations"]
        return out


class _Lock:
    def __init__(self, c: Container) -> None:
        self.c, self.fd = c, -1

    def __enter__(self) -> None:
        # flock on the state directory itself: no lock file to create (a new inode per container
        # on every start is measurable), and it goes away with the directory
        try:
            self.fd = os.open(self.c.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerNotFound(f"container {self.c.id} does not exist") from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def rmtree(path: str) -> None:
    """Remove a state directory (flat: files and a fifo); cheaper than importing shutil."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    for n in names:
        p = os.path.join(path, n)
        if os.path.isdir(p) and not os.path.islink(p):
            rmtree(p)
        else:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def list_ids(root: str) -> list[str]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.isfile(os.path.join(root, n, "state.json")))
