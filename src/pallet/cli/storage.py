"""``pallet image mount|unmount`` and ``pallet system df``: the storage verbs.

These register into the ``image`` and ``system`` groups owned by other CLI modules:
``register_image_mount(image_subparsers)`` and ``register_system_df(system_subparsers)``. The
image store knows names and which layers an image has; storage only knows layers, so the
groups pass two small providers:

* ``resolve(ctx, name) -> ImageRef`` for ``image mount IMAGE`` (default: IMAGE is a layer chain
  ID, or a unique prefix of one, in storage);
* ``list_images(ctx) -> list[ImageRef]`` for listings and ``system df`` (default: none).

Heavy modules are imported inside handlers so ``pallet image ls`` does not pay for them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pallet.errors import PalletError, StorageError

if TYPE_CHECKING:
    from pallet.context import Context
    from pallet.storage.layers import ImageRef, LayerStore

Resolve = Callable[["Context", str], "ImageRef"]
ListImages = Callable[["Context"], Sequence["ImageRef"]]


class NoSuchImage(StorageError):
    exit_code = 125


def _store(ctx: Context) -> LayerStore:
    from pallet.storage.layers import LayerStore

    return LayerStore(ctx)


def default_resolve(ctx: Context, name: str) -> ImageRef:
    """Without an image store: IMAGE names a layer by chain ID (``sha256:HEX``, HEX or a unique
    prefix of at least 4 hex digits); the view is of that layer and its parents."""
    from pallet.storage.layers import ImageRef

    store = _store(ctx)
    want = name.removeprefix("sha256:").lower()
    if len(want) >= 4 and all(c in "0123456789abcdef" for c in want):
        hits = [lay.chain_id for lay in store.layers()
                if lay.chain_id.removeprefix("sha256:").startswith(want)]
        if len(hits) == 1:
            return ImageRef(id=hits[0].removeprefix("sha256:"), top_chain_id=hits[0])
        if len(hits) > 1:
            raise NoSuchImage(f"image {name!r} is ambiguous: {len(hits)} layers match")
    raise NoSuchImage(f"{name}: image not known")


def _no_images(ctx: Context) -> Sequence[ImageRef]:
    return []


# --------------------------------------------------------------------------- image mount / unmount


def register_image_mount(image_subparsers: argparse._SubParsersAction, resolve: Resolve | None = None,
                         list_images: ListImages | None = None) -> None:
    """Add ``mount`` and ``unmount`` (alias ``umount``) to the ``image`` group."""
    resolve = resolve or default_resolve
    list_images = list_images or _no_images

    p = image_subparsers.add_parser(
        "mount", help="mount an image's root filesystem read-only and print its path",
        description="Mount a read-only merged view of each IMAGE and print its path. Mounts are "
                    "reference-counted: each mount needs an unmount. Without IMAGE, list mounted images.")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output of the listing")
    p.set_defaults(func=lambda args, ctx: _mount(args, ctx, resolve, list_images))

    u = image_subparsers.add_parser(
        "unmount", aliases=["umount"], help="release an image mount",
        description="Drop one mount reference of each IMAGE; the view is unmounted when none is left.")
    u.add_argument("images", nargs="*", metavar="IMAGE")
    u.add_argument("-a", "--all", action="store_true", help="unmount every mounted image")
    u.add_argument("-f", "--force", action="store_true", help="unmount even if other references remain")
    u.set_defaults(func=lambda args, ctx: _unmount(args, ctx, resolve))


def _mount(args: argparse.Namespace, ctx: Context, resolve: Resolve, list_images: ListImages) -> int:
    store = _store(ctx)
    if not args.images:
        mounted = store.image_mounts()
        names = {i.id: i.names for i in list_images(ctx)}
        rows = [(image_id, ",".join(names.get(image_id, ())) or "<none>", str(path))
                for image_id, path in sorted(mounted.items())]
        if args.format == "json":
            print(json.dumps([{"id": r[0], "Repositories": r[1].split(",") if r[1] != "<none>" else [],
                               "mountpoint": r[2]} for r in rows], indent=4))
        else:
            for image_id, names_s, path in rows:
                print(f"{image_id[:12]} {names_s} {path}")
        return 0
    failed = 0
    for name in args.images:
        try:
            ref = resolve(ctx, name)
            print(store.mount_image(ref.id, ref.top_chain_id))
        except PalletError as e:
            print(f"Error: {e}", file=sys.stderr)
            failed = e.exit_code
    return failed


def _unmount(args: argparse.Namespace, ctx: Context, resolve: Resolve) -> int:
    from pallet.errors import UsageError

    store = _store(ctx)
    if args.all:
        if args.images:
            raise UsageError("pallet image unmount: --all takes no IMAGE")
        for image_id in sorted(store.image_mounts()):
            store.unmount_image(image_id, force=True)
            print(image_id)
        return 0
    if not args.images:
        raise UsageError("pallet image unmount: IMAGE or --all is required")
    failed = 0
    for name in args.images:
        try:
            ref = resolve(ctx, name)
            if ref.id not in store.image_mounts():
                raise StorageError(f"image {name} is not mounted")
            store.unmount_image(ref.id, force=args.force)
            print(ref.id)
        except PalletError as e:
            print(f"Error: {e}", file=sys.stderr)
            failed = e.exit_code
    return failed


# --------------------------------------------------------------------------- system df


def register_system_df(system_subparsers: argparse._SubParsersAction, list_images: ListImages | None = None,
                       container_names: Callable[[Context], dict[str, str]] | None = None) -> None:
    """Add ``df`` to the ``system`` group. ``container_names(ctx)`` maps container IDs to names."""
    list_images = list_images or _no_images
    p = system_subparsers.add_parser(
        "df", help="show disk usage of images, containers and layers",
        description="Show how much disk images, containers and layers use; -v for each one, with "
                    "the bytes images share with others and the bytes unique to them.")
    p.add_argument("-v", "--verbose", action="store_true", help="show every image, container and layer")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=lambda args, ctx: _df(args, ctx, list_images, container_names))


def _pct(part: int, whole: int) -> str:
    return f"{(100 * part // whole) if whole else 0}%"


def _df(args: argparse.Namespace, ctx: Context, list_images: ListImages,
        container_names: Callable[[Context], dict[str, str]] | None) -> int:
    from pallet.cli.render import human_size, print_json, table, time_ago

    store = _store(ctx)
    images = list(list_images(ctx))
    du = store.disk_usage(images)
    names = container_names(ctx) if container_names else {}
    active_images = sum(1 for i in du.images if i.containers)
    cont_size = sum(c.size for c in du.containers)
    layers_active = sum(1 for x in du.layers if x.images or x.containers)
    layers_free = sum(x.size for x in du.layers if not x.images and not x.containers)
    summary = [
        ("Images", len(du.images), active_images, du.images_size, du.images_reclaimable),
        ("Containers", len(du.containers), len(du.containers), cont_size, 0),
        ("Layers", len(du.layers), layers_active, du.layers_size, layers_free),
    ]
    if args.format == "json":
        if args.verbose:
            print_json({"Images": [i.__dict__ for i in du.images],
                        "Containers": [c.__dict__ | {"name": names.get(c.id, "")} for c in du.containers],
                        "Layers": [x.__dict__ for x in du.layers]})
        else:
            for typ, total, active, size, reclaim in summary:
                print(json.dumps({"Type": typ, "TotalCount": total, "Active": active, "Size": size,
                                  "Reclaimable": reclaim}))
        return 0
    if not args.verbose:
        table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
              [(t, n, a, human_size(s), f"{human_size(r)} ({_pct(r, s)})") for t, n, a, s, r in summary])
        return 0
    print("Images space usage:\n")
    rows = []
    for i in du.images:
        repo, tag = _split_name(i.names[0]) if i.names else ("<none>", "<none>")
        rows.append((repo, tag, i.id.removeprefix("sha256:")[:12], time_ago(i.created) if i.created else "",
                     human_size(i.size), human_size(i.shared), human_size(i.unique), i.containers))
    table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"],
          rows)
    print("\nContainers space usage:\n")
    table(["CONTAINER ID", "IMAGE", "SIZE", "NAMES"],
          [(c.id[:12], (c.image_id or "").removeprefix("sha256:")[:12], human_size(c.size),
            names.get(c.id, "")) for c in du.containers])
    print("\nLayers space usage:\n")
    table(["CHAIN ID", "DIFF ID", "SIZE", "IMAGES", "CONTAINERS"],
          [(x.chain_id.removeprefix("sha256:")[:12], x.diff_id.removeprefix("sha256:")[:12],
            human_size(x.size), x.images, x.containers) for x in du.layers])
    return 0


def _split_name(name: str) -> tuple[str, str]:
    base, _, digest = name.partition("@")
    if digest:
        return base, "<none>"
    slash = base.rfind("/")
    colon = base.rfind(":")
    if colon > slash:
        return base[:colon], base[colon + 1:]
    return base, "<none>"
