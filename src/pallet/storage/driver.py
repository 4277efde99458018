"""The graph-driver interface, shaped after containerd's snapshotter.

A *snapshot* is a filesystem state with an optional parent. ``prepare(key, parent)`` makes an
*active* (writable) snapshot, ``view`` a read-only one, ``commit(name, key)`` turns an active
snapshot into an immutable *committed* one that can be a parent, ``remove`` deletes one without
children. ``mounts(key)`` returns how to mount an active snapshot or view, as data.

Layers are committed snapshots named by chain ID; container layers are active snapshots; image
mounts are views. Metadata is one ``info.json`` per snapshot directory, named by the SHA-256 of
its key, so there is no global database to lock: lookups are a path, mutations take a short
driver-wide flock, and a snapshot is visible only once renamed into place complete. Anything a
crash leaves behind (a half-made snapshot in ``tmp/``, a commit between its two steps) is not a
valid snapshot and :meth:`Driver.cleanup` removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from pallet.content.digest import sha256_of
from pallet.errors import NotFound, StorageError
from pallet.fsutil import atomic_write, file_lock
from pallet.records import dataclass, field, replace
from pallet.storage.mount import Mount, in_use


class Kind(StrEnum):
    VIEW = "view"
    ACTIVE = "active"
    COMMITTED = "committed"


class SnapshotNotFound(StorageError, NotFound):
    """No snapshot has that key or name."""


class SnapshotExists(StorageError):
    """A snapshot with that key or name already exists."""


@dataclass(frozen=True)
class Info:
    """What a snapshot is: its kind, name (or key), parent ("" for none) and labels."""

    kind: Kind
    name: str
    parent: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    created: str = ""
    updated: str = ""

    def to_json(self) -> bytes:
        return json.dumps({"kind": self.kind.value, "name": self.name, "parent": self.parent,
                           "labels": self.labels, "created": self.created, "updated": self.updated},
                          sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Info:
        d = json.loads(raw)
        return cls(Kind(d["kind"]), d["name"], d.get("parent", ""), d.get("labels") or {},
                   d.get("created", ""), d.get("updated", ""))


@dataclass(frozen=True)
class Usage:
    """Resources a snapshot uses by itself (not its parents): bytes of file data and inodes."""

    size: int = 0
    inodes: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.size + other.size, self.inodes + other.inodes)


@dataclass(frozen=True)
class DriverOptions:
    """Settings from storage.conf that drivers honour."""

    #: FUSE program for overlay mounts (``[storage.options.overlay] mount_program``)
    mount_program: str | None = None
    #: extra overlay mount options (``[storage.options.overlay] mountopt``)
    mountopt: tuple[str, ...] = ()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def key_dir_name(key: str) -> str:
    return sha256_of(key.encode()).hex()


class Driver(ABC):
    """A graph driver: one directory tree holding every snapshot of one storage format."""

    #: the name --storage-driver and storage.conf use
    name: str = ""
    #: how layer diffs are extracted into a prepared snapshot (pallet.storage.extract)
    apply_format: str = ""
    #: True if commit() may set a parent the active snapshot was not prepared on, so a layer
    #: can be extracted before its parent exists (layers of one image applied concurrently)
    supports_rebase: bool = False

    def __init__(self, home: str | os.PathLike[str], options: DriverOptions | None = None) -> None:
        self.home = Path(home)
        self.options = options or DriverOptions()
        self._snapshots = self.home / "snapshots"
        self._tmp = self.home / "tmp"
        self._locks = self.home / "locks"
        for d in (self._snapshots, self._tmp, self._locks):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)

    # ------------------------------------------------------------------ lookups

    def dir_of(self, key: str) -> Path:
        """The directory of snapshot ``key`` (whether or not it exists)."""
        return self._snapshots / key_dir_name(key)

    def stat(self, key: str) -> Info:
        """The info of an active, view or committed snapshot."""
        info = self._read_info(self.dir_of(key))
        if info is None or info.name != key:
            raise SnapshotNotFound(f"{self.name}: snapshot {key!r} does not exist")
        return info

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except SnapshotNotFound:
            return False
        return True

    def walk(self) -> Iterator[Info]:
        """Every valid snapshot, in no particular order."""
        try:
            names = os.listdir(self._snapshots)
        except FileNotFoundError:
            return
        for n in names:
            info = self._read_info(self._snapshots / n)
            if info is not None and key_dir_name(info.name) == n:
                yield info

    def parents(self, key: str) -> list[str]:
        """Names of the ancestors of ``key``, nearest first."""
        out = []
        info = self.stat(key)
        while info.parent:
            out.append(info.parent)
            info = self.stat(info.parent)
            if len(out) > 4096:
                raise StorageError(f"{self.name}: snapshot {key!r} has a parent cycle")
        return out

    def _read_info(self, d: Path) -> Info | None:
        try:
            return Info.from_json((d / "info.json").read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (ValueError, KeyError):
            return None

    # ------------------------------------------------------------------ lifecycle

    def prepare(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        """A new active (writable) snapshot on ``parent`` ("" for an empty one)."""
        self.create_active(key, parent, labels)
        return self.mounts(key)

    def create_active(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> None:
        """:meth:`prepare` without its mounts (for a caller that mounts later, or never)."""
        self._create(key, parent, Kind.ACTIVE, labels)

    def view(self, key: str, parent: str = "", labels: dict[str, str] | None = None) -> list[Mount]:
        """A new read-only view of ``parent``."""
        self._create(key, parent, Kind.VIEW, labels)
        return self.mounts(key)

    def _create(self, key: str, parent: str, kind: Kind, labels: dict[str, str] | None) -> None:
        if not key:
            raise StorageError(f"{self.name}: snapshot key must not be empty")
        with self.locked():
            self._check_free(key)
            if parent:
                self._check_committed(parent)
        with self._staging() as tmp:
            self._populate(tmp, kind, parent)
            now = _now()
            info = Info(kind, key, parent, dict(labels or {}), now, now)
            atomic_write(tmp / "info.json", info.to_json(), sync=False)
            with self.locked():
                self._check_free(key)
                if parent:
                    self._check_committed(parent)
                os.rename(tmp, self.dir_of(key))

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None,
               parent: str | None = None) -> Info:
        """Turn active snapshot ``key`` into committed snapshot ``name`` (``key`` is gone after).

        ``parent``, if given, rebases it onto another committed snapshot (only drivers with
        ``supports_rebase``): a layer extracted on its own becomes the child of its parent layer.
        """
        with self.locked():
            info = self.stat(key)
            if info.kind != Kind.ACTIVE:
                raise StorageError(f"{self.name}: cannot commit {key!r}: it is a {info.kind.value} "
                                   "snapshot, not an active one")
            self._check_free(name)
            new_parent = info.parent
            if parent is not None and parent != info.parent:
                if not self.supports_rebase:
                    raise StorageError(f"{self.name}: cannot commit {key!r} onto a different parent")
                if parent:
                    self._check_committed(parent)
                new_parent = parent
            d = self.dir_of(key)
            if in_use(d, self.data_dir(key)):
                raise StorageError(f"{self.name}: cannot commit {key!r}: it is still mounted")
            now = _now()
            new = Info(Kind.COMMITTED, name, new_parent, {**info.labels, **(labels or {})}, now, now)
            self._before_commit(d, new)
            # no fsync: on ext4 (data=ordered) it would flush every file of the layer just
            # written and more; rename keeps kill -9 safe, and a lost info.json after a power
            # cut only makes the snapshot invalid (removed, re-pulled), never half-visible
            atomic_write(d / "info.json", new.to_json(), sync=False)
            os.rename(d, self.dir_of(name))
            self._after_commit(self.dir_of(name), new)
        return new

    def update(self, key: str, labels: dict[str, str]) -> Info:
        """Replace the labels of a snapshot (the only mutable property)."""
        with self.locked():
            info = self.stat(key)
            new = replace(info, labels=dict(labels), updated=_now())
            atomic_write(self.dir_of(key) / "info.json", new.to_json(), sync=False)
        return new

    def remove(self, key: str) -> None:
        """Delete a snapshot. Children must be removed first; mounted snapshots cannot go."""
        with self.locked():
            info = self.stat(key)
            # only committed snapshots can be parents: an active one (a container's layer) is
            # removed without reading the info of every snapshot in storage
            children = [i.name for i in self.walk() if i.parent == key] if info.kind == Kind.COMMITTED else []
            if children:
                raise StorageError(f"{self.name}: cannot remove {key!r}: {len(children)} snapshot(s) "
                                   f"depend on it (e.g. {children[0]!r})")
            d = self.dir_of(key)
            if in_use(d, self.data_dir(key), lowers=info.kind == Kind.COMMITTED):
                raise StorageError(f"{self.name}: cannot remove {key!r}: it is mounted")
            trash = self._tmp / f"trash-{os.urandom(16).hex()}"
            os.rename(d, trash)
            self._after_remove(info)
        _rmtree(trash)

    def usage(self, key: str) -> Usage:
        """Bytes and inodes the snapshot itself holds (hardlinked files counted once)."""
        self.stat(key)
        return tree_usage(self.data_dir(key))

    def cleanup(self) -> list[str]:
        """Remove what crashed operations left: staging dirs, half commits. Returns what went."""
        removed = []
        with self.locked():
            for n in os.listdir(self._snapshots):
                d = self._snapshots / n
                info = self._read_info(d)
                if info is None or key_dir_name(info.name) != n:
                    trash = self._tmp / f"trash-{os.urandom(16).hex()}"
                    os.rename(d, trash)
                    removed.append(str(d))
            self._cleanup_extra(removed)
        for n in os.listdir(self._tmp):
            p = self._tmp / n
            if n.endswith(".lock"):
                continue
            if n.startswith("trash-"):
                _rmtree(p)
                continue
            lock = self._tmp / f"{n}.lock"
            if _try_lock_and_remove(lock, p):
                removed.append(str(p))
        for n in os.listdir(self._tmp):
            if n.endswith(".lock") and not (self._tmp / n[:-5]).exists():
                _try_lock_and_remove(self._tmp / n, None)
        return removed

    # ------------------------------------------------------------------ helpers for subclasses

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The driver-wide metadata lock (short critical sections only)."""
        with file_lock(self._locks / "meta.lock", what=f"{self.name} storage metadata"):
            yield

    @contextlib.contextmanager
    def _staging(self) -> Iterator[Path]:
        """A private directory in tmp/ that cleanup() leaves alone while we hold its lock."""
        n = os.urandom(16).hex()
        lock = self._tmp / f"{n}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            tmp = self._tmp / n
            tmp.mkdir(mode=0o700)
            try:
                yield tmp
            finally:
                if tmp.exists():
                    _rmtree(tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            os.close(fd)

    def _check_free(self, key: str) -> None:
        if self.exists(key):
            raise SnapshotExists(f"{self.name}: snapshot {key!r} already exists")

    def _check_committed(self, parent: str) -> Info:
        info = self.stat(parent)
        if info.kind != Kind.COMMITTED:
            raise StorageError(f"{self.name}: parent {parent!r} is not a committed snapshot")
        return info

    # ------------------------------------------------------------------ what each driver defines

    @abstractmethod
    def _populate(self, tmp: Path, kind: Kind, parent: str) -> None:
        """Fill a new snapshot's directory (in staging)."""

    @abstractmethod
    def mounts(self, key: str) -> list[Mount]:
        """How to mount active snapshot or view ``key``."""

    @abstractmethod
    def data_dir(self, key: str) -> Path:
        """The directory holding the snapshot's own files (its diff, or its full copy)."""

    def _before_commit(self, d: Path, info: Info) -> None:
        """Called under the lock before an active snapshot becomes committed."""
        return None

    def _after_commit(self, d: Path, info: Info) -> None:
        """Called under the lock after the committed snapshot is in place."""
        return None

    def _after_remove(self, info: Info) -> None:
        """Called under the lock after a snapshot left its place."""
        return None

    def _cleanup_extra(self, removed: list[str]) -> None:
        """Driver-specific crash leftovers (called under the lock)."""
        return None


def _try_lock_and_remove(lock: Path, victim: Path | None) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        if victim is not None:
            _rmtree(victim)
            return True
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its owner is alive
        if victim is not None:
            _rmtree(victim)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        return True
    finally:
        os.close(fd)


def _rmtree(p: Path) -> None:
    """Remove a tree we own, even one with read-only directories (as a layer can have)."""
    def onerror(func, path, exc_info):  # type: ignore[no-untyped-def]
        err = exc_info[1]
        if isinstance(err, FileNotFoundError):
            return
        if isinstance(err, PermissionError):
            parent = os.path.dirname(path)
            with contextlib.suppress(OSError):
                os.chmod(parent, 0o700)
                func(path)
                return
        raise err

    if p.is_symlink() or not p.exists():
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
        return
    import shutil  # on first use: with bz2 and lzma it costs `run` ~1.6 ms
    shutil.rmtree(p, onerror=onerror)


def tree_usage(root: Path) -> Usage:
    """Apparent size of regular files and the inode count under ``root`` (no symlink followed)."""
    size = inodes = 0
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(root)]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except FileNotFoundError:
            continue
        with it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    k = (st.st_dev, st.st_ino)
                    if k in seen:
                        continue
                    seen.add(k)
                inodes += 1
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                elif stat.S_ISREG(st.st_mode):
                    size += st.st_size
    return Usage(size, inodes)
