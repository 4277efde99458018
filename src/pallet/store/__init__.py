"""The local image store: a content-addressed blob store and an index of images (SQLite, WAL).

Layout under ``ctx.root / "images"``::

    index.db            images, names, digests, layers, holders, leases (SQLite, WAL)
    blobs/sha256/HEX    manifests, configs and layers, exactly as fetched
    ingest/             temp files of blobs being written (flocked by their writer)
    leases/             lock files of processes holding not-yet-referenced blobs

Use :class:`Store` (``Store.open(ctx)``); see ``docs/images.md`` for the contract a pull follows.
"""

from pallet.store.blobs import BlobStore, BlobUnknown, BlobWriter
from pallet.store.store import (
    AmbiguousImage,
    GCReport,
    Image,
    ImageInUse,
    ImageNotFound,
    Layer,
    Resolved,
    Store,
    chain_ids,
    diff_info,
)

__all__ = [
    "AmbiguousImage",
    "BlobStore",
    "BlobUnknown",
    "BlobWriter",
    "GCReport",
    "Image",
    "ImageInUse",
    "ImageNotFound",
    "Layer",
    "Resolved",
    "Store",
    "chain_ids",
    "diff_info",
]
