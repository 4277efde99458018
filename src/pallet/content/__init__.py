"""Content: digests, media types, descriptors, manifests, platforms, layer compression.

The shared vocabulary of images. Everything that handles image bytes (registry client and
server, image store, layer storage) speaks in these types.
"""

from __future__ import annotations

from pallet.content.digest import Digest, Hasher, InvalidDigest, is_digest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pallet.content.manifest import Descriptor, Index, InvalidManifest, Manifest, canonical_json, parse
    from pallet.content.platform import Platform

# imported on first use: a digest is all most callers need (``pallet run`` reads no manifest)
_LAZY = {
    "Descriptor": "pallet.content.manifest",
    "Index": "pallet.content.manifest",
    "InvalidManifest": "pallet.content.manifest",
    "Manifest": "pallet.content.manifest",
    "canonical_json": "pallet.content.manifest",
    "parse": "pallet.content.manifest",
    "Platform": "pallet.content.platform",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pallet.content' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Descriptor",
    "Digest",
    "Hasher",
    "Index",
    "InvalidDigest",
    "InvalidManifest",
    "Manifest",
    "Platform",
    "canonical_json",
    "is_digest",
    "parse",
]
