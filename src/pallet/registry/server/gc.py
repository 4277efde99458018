"""Garbage collection: mark every blob a manifest references, sweep the rest, expire old uploads.

Safe to run while the server is up: a blob younger than ``grace`` seconds is never swept (a push
uploads blobs before the manifest that references them, and a mount or a re-push of an existing
blob refreshes its time), and uploads are removed only when idle for ``upload_max_age``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pallet.content import Digest, InvalidManifest, parse
from pallet.registry.server.layout import REPOS, RegistryStore, blob_key


@dataclass
class GCReport:
    marked: int = 0
    swept: list[Digest] = field(default_factory=list)
    swept_bytes: int = 0
    links_removed: int = 0
    uploads_removed: list[str] = field(default_factory=list)


def collect(store: RegistryStore, *, dry_run: bool = False, grace: float = 3600.0,
            upload_max_age: float = 7 * 24 * 3600, now: float | None = None) -> GCReport:
    now = time.time() if now is None else now
    st = store.storage
    report = GCReport()
    marked: set[str] = set()
    repos = store.repositories()
    for name in repos:
        for digest in store.manifests(name):
            marked.add(digest)
            raw = store.manifest_bytes(digest)
            if raw is None:
                continue
            try:
                doc = parse(raw, store.manifest_type(name, digest))
            except (InvalidManifest, TypeError, ValueError, AttributeError, KeyError):
                continue  # stored as pushed; nothing it references can be trusted, so nothing is marked
            if not doc.is_index:
                marked.add(doc.config.digest)  # type: ignore[union-attr]
                marked.update(d.digest for d in doc.layers)  # type: ignore[union-attr]
    report.marked = len(marked)
    gone: set[str] = set()
    for alg in st.list("blobs"):
        for prefix in st.list(f"blobs/{alg}"):
            for enc in st.list(f"blobs/{alg}/{prefix}"):
                digest = f"{alg}:{enc}"
                if digest in marked:
                    continue
                key = f"blobs/{alg}/{prefix}/{enc}"
                mtime = st.mtime(key)
                if mtime is None or now - mtime < grace:
                    continue
                report.swept.append(Digest(digest) if _valid(digest) else digest)  # type: ignore[arg-type]
                report.swept_bytes += st.size(key) or 0
                gone.add(digest)
                if not dry_run:
                    st.delete(key)
    # links to blobs that no longer exist (swept now or before)
    for name in repos:
        for digest in list(store.linked_blobs(name)):
            if digest in gone or st.size(blob_key(digest)) is None:
                report.links_removed += 1
                if not dry_run:
                    store.unlink_blob(name, digest)
    for uuid in store.uploads():
        info = store.upload_info(uuid)
        mtime = st.mtime(f"uploads/{uuid}/data") or st.mtime(f"uploads/{uuid}/info") or 0.0
        started = info.started if info else 0.0
        if now - max(mtime, started) >= upload_max_age:
            report.uploads_removed.append(uuid)
            if not dry_run:
                store.cancel_upload(uuid)
    # temporaries a killed writer left behind (atomic writes rename them away when they finish)
    walk = getattr(st, "walk_files", None)
    if walk is not None and not dry_run:
        for prefix in (REPOS, "blobs"):
            for key, mtime in list(walk(prefix)):
                if key.rsplit("/", 1)[-1].startswith(".tmp-") and now - mtime >= grace:
                    st.delete(key)
    return report


def _valid(digest: str) -> bool:
    try:
        Digest(digest)
    except ValueError:
        return False
    return True
