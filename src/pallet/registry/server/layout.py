"""Where a registry keeps repositories, manifests, tags, referrers and uploads, on any Storage.

Blobs are stored once, globally, by digest; a repository holds *links* to them, so a cross-repo
mount is one empty object and deleting a blob from one repository leaves the others intact (the
bytes go when ``gc`` finds no manifest referencing them)::

    blobs/<alg>/<hex[:2]>/<hex>                        content (layers, configs, manifests)
    repositories/<name>/_blobs/<alg>/<hex>             link: the blob is in this repository
    repositories/<name>/_manifests/<alg>/<hex>         the manifest's media type (its bytes are a blob)
    repositories/<name>/_tags/<tag>                    the digest the tag points at
    repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>   descriptor of a manifest whose subject is <hex>
    uploads/<uuid>/info, uploads/<uuid>/data           an upload session and its bytes so far

Repository path components never start with ``_`` (the name grammar), so the ``_`` entries cannot
collide with a nested repository.
"""

from __future__ import annotations

import json
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass

from pallet.content import Digest, Hasher
from pallet.content.digest import CHUNK
from pallet.registry.server.storage import Appender, Storage

REPOS = "repositories"


def blob_key(digest: Digest) -> str:
    alg, enc = digest.algorithm, digest.encoded
    return f"blobs/{alg}/{enc[:2]}/{enc}"


@dataclass
class UploadInfo:
    uuid: str
    repo: str
    algorithm: str
    started: float


