"""The registry client: OCI distribution-spec v1.1 / Docker registry v2 over httpx.

``RegistryClient(registry, ctx=..., tls_verify=..., auth=...)`` talks to one registry; see
:mod:`pallet.registry.client.client` for the API and docs/registry-client.md for the design.
"""

from pallet.registry.client.auth import Challenge, parse_www_authenticate
from pallet.registry.client.blobs import BlobReader
from pallet.registry.client.client import ImageResolution, RegistryClient
from pallet.registry.client.errors import (
    APIError,
    AuthenticationError,
    DeniedError,
    InvalidResponse,
    NotFoundError,
    RegistryClientError,
    RegistryUnavailable,
    TooManyRequests,
    UnsupportedError,
)

__all__ = [
    "APIError",
    "AuthenticationError",
    "BlobReader",
    "Challenge",
    "DeniedError",
    "ImageResolution",
    "InvalidResponse",
    "NotFoundError",
    "RegistryClient",
    "RegistryClientError",
    "RegistryUnavailable",
    "TooManyRequests",
    "UnsupportedError",
    "parse_www_authenticate",
]
