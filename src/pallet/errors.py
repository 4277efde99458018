"""The errors pallet raises on purpose, in one hierarchy users can catch.

Every component raises a subclass of :class:`PalletError`; the CLI prints ``str(err)`` as one
line and exits with ``err.exit_code``. Components add finer subclasses in their own modules,
always under the component base defined here, so ``except pallet.errors.RegistryError`` works
whatever the module. This module imports nothing: the runtime's hot path uses it.
"""

from __future__ import annotations


class PalletError(Exception):
    """Base of every error pallet raises on purpose."""

    #: process exit status the CLI uses (docker's convention: 125 is an engine error)
    exit_code: int = 125


class UsageError(PalletError):
    """Bad flags or arguments on the command line."""


class ConfigError(PalletError):
    """A configuration file (registries.conf, auth.json, storage.conf ...) is unusable."""


class InvalidReference(PalletError):
    """An image reference does not follow the grammar, or cannot be resolved."""


class ContentError(PalletError):
    """Content does not match its descriptor: bad digest, wrong size, malformed manifest."""


class DigestMismatch(ContentError):
    """Bytes hash to a different digest than the one promised."""


class RegistryError(PalletError):
    """A registry could not be reached, refused us, or answered something unusable."""


class StoreError(PalletError):
    """The local image store refused an operation (unknown image, image in use, lock)."""


class StorageError(PalletError):
    """Layer storage failed: unpacking, mounting, diffing."""


class UnsafePathError(StorageError):
    """A layer entry tried to reach outside its root."""


class RuntimeFailure(PalletError):
    """The OCI runtime could not create, start or manage a container."""


class EngineError(PalletError):
    """The container engine refused or failed an operation."""


class NetworkError(PalletError):
    """Container networking failed."""


class NotFound(PalletError):
    """Mixin for 'no such thing' errors, so callers can test for absence across components."""
