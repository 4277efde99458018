"""The local image store: blobs plus an SQLite index of images, names, digests, layers and holders.

Why SQLite (WAL mode) rather than JSON under a lock: every change (a tag moving from one image to
another, an image and its names appearing together) is one transaction, so a crash or ``kill -9``
leaves the old state or the new one and never a mix; many ``pallet`` processes read while one
writes; lookups by ID prefix, name or digest are indexed queries instead of a whole-file parse;
and the engine keeps its own state in SQLite too. Blob files live beside the database and are
published before the rows that reference them, so a committed row never points at a missing blob.

Garbage collection and concurrent ingests: a blob written by a process that has not yet
registered its image (a pull in flight) is protected by a *lease*: a row naming the blob, owned
by a lock file the process holds an ``flock`` on. ``gc`` deletes a blob only inside a write
transaction in which no image and no live lease references it; a lease whose owner died (its
lock can be taken) is dropped.
"""

from __future__ import annotations

import _thread  # threading's RLock without threading (~0.6 ms of `pallet run`)
import contextlib
import errno
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from pallet.content import compression
from pallet.content import mediatypes as mt
from pallet.content.digest import Digest, Hasher, chain_ids
from pallet.errors import ContentError, InvalidReference, NotFound, StoreError
from pallet.records import dataclass, field
from pallet.reference import Reference
from pallet.reference import parse as parse_ref
from pallet.store import names as naming
from pallet.store.blobs import CHUNK, BlobStore, BlobUnknown, BlobWriter

