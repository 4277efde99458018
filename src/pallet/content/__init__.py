"""Content: digests, media types, descriptors, manifests, platforms, layer compression.

The shared vocabulary of images. Everything that handles image bytes (registry client and
server, image store, layer storage) speaks in these types.
"""

from pallet.content.digest import Digest, Hasher, InvalidDigest, is_digest
from pallet.content.manifest import Descriptor, Index, InvalidManifest, Manifest, canonical_json, parse
from pallet.content.platform import Platform

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