class RegistryStore:
    """The registry's data model on top of a :class:`Storage`; synchronous, safe across processes."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        # upload uuid -> hasher that has seen exactly the upload's bytes so far (this process only;
        # another worker or a restart re-hashes the file at commit)
        self._hashers: dict[str, Hasher] = {}

    # -- repositories ---------------------------------------------------------------------------

    def repo_exists(self, name: str) -> bool:
        return any(n.startswith("_") for n in self.storage.list(f"{REPOS}/{name}"))

    def repositories(self) -> list[str]:
        """Every repository name, sorted."""
        out: list[str] = []

        def walk(prefix: str, name: str) -> None:
            entries = self.storage.list(prefix)
            if name and any(e.startswith("_") for e in entries):
                out.append(name)
            for e in entries:
                if not e.startswith(("_", ".")) and self.storage.is_prefix(f"{prefix}/{e}"):
                    walk(f"{prefix}/{e}", f"{name}/{e}" if name else e)

        walk(REPOS, "")
        out.sort()
        return out

    # -- blobs ----------------------------------------------------------------------------------

    def _link_key(self, name: str, digest: Digest) -> str:
        return f"{REPOS}/{name}/_blobs/{digest.algorithm}/{digest.encoded}"

    def blob_size(self, name: str, digest: Digest) -> int | None:
        """Size of a blob linked into ``name``, or None."""
        if self.storage.size(self._link_key(name, digest)) is None:
            return None
        return self.storage.size(blob_key(digest))

    def blob_exists_anywhere(self, digest: Digest) -> bool:
        return self.storage.size(blob_key(digest)) is not None

    def link_blob(self, name: str, digest: Digest) -> None:
        self.storage.put(self._link_key(name, digest), b"", durable=False)

    def unlink_blob(self, name: str, digest: Digest) -> bool:
        return self.storage.delete(self._link_key(name, digest))

    def mount(self, name: str, digest: Digest, source: str | None) -> int | None:
        """Link an existing blob into ``name`` (from ``source``, or from anywhere); its size, or None."""
        size = self.blob_size(source, digest) if source is not None else self.storage.size(blob_key(digest))
        if size is None:
            return None
        self.storage.touch(blob_key(digest))  # fresh for gc's grace period
        self.link_blob(name, digest)
        return size

    def put_blob(self, name: str, digest: Digest, data: bytes) -> None:
        """Store small, already verified content (manifests) and link it."""
        key = blob_key(digest)
        if self.storage.size(key) is None:
            self.storage.put(key, data)
        else:
            self.storage.touch(key)

    # -- uploads --------------------------------------------------------------------------------

    def start_upload(self, name: str, algorithm: str = "sha256") -> str:
        uuid = str(uuidlib.uuid4())
        info = {"repo": name, "algorithm": algorithm, "started": time.time()}
        self.storage.put(f"uploads/{uuid}/info", json.dumps(info).encode(), durable=False)
        with self.storage.append_open(f"uploads/{uuid}/data", create=True):
            pass
        self._hashers[uuid] = Hasher(algorithm)
        return uuid

    def upload_info(self, uuid: str) -> UploadInfo | None:
        raw = self.storage.get(f"uploads/{uuid}/info")
        if raw is None:
            return None
        try:
            d = json.loads(raw)
            return UploadInfo(uuid, d["repo"], d["algorithm"], float(d["started"]))
        except (ValueError, KeyError, TypeError):
            return None

    def upload_size(self, uuid: str) -> int | None:
        return self.storage.size(f"uploads/{uuid}/data")

    def open_upload(self, uuid: str) -> UploadWriter:
        """Exclusive writer for an upload; raises storage.Busy or FileNotFoundError."""
        return UploadWriter(self, uuid, self.storage.append_open(f"uploads/{uuid}/data"))

    def cancel_upload(self, uuid: str) -> None:
        self._hashers.pop(uuid, None)
        self.storage.delete_prefix(f"uploads/{uuid}")

    def uploads(self) -> list[str]:
        return self.storage.list("uploads")

    def commit_upload(self, uuid: str, name: str, digest: Digest) -> int:
        """Verify the upload against ``digest`` and move it into place; returns the blob's size.

        Raises DigestMismatch (the upload is kept, so the client may cancel or retry)."""
        data_key = f"uploads/{uuid}/data"
        size = self.storage.size(data_key)
        if size is None:
            raise FileNotFoundError(uuid)
        hasher = self._hashers.get(uuid)
        if hasher is None or hasher.size != size or hasher.algorithm != digest.algorithm:
            hasher = digest.hasher()
            f = self.storage.open_read(data_key)
            if f is None:
                raise FileNotFoundError(uuid)
            with f:
                while chunk := f.read(CHUNK):
                    hasher.update(chunk)
        hasher.verify(digest, what="blob")
        key = blob_key(digest)
        if self.storage.size(key) is None:
            self.storage.promote(data_key, key)
        else:  # same content pushed before (or concurrently): keep the one in place
            self.storage.touch(key)
        self.link_blob(name, digest)
        self.cancel_upload(uuid)
        return hasher.size

    # -- manifests and tags ---------------------------------------------------------------------

    def _revision_key(self, name: str, digest: Digest) -> str:
        return f"{REPOS}/{name}/_manifests/{digest.algorithm}/{digest.encoded}"

    def _tag_key(self, name: str, tag: str) -> str:
        return f"{REPOS}/{name}/_tags/{tag}"

    def resolve_tag(self, name: str, tag: str) -> Digest | None:
        raw = self.storage.get(self._tag_key(name, tag))
        if not raw:
            return None
        try:
            return Digest(raw.decode())
        except (ValueError, UnicodeDecodeError):
            return None

    def manifest_type(self, name: str, digest: Digest) -> str | None:
        raw = self.storage.get(self._revision_key(name, digest))
        return raw.decode() if raw else None

    def manifest_size(self, digest: Digest) -> int | None:
        return self.storage.size(blob_key(digest))

    def manifest_bytes(self, digest: Digest) -> bytes | None:
        return self.storage.get(blob_key(digest))

    def put_manifest(self, name: str, digest: Digest, media_type: str, raw: bytes, tags: list[str],
                     referrer_of: tuple[Digest, dict] | None = None) -> None:
        """Store a validated manifest, then its revision, referrer entry and tags (in that order,
        so a tag never names a manifest that is not fully there)."""
        self.put_blob(name, digest, raw)
        self.storage.put(self._revision_key(name, digest), media_type.encode())
        if referrer_of is not None:
            subject, descriptor = referrer_of
            self.storage.put(self._referrer_key(name, subject, digest), json.dumps(descriptor).encode())
        for tag in tags:
            self.storage.put(self._tag_key(name, tag), str(digest).encode())

    def tags(self, name: str) -> list[str]:
        return sorted(t for t in self.storage.list(f"{REPOS}/{name}/_tags"))

    def delete_tag(self, name: str, tag: str) -> bool:
        return self.storage.delete(self._tag_key(name, tag))

    def delete_manifest(self, name: str, digest: Digest, subject: Digest | None) -> bool:
        if not self.storage.delete(self._revision_key(name, digest)):
            return False
        for tag in self.tags(name):
            if self.resolve_tag(name, tag) == digest:
                self.storage.delete(self._tag_key(name, tag))
        if subject is not None:
            self.storage.delete(self._referrer_key(name, subject, digest))
        return True

    def manifests(self, name: str) -> Iterator[Digest]:
        return self._digests_under(f"{REPOS}/{name}/_manifests")

    def linked_blobs(self, name: str) -> Iterator[Digest]:
        return self._digests_under(f"{REPOS}/{name}/_blobs")

    def _digests_under(self, base: str) -> Iterator[Digest]:
        """The digests stored as ``base/ALGORITHM/ENCODED`` (anything else there is skipped)."""
        for alg in self.storage.list(base):
            for enc in self.storage.list(f"{base}/{alg}"):
                try:
                    yield Digest(f"{alg}:{enc}")
                except ValueError:
                    continue

    # -- referrers ------------------------------------------------------------------------------

    def _referrer_key(self, name: str, subject: Digest, referrer: Digest) -> str:
        return (f"{REPOS}/{name}/_referrers/{subject.algorithm}/{subject.encoded}/"
                f"{referrer.algorithm}-{referrer.encoded}")

    def referrers(self, name: str, subject: Digest) -> list[dict]:
        """Descriptors of the manifests in ``name`` whose subject is ``subject``, in digest order."""
        base = f"{REPOS}/{name}/_referrers/{subject.algorithm}/{subject.encoded}"
        out = []
        for entry in sorted(self.storage.list(base)):
            raw = self.storage.get(f"{base}/{entry}")
            if raw is None:
                continue
            try:
                desc = json.loads(raw)
            except ValueError:
                continue
            # only referrers whose manifest is still there (a crash between the two deletes)
            if self.storage.size(self._revision_key(name, Digest(desc["digest"]))) is not None:
                out.append(desc)
        return out


class UploadWriter:
    """Appends request bodies to an upload, hashing as it goes; ``rollback`` undoes a failed request."""

    def __init__(self, store: RegistryStore, uuid: str, appender: Appender) -> None:
        self._store, self.uuid, self._appender = store, uuid, appender
        self.start = appender.size
        hasher = store._hashers.get(uuid)
        if hasher is not None and hasher.size != appender.size:
            store._hashers.pop(uuid, None)  # written by another process: rehash at commit
            hasher = None
        self._hasher = hasher
        self._saved = hasher.copy() if hasher is not None else None

    @property
    def size(self) -> int:
        return self._appender.size

    def write(self, data: bytes | memoryview) -> None:
        self._appender.write(data)
        if self._hasher is not None:
            self._hasher.update(data)

    def rollback(self) -> None:
        """Cut the upload back to where this request started."""
        self._appender.truncate(self.start)
        if self._saved is not None:
            self._store._hashers[self.uuid] = self._hasher = self._saved
            self._saved = self._saved.copy()

    def close(self) -> None:
        self._appender.close()

    def __enter__(self) -> UploadWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
