"""Images meet layer storage: make sure an image's layers are unpacked, and describe images to storage.

A pull unpacks while it downloads; images that arrive another way (``load``, ``import``,
``commit``) keep only their blobs until something needs their files (a container, an image
mount), and then :func:`ensure_unpacked` applies the missing layers from the blob store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pallet.context import Context
    from pallet.storage.layers import ImageRef, LayerStore
    from pallet.store import Image, Store


def ensure_unpacked(store: Store, image: Image, layers: LayerStore | None = None,
                    ctx: Context | None = None) -> str | None:
    """Apply whatever layers of ``image`` storage lacks; returns the top layer's chain ID."""
    from pallet.storage.layers import LayerSource, LayerStore

    if not image.layers:
        return None
    layers = layers or LayerStore(ctx)
    if layers.exists(image.top_layer):
        return image.top_layer

    def opener(digest: str):
        return lambda: store.open_blob(digest)

    layers.apply_image([
        LayerSource(open=opener(layer.digest), media_type=layer.media_type, diff_id=str(layer.diff_id),
                    compressed_digest=str(layer.digest), compressed_size=layer.size)
        for layer in image.layers
    ])
    return image.top_layer


def image_ref(image: Image) -> ImageRef:
    from pallet.storage.layers import ImageRef

    return ImageRef(id=image.id.encoded, top_chain_id=image.top_layer or None, names=image.names,
                    created=image.created)


def resolve_for_storage(ctx: Context, name: str) -> ImageRef:
    """``pallet image mount IMAGE``: the image by any name the store knows, unpacked first."""
    from pallet.store import Store

    with Store.open(ctx) as store:
        image = store.resolve(name).image
        ensure_unpacked(store, image, ctx=ctx)
        return image_ref(image)


def list_for_storage(ctx: Context) -> list[ImageRef]:
    from pallet.store import Store

    with Store.open(ctx) as store:
        return [image_ref(i) for i in store.images()]


def gc_layers(ctx: Context | None = None, extra_keep: set[str] | None = None) -> list[str]:
    """Remove unpacked layers no image (and no container, via ``extra_keep``) uses."""
    from pallet.storage.layers import LayerStore
    from pallet.store import Store

    with Store.open(ctx) as store:
        keep = set(store.referenced_chain_ids())
    return [str(c) for c in LayerStore(ctx).gc(keep | (extra_keep or set()))]