TYPE_CHECKING = False  # no typing import at start-up (pallet run)
if TYPE_CHECKING:  # manifests are parsed only when registering or exporting an image
    from typing import Any, BinaryIO

    from pallet.content.manifest import Index, Manifest

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE images (
    id TEXT PRIMARY KEY,                 -- config digest: the image ID
    manifest_digest TEXT NOT NULL,       -- the image manifest whose layers we keep
    manifest_media_type TEXT NOT NULL,
    config_media_type TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT '',    -- config "created", as written
    created_ts REAL NOT NULL DEFAULT 0,  -- the same as seconds since the epoch, for sorting/filters
    added TEXT NOT NULL,                 -- when this store first saw it
    os TEXT NOT NULL DEFAULT '',
    architecture TEXT NOT NULL DEFAULT '',
    variant TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0      -- unpacked size: sum of the layers' uncompressed sizes
) WITHOUT ROWID;
CREATE TABLE image_digests (             -- manifests and indexes that lead to an image
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    PRIMARY KEY (image_id, digest)
) WITHOUT ROWID;
CREATE INDEX image_digests_by_digest ON image_digests(digest);
CREATE TABLE names (                     -- tags: one image per name, a name moves when re-tagged
    name TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL
);
CREATE INDEX names_by_image ON names(image_id);
CREATE TABLE repo_digests (              -- repo@digest references (kept when a tag moves away)
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (image_id, repository, digest)
) WITHOUT ROWID;
CREATE TABLE layers (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    digest TEXT NOT NULL,                -- the blob as stored (compressed or not)
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    diff_id TEXT NOT NULL,
    chain_id TEXT NOT NULL,
    diff_size INTEGER NOT NULL,
    PRIMARY KEY (image_id, idx)
) WITHOUT ROWID;
CREATE INDEX layers_by_digest ON layers(digest);
CREATE INDEX layers_by_chain ON layers(chain_id);
CREATE TABLE holders (                   -- who uses an image (containers): rmi refuses unless forced
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    holder TEXT NOT NULL,
    added TEXT NOT NULL,
    PRIMARY KEY (image_id, holder)
) WITHOUT ROWID;
CREATE TABLE leases (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    created TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE lease_blobs (
    lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (lease_id, digest)
) WITHOUT ROWID;
"""


class ImageNotFound(StoreError, NotFound):
    """No local image matches the name or ID."""


class AmbiguousImage(StoreError):
    """An ID prefix or short name matches more than one image."""


class ImageInUse(StoreError):
    """The image has holders (containers) and the operation was not forced."""

    def __init__(self, message: str, holders: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.holders = holders


@dataclass(frozen=True)
class Layer:
    """One layer of an image: the blob as stored, and what it unpacks to."""

    digest: Digest
    media_type: str
    size: int
    diff_id: Digest
    chain_id: Digest
    diff_size: int


@dataclass(frozen=True)
class Image:
    """An image in the store, as the index knows it (the config and manifest are blobs)."""

    id: Digest
    manifest_digest: Digest
    manifest_media_type: str
    config_media_type: str
    digests: tuple[Digest, ...]
    names: tuple[str, ...]
    explicit_repo_digests: tuple[str, ...]
    created: str
    created_ts: float
    added: str
    os: str
    architecture: str
    variant: str
    size: int
    layers: tuple[Layer, ...]
    holders: tuple[str, ...] = ()

    @property
    def short_id(self) -> str:
        return self.id.short

    @property
    def top_layer(self) -> str:
        """Chain ID of the top layer ("" for an image without layers)."""
        return self.layers[-1].chain_id if self.layers else ""

    @property
    def chain_ids(self) -> tuple[Digest, ...]:
        return tuple(layer.chain_id for layer in self.layers)

    @property
    def dangling(self) -> bool:
        return not self.names

    @property
    def repo_digests(self) -> tuple[str, ...]:
        """``repo@digest`` for every repository the image is known under (podman's RepoDigests)."""
        out: list[str] = []
        for name in self.names:
            repo, _ = naming.split_name(name)
            ref = f"{repo}@{self.manifest_digest}"
            if ref not in out:
                out.append(ref)
        for ref in self.explicit_repo_digests:
            if ref not in out:
                out.append(ref)
        return tuple(out)

    @property
    def platform(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Resolved:
    """What a lookup matched: the image, and the name or digest reference it matched by (if any)."""

    image: Image
    by: str  # "id", "name" or "digest"
    ref: str = ""  # the stored name (by name) or repo@digest (by digest)


@dataclass
class GCReport:
    removed_blobs: list[Digest] = field(default_factory=list)
    freed_bytes: int = 0
    removed_temp_files: int = 0
    removed_leases: int = 0


def parse_time(text: str) -> float:
    """RFC 3339 (any fraction digits) to epoch seconds; 0 when absent or unreadable."""
    from pallet.timefmt import parse_time as parse

    try:
        return parse(text).timestamp() if text and text.strip() else 0.0
    except ValueError:
        return 0.0


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def diff_info(stream: BinaryIO, media_type: str) -> tuple[Digest, int]:
    """(diff ID, uncompressed size) of a layer blob, by decompressing it."""
    if media_type in mt.LAYER_COMPRESSION:
        reader = compression.decompressor(stream, mt.LAYER_COMPRESSION[media_type])
    else:
        reader = compression.sniffing_decompressor(stream)
    h = Hasher("sha256")
    try:
        while chunk := reader.read(CHUNK):
            h.update(chunk)
    except (OSError, EOFError, ValueError) as e:
        raise ContentError(f"layer does not decompress: {e}") from None
    except Exception as e:  # zstandard raises its own ZstdError
        if type(e).__name__ == "ZstdError":
            raise ContentError(f"layer does not decompress: {e}") from None
        raise
    return h.digest(), h.size


class Store:
    """The image store under ``root`` (normally ``ctx.root / "images"``). Thread-safe.

    Open one per process (``Store.open(ctx)``) and close it when done: closing releases the
    lease that protects blobs written through it but not yet referenced by an image.
    """

    def __init__(self, root: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
        self.root = Path(root)
        self.blobs = BlobStore(self.root)
        self._lock = _thread.RLock()
        self._timeout = timeout
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.root / "index.db", timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the image store at {self.root}: {_reason(e)}") from None
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as e:
            self._db.close()
            raise StoreError(f"image index {self.root / 'index.db'} is unusable: {e}") from None
        self._lease_id: str | None = None
        self._lease_fd: int | None = None

    @classmethod
    def open(cls, ctx: Any = None) -> Store:
        from pallet.context import default

        ctx = ctx or default()
        return cls(Path(ctx.root) / "images")

    def close(self) -> None:
        with self._lock:
            if self._lease_id is not None:
                with contextlib.suppress(sqlite3.Error), self._tx():
                    self._db.execute("DELETE FROM leases WHERE id=?", (self._lease_id,))
                with contextlib.suppress(OSError):
                    os.unlink(self.root / "leases" / self._lease_id)
                if self._lease_fd is not None:
                    os.close(self._lease_fd)
                self._lease_id = self._lease_fd = None
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- database plumbing ---------------------------------------------------------------------
    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        with self._tx():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"image index {self.root / 'index.db'} has schema {version}, newer than "
                    f"this pallet understands ({SCHEMA_VERSION}); upgrade pallet"
                )

    @contextlib.contextmanager
    def _tx(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: writers queue up instead of failing on upgrade).

        ``durable=False``: the commit is not flushed to disk on its own (WAL, synchronous=NORMAL:
        it survives a killed process, and the next durable commit or checkpoint flushes it; a
        power cut may lose it). For the engine's holds, which mirror its container rows, kept
        with that same durability (every ``run --rm`` writes two)."""
        with self._lock, self._synchronous(durable):
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise StoreError(f"image index {self.root / 'index.db'} is busy or unusable: {e}") from None
            try:
                yield self._db
            except BaseException as e:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):  # disk full, I/O error, corrupted file ...
                    raise StoreError(f"image index {self.root / 'index.db'}: {e}") from None
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise StoreError(f"image index {self.root / 'index.db'}: {e}") from None

    @contextlib.contextmanager
    def _synchronous(self, durable: bool) -> Iterator[None]:
        """The connection's ``synchronous=FULL``, or NORMAL for the duration (see :meth:`_tx`)."""
        if durable:
            yield
            return
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA synchronous=FULL")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for multi-query reads."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    # -- blobs (leased until an image references them) -----------------------------------------
    def _ensure_lease(self) -> str:
        with self._lock:
            if self._lease_id is None:
                lease_dir = self.root / "leases"
                lease_dir.mkdir(exist_ok=True)
                lease_id = f"{os.getpid()}-{os.urandom(8).hex()}"
                fd = os.open(lease_dir / lease_id, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                with self._tx() as db:
                    db.execute(
                        "INSERT INTO leases(id, pid, created) VALUES (?,?,?)",
                        (lease_id, os.getpid(), now_rfc3339()),
                    )
                self._lease_id, self._lease_fd = lease_id, fd
            return self._lease_id

    def lease_blob(self, digest: str) -> None:
        """Protect ``digest`` from gc until this Store is closed (done for every blob written here)."""
        lease_id = self._ensure_lease()
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO lease_blobs(lease_id, digest) VALUES (?,?)", (lease_id, str(digest))
            )

    def writer(self, expected: str | None = None, size: int | None = None) -> BlobWriter:
        """Stream one blob in: ``w.write(chunk)``... ``w.commit()`` (verifies ``expected``/``size``).

        The pull tees registry bytes here and into the layer applier at the same time.
        """
        return self.blobs.writer(expected, size, before_publish=self.lease_blob)

    def ingest(self, stream: BinaryIO, expected: str | None = None, size: int | None = None) -> Digest:
        """Copy ``stream`` to EOF into the store, verified; returns the digest."""
        return self.blobs.ingest(stream, expected, size, before_publish=self.lease_blob)

    def put(self, data: bytes, expected: str | None = None) -> Digest:
        """Store small content (manifests, configs) held in memory."""
        with self.writer(expected, len(data)) as w:
            w.write(data)
            return w.commit()

    def has_blob(self, digest: str) -> bool:
        return self.blobs.has(digest)

    def open_blob(self, digest: str) -> BinaryIO:
        return self.blobs.open(digest)

    def blob_size(self, digest: str) -> int:
        return self.blobs.size(digest)

    def read_blob(self, digest: str, limit: int = 64 << 20) -> bytes:
        return self.blobs.read(digest, limit)

    def release(self, digests: Iterable[str]) -> list[Digest]:
        """Drop this Store's lease on ``digests`` and delete those nothing else references."""
        wanted = {str(d) for d in digests}
        if not wanted:
            return []
        with self._tx() as db:
            if self._lease_id is not None:
                db.executemany(
                    "DELETE FROM lease_blobs WHERE lease_id=? AND digest=?",
                    [(self._lease_id, d) for d in wanted],
                )
            referenced = self._referenced(db)
            removed = []
            for d in sorted(wanted - referenced):
                if self.blobs.delete(d):
                    removed.append(Digest(d))
        return removed

    def _referenced(self, db: sqlite3.Connection) -> set[str]:
        refs: set[str] = set()
        for (d,) in db.execute(
            "SELECT id FROM images UNION SELECT digest FROM image_digests "
            "UNION SELECT digest FROM layers UNION SELECT digest FROM lease_blobs"
        ):
            refs.add(d)
        return refs

    # -- images ----------------------------------------------------------------------------------
    def add_image(
        self,
        manifest: Manifest,
        *,
        config: bytes | None = None,
        names: Iterable[str] = (),
        repo_digests: Iterable[str] = (),
        index: Index | None = None,
        diff_sizes: Mapping[str, int] | None = None,
        verify: bool = True,
    ) -> Image:
        """Register an image whose config and layer blobs are already in the store.

        ``manifest.raw`` (and ``index.raw``) are stored as blobs here. ``names`` are stored names
        (see :mod:`pallet.store.names`); each moves to this image from any other. ``repo_digests``
        are ``repo@digest`` strings. ``diff_sizes`` maps diff IDs to uncompressed sizes the caller
        already knows (the layer applier counted them); any other layer is decompressed from its
        blob once to learn its size and, with ``verify``, checked against the config's diff IDs.
        Adding an image that exists merges its names and digests.
        """
        if manifest.is_index:
            raise StoreError("add_image needs an image manifest, not an index")
        if config is not None:
            self.put(config, manifest.config.digest)
        config_raw = self._config_bytes(manifest)
        cfg = _parse_config(config_raw, manifest.config.digest)
        diff_ids = cfg.get("rootfs", {}).get("diff_ids") or []
        if len(diff_ids) != len(manifest.layers):
            raise ContentError(
                f"image {manifest.config.digest}: the config lists {len(diff_ids)} layers "
                f"(diff_ids) but the manifest has {len(manifest.layers)}"
            )
        try:
            diff_ids = [Digest(d) for d in diff_ids]
        except ValueError as e:
            raise ContentError(f"image {manifest.config.digest}: bad diff_id in config: {e}") from None
        layers = self._layers(manifest, diff_ids, diff_sizes or {}, verify)
        manifest_digest = self.put(manifest.raw)
        index_digest = self.put(index.raw) if index is not None else None
        stored_names = [_check_name(n) for n in names]
        stored_repo_digests = [_check_repo_digest(r) for r in repo_digests]
        image_id = Digest(manifest.config.digest)
        created = cfg.get("created") or ""
        if not isinstance(created, str):
            created = ""
        plat = (str(cfg.get("os") or ""), str(cfg.get("architecture") or ""), str(cfg.get("variant") or ""))
        with self._tx() as db:
            row = db.execute("SELECT id FROM images WHERE id=?", (image_id,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO images(id, manifest_digest, manifest_media_type, config_media_type, "
                    "created, created_ts, added, os, architecture, variant, size) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        image_id,
                        manifest_digest,
                        manifest.media_type,
                        manifest.config.media_type,
                        created,
                        parse_time(created),
                        now_rfc3339(),
                        *plat,
                        sum(x.diff_size for x in layers),
                    ),
                )
            else:  # the newest manifest wins: its layers are the ones whose blobs we keep
                db.execute(
                    "UPDATE images SET manifest_digest=?, manifest_media_type=?, config_media_type=? "
                    "WHERE id=?",
                    (manifest_digest, manifest.media_type, manifest.config.media_type, image_id),
                )
                db.execute("DELETE FROM layers WHERE image_id=?", (image_id,))
            db.executemany(
                "INSERT INTO layers(image_id, idx, digest, media_type, size, diff_id, chain_id, diff_size) "
                "VALUES (?,?,?,?,?,?,?,?)",
                [
                    (image_id, i, x.digest, x.media_type, x.size, x.diff_id, x.chain_id, x.diff_size)
                    for i, x in enumerate(layers)
                ],
            )
            db.execute(
                "INSERT OR IGNORE INTO image_digests(image_id, digest, media_type) VALUES (?,?,?)",
                (image_id, manifest_digest, manifest.media_type),
            )
            if index is not None:
                db.execute(
                    "INSERT OR IGNORE INTO image_digests(image_id, digest, media_type) VALUES (?,?,?)",
                    (image_id, index_digest, index.media_type),
                )
            for name in stored_names:
                self._set_name(db, name, image_id)
            for ref in stored_repo_digests:
                repo, _, dig = ref.partition("@")
                db.execute(
                    "INSERT OR IGNORE INTO repo_digests(image_id, repository, digest) VALUES (?,?,?)",
                    (image_id, repo, dig),
                )
            if self._lease_id is not None:  # referenced now: our lease on them is no longer needed
                mine = {image_id, manifest_digest, *(x.digest for x in layers)}
                if index_digest is not None:
                    mine.add(index_digest)
                db.executemany(
                    "DELETE FROM lease_blobs WHERE lease_id=? AND digest=?",
                    [(self._lease_id, str(d)) for d in mine],
                )
            return self._load(db, [image_id])[0]

    def _config_bytes(self, manifest: Manifest) -> bytes:
        try:
            raw = self.blobs.read(manifest.config.digest, limit=32 << 20)
        except BlobUnknown:
            raise StoreError(
                f"config {manifest.config.digest} is not in the store; ingest it first"
            ) from None
        if len(raw) != manifest.config.size:
            raise ContentError(
                f"config {manifest.config.digest}: size {len(raw)} does not match the "
                f"manifest's {manifest.config.size}"
            )
        return raw

    def _layers(
        self, manifest: Manifest, diff_ids: list[Digest], known: Mapping[str, int], verify: bool
    ) -> list[Layer]:
        chains = chain_ids(diff_ids)
        sizes: dict[int, int] = {}
        todo: list[int] = []
        for i, (desc, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True)):
            try:
                size = self.blobs.size(desc.digest)
            except BlobUnknown:
                raise StoreError(f"layer {desc.digest} is not in the store; ingest it first") from None
            if size != desc.size:
                raise ContentError(
                    f"layer {desc.digest}: stored size {size} does not match the manifest's {desc.size}"
                )
            diff_size = known.get(diff_id)
            if diff_size is None:
                diff_size = self._known_diff_size(desc.digest, diff_id)
            if diff_size is None and mt.LAYER_COMPRESSION.get(desc.media_type) == "none" and (
                desc.digest == diff_id
            ):
                diff_size = size  # an uncompressed layer is its own diff
            if diff_size is None:
                todo.append(i)
            else:
                sizes[i] = diff_size

        def measure(i: int) -> tuple[int, Digest, int]:
            desc = manifest.layers[i]
            with self.blobs.open(desc.digest) as f:
                got, n = diff_info(f, desc.media_type)
            return i, got, n

        # decompression and hashing release the GIL: layers are measured side by side
        if len(todo) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1, 4)) as pool:
                results = list(pool.map(measure, todo))
        else:
            results = [measure(i) for i in todo]
        for i, got, n in results:
            desc, diff_id = manifest.layers[i], diff_ids[i]
            if verify and got != diff_id:
                raise ContentError(
                    f"layer {desc.digest} unpacks to diff ID {got}, but the config says {diff_id}"
                )
            sizes[i] = n
        return [
            Layer(Digest(d.digest), d.media_type, d.size, diff_ids[i], chains[i], int(sizes[i]))
            for i, d in enumerate(manifest.layers)
        ]

    def _known_diff_size(self, digest: str, diff_id: str) -> int | None:
        with self._lock:
            row = self._db.execute(
                "SELECT diff_size FROM layers WHERE digest=? AND diff_id=? LIMIT 1",
                (str(digest), str(diff_id)),
            ).fetchone()
        return None if row is None else int(row[0])

    def _set_name(self, db: sqlite3.Connection, name: str, image_id: str) -> str | None:
        row = db.execute("SELECT image_id FROM names WHERE name=?", (name,)).fetchone()
        if row is not None and row[0] == image_id:
            return None
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM names").fetchone()[0]
        db.execute("INSERT OR REPLACE INTO names(name, image_id, seq) VALUES (?,?,?)", (name, image_id, seq))
        return None if row is None else row[0]

    def _load(self, db: sqlite3.Connection, ids: list[str] | None = None) -> list[Image]:
        """Assemble Image records (all images when ``ids`` is None), in ``ids`` order."""
        if ids is not None and not ids:
            return []
        where, args = (
            ("", ()) if ids is None else (f" WHERE image_id IN ({','.join('?' * len(ids))})", tuple(ids))
        )
        where_id = where.replace("image_id", "id")
        rows = db.execute(f"SELECT * FROM images{where_id}", args).fetchall()
        names: dict[str, list[str]] = {}
        for r in db.execute(f"SELECT image_id, name FROM names{where} ORDER BY seq", args):
            names.setdefault(r[0], []).append(r[1])
        digests: dict[str, list[str]] = {}
        for r in db.execute(f"SELECT image_id, digest FROM image_digests{where}", args):
            digests.setdefault(r[0], []).append(r[1])
        repo_digests: dict[str, list[str]] = {}
        for r in db.execute(f"SELECT image_id, repository, digest FROM repo_digests{where}", args):
            repo_digests.setdefault(r[0], []).append(f"{r[1]}@{r[2]}")
        layers: dict[str, list[Layer]] = {}
        for r in db.execute(f"SELECT * FROM layers{where} ORDER BY image_id, idx", args):
            layers.setdefault(r["image_id"], []).append(
                Layer(
                    Digest(r["digest"]),
                    r["media_type"],
                    r["size"],
                    Digest(r["diff_id"]),
                    Digest(r["chain_id"]),
                    r["diff_size"],
                )
            )
        holders: dict[str, list[str]] = {}
        for r in db.execute(f"SELECT image_id, holder FROM holders{where} ORDER BY added", args):
            holders.setdefault(r[0], []).append(r[1])
        by_id = {}
        for r in rows:
            iid = r["id"]
            mdig = r["manifest_digest"]
            dl = sorted(digests.get(iid, []), key=lambda d: d != mdig)
            by_id[iid] = Image(
                id=Digest(iid),
                manifest_digest=Digest(mdig),
                manifest_media_type=r["manifest_media_type"],
                config_media_type=r["config_media_type"],
                digests=tuple(Digest(d) for d in dl),
                names=tuple(names.get(iid, ())),
                explicit_repo_digests=tuple(repo_digests.get(iid, ())),
                created=r["created"],
                created_ts=r["created_ts"],
                added=r["added"],
                os=r["os"],
                architecture=r["architecture"],
                variant=r["variant"],
                size=r["size"],
                layers=tuple(layers.get(iid, ())),
                holders=tuple(holders.get(iid, ())),
            )
        if ids is None:
            return list(by_id.values())
        return [by_id[i] for i in ids if i in by_id]

    def images(self) -> list[Image]:
        """Every image, newest first (by created time, then by when added)."""
        with self._read() as db:
            out = self._load(db)
        out.sort(key=lambda i: (i.created_ts, i.added, i.id), reverse=True)
        return out

    def get(self, image_id: str) -> Image:
        with self._read() as db:
            found = self._load(db, [str(image_id)])
        if not found:
            raise ImageNotFound(f"no such image: {image_id}")
        return found[0]

    def exists(self, text: str) -> bool:
        try:
            self.resolve(text)
        except (ImageNotFound, InvalidReference):
            return False
        return True

    def lookup(self, text: str) -> Image:
        return self.resolve(text).image

    def resolve(self, text: str) -> Resolved:
        """Find an image as podman does: ID, name (short or qualified), ``name@digest``, ID prefix."""
        text = text.strip()
        with self._read() as db:
            found = self._resolve(db, text)
            if found is None:
                raise ImageNotFound(f"no such image: {text}")
            by, image_id, ref = found
            return Resolved(self._load(db, [image_id])[0], by, ref)

    def _resolve(self, db: sqlite3.Connection, text: str) -> tuple[str, str, str] | None:
        if not text:
            raise ImageNotFound("no such image: (empty name)")
        if text.startswith(("sha256:", "sha512:")):
            alg, _, hexpart = text.partition(":")
            if not naming.HEX.fullmatch(hexpart):
                raise ImageNotFound(f"no such image: {text}")
            return self._by_id_prefix(db, f"{alg}:{hexpart}", text)
        if naming.FULL_ID.fullmatch(text):
            row = db.execute("SELECT id FROM images WHERE id=?", (f"sha256:{text}",)).fetchone()
            if row is not None:
                return ("id", row[0], "")
        try:
            ref = parse_ref(text)
        except InvalidReference:
            if naming.HEX.fullmatch(text):
                return self._by_id_prefix(db, f"sha256:{text}", text)
            raise
        if ref.digest is not None:
            return self._by_digest(db, ref)
        for cand in naming.candidates(ref):
            row = db.execute("SELECT image_id FROM names WHERE name=?", (str(cand),)).fetchone()
            if row is not None:
                return ("name", row[0], str(cand))
        if not ref.tag and not ref.domain and naming.HEX.fullmatch(text):
            found = self._by_id_prefix(db, f"sha256:{text}", text, missing_ok=True)
            if found is not None:
                return found
        if ref.domain and naming._is_registry(ref.domain):
            return None
        # podman: a short name matches a stored name whose path ends in /NAME (same tag)
        tag = ref.tag or "latest"
        hits: dict[str, str] = {}
        for name, image_id in db.execute("SELECT name, image_id FROM names ORDER BY seq"):
            repo, t = naming.split_name(name)
            if t == tag and naming.path_suffix_match(repo, ref.name):
                hits.setdefault(image_id, name)
        if len(hits) == 1:
            ((image_id, name),) = hits.items()
            return ("name", image_id, name)
        if len(hits) > 1:
            listed = ", ".join(sorted(hits.values()))
            raise AmbiguousImage(f"short name {text!r} matches several images ({listed}); use the full name")
        return None

    def _by_id_prefix(
        self, db: sqlite3.Connection, prefix: str, text: str, missing_ok: bool = False
    ) -> tuple[str, str, str] | None:
        rows = db.execute(
            "SELECT id FROM images WHERE id >= ? AND id < ? LIMIT 3", (prefix, prefix + "\x7f")
        ).fetchall()
        if len(rows) == 1:
            return ("id", rows[0][0], "")
        if len(rows) > 1:
            raise AmbiguousImage(
                f"image ID prefix {text!r} is ambiguous: it matches several images; give more characters"
            )
        if missing_ok:
            return None
        raise ImageNotFound(f"no such image: {text}")

    def _by_digest(self, db: sqlite3.Connection, ref: Reference) -> tuple[str, str, str] | None:
        digest = str(ref.digest)
        ids = [
            r[0] for r in db.execute("SELECT DISTINCT image_id FROM image_digests WHERE digest=?", (digest,))
        ]
        if not ids:
            return None
        wanted = [
            naming.split_name(str(c.name_only()))[0]
            for c in naming.candidates(Reference(ref.domain, ref.path))
        ]
        short = ref.name if not naming._is_registry(ref.domain) else None
        for image_id in ids:
            repos = {
                naming.split_name(n)[0]
                for (n,) in db.execute("SELECT name FROM names WHERE image_id=?", (image_id,))
            }
            repos |= {
                r for (r,) in db.execute("SELECT repository FROM repo_digests WHERE image_id=?", (image_id,))
            }
            for repo in wanted:
                if repo in repos:
                    return ("digest", image_id, f"{repo}@{digest}")
            if short:
                for repo in sorted(repos):
                    if naming.path_suffix_match(repo, short):
                        return ("digest", image_id, f"{repo}@{digest}")
        return None

    # -- names -------------------------------------------------------------------------------------
    def tag(self, image_id: str, name: str) -> str | None:
        """Give ``image_id`` the stored name ``name``; returns the image the name moved from, if any."""
        name = _check_name(name)
        with self._tx(durable=False) as db:
            if db.execute("SELECT 1 FROM images WHERE id=?", (str(image_id),)).fetchone() is None:
                raise ImageNotFound(f"no such image: {image_id}")
            return self._set_name(db, name, str(image_id))

    def untag(self, name: str) -> str:
        """Remove the stored name ``name``; returns the image ID it pointed at."""
        with self._tx() as db:
            row = db.execute("SELECT image_id FROM names WHERE name=?", (name,)).fetchone()
            if row is None:
                raise ImageNotFound(f"no such image: {name}")
            db.execute("DELETE FROM names WHERE name=?", (name,))
            return row[0]

    def remove_repo_digest(self, image_id: str, ref: str) -> None:
        repo, _, digest = ref.partition("@")
        with self._tx() as db:
            db.execute(
                "DELETE FROM repo_digests WHERE image_id=? AND repository=? AND digest=?",
                (str(image_id), repo, digest),
            )

    def add_repo_digest(self, image_id: str, ref: str) -> None:
        ref = _check_repo_digest(ref)
        repo, _, digest = ref.partition("@")
        with self._tx(durable=False) as db:
            if db.execute("SELECT 1 FROM images WHERE id=?", (str(image_id),)).fetchone() is None:
                raise ImageNotFound(f"no such image: {image_id}")
            db.execute(
                "INSERT OR IGNORE INTO repo_digests(image_id, repository, digest) VALUES (?,?,?)",
                (str(image_id), repo, digest),
            )

    # -- holders (the engine marks images its containers use) ---------------------------------------
    def add_holder(self, image_id: str, holder: str) -> None:
        """Record that ``holder`` (a container ID) uses the image; rmi then refuses unless forced."""
        with self._tx(durable=False) as db:
            if db.execute("SELECT 1 FROM images WHERE id=?", (str(image_id),)).fetchone() is None:
                raise ImageNotFound(f"no such image: {image_id}")
            db.execute(
                "INSERT OR IGNORE INTO holders(image_id, holder, added) VALUES (?,?,?)",
                (str(image_id), holder, now_rfc3339()),
            )

    def remove_holder(self, image_id: str, holder: str) -> bool:
        with self._tx(durable=False) as db:
            cur = db.execute("DELETE FROM holders WHERE image_id=? AND holder=?", (str(image_id), holder))
            return cur.rowcount > 0

    def holders(self, image_id: str) -> tuple[str, ...]:
        with self._lock:
            return tuple(
                r[0]
                for r in self._db.execute(
                    "SELECT holder FROM holders WHERE image_id=? ORDER BY added", (str(image_id),)
                )
            )

    # -- removal and gc ------------------------------------------------------------------------------
    def remove_image(self, image_id: str, *, force: bool = False) -> Image:
        """Delete the image record (names, digests, holders) and then its blobs nothing else uses.

        Refuses with :class:`ImageInUse` while holders remain, unless ``force``.
        """
        with self._tx() as db:
            found = self._load(db, [str(image_id)])
            if not found:
                raise ImageNotFound(f"no such image: {image_id}")
            image = found[0]
            if image.holders and not force:
                raise ImageInUse(
                    f"image {image.short_id} is in use by container(s) "
                    f"{', '.join(h[:12] for h in image.holders)}",
                    image.holders,
                )
            db.execute("DELETE FROM images WHERE id=?", (image.id,))
        # rows first, files second: a crash in between leaves orphan blobs for gc, never dangling rows
        candidates = {image.id, *image.digests, *(x.digest for x in image.layers)}
        with self._tx() as db:
            referenced = self._referenced(db)
            for d in candidates - referenced:
                self.blobs.delete(d)
        return image

    def referenced_chain_ids(self) -> set[str]:
        """Chain IDs some image still needs (layer storage keeps these, may drop the rest)."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT DISTINCT chain_id FROM layers")}

    def gc(self) -> GCReport:
        """Delete blobs no image or live lease references, dead leases, and stale ingest temp files."""
        report = GCReport()
        lease_dir = self.root / "leases"
        with self._tx() as db:
            live: set[str] = set()
            for (lease_id,) in db.execute("SELECT id FROM leases").fetchall():
                if lease_id == self._lease_id or _lock_held(lease_dir / lease_id):
                    live.add(lease_id)
                else:
                    db.execute("DELETE FROM leases WHERE id=?", (lease_id,))
                    with contextlib.suppress(OSError):
                        os.unlink(lease_dir / lease_id)
                    report.removed_leases += 1
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(lease_dir):  # lock files whose row never got written
                    if name not in live and name != self._lease_id and not _lock_held(lease_dir / name):
                        with contextlib.suppress(OSError):
                            os.unlink(lease_dir / name)
            referenced = self._referenced(db)
            for digest in list(self.blobs.walk()):
                if digest in referenced:
                    continue
                try:
                    size = self.blobs.size(digest)
                except BlobUnknown:
                    continue
                if self.blobs.delete(digest):
                    report.removed_blobs.append(digest)
                    report.freed_bytes += size
        report.removed_temp_files = self.blobs.clean_ingests()
        return report

    # -- content of an image ---------------------------------------------------------------------------
    def manifest(self, image: Image) -> Manifest:
        from pallet.content.manifest import Index, parse

        m = parse(self.blobs.read(image.manifest_digest), image.manifest_media_type)
        if isinstance(m, Index):
            raise StoreError(f"image {image.short_id}: manifest {image.manifest_digest} is an index")
        return m

    def config_bytes(self, image: Image) -> bytes:
        return self.blobs.read(image.id, limit=32 << 20)

    def config(self, image: Image) -> dict[str, Any]:
        return _parse_config(self.config_bytes(image), image.id)


def _parse_config(raw: bytes, digest: str) -> dict[str, Any]:
    try:
        cfg = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ContentError(f"config {digest} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ContentError(f"config {digest} is not a JSON object")
    rootfs = cfg.get("rootfs")
    if rootfs is not None and not isinstance(rootfs, dict):
        raise ContentError(f"config {digest}: rootfs must be an object")
    return cfg


def _check_name(name: str) -> str:
    ref = parse_ref(name)
    if not ref.domain or not ref.tag or ref.digest is not None:
        raise InvalidReference(f"stored names are qualified and tagged (registry/repo:tag), not {name!r}")
    return name


def _check_repo_digest(text: str) -> str:
    ref = parse_ref(text)
    if not ref.domain or ref.digest is None or ref.tag:
        raise InvalidReference(f"a repo digest is registry/repo@digest, not {text!r}")
    return text


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e)


def _lock_held(path: Path) -> bool:
    """Whether some live process holds the flock on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)
    return False
