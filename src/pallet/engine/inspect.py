"""Containers as docker shows them: ``inspect``'s JSON and ``ps``'s status and command strings."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pallet.engine import containers as C
from pallet.engine import networking
from pallet.engine.state import Container

if TYPE_CHECKING:
    from pallet.context import Context

_ZERO_TIME = "0001-01-01T00:00:00Z"
_DOCKER_STATUS = {"starting": "created", "stopping": "running", "removed": "removing"}


def docker_status(c: Container) -> str:
    """created, running, paused, restarting, removing, exited or dead."""
    if c.status == "starting":
        return "exited" if c.started_at else "created"
    return _DOCKER_STATUS.get(c.status, c.status)


def _parse(ts: str) -> datetime | None:
    if not ts:
        return None
    from pallet.timefmt import parse_time

    with contextlib.suppress(ValueError):
        return parse_time(ts)
    return None


def status_text(c: Container, now: datetime | None = None) -> str:
    """ps's STATUS column: "Up 3 seconds (healthy)", "Exited (0) 2 minutes ago" ..."""
    from pallet.timefmt import human_duration

    now = now or datetime.now(UTC)
    st = docker_status(c)
    if st in ("running", "paused"):
        started = _parse(c.started_at)
        text = "Up " + (human_duration((now - started).total_seconds()) if started else "Less than a second")
        if st == "paused":
            return text + " (Paused)"
        h = (c.health or {}).get("Status")
        if h == "starting":
            text += " (health: starting)"
        elif h:
            text += f" ({h})"
        return text
    if st == "restarting":
        fin = _parse(c.finished_at)
        ago = human_duration((now - fin).total_seconds()) if fin else "Less than a second"
        return f"Restarting ({c.exit_code}) {ago} ago"
    if st == "exited":
        fin = _parse(c.finished_at)
        ago = human_duration((now - fin).total_seconds()) if fin else "Less than a second"
        return f"Exited ({c.exit_code}) {ago} ago"
    if st == "removing":
        return "Removal In Progress"
    if st == "dead":
        return "Dead"
    return "Created"


def command_text(c: Container, truncate: bool = True) -> str:
    """ps's COMMAND column: the quoted command line, cut to 20 characters with an ellipsis."""
    cmd = " ".join([c.config.get("Path", ""), *c.config.get("Args", [])]).strip()
    if truncate and len(cmd) > 20:
        cmd = cmd[:19] + "…"
    return json.dumps(cmd, ensure_ascii=False)


def mounts_view(ctx: Context, c: Container) -> list[dict[str, Any]]:
    from pallet.engine import volumes

    out = []
    for m in c.config.get("MountSpecs", []):
        rw = not m.get("ReadOnly")
        if m["Type"] == "volume":
            out.append(
                {
                    "Type": "volume",
                    "Name": m["Source"],
                    "Source": str(volumes.data_path(ctx, m["Source"])),
                    "Destination": m["Target"],
                    "Driver": "local",
                    "Mode": m.get("Mode") or "z",
                    "RW": rw,
                    "Propagation": "",
                }
            )
        elif m["Type"] == "bind":
            out.append(
                {
                    "Type": "bind",
                    "Source": m["Source"],
                    "Destination": m["Target"],
                    "Mode": m.get("Mode") or "",
                    "RW": rw,
                    "Propagation": m.get("Propagation") or "rprivate",
                }
            )
        else:
            out.append(
                {
                    "Type": "tmpfs",
                    "Source": "",
                    "Destination": m["Target"],
                    "Mode": m.get("Mode") or "",
                    "RW": rw,
                    "Propagation": "",
                }
            )
    return out


def container_inspect(ctx: Context, c: Container, *, size: bool = False) -> dict[str, Any]:
    """docker's ``container inspect`` object for ``c``."""
    cfg, hc = c.config["Config"], c.config["HostConfig"]
    st = docker_status(c)
    cdir = C.container_dir(ctx, c.id)
    health = c.health
    state: dict[str, Any] = {
        "Status": st,
        "Running": st in ("running", "paused"),
        "Paused": st == "paused",
        "Restarting": st == "restarting",
        "OOMKilled": c.oom_killed,
        "Dead": st == "dead",
        "Pid": c.pid if st in ("running", "paused") else 0,
        "ExitCode": c.exit_code,
        "Error": c.error,
        "StartedAt": c.started_at or _ZERO_TIME,
        "FinishedAt": c.finished_at or _ZERO_TIME,
    }
    if health:
        state["Health"] = health
    try:
        graph = C.image_source(ctx).graph_driver(c.id)
    except Exception:
        graph = {"Name": "", "Data": None}
    log_type = hc["LogConfig"]["Type"]
    out: dict[str, Any] = {
        "Id": c.id,
        "Created": c.created,
        "Path": c.config.get("Path", ""),
        "Args": c.config.get("Args", []),
        "State": state,
        "Image": c.image_id,
        "ResolvConfPath": str(cdir / "resolv.conf"),
        "HostnamePath": str(cdir / "hostname"),
        "HostsPath": str(cdir / "hosts"),
        "LogPath": C.log_path(ctx, c) if log_type != "none" else "",
        "Name": "/" + c.name,
        "RestartCount": c.restart_count,
        "Driver": graph.get("Name", ""),
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": hc,
        "GraphDriver": graph,
        "Mounts": mounts_view(ctx, c),
        "Config": cfg,
        "NetworkSettings": networking.settings(ctx, c),
        "OCIRuntime": (c.config.get("Runtime") or {}).get("Name", ""),
    }
    if size:
        rw = C.rootfs_size(ctx, c)
        out["SizeRw"] = rw
        img = None
        with contextlib.suppress(Exception):
            img = C.image_source(ctx).lookup(c.image_id)
        out["SizeRootFs"] = rw + (img.size if img else 0)
    return out


def inspect(refs: list[str], ctx: Context | None = None, *, size: bool = False) -> list[dict[str, Any]]:
    """``container inspect``: one object per reference (raises for the first unknown one)."""
    ctx = C._ctx(ctx)
    return [container_inspect(ctx, C.get(r, ctx), size=size) for r in refs]
