"""Container and volume state: one SQLite database in WAL mode under ``ROOT/engine/engine.db``.

Several ``pallet`` commands and every container's monitor read and write it at once, so every
mutation is one short ``BEGIN IMMEDIATE`` transaction and readers never block writers (WAL).
Lifecycle transitions are compare-and-set updates on ``status`` (:meth:`State.transition`):
two ``start`` or ``rm`` commands racing on one container cannot both win, with no lock files
to leak. ``synchronous=NORMAL`` in WAL mode survives a process kill (only a power loss may lose
the last commits), which is what a container engine's state needs.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pallet.engine import db
from pallet.engine.db import ACTIVE, now_rfc3339  # noqa: F401 - re-exported
from pallet.engine.errors import NameConflict, NoSuchContainer, NoSuchVolume
from pallet.records import dataclass, field

TYPE_CHECKING = False  # typing costs an import on the hot path: annotations are strings
if TYPE_CHECKING:
    from typing import Any




@dataclass
class Container:
    """One row of the containers table."""

    id: str
    name: str
    image: str
    image_id: str
    created: str
    config: dict[str, Any]
    status: str = "created"
    pid: int = 0
    pid_start: int = 0
    monitor_pid: int = 0
    monitor_start: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = ""
    finished_at: str = ""
    oom_killed: bool = False
    restart_count: int = 0
    stop_requested: bool = False
    health: dict[str, Any] | None = None
    rootfs: str = ""
    starts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]


_COLUMNS = (
    "id",
    "name",
    "image",
    "image_id",
    "created",
    "config",
    "status",
    "pid",
    "pid_start",
    "monitor_pid",
    "monitor_start",
    "exit_code",
    "error",
    "started_at",
    "finished_at",
    "oom_killed",
    "restart_count",
    "stop_requested",
    "health",
    "rootfs",
    "starts",
)


def _row_to_container(row: sqlite3.Row | tuple) -> Container:
    d = dict(zip(_COLUMNS, row, strict=True))
    d["config"] = json.loads(d["config"])
    d["health"] = json.loads(d["health"]) if d["health"] else None
    d["oom_killed"] = bool(d["oom_killed"])
    d["stop_requested"] = bool(d["stop_requested"])
    return Container(**d)


@dataclass
class Volume:
    name: str
    created: str
    driver: str = "local"
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    needs_copy_up: bool = True


class State:
    """The engine database for one pallet root. Cheap to make; connects on first use."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / "engine"
        self.path = self.dir / "engine.db"
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    # -- connection -------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # never share a connection across fork
            self._conn, self._pid = db.connect(self.path), os.getpid()
        return self._conn

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with db.tx(self.conn) as c:
            yield c

    # -- containers -------------------------------------------------------------------------
    def insert(self, c: Container, volumes: Iterable[str] = ()) -> None:
        values = [db.encode(col, getattr(c, col)) for col in _COLUMNS]
        try:
            with self.transaction() as conn:
                conn.execute(
                    f"INSERT INTO containers ({','.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})",
                    values,
                )
                for v in volumes:
                    conn.execute(
                        "INSERT OR IGNORE INTO volume_users (volume, container) VALUES (?, ?)", (v, c.id)
                    )
        except sqlite3.IntegrityError as e:
            if "name" in str(e):
                raise NameConflict(
                    f'the container name "/{c.name}" is already in use by another '
                    "container: remove or rename it first"
                ) from None
            raise

    def get(self, ref: str) -> Container:
        """Docker's lookup order: full ID, exact name, unique ID prefix."""
        ref = ref.removeprefix("/") if ref.startswith("/") else ref
        if not ref:
            raise NoSuchContainer("no such container: empty name")
        conn = self.conn
        row = conn.execute(
            f"SELECT {','.join(_COLUMNS)} FROM containers WHERE id=? OR name=? ORDER BY id=? DESC LIMIT 1",
            (ref, ref, ref),
        ).fetchone()
        if row is None and all(ch in "0123456789abcdef" for ch in ref):
            rows = conn.execute(
                f"SELECT {','.join(_COLUMNS)} FROM containers WHERE id LIKE ? LIMIT 2", (ref + "%",)
            ).fetchall()
            if len(rows) > 1:
                raise NoSuchContainer(f"container ID prefix {ref!r} is ambiguous: use more characters")
            row = rows[0] if rows else None
        if row is None:
            raise NoSuchContainer(f"no such container: {ref}")
        return _row_to_container(row)

    def find(self, container_id: str) -> Container | None:
        row = self.conn.execute(
            f"SELECT {','.join(_COLUMNS)} FROM containers WHERE id=?", (container_id,)
        ).fetchone()
        return _row_to_container(row) if row else None

    def list(self) -> list[Container]:
        rows = self.conn.execute(f"SELECT {','.join(_COLUMNS)} FROM containers ORDER BY created DESC")
        return [_row_to_container(r) for r in rows]

    def update(self, container_id: str, **fields: Any) -> None:
        if not fields:
            return
        sets = ",".join(f"{k}=?" for k in fields)
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE containers SET {sets} WHERE id=?",
                [db.encode(k, v) for k, v in fields.items()] + [container_id],
            )

    def transition(self, container_id: str, from_states: Iterable[str], **fields: Any) -> bool:
        """Compare-and-set: apply ``fields`` only if the status is one of ``from_states``."""
        states = tuple(from_states)
        sets = ",".join(f"{k}=?" for k in fields)
        with self.transaction() as conn:
            cur = conn.execute(
                f"UPDATE containers SET {sets} WHERE id=? AND status IN ({','.join('?' * len(states))})",
                [db.encode(k, v) for k, v in fields.items()] + [container_id, *states],
            )
            return cur.rowcount == 1

    def delete(self, container_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM volume_users WHERE container=?", (container_id,))
            conn.execute("DELETE FROM containers WHERE id=?", (container_id,))

    def rename(self, container_id: str, new_name: str) -> None:
        try:
            with self.transaction() as conn:
                conn.execute("UPDATE containers SET name=? WHERE id=?", (new_name, container_id))
        except sqlite3.IntegrityError:
            raise NameConflict(
                f'the container name "/{new_name}" is already in use by another '
                "container: remove or rename it first"
            ) from None

    def name_taken(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM containers WHERE name=?", (name,)).fetchone() is not None

    # -- volumes ----------------------------------------------------------------------------
    def insert_volume(self, v: Volume) -> bool:
        """Insert; False if a volume of this name already exists (not an error: ``-v name:/x``)."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO volumes (name, created, driver, labels, options, "
                "anonymous, needs_copy_up) VALUES (?,?,?,?,?,?,?)",
                (
                    v.name,
                    v.created,
                    v.driver,
                    json.dumps(v.labels),
                    json.dumps(v.options),
                    int(v.anonymous),
                    int(v.needs_copy_up),
                ),
            )
            return cur.rowcount == 1

    def get_volume(self, name: str) -> Volume:
        row = self.conn.execute(
            "SELECT name, created, driver, labels, options, anonymous, needs_copy_up "
            "FROM volumes WHERE name=?",
            (name,),
        ).fetchone()
        if row is None:
            raise NoSuchVolume(f"no such volume: {name}")
        return _row_to_volume(row)

    def list_volumes(self) -> list[Volume]:
        rows = self.conn.execute(
            "SELECT name, created, driver, labels, options, anonymous, needs_copy_up "
            "FROM volumes ORDER BY name"
        )
        return [_row_to_volume(r) for r in rows]

    def volume_users(self, name: str) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT container FROM volume_users WHERE volume=?", (name,))]

    def all_volume_users(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for vol, cid in self.conn.execute("SELECT volume, container FROM volume_users"):
            out.setdefault(vol, []).append(cid)
        return out

    def container_volumes(self, container_id: str) -> list[str]:
        return [
            r[0]
            for r in self.conn.execute("SELECT volume FROM volume_users WHERE container=?", (container_id,))
        ]

    def copied_up(self, name: str) -> bool:
        """Clear needs_copy_up; True if this call did it (only the first user copies)."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE volumes SET needs_copy_up=0 WHERE name=? AND needs_copy_up=1", (name,))
            return cur.rowcount == 1

    def delete_volume(self, name: str, *, force: bool = False) -> bool:
        """Delete the row unless a container uses it (or ``force``); False if it was in use."""
        with self.transaction() as conn:
            if not force and conn.execute("SELECT 1 FROM volume_users WHERE volume=?", (name,)).fetchone():
                return False
            conn.execute("DELETE FROM volume_users WHERE volume=?", (name,))
            conn.execute("DELETE FROM volumes WHERE name=?", (name,))
            return True


_open: dict[str, State] = {}


def state_for(root: str | os.PathLike[str]) -> State:
    """The process's State for ``root`` (one SQLite connection per process and root)."""
    key = os.fspath(root)
    st = _open.get(key)
    if st is None:
        st = _open[key] = State(Path(key))
    return st


def close_all() -> None:
    """Close every connection this process opened: SQLite must not be open across fork()."""
    for st in _open.values():
        st.close()


def _row_to_volume(row: tuple) -> Volume:
    name, created, driver, labels, options, anonymous, ncu = row
    return Volume(
        name=name,
        created=created,
        driver=driver,
        labels=json.loads(labels),
        options=json.loads(options),
        anonymous=bool(anonymous),
        needs_copy_up=bool(ncu),
    )
