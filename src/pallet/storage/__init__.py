"""Layer storage: graph drivers, streaming layer apply, container layers, diffs.

The public API is :class:`pallet.storage.layers.LayerStore` (apply layers from streams by chain
ID, container layers, image mounts, GC, df) over a graph driver shaped like containerd's
snapshotter (:mod:`pallet.storage.driver`: overlay, fuse-overlayfs, vfs). Names are re-exported
here lazily so importing :mod:`pallet.storage.conf` alone stays cheap.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no typing import at start-up (pallet run)
if TYPE_CHECKING:
    from typing import Any


_EXPORTS = {
    "LayerStore": "pallet.storage.layers",
    "Layer": "pallet.storage.layers",
    "LayerSource": "pallet.storage.layers",
    "LayerNotFound": "pallet.storage.layers",
    "ContainerLayer": "pallet.storage.layers",
    "ContainerLayerNotFound": "pallet.storage.layers",
    "ImageRef": "pallet.storage.layers",
    "DiskUsage": "pallet.storage.layers",
    "chain_id": "pallet.storage.layers",
    "chain_ids": "pallet.storage.layers",
    "open_store": "pallet.storage.layers",
    "Mount": "pallet.storage.mount",
    "mount_all": "pallet.storage.mount",
    "unmount": "pallet.storage.mount",
    "Driver": "pallet.storage.driver",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pallet.storage' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
