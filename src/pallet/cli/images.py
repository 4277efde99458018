"""``pallet images/tag/rmi/history/save/load/import`` and the ``image`` group, with docker/podman flags.

Parsing and rendering only; the work is in :mod:`pallet.images`. Heavy imports (rich, the store,
the archive code) happen inside handlers so ``pallet images`` starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pallet.errors import UsageError

if TYPE_CHECKING:
    from pallet.context import Context
    from pallet.store import Image

Handler = Callable[[argparse.Namespace, "Context"], "int | None"]

_IMAGES_HEADERS = {
    "ID": "IMAGE ID",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "Digest": "DIGEST",
    "VirtualSize": "SIZE",
    "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
    "Containers": "CONTAINERS",
}
_HISTORY_HEADERS = {
    "ID": "IMAGE",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "CreatedBy": "CREATED BY",
    "Size": "SIZE",
    "Comment": "COMMENT",
    "Tags": "TAGS",
}


# -- registration ----------------------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction, verb: str) -> None:
    builders: dict[str, Callable[[argparse._SubParsersAction, str], argparse.ArgumentParser]] = {
        "images": _images_parser,
        "tag": _tag_parser,
        "rmi": _rmi_parser,
        "history": _history_parser,
        "save": _save_parser,
        "load": _load_parser,
        "import": _import_parser,
        "image": _image_group,
    }
    if verb in ("pull", "push"):
        from pallet.cli import transfer

        (transfer.register_pull if verb == "pull" else transfer.register_push)(subparsers, verb)
        return
    builders[verb](subparsers, verb)


def _image_group(subparsers: argparse._SubParsersAction, verb: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        verb,
        help="manage images (ls, rm, tag, inspect, history, tree, save, load ...)",
        description="Manage images.",
    )
    sub = p.add_subparsers(dest="image_command", metavar="COMMAND")

    def missing(args: argparse.Namespace, ctx: Context) -> int:
        p.print_help(sys.stderr)
        raise UsageError("missing subcommand; see 'pallet image --help'")

    p.set_defaults(func=missing)
    _images_parser(sub, "ls", aliases=["list"])
    _rmi_parser(sub, "rm", aliases=["remove"])
    _tag_parser(sub, "tag")
    _untag_parser(sub, "untag")
    _inspect_parser(sub, "inspect")
    _history_parser(sub, "history")
    _tree_parser(sub, "tree")
    _save_parser(sub, "save")
    _load_parser(sub, "load")
    _import_parser(sub, "import")
    _prune_parser(sub, "prune")
    _exists_parser(sub, "exists")
    from pallet.cli import remote, storage, transfer
    from pallet.images import unpack

    transfer.register_pull(sub, "pull")
    transfer.register_push(sub, "push")
    remote.register_image_tags(sub)
    storage.register_image_mount(sub, resolve=unpack.resolve_for_storage, list_images=unpack.list_for_storage)
    return p


def _images_parser(
    sub: argparse._SubParsersAction, verb: str, aliases: list[str] | None = None
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        verb, aliases=aliases or [], help="list images", description="List images in local storage."
    )
    p.add_argument("reference", nargs="?", help="only images matching REPOSITORY[:TAG] (globs allowed)")
    p.add_argument(
        "-a", "--all", action="store_true", help="show all images (default hides intermediate images)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument("-n", "--noheading", action="store_true", help="do not print column headings")
    p.add_argument("--format", help="'json', 'table', 'table TEMPLATE' or a Go template")
    p.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        metavar="FILTER",
        help="dangling=, label=, reference=, before=, since=, until=, id=, digest=, intermediate=",
    )
    p.add_argument(
        "--sort",
        default="created",
        choices=["created", "id", "repository", "size", "tag"],
        help="sort by (default created)",
    )
    p.set_defaults(func=_images)
    return p


def _tag_parser(sub: argparse._SubParsersAction, verb: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        verb, help="add names to an image", description="Create tags TARGET that refer to SOURCE."
    )
    p.add_argument("source", metavar="SOURCE_IMAGE")
    p.add_argument("targets", nargs="+", metavar="TARGET_IMAGE")
    p.set_defaults(func=_tag)
    return p


def _untag_parser(sub: argparse._SubParsersAction, verb: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        verb,
        help="remove names from an image",
        description="Remove names from an image (all names when none given); the image stays.",
    )
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.set_defaults(func=_untag)
    return p


def _rmi_parser(
    sub: argparse._SubParsersAction, verb: str, aliases: list[str] | None = None
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        verb,
        aliases=aliases or [],
        help="remove images",
        description="Remove images. A name that is one of several only untags.",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument(
        "-f", "--force", action="store_true", help="remove even if in use or referenced by several repos"
    )
    p.add_argument("-a", "--all", action="store_true", help="remove all images")
    p.add_argument("-i", "--ignore", action="store_true", help="ignore images that do not exist")
    p.set_defaults(func=_rmi)
    return p


def _inspect_parser(sub: argparse._SubParsersAction, verb: str) -> argparse.ArgumentParser:
    p = sub.add_parser(verb, help="show image details", description="Display detailed information on images.")
    p.add_argument("names", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--format", help="Go template, or 'json' (default)")
    p.set_defaults(func=_image_inspect)
    return p


def _history_parser(sub: argparse._SubParsersAction, verb: str) -> argparse.ArgumentParser:
    p = sub.add_parser(verb, help="show the history of an image", description="Show the history of an image.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument(
        "-H",
        "--human",
        nargs="?",
        const="true",
        default="true",
        metavar="BOOL",
        help="sizes and dates in human-readable form (default true; -H=false for raw)",
    )
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--format", help="'json', 'table TEMPLATE' or a Go template")
    p.set_defaults(func=_history)
    return p


def _tree_parser(sub: argparse._SubParsersAction, verb: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        verb,
        help="show the layer graph of images",
        description="Show the layers of all images as a tree (shared layers once), or only IMAGE's branch.",
    )
    p.add_argument("image", nargs="?", metavar="IMAGE")
    p.add_argument("--dot", action="store_true", help="print a Graphviz digraph instead")
    p.add_argument("--no-trunc", action="store_true", help="full chain and image IDs")
    p.set_defaults(func=_tree)
    return p


def _save_parser(sub: argparse._SubParsersAction, verb: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        verb, help="save images to an archive", description="Save images to an archive or directory."
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", help="write to FILE (or DIR for the dir formats) instead of stdout")
    p.add_argument(
        "--format",
        default="docker-archive",
        choices=["docker-archive", "oci-archive", "oci-dir", "docker-dir"],
        help="archive format (default docker-archive)",
    )
    p.add_argument(
        "-m",
        "--multi-image-archive",
        action="store_true",
        help="save several images (further names are images, not extra tags)",
    )
    p.add_argument("--compress", action="store_true", help="gzip uncompressed layers (docker-dir only)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_save)
    return p


def _load_parser(sub: argparse._SubParsersAction, verb: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        verb,
        help="load images from an archive",
        description="Load images from a docker-archive or oci-archive (plain, gzip or zstd), "
        "an OCI layout or a dir: directory.",
    )
    p.add_argument("-i", "--input", help="read from FILE or DIR instead of stdin")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_load)
    return p


def _import_parser(sub: argparse._SubParsersAction, verb: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        verb,
        help="create an image from a rootfs tarball or directory",
        description="Create an image of one layer from a tarball (plain, gzip, zstd), a directory, "
        "a URL or - (stdin).",
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("reference", nargs="?", metavar="REFERENCE")
    p.add_argument(
        "-c",
        "--change",
        action="append",
        default=[],
        metavar="INSTRUCTION",
        help="apply CMD=, ENTRYPOINT=, ENV=, EXPOSE=, LABEL=, ONBUILD=, STOPSIGNAL=, USER=, VOLUME=, "
        "WORKDIR=",
    )
    p.add_argument("-m", "--message", default="", help="commit message for the history")
    p.add_argument("--arch", help="architecture of the image (default: the host's)")
    p.add_argument("--os", help="OS of the image (default linux)")
    p.add_argument("--variant", help="architecture variant")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_import)
    return p


def _prune_parser(sub: argparse._SubParsersAction, verb: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        verb,
        help="remove unused images",
        description="Remove dangling images (-a: every image no container uses), then unreferenced blobs.",
    )
    p.add_argument(
        "-a", "--all", action="store_true", help="remove all unused images, not just dangling ones"
    )
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], metavar="FILTER", help="until=, label=")
    p.set_defaults(func=_prune)
    return p


def _exists_parser(sub: argparse._SubParsersAction, verb: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        verb, help="exit 0 if an image exists, 1 if not", description="Check if an image exists."
    )
    p.add_argument("image", metavar="IMAGE")
    p.set_defaults(func=_exists)
    return p


# -- helpers ------------------------------------------------------------------------------------------------
def go_time(ts: float) -> str:
    """Go's time.String() in the local zone: ``2023-11-14 22:13:20 +0000 UTC``."""
    dt = datetime.fromtimestamp(ts).astimezone()
    frac = f".{dt.microsecond:06d}".rstrip("0") if dt.microsecond else ""
    return dt.strftime(f"%Y-%m-%d %H:%M:%S{frac} %z %Z")


