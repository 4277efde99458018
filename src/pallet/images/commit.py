"""A new image from a parent image plus one layer of changes (``pallet commit``, builds)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, BinaryIO

from pallet.content import Manifest, canonical_json, parse
from pallet.content import mediatypes as mt
from pallet.content.digest import CHUNK

if TYPE_CHECKING:
    from pallet.store import Image, Store


def add_layer(store: Store, parent: Image | None, diff: BinaryIO, config: dict[str, Any],
              names: Iterable[str] = ()) -> Image:
    """Store ``diff`` (an uncompressed layer tar) gzip-compressed as a layer on ``parent``.

    ``config`` is the new image's config; its ``rootfs.diff_ids`` are replaced by the parent's
    plus the new layer's. ``names`` are stored as podman stores new names (``app`` →
    ``localhost/app:latest``).
    """
    from pallet.images.importer import _LayerOut
    from pallet.store import names as naming

    out = _LayerOut(store)
    try:
        while chunk := diff.read(CHUNK):
            out.write(chunk)
        digest, size, diff_id, diff_size = out.finish()
    except BaseException:
        out.abort()
        raise
    parent_layers: list[dict[str, Any]] = []
    diff_ids: list[str] = []
    diff_sizes: dict[str, int] = {}
    if parent is not None:
        pm = parse(store.read_blob(parent.manifest_digest))
        assert isinstance(pm, Manifest)
        parent_layers = [{**d.to_dict(), "mediaType": mt.to_oci(d.media_type)} for d in pm.layers]
        diff_ids = [str(layer.diff_id) for layer in parent.layers]
        diff_sizes = {str(layer.diff_id): layer.diff_size for layer in parent.layers}
    config = {**config, "rootfs": {"type": "layers", "diff_ids": [*diff_ids, str(diff_id)]}}
    config_raw = canonical_json(config)
    config_digest = store.put(config_raw)
    manifest_raw = canonical_json({
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": str(config_digest), "size": len(config_raw)},
        "layers": [*parent_layers, {"mediaType": mt.OCI_LAYER_GZIP, "digest": str(digest), "size": size}],
    })
    manifest = parse(manifest_raw, mt.OCI_MANIFEST)
    assert isinstance(manifest, Manifest)
    try:
        return store.add_image(manifest, config=config_raw, names=[naming.tag_name(n) for n in names],
                               diff_sizes={**diff_sizes, str(diff_id): diff_size})
    finally:
        store.release([digest, config_digest, manifest.digest])
