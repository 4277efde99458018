"""``commit``: a container's changes become a new image, through the ImageSource's diff.

The new image config is the container's effective config (docker commits what the container
runs: its Env, Cmd, Entrypoint, WorkingDir ...), with ``--change`` Dockerfile instructions
applied and a history entry appended. The container is paused while its layer is read, unless
``pause=False``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shlex
from typing import TYPE_CHECKING, Any

from pallet.engine import containers as C
from pallet.engine.errors import NoSuchImage
from pallet.engine.state import now_rfc3339
from pallet.errors import UsageError

if TYPE_CHECKING:
    from pallet.context import Context
    from pallet.engine.image_source import ImageInfo

_CHANGE_KEYS = (
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "USER",
    "VOLUME",
    "WORKDIR",
    "STOPSIGNAL",
)


def _json_or_shell(arg: str) -> list[str]:
    arg = arg.strip()
    if arg.startswith("["):
        try:
            v = json.loads(arg)
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return v
        except ValueError:
            pass
    return ["/bin/sh", "-c", arg]


def apply_changes(cfg: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """Apply Dockerfile instructions (``CMD ["x"]``, ``ENV A=b``, ...) to an image's config."""
    cfg = copy.deepcopy(cfg)
    for change in changes:
        word, _, arg = change.strip().partition(" ")
        key = word.upper()
        if key not in _CHANGE_KEYS:
            raise UsageError(f"invalid --change {change!r}: {word} is not one of {', '.join(_CHANGE_KEYS)}")
        arg = arg.strip()
        if key == "CMD":
            cfg["Cmd"] = _json_or_shell(arg)
        elif key == "ENTRYPOINT":
            cfg["Entrypoint"] = _json_or_shell(arg)
        elif key in ("ENV", "LABEL"):
            pairs: list[tuple[str, str]] = []
            if "=" in arg.split(" ", 1)[0]:
                for tok in shlex.split(arg):
                    k, _, v = tok.partition("=")
                    pairs.append((k, v))
            else:
                k, _, v = arg.partition(" ")
                pairs.append((k, v.strip()))
            if key == "ENV":
                env = list(cfg.get("Env") or [])
                for k, v in pairs:
                    env = [e for e in env if e.split("=", 1)[0] != k] + [f"{k}={v}"]
                cfg["Env"] = env
            else:
                labels = dict(cfg.get("Labels") or {})
                labels.update(dict(pairs))
                cfg["Labels"] = labels
        elif key == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in arg.split():
                ports[p if "/" in p else f"{p}/tcp"] = {}
            cfg["ExposedPorts"] = ports
        elif key == "VOLUME":
            vols = dict(cfg.get("Volumes") or {})
            items = json.loads(arg) if arg.startswith("[") else arg.split()
            for v in items:
                vols[v] = {}
            cfg["Volumes"] = vols
        elif key == "USER":
            cfg["User"] = arg
        elif key == "WORKDIR":
            cfg["WorkingDir"] = arg
        elif key == "STOPSIGNAL":
            cfg["StopSignal"] = arg
        elif key == "ONBUILD":
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), arg]
    return cfg


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
    base = apply_changes(base, changes or [])
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
