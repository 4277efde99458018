"""Local image verbs on the store: list (with filters), tag, remove, inspect, history, prune."""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pallet.errors import UsageError
from pallet.reference import DEFAULT_DOMAIN, OFFICIAL_PREFIX
from pallet.store import Image, ImageInUse, Store
from pallet.store import names as naming
from pallet.store.store import AmbiguousImage, ImageNotFound, parse_time

FILTER_KEYS = (
    "dangling",
    "label",
    "reference",
    "before",
    "since",
    "after",
    "until",
    "id",
    "digest",
    "intermediate",
    "readonly",
    "containers",
)


@dataclass(frozen=True)
class RemoveEvent:
    """One line of rmi's report: ("untagged", name) or ("deleted", image ID)."""

    action: str
    value: str


@dataclass(frozen=True)
class HistoryEntry:
    id: str  # image ID, or "<missing>"
    created: str
    created_ts: float
    created_by: str
    size: int
    comment: str
    empty_layer: bool
    tags: tuple[str, ...] = ()


@dataclass
class RemoveReport:
    events: list[RemoveEvent] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)


def familiar(name: str) -> str:
    """``docker.io/library/busybox:latest`` → ``busybox:latest`` (Docker's short form)."""
    prefix = DEFAULT_DOMAIN + "/"
    if name.startswith(prefix):
        name = name[len(prefix) :]
        if name.startswith(OFFICIAL_PREFIX) and "/" not in name[len(OFFICIAL_PREFIX) :].split("@")[0]:
            name = name[len(OFFICIAL_PREFIX) :]
    return name


# -- relations between images ------------------------------------------------------------------------
def children_map(images: Sequence[Image]) -> dict[str, builtins.list[Image]]:
    """Image ID → images built on it (whose layer stack strictly extends its top layer)."""
    by_chain: dict[str, builtins.list[Image]] = {}
    for img in images:
        for c in img.chain_ids[:-1]:
            by_chain.setdefault(c, []).append(img)
    out: dict[str, builtins.list[Image]] = {}
    for img in images:
        if img.layers:
            out[img.id] = [c for c in by_chain.get(img.top_layer, []) if c.id != img.id]
    return out


def is_intermediate(img: Image, children: dict[str, builtins.list[Image]]) -> bool:
    """podman: untagged and a parent of another image (hidden by ``images`` without -a)."""
    return not img.names and bool(children.get(img.id))


def is_dangling(img: Image, children: dict[str, builtins.list[Image]]) -> bool:
    """podman: untagged and nobody's parent."""
    return not img.names and not children.get(img.id)