def _since(img_created: str, ts: float) -> str:
    from pallet.cli.render import time_ago

    return time_ago(img_created) if img_created and ts else "N/A"


def _short(digest: str, no_trunc: bool) -> str:
    return digest if no_trunc else digest.split(":", 1)[-1][:12]


def _labels(ctx: Context, img: Image) -> dict[str, str]:
    from pallet.images import local, open_store

    with open_store(ctx) as s:
        return local.config_labels(s, img)


def _image_rows(
    images: list[Image],
    no_trunc: bool,
    labels: Callable[[Image], dict[str, str]] | None,
    patterns: list[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per name (docker's images output), with docker's and podman's template fields.

    With reference ``patterns``, only the names that match get a row (as docker).
    """
    from pallet.cli.gotemplate import GoMap
    from pallet.cli.render import human_size
    from pallet.images.local import name_matches
    from pallet.store import names as naming

    rows = []
    for img in images:
        shown = [n for n in img.names if not patterns or any(name_matches(n, p) for p in patterns)]
        pairs: list[tuple[str, str]] = [naming.split_name(n) for n in (shown or img.names)]
        if not pairs:
            repos = []
            for ref in img.explicit_repo_digests:
                repo = ref.split("@", 1)[0]
                if repo not in repos:
                    repos.append(repo)
            pairs = [(r, "<none>") for r in repos] or [("<none>", "<none>")]
        for repo, tag in pairs:
            row: dict[str, Any] = {
                "Containers": len(img.holders),
                "CreatedAt": go_time(img.created_ts) if img.created_ts else "N/A",
                "CreatedSince": _since(img.created, img.created_ts),
                "Digest": str(img.manifest_digest),
                "ID": _short(img.id, no_trunc),
                "Repository": repo,
                "SharedSize": "N/A",
                "Size": human_size(img.size),
                "Tag": tag,
                "UniqueSize": "N/A",
                "VirtualSize": human_size(img.size),
                # podman's extras
                "Id": img.id.encoded,
                "Names": list(img.names),
                "Dangling": not img.names,
                "ReadOnly": False,
                "History": list(img.names),
                "Created": int(img.created_ts),
                "Labels": GoMap(labels(img)) if labels else GoMap(),
            }
            rows.append(row)
    return rows


def _image_summary(img: Image, labels: dict[str, str]) -> dict[str, Any]:
    """podman's ``images --format json`` entry (one per image)."""
    from datetime import UTC

    return {
        "Id": img.id.encoded,
        "ParentId": "",
        "RepoTags": list(img.names) or None,
        "RepoDigests": list(img.repo_digests),
        "Size": img.size,
        "SharedSize": 0,
        "VirtualSize": img.size,
        "Labels": labels or None,
        "Containers": len(img.holders),
        "ReadOnly": False,
        "Names": list(img.names),
        "Digest": str(img.manifest_digest),
        "History": list(img.names),
        "Created": int(img.created_ts),
        "CreatedAt": datetime.fromtimestamp(img.created_ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if img.created_ts
        else "",
        "Dangling": not img.names,
        "Arch": img.architecture,
        "Os": img.os,
    }


def _print(text: str) -> None:
    sys.stdout.write(text)


def _bool_arg(value: str, flag: str) -> bool:
    v = str(value).lstrip("=").strip().lower()
    if v in ("true", "1", "yes", "t"):
        return True
    if v in ("false", "0", "no", "f"):
        return False
    raise UsageError(f"invalid value {value!r} for {flag}: expected true or false")


# -- handlers ------------------------------------------------------------------------------------------------
def _images(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli import gotemplate
    from pallet.images import local, open_store

    names = [args.reference] if args.reference else []
    with open_store(ctx) as s:
        imgs = local.list_images(s, all=args.all, filters=args.filter, names=names)
        want_labels = bool(args.format) and ("Labels" in args.format or args.format.strip() == "json")
        label_of = {i.id: local.config_labels(s, i) for i in imgs} if want_labels else {}
    if args.quiet:
        seen: list[str] = []
        for img in imgs:
            ident = _short(img.id, args.no_trunc)
            if ident not in seen:
                seen.append(ident)
        _print("".join(f"{i}\n" for i in seen))
        return 0
    fmt = args.format
    if fmt and fmt.strip() == "json":
        gotemplate_json = [_image_summary(i, label_of.get(i.id, {})) for i in imgs]
        _print(gotemplate.to_json(gotemplate_json, indent=4) + "\n")
        return 0
    patterns = names + [v for k, _, v in (f.partition("=") for f in args.filter) if k.strip() == "reference"]
    rows = _image_rows(
        imgs, args.no_trunc, (lambda i: label_of.get(i.id, {})) if want_labels else None, patterns
    )
    key = {"created": None, "id": "ID", "repository": "Repository", "size": None, "tag": "Tag"}[args.sort]
    if args.sort == "size":
        order = {i.id: i.size for i in imgs}
        rows.sort(key=lambda r: order.get(f"sha256:{r['Id']}", 0), reverse=True)
    elif key:
        rows.sort(key=lambda r: r[key])
    if fmt and not gotemplate.is_table(fmt):
        _print(gotemplate.render(fmt, rows))
        return 0
    if fmt and fmt.strip() != "table":
        body = fmt
    else:
        cols = (
            ["{{.Repository}}", "{{.Tag}}"]
            + (["{{.Digest}}"] if args.digests else [])
            + ["{{.ID}}", "{{.CreatedSince}}", "{{.Size}}"]
        )
        body = "table " + "\t".join(cols)
    out = gotemplate.render(body, rows, _IMAGES_HEADERS)
    if args.noheading:
        out = "".join(out.splitlines(keepends=True)[1:])
    _print(out)
    return 0


def _tag(args: argparse.Namespace, ctx: Context) -> None:
    from pallet import images

    images.tag(args.source, *args.targets, ctx=ctx)


def _untag(args: argparse.Namespace, ctx: Context) -> None:
    from pallet import images

    images.untag(args.image, *args.names, ctx=ctx)


def _rmi(args: argparse.Namespace, ctx: Context) -> int:
    from pallet import images
    from pallet.store import ImageInUse, ImageNotFound

    if not args.images and not args.all:
        raise UsageError("rmi needs at least one IMAGE (or --all)")
    if args.images and args.all:
        raise UsageError("rmi: give IMAGE names or --all, not both")
    report = images.remove(args.images, force=args.force, all=args.all, ctx=ctx,
                           on_in_use=lambda img: _remove_containers_of(img, ctx))
    if any(ev.action != "untagged" for ev in report.events):
        _gc_layers(ctx)
    for ev in report.events:
        if ev.action == "untagged":
            _print(f"Untagged: {ev.value}\n")
        else:
            _print(f"Deleted: {ev.value.split(':', 1)[-1]}\n")
    codes = set()
    for err in report.errors:
        if isinstance(err, ImageNotFound) and args.ignore:
            continue
        print(f"Error: {err}", file=sys.stderr)
        codes.add(1 if isinstance(err, ImageNotFound) else 2 if isinstance(err, ImageInUse) else 125)
    # podman's rmi exit codes: 1 no such image, 2 image in use, 125 anything else
    return 125 if 125 in codes else 2 if 2 in codes else 1 if 1 in codes else 0


def _remove_containers_of(img: Image, ctx: Context) -> None:
    """``rmi -f`` of an image containers use: remove those containers first, as podman does."""
    from pallet.engine import containers
    from pallet.engine.errors import NoSuchContainer

    for holder in img.holders:
        try:
            containers.remove(holder, force=True, ctx=ctx)
        except NoSuchContainer:
            pass  # a stale hold: the image goes anyway


def _gc_layers(ctx: Context) -> None:
    """Unpacked layers that no image and no container uses any more go with the images."""
    from pallet.images import unpack

    unpack.gc_layers(ctx)


def image_inspect_data(name: str, ctx: Context) -> dict[str, Any]:
    """The inspect object with Go types marked (maps, nil slices) so templates print as docker's."""
    from pallet import images
    from pallet.cli.gotemplate import NIL_MAP, NIL_SLICE, GoMap

    data = images.inspect(name, ctx=ctx)
    cfg = data.get("Config") or {}
    for k in ("Env", "Cmd", "Entrypoint", "OnBuild", "Shell"):
        if k in cfg and cfg[k] is None:
            cfg[k] = NIL_SLICE
    for k in ("Labels", "Volumes", "ExposedPorts"):
        if k in cfg:
            cfg[k] = NIL_MAP if cfg[k] is None else GoMap(cfg[k])
    for k in ("Labels", "Annotations"):
        data[k] = NIL_MAP if data.get(k) is None else GoMap(data[k])
    return data


def _image_inspect(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli.inspect import emit

    return emit(args.names, args.format, [("image", image_inspect_data)], ctx)


def _history(args: argparse.Namespace, ctx: Context) -> int:
    from pallet import images
    from pallet.cli import gotemplate
    from pallet.cli.render import human_size

    human = _bool_arg(args.human, "--human")
    entries = images.history(args.image, ctx=ctx)
    if args.quiet:
        _print("".join(f"{_short(e.id, args.no_trunc) if e.id != '<missing>' else e.id}\n" for e in entries))
        return 0
    if args.format and args.format.strip() == "json":
        _print(
            gotemplate.to_json(
                [
                    {
                        "id": e.id,
                        "created": e.created,
                        "createdBy": e.created_by,
                        "size": e.size,
                        "comment": e.comment,
                        "tags": list(e.tags) or None,
                    }
                    for e in entries
                ],
                indent=4,
            )
            + "\n"
        )
        return 0
    rows = []
    for e in entries:
        created_by = e.created_by
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        rows.append(
            {
                "ID": e.id if e.id == "<missing>" else _short(e.id, args.no_trunc),
                "CreatedSince": (_since(e.created, e.created_ts) if human else (e.created or "N/A")),
                "CreatedAt": go_time(e.created_ts) if e.created_ts else "N/A",
                "CreatedBy": created_by,
                "Size": human_size(e.size) if human else str(e.size),
                "Comment": e.comment,
                "Tags": list(e.tags),
            }
        )
    fmt = args.format
    if fmt and not gotemplate.is_table(fmt):
        _print(gotemplate.render(fmt, rows))
        return 0
    body = (
        fmt
        if fmt and fmt.strip() != "table"
        else "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    )
    _print(gotemplate.render(body, rows, _HISTORY_HEADERS))
    return 0


def _tree(args: argparse.Namespace, ctx: Context) -> None:
    from pallet import images
    from pallet.cli.render import human_size
    from pallet.images import layertree as t

    graph = images.tree(ctx, args.image)
    _print(t.render_dot(graph, human_size) if args.dot else t.render_text(graph, human_size, args.no_trunc))


def _save(args: argparse.Namespace, ctx: Context) -> None:
    from pallet import images

    output: Any = args.output
    if output is None:
        if args.format in ("oci-dir", "docker-dir"):
            raise UsageError(f"--format {args.format} needs -o DIR")
        if sys.stdout.isatty():
            raise UsageError("refusing to write an archive to a terminal; use -o FILE or redirect stdout")
        sys.stdout.flush()
        output = sys.stdout.buffer
    images.save(
        args.images,
        output,
        format=args.format,
        multi=args.multi_image_archive,
        compress=args.compress,
        ctx=ctx,
    )


def _load(args: argparse.Namespace, ctx: Context) -> None:
    from pallet import images

    source: Any = args.input
    if source is None:
        if sys.stdin.isatty():
            raise UsageError("refusing to read an archive from a terminal; use -i FILE or redirect stdin")
        source = sys.stdin.buffer
    for loaded in images.load(source, ctx=ctx):
        for line in loaded.names or (str(loaded.image.id),):
            _print(f"Loaded image: {line}\n")


def _import(args: argparse.Namespace, ctx: Context) -> None:
    from pallet import images
    from pallet.content.platform import Platform

    plat = None
    if args.arch or args.os or args.variant:
        host = Platform.host()
        plat = Platform(
            args.os or "linux",
            args.arch or host.architecture,
            args.variant or ("" if args.arch else host.variant),
        ).normalized()
    img = images.import_(
        args.source, args.reference, changes=args.change, message=args.message, platform=plat, ctx=ctx
    )
    _print(f"{img.id}\n")


def _prune(args: argparse.Namespace, ctx: Context) -> None:
    from pallet import images

    if not args.force:
        what = (
            "all images without at least one container associated with them"
            if args.all
            else "all dangling images"
        )
        sys.stderr.write(f"WARNING! This command removes {what}.\nAre you sure you want to continue? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return
    removed = images.prune(all=args.all, filters=args.filter, ctx=ctx)
    for img in removed:
        _print(f"{img.id.encoded}\n")
    if removed:
        _gc_layers(ctx)


def _exists(args: argparse.Namespace, ctx: Context) -> int:
    from pallet import images

    return 0 if images.exists(args.image, ctx=ctx) else 1
