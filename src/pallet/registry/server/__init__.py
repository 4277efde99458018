"""The registry server, ``pallet registry serve``: the OCI distribution API over a blob store.

Public API::

    from pallet.registry.server import ServerConfig, serve, RegistryApp, collect

* :class:`ServerConfig` - every setting (also loadable from a TOML file: ``config.load_file``).
* :func:`serve` - run granian with the ASGI app until SIGTERM (``pallet registry serve``).
* :class:`RegistryApp` - the ASGI application itself, for embedding in another ASGI server.
* :func:`collect` - mark-and-sweep garbage collection (``pallet registry gc``).
* :class:`~pallet.registry.server.storage.Storage` - the backend seam (filesystem built in).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pallet.registry.server.config import ServerConfig

if TYPE_CHECKING:
    from pallet.registry.server.app import RegistryApp
    from pallet.registry.server.gc import collect
    from pallet.registry.server.serve import serve

__all__ = ["RegistryApp", "ServerConfig", "collect", "serve"]


def __getattr__(name: str) -> Any:
    # keep `import pallet.registry.server` light: the CLI imports it to parse flags
    if name == "RegistryApp":
        from pallet.registry.server.app import RegistryApp

        return RegistryApp
    if name == "serve":
        from pallet.registry.server.serve import serve

        return serve
    if name == "collect":
        from pallet.registry.server.gc import collect

        return collect
    raise AttributeError(name)