# -- filters -------------------------------------------------------------------------------------------
def _glob(pattern: str) -> re.Pattern[str]:
    """Docker's path.Match: ``*`` and ``?`` do not cross ``/``."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                raise UsageError(f"invalid reference filter {pattern!r}: unterminated [")
            body = pattern[i + 1 : j]
            if body.startswith("^") or body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body}]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _reference_forms(name: str) -> set[str]:
    repo, tag = naming.split_name(name)
    forms = {name, repo, familiar(name), familiar(repo)}
    if repo.startswith("localhost/"):
        short = repo[len("localhost/") :]
        forms |= {short, f"{short}:{tag}"}
    return forms


def name_matches(name: str, pattern: str) -> bool:
    """Whether stored name ``name`` matches a reference filter (docker's globs, podman's short forms)."""
    rx = _glob(pattern)
    if any(rx.match(f) for f in _reference_forms(name)):
        return True
    # podman: a short pattern also matches a name whose path ends in /PATTERN
    pat_repo, pat_tag = naming.split_name(pattern) if ":" in pattern else (pattern, "")
    if "/" not in pat_repo and not any(ch in pattern for ch in "*?["):
        repo, tag = naming.split_name(name)
        return repo.endswith("/" + pat_repo) and (not pat_tag or pat_tag == tag)
    return False


def _matches_reference(img: Image, pattern: str) -> bool:
    if any(name_matches(n, pattern) for n in img.names):
        return True
    rx = _glob(pattern)
    return any(rx.match(ref) or rx.match(familiar(ref)) for ref in img.repo_digests)


def _parse_until(value: str) -> float:
    """``until=``: a duration (``24h``, ``90m``, ``1h30m``) before now, an RFC 3339 time, or a Unix time."""
    v = value.strip()
    if re.fullmatch(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", v):
        units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
        secs = sum(float(n) * units[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)", v))
        return time.time() - secs
    if re.fullmatch(r"\d+(\.\d+)?", v):
        return float(v)
    ts = parse_time(v if "T" in v else v + "T00:00:00Z")
    if ts == 0.0:
        raise UsageError(
            f"invalid until filter {value!r}: expected a duration (24h), RFC 3339 time or Unix time"
        )
    return ts


def parse_filters(filters: Iterable[str]) -> dict[str, builtins.list[str]]:
    """``key=value`` strings into a dict of lists; unknown keys are a usage error."""
    out: dict[str, builtins.list[str]] = {}
    for f in filters:
        key, sep, value = f.partition("=")
        key = key.strip().lower()
        if not sep:
            raise UsageError(f"invalid filter {f!r}: expected key=value")
        if key not in FILTER_KEYS:
            raise UsageError(f"invalid filter {key!r} (supported: {', '.join(FILTER_KEYS)})")
        out.setdefault(key, []).append(value)
    return out


def _bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise UsageError(f"invalid {key} filter {value!r}: expected true or false")


def apply_filters(
    store: Store,
    images: builtins.list[Image],
    filters: dict[str, builtins.list[str]],
    labels: Callable[[Image], dict[str, str]],
) -> builtins.list[Image]:
    children = children_map(store.images()) if ({"dangling", "intermediate"} & filters.keys()) else {}
    out = []
    anchors: dict[str, float] = {}
    for key in ("before", "since", "after"):
        for v in filters.get(key, []):
            anchors[f"{key}={v}"] = store.lookup(v).created_ts
    untils = [_parse_until(v) for v in filters.get("until", [])]
    for img in images:
        ok = True
        for key, values in filters.items():
            if key == "dangling":
                ok = all(is_dangling(img, children) == _bool(key, v) for v in values)
            elif key == "intermediate":
                ok = all(is_intermediate(img, children) == _bool(key, v) for v in values)
            elif key == "readonly":
                ok = all(_bool(key, v) is False for v in values)
            elif key == "containers":
                ok = all(bool(img.holders) == _bool(key, v) for v in values)
            elif key == "label":
                have = labels(img)
                for v in values:
                    k, sep, want = v.partition("=")
                    if k not in have or (sep and have[k] != want):
                        ok = False
            elif key == "reference":
                ok = any(_matches_reference(img, v) for v in values)
            elif key == "before":
                ok = any(img.created_ts < anchors[f"before={v}"] for v in values)
            elif key in ("since", "after"):
                ok = any(img.created_ts > anchors[f"{key}={v}"] for v in values)
            elif key == "until":
                ok = any(img.created_ts < u for u in untils)
            elif key == "id":
                ok = any(img.id.encoded.startswith(v.removeprefix("sha256:")) for v in values)
            elif key == "digest":
                ok = any(v in img.digests for v in values)
            if not ok:
                break
        if ok:
            out.append(img)
    return out


def config_labels(store: Store, img: Image) -> dict[str, str]:
    try:
        cfg = store.config(img)
    except Exception:  # a broken config must not break a listing
        return {}
    labels = (cfg.get("config") or {}).get("Labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


# -- verbs ------------------------------------------------------------------------------------------------
def list_images(
    store: Store, *, all: bool = False, filters: Iterable[str] = (), names: Iterable[str] = ()
) -> builtins.list[Image]:
    """Images newest first; without ``all`` intermediate images are hidden (as podman)."""
    parsed = parse_filters(filters)
    for n in names:
        parsed.setdefault("reference", []).append(n)
    images = store.images()
    if not all:
        children = children_map(images)
        images = [i for i in images if not is_intermediate(i, children)]
    if parsed:
        images = apply_filters(store, images, parsed, lambda i: config_labels(store, i))
    return images


def tag(store: Store, source: str, targets: Iterable[str]) -> Image:
    image = store.lookup(source)
    names = [naming.tag_name(t) for t in targets]
    for n in names:
        store.tag(image.id, n)
    return store.get(image.id)


def untag(store: Store, source: str, targets: Iterable[str]) -> builtins.list[str]:
    """podman untag: remove the given names (all names when none given) from the image."""
    image = store.lookup(source)
    targets = builtins.list(targets)
    removed = []
    if not targets:
        for n in image.names:
            store.untag(n)
            removed.append(n)
        return removed
    for t in targets:
        n = naming.tag_name(t)
        if n not in image.names:
            raise ImageNotFound(f"{t}: tag not known on image {image.short_id}")
        store.untag(n)
        removed.append(n)
    return removed


def remove(
    store: Store,
    names: Sequence[str],
    *,
    force: bool = False,
    all: bool = False,
    on_in_use: Callable[[Image], None] | None = None,
) -> RemoveReport:
    """rmi with Docker's untag-versus-delete rules; errors are collected per name, not raised.

    ``on_in_use(image)`` is called before a forced removal of an image with holders (the engine
    can remove its containers there, as podman does).
    """
    report = RemoveReport()
    targets: builtins.list[str] = builtins.list(names)
    if all:
        targets = [i.id for i in store.images()]
    for text in targets:
        try:
            _remove_one(store, text, force, on_in_use, report.events)
        except (ImageNotFound, ImageInUse, AmbiguousImage, UsageError) as e:
            report.errors.append(e)
        except Exception as e:  # keep going with the other names, as docker does
            if isinstance(e, KeyboardInterrupt):
                raise
            report.errors.append(e)
    return report


def _remove_one(
    store: Store,
    text: str,
    force: bool,
    on_in_use: Callable[[Image], None] | None,
    events: builtins.list[RemoveEvent],
) -> None:
    resolved = store.resolve(text)
    img = resolved.image
    if resolved.by == "name":
        # Docker's rule: the digests a pull recorded for the name's own repository are not
        # references of their own; removing the repository's last tag takes them along, and the
        # image is deleted (holders checked) when nothing else names it
        repo = naming.split_name(resolved.ref)[0]
        same_repo = [d for d in img.explicit_repo_digests if d.partition("@")[0] == repo]
        others = [n for n in img.names if n != resolved.ref]
        others += [d for d in img.explicit_repo_digests if d not in same_repo]
        if others:
            store.untag(resolved.ref)
            events.append(RemoveEvent("untagged", resolved.ref))
            if not any(naming.split_name(n)[0] == repo for n in others):
                for d in same_repo:
                    store.remove_repo_digest(img.id, d)
                    events.append(RemoveEvent("untagged", d))
            return
        _check_holders(img, force, on_in_use)
        store.untag(resolved.ref)
        events.append(RemoveEvent("untagged", resolved.ref))
        events.extend(RemoveEvent("untagged", d) for d in same_repo)
        store.remove_image(img.id, force=True)
        events.append(RemoveEvent("deleted", img.id))
        return
    references = builtins.list(img.names) + [r for r in img.explicit_repo_digests if r not in img.names]
    if resolved.by == "digest":
        if len(references) > 1:  # one of several references: only that one goes
            store.remove_repo_digest(img.id, resolved.ref)
            events.append(RemoveEvent("untagged", resolved.ref))
            return
        _check_holders(img, force, on_in_use)
        store.remove_repo_digest(img.id, resolved.ref)
        events.append(RemoveEvent("untagged", resolved.ref))
        store.remove_image(img.id, force=True)
        events.append(RemoveEvent("deleted", img.id))
        return
    repos = {naming.split_name(n)[0] for n in img.names}
    if len(repos) > 1 and not force:
        raise ImageInUse(
            f"unable to delete image {img.short_id} (must be forced): it is referenced in "
            f"multiple repositories ({', '.join(sorted(repos))})"
        )
    _check_holders(img, force, on_in_use)
    for n in img.names:
        events.append(RemoveEvent("untagged", n))
    store.remove_image(img.id, force=True)
    events.append(RemoveEvent("deleted", img.id))


def _check_holders(img: Image, force: bool, on_in_use: Callable[[Image], None] | None) -> None:
    if not img.holders:
        return
    if not force:
        raise ImageInUse(
            f"image {img.short_id} is in use by container(s) "
            f"{', '.join(h[:12] for h in img.holders)}: stop and remove them first, or use -f",
            img.holders,
        )
    if on_in_use is not None:
        on_in_use(img)


def prune(store: Store, *, all: bool = False, filters: Iterable[str] = ()) -> builtins.list[Image]:
    """Remove dangling images (``all``: every image no container uses), repeating while removing
    children turns parents dangling; then gc the blobs."""
    parsed = parse_filters(filters)
    removed: builtins.list[Image] = []
    while True:
        images = store.images()
        children = children_map(images)
        if all:
            cands = [i for i in images if not i.holders]
        else:
            cands = [i for i in images if is_dangling(i, children) and not i.holders]
        if parsed:
            cands = apply_filters(store, cands, parsed, lambda i: config_labels(store, i))
        cands = [c for c in cands if c.id not in {r.id for r in removed}]
        if not cands:
            break
        for img in cands:
            try:
                removed.append(store.remove_image(img.id))
            except (ImageInUse, ImageNotFound):
                continue  # a container grabbed it, or another process removed it: fine
    store.gc()
    return removed


# -- inspect and history ---------------------------------------------------------------------------------
_DOCKER_CONFIG_KEYS = (
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Healthcheck",
    "ArgsEscaped",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "OnBuild",
    "Labels",
    "StopSignal",
    "Shell",
)
_CONFIG_DEFAULTS: dict[str, Any] = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Env": None,
    "Cmd": None,
    "Image": "",
    "Volumes": None,
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": None,
    "Labels": None,
}


def inspect(store: Store, text: str) -> dict[str, Any]:
    """Docker's image-inspect JSON shape, with podman's extra keys (Digest, Labels, History ...)."""
    img = store.lookup(text)
    cfg = store.config(img)
    manifest = store.manifest(img)
    c = cfg.get("config") or {}
    config: dict[str, Any] = {}
    for k in _DOCKER_CONFIG_KEYS:
        if k in c:
            config[k] = c[k]
        elif k in _CONFIG_DEFAULTS:
            config[k] = _CONFIG_DEFAULTS[k]
    for k, v in c.items():  # anything else the config carries
        config.setdefault(k, v)
    history = cfg.get("history") or []
    comment = cfg.get("comment")
    if comment is None:
        comment = history[-1].get("comment", "") if history and isinstance(history[-1], dict) else ""
    out: dict[str, Any] = {
        "Id": img.id,
        "Digest": img.manifest_digest,
        "RepoTags": builtins.list(img.names),
        "RepoDigests": builtins.list(img.repo_digests),
        "Parent": "",
        "Comment": comment,
        "Created": cfg.get("created") or img.created,
        "DockerVersion": cfg.get("docker_version", ""),
        "Author": cfg.get("author", ""),
        "Config": config,
        "Architecture": cfg.get("architecture", ""),
    }
    if cfg.get("variant"):
        out["Variant"] = cfg["variant"]
    out["Os"] = cfg.get("os", "")
    if cfg.get("os.version"):
        out["OsVersion"] = cfg["os.version"]
    out.update(
        {
            "Size": img.size,
            "VirtualSize": img.size,
            "RootFS": {
                "Type": (cfg.get("rootfs") or {}).get("type", "layers"),
                "Layers": [x.diff_id for x in img.layers],
            },
            "Labels": c.get("Labels"),
            "Annotations": manifest.annotations or {},
            "ManifestType": img.manifest_media_type,
            "User": c.get("User", ""),
            "History": history,
            "Containers": len(img.holders),
        }
    )
    return out


def history(store: Store, text: str) -> builtins.list[HistoryEntry]:
    """Newest first, as ``docker history``: one row per config history entry, sized by its layer."""
    img = store.lookup(text)
    cfg = store.config(img)
    raw = [h for h in (cfg.get("history") or []) if isinstance(h, dict)]
    if not raw:  # no history: one anonymous row per layer
        raw = [{"created": "", "created_by": ""} for _ in img.layers]
    all_images = store.images()
    top_of: dict[str, Image] = {}
    for other in all_images:
        if other.layers:
            top_of.setdefault(other.top_layer, other)
    if img.layers:
        top_of[img.top_layer] = img
    rows: builtins.list[HistoryEntry] = []
    li = sum(1 for h in raw if not h.get("empty_layer")) - 1
    li = min(li, len(img.layers) - 1)
    used: set[str] = set()
    for i, h in enumerate(reversed(raw)):
        empty = bool(h.get("empty_layer"))
        layer = img.layers[li] if 0 <= li < len(img.layers) else None
        ident = "<missing>"
        tags: tuple[str, ...] = ()
        if i == 0:
            ident, tags = img.id, img.names
            used.add(img.id)
        elif layer is not None and not empty:
            owner = top_of.get(layer.chain_id)
            if owner is not None and owner.id not in used:
                ident, tags = owner.id, owner.names
                used.add(owner.id)
        created = str(h.get("created") or "")
        rows.append(
            HistoryEntry(
                id=ident,
                created=created,
                created_ts=parse_time(created),
                created_by=str(h.get("created_by") or ""),
                size=0 if empty or layer is None else layer.diff_size,
                comment=str(h.get("comment") or ""),
                empty_layer=empty,
                tags=tags,
            )
        )
        if not empty:
            li -= 1
    return rows
