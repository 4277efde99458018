"""The container engine: ``pallet run`` and the container lifecycle.

Public API (each function takes ``ctx: Context | None``; names resolve lazily so importing
``pallet.engine`` costs nothing):

* containers: :func:`create`, :func:`start`, :func:`run`, :func:`stop`, :func:`kill`,
  :func:`restart`, :func:`remove`, :func:`wait`, :func:`pause`, :func:`unpause`, :func:`rename`,
  :func:`get`, :func:`list_containers`, :func:`prune`, :func:`top`, :func:`stats`, :func:`ports`
  (in :mod:`pallet.engine.containers`, also ``pallet.engine.containers.logs``);
  :func:`exec_` (:mod:`pallet.engine.execs`); :func:`copy_from`, :func:`copy_to`, :func:`export`
  (:mod:`pallet.engine.copy`); ``pallet.engine.commit.commit``; ``pallet.engine.inspect.inspect``
  (names that are also submodules are not re-exported here, to keep imports unambiguous);
* volumes: :mod:`pallet.engine.volumes` (create, inspect, list_volumes, remove, prune);
* options: :class:`pallet.engine.options.CreateOptions`;
* the seam to images and storage: :mod:`pallet.engine.image_source`.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_API = {
    "create": "containers",
    "start": "containers",
    "run": "containers",
    "stop": "containers",
    "kill": "containers",
    "restart": "containers",
    "remove": "containers",
    "wait": "containers",
    "pause": "containers",
    "unpause": "containers",
    "rename": "containers",
    "get": "containers",
    "list_containers": "containers",
    "prune": "containers",
    "top": "containers",
    "stats": "containers",
    "ports": "containers",
    "exec_": "execs",
    "copy_from": "copy",
    "copy_to": "copy",
    "export": "copy",
    "CreateOptions": "options",
    "ImageSource": "image_source",
    "ImageInfo": "image_source",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    mod = _API.get(name)
    if mod is None:
        raise AttributeError(f"module 'pallet.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pallet.engine.{mod}"), name)
