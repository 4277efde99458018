"""The public image API: what ``pallet images/tag/rmi/inspect/history/save/load/import/image prune`` do.

Every function takes ``ctx: Context | None`` (None: the process default) and opens the store
under ``ctx.root / "images"`` for the duration of the call. Pull and push live beside these
(``pallet.images.remote``: the registry client, the store and layer storage composed).

    >>> import pallet.images as images
    >>> images.load_layout("/tmp/layout", "latest", name="small")
    >>> [i.names for i in images.list()]
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from pallet.store import GCReport, Image, Store

if TYPE_CHECKING:
    from pallet.content.platform import Platform
    from pallet.context import Context
    from pallet.images.archive import Loaded
    from pallet.images.layertree import LayerTree
    from pallet.images.local import HistoryEntry, RemoveReport

# imported on first use, so `pallet images` does not load the archive code (tarfile, shutil ...)
_LAZY = {
    "FORMATS": "pallet.images.archive",
    "ArchiveError": "pallet.images.archive",
    "Loaded": "pallet.images.archive",
    "HistoryEntry": "pallet.images.local",
    "RemoveEvent": "pallet.images.local",
    "RemoveReport": "pallet.images.local",
    "LayerTree": "pallet.images.layertree",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pallet.images' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "FORMATS",
    "ArchiveError",
    "HistoryEntry",
    "Image",
    "LayerTree",
    "Loaded",
    "RemoveEvent",
    "RemoveReport",
    "exists",
    "gc",
    "history",
    "import_",
    "inspect",
    "list",
    "load",
    "load_layout",
    "lookup",
    "open_store",
    "prune",
    "pull",
    "push",
    "remove",
    "save",
    "save_layout",
    "tag",
    "tree",
    "untag",
]


@contextlib.contextmanager
def open_store(ctx: Context | None = None) -> Iterator[Store]:
    """The image store of ``ctx``, closed (lease released) on exit."""
    store = Store.open(ctx)
    try:
        yield store
    finally:
        store.close()


def list(
    ctx: Context | None = None, *, all: bool = False, filters: Iterable[str] = (), names: Iterable[str] = ()
) -> builtins.list[Image]:
    """Images newest first. ``filters``: ``key=value`` as docker/podman (dangling, label, reference,
    before, since, until, id, digest, intermediate, containers); ``names``: reference patterns."""
    from pallet.images import local

    with open_store(ctx) as s:
        return local.list_images(s, all=all, filters=filters, names=names)


def lookup(name: str, ctx: Context | None = None) -> Image:
    """The image ``name`` resolves to (ID, ID prefix, short or full name, name@digest)."""
    with open_store(ctx) as s:
        return s.lookup(name)


def exists(name: str, ctx: Context | None = None) -> bool:
    with open_store(ctx) as s:
        return s.exists(name)


def tag(source: str, *targets: str, ctx: Context | None = None) -> Image:
    """Give ``source`` the names ``targets`` (moved from any image that had them)."""
    from pallet.images import local

    with open_store(ctx) as s:
        return local.tag(s, source, targets)


def untag(source: str, *targets: str, ctx: Context | None = None) -> builtins.list[str]:
    from pallet.images import local

    with open_store(ctx) as s:
        return local.untag(s, source, targets)


def remove(
    names: Sequence[str],
    *,
    force: bool = False,
    all: bool = False,
    ctx: Context | None = None,
    on_in_use: Callable[[Image], None] | None = None,
) -> RemoveReport:
    """rmi: untag or delete each name as docker does; per-name errors are in ``report.errors``."""
    from pallet.images import local

    with open_store(ctx) as s:
        return local.remove(s, names, force=force, all=all, on_in_use=on_in_use)


def inspect(name: str, ctx: Context | None = None) -> dict[str, Any]:
    from pallet.images import local

    with open_store(ctx) as s:
        return local.inspect(s, name)


def history(name: str, ctx: Context | None = None) -> builtins.list[HistoryEntry]:
    from pallet.images import local

    with open_store(ctx) as s:
        return local.history(s, name)


def tree(ctx: Context | None = None, image: str | None = None) -> LayerTree:
    """The layer graph of every image (or of ``image``'s branch)."""
    from pallet.images import layertree as t

    with open_store(ctx) as s:
        full = t.build(s.images())
        return t.only(full, s.lookup(image)) if image else full


def save(
    names: Iterable[str],
    output: str | os.PathLike[str] | BinaryIO,
    *,
    format: str = "docker-archive",
    multi: bool = False,
    compress: bool = False,
    ctx: Context | None = None,
) -> None:
    """Write images as ``docker-archive``, ``oci-archive``, ``oci-dir`` (OCI layout) or ``docker-dir``."""
    from pallet.images import archive

    with open_store(ctx) as s:
        archive.save(s, names, output, format=format, multi=multi, compress=compress)


def load(source: str | os.PathLike[str] | BinaryIO, ctx: Context | None = None) -> builtins.list[Loaded]:
    """Load every image in an archive or layout (format and compression detected)."""
    from pallet.images import archive

    with open_store(ctx) as s:
        return archive.load(s, source)


def load_layout(
    path: str | os.PathLike[str],
    ref: str | None = None,
    *,
    name: str | None = None,
    ctx: Context | None = None,
) -> builtins.list[Loaded]:
    """Load from an OCI layout (directory or tar); ``ref`` selects by ref.name, ``name`` names it."""
    from pallet.images import archive

    with open_store(ctx) as s:
        return archive.load_layout(s, path, ref, name=name)


def save_layout(path: str | os.PathLike[str], names: Iterable[str], ctx: Context | None = None) -> None:
    """Add images to an OCI layout directory (created if missing)."""
    from pallet.images import archive

    with open_store(ctx) as s:
        archive.save_layout(s, path, names)


def import_(
    source: str | os.PathLike[str] | BinaryIO,
    reference: str | None = None,
    *,
    changes: Iterable[str] = (),
    message: str = "",
    platform: Platform | None = None,
    ctx: Context | None = None,
) -> Image:
    """An image of one layer from a rootfs tarball (plain/gzip/zstd), directory, ``-`` or URL."""
    from pallet.images import importer

    with open_store(ctx) as s:
        return importer.import_(s, source, reference, changes=changes, message=message, platform=platform)


def prune(
    *, all: bool = False, filters: Iterable[str] = (), ctx: Context | None = None
) -> builtins.list[Image]:
    """Remove dangling images (``all``: every image no container uses); returns what went."""
    from pallet.images import local

    with open_store(ctx) as s:
        return local.prune(s, all=all, filters=filters)


def gc(ctx: Context | None = None) -> GCReport:
    """Delete unreferenced blobs and stale temp files."""
    with open_store(ctx) as s:
        return s.gc()


def pull(
    name: str,
    ctx: Context | None = None,
    *,
    platform: Platform | str | None = None,
    tls_verify: bool | None = None,
    authfile: str | os.PathLike[str] | None = None,
    progress: Any = None,
) -> Image:
    """Pull ``name`` (short names resolved through registries.conf) and unpack it; returns the image.

    >>> pallet.images.pull("127.0.0.1:5000/library/busybox:latest").short_id
    """
    from pallet.images import remote

    return remote.pull(name, ctx, platform=platform, tls_verify=tls_verify, authfile=authfile,
                       progress=progress).image


def push(
    name: str,
    destination: str | None = None,
    ctx: Context | None = None,
    *,
    tls_verify: bool | None = None,
    authfile: str | os.PathLike[str] | None = None,
    format: str | None = None,
    progress: Any = None,
) -> str:
    """Push a local image to ``destination`` (default: its own name); returns the manifest digest."""
    from pallet.images import remote

    return str(remote.push(name, destination, ctx, tls_verify=tls_verify, authfile=authfile, format=format,
                           progress=progress))
