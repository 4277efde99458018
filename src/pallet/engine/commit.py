"""``commit``: a container's changes become a new image, through the ImageSource's diff.

The new image config is the container's effective config (docker commits what the container
runs: its Env, Cmd, Entrypoint, WorkingDir ...), with ``--change`` Dockerfile instructions
applied (:mod:`pallet.images.changes`, the parser ``import`` uses too) and a history entry
appended. The container is paused while its layer is read, unless ``pause=False``.
"""

from __future__ import annotations

import contextlib
import copy
import shlex
from typing import TYPE_CHECKING, Any

from pallet.engine import containers as C
from pallet.engine.errors import NoSuchImage
from pallet.engine.state import now_rfc3339
from pallet.images.changes import apply_changes

if TYPE_CHECKING:
    from pallet.context import Context
    from pallet.engine.image_source import ImageInfo


def commit(
    ref: str,
    repository: str | None = None,
    ctx: Context | None = None,
    *,
    message: str = "",
    author: str = "",
    changes: list[str] | None = None,
    pause: bool = True,
) -> ImageInfo:
    """Create an image from the container's changes; returns the new image."""
    ctx = C._ctx(ctx)
    c = C.get(ref, ctx)
    src = C.image_source(ctx)
    parent = src.lookup(c.image_id)
    if parent is None:
        raise NoSuchImage(f"the image of container {c.name} no longer exists")
    ccfg = c.config["Config"]
    base = copy.deepcopy(parent.config.get("config") or {})
    for key in (
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "Labels",
        "StopSignal",
        "Volumes",
        "ExposedPorts",
        "Healthcheck",
        "OnBuild",
    ):
        if key in ccfg and ccfg[key] is not None:
            base[key] = copy.deepcopy(ccfg[key])
    base = apply_changes(changes or (), base)
    base = {k: v for k, v in base.items() if v not in (None, "", [], {}) or k in ("Cmd",)}
    created = now_rfc3339()
    config = copy.deepcopy(parent.config)
    config["config"] = base
    config["created"] = created
    if author:
        config["author"] = author
    history = list(config.get("history") or [])
    entry: dict[str, Any] = {
        "created": created,
        "created_by": " ".join(shlex.quote(a) for a in [c.config["Path"], *c.config["Args"]]),
    }
    if message:
        entry["comment"] = message
    if author:
        entry["author"] = author
    history.append(entry)
    config["history"] = history
    paused_here = False
    if pause and c.status == "running":
        C.pause(c.id, ctx)
        paused_here = True
    try:
        return src.commit(c.id, parent, config, [repository] if repository else [])
    finally:
        if paused_here:
            with contextlib.suppress(Exception):
                C.unpause(c.id, ctx)
