"""The engine database's schema and row-level operations, with nothing but sqlite3 and json.

:mod:`pallet.engine.state` builds the rich API on this; the container monitor uses this module
alone, so its resident memory does not carry dataclasses (and with them inspect, ast ...).
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager

from pallet.engine.procs import now_rfc3339  # noqa: F401 - re-exported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image TEXT NOT NULL,
    image_id TEXT NOT NULL,
    created TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER NOT NULL DEFAULT 0,
    pid_start INTEGER NOT NULL DEFAULT 0,
    monitor_pid INTEGER NOT NULL DEFAULT 0,
    monitor_start INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    started_at TEXT NOT NULL DEFAULT '',
    finished_at TEXT NOT NULL DEFAULT '',
    oom_killed INTEGER NOT NULL DEFAULT 0,
    restart_count INTEGER NOT NULL DEFAULT 0,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    health TEXT NOT NULL DEFAULT '',
    rootfs TEXT NOT NULL DEFAULT '',
    starts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    driver TEXT NOT NULL DEFAULT 'local',
    labels TEXT NOT NULL DEFAULT '{}',
    options TEXT NOT NULL DEFAULT '{}',
    anonymous INTEGER NOT NULL DEFAULT 0,
    needs_copy_up INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS volume_users (
    volume TEXT NOT NULL REFERENCES volumes(name),
    container TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    PRIMARY KEY (volume, container)
);
"""

#: statuses in which a container has (or is getting) live processes or a monitor
ACTIVE = ("starting", "running", "paused", "restarting", "stopping")
_JSON_COLUMNS = ("config", "health")


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open (and on first use create) the database: WAL, NORMAL sync, generous busy timeout."""
    os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name='volume_users'").fetchone():
        with tx(conn):
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
    return conn


@contextmanager
def tx(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken up front (BEGIN IMMEDIATE) so it never deadlocks on upgrade."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def encode(name: str, value: Any) -> Any:
    if name in _JSON_COLUMNS:
        if name == "health" and not value:
            return ""
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return int(value)
    return value


def update(conn: sqlite3.Connection, container_id: str, **fields: Any) -> None:
    if not fields:
        return
    sets = ",".join(f"{k}=?" for k in fields)
    with tx(conn):
        conn.execute(f"UPDATE containers SET {sets} WHERE id=?",
                     [encode(k, v) for k, v in fields.items()] + [container_id])


def transition(
    conn: sqlite3.Connection, container_id: str, from_states: Iterable[str], **fields: Any
) -> bool:
    """Compare-and-set: apply ``fields`` only if the status is one of ``from_states``."""
    states = tuple(from_states)
    sets = ",".join(f"{k}=?" for k in fields)
    with tx(conn):
        cur = conn.execute(
            f"UPDATE containers SET {sets} WHERE id=? AND status IN ({','.join('?' * len(states))})",
            [encode(k, v) for k, v in fields.items()] + [container_id, *states],
        )
        return cur.rowcount == 1


def fetch(conn: sqlite3.Connection, container_id: str, *columns: str) -> dict[str, Any] | None:
    """Some columns of one container as a dict (JSON columns decoded); None if it is gone."""
    row = conn.execute(f"SELECT {','.join(columns)} FROM containers WHERE id=?", (container_id,)).fetchone()
    if row is None:
        return None
    out = dict(zip(columns, row, strict=True))
    for k in _JSON_COLUMNS:
        if k in out:
            out[k] = json.loads(out[k]) if out[k] else None
    return out
