"""``pallet volume create|ls|inspect|rm|prune``: parsing and rendering (the work: pallet.engine.volumes)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from pallet.errors import PalletError

if TYPE_CHECKING:
    from pallet.context import Context


def cmd_create(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import volumes
    from pallet.engine.options import parse_kv_list

    if args.name and args.name_opt and args.name != args.name_opt:
        raise PalletError(f"conflicting volume names: {args.name} and --name {args.name_opt}")
    vol = volumes.create(
        args.name or args.name_opt,
        ctx,
        driver=args.driver,
        labels=parse_kv_list(args.label, "label"),
        options=parse_kv_list(args.opt, "option"),
    )
    print(vol.name)
    return 0


def cmd_ls(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli import render
    from pallet.cli.containers import print_formatted
    from pallet.engine import volumes

    vols = volumes.list_volumes(ctx, args.filter)
    if args.quiet:
        for v in vols:
            print(v["Name"])
        return 0
    if args.format:
        print_formatted(
            args.format if args.format != "json" else "{{json .}}",
            vols,
            {"Name": "VOLUME NAME", "Driver": "DRIVER", "Mountpoint": "MOUNTPOINT"},
        )
        return 0
    render.table(["DRIVER", "VOLUME NAME"], [[v["Driver"], v["Name"]] for v in vols])
    return 0


def inspect_data(name: str, ctx: Context) -> dict[str, Any]:
    """A volume's inspect JSON with its maps marked for Go templates (the top-level ``inspect``)."""
    from pallet.cli.gotemplate import NIL_MAP, GoMap
    from pallet.engine import volumes

    v = volumes.inspect(name, ctx)
    for key in ("Labels", "Options"):
        if key in v:
            v[key] = GoMap(v[key]) if isinstance(v[key], dict) else NIL_MAP if v[key] is None else v[key]
    return v


def cmd_inspect(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli import gotemplate
    from pallet.engine.errors import NoSuchVolume

    found: list[dict[str, Any]] = []
    errors: list[str] = []
    for name in args.volumes:
        try:
            found.append(inspect_data(name, ctx))
        except NoSuchVolume as e:
            errors.append(str(e))
    if args.format and args.format.strip() != "json":
        sys.stdout.write(gotemplate.render(args.format, found))  # template errors: before any output
    else:
        sys.stdout.write(gotemplate.to_json(found, indent=4) + "\n")
    for e in errors:
        print(f"Error: {e}", file=sys.stderr)
    return 1 if errors else 0


def cmd_rm(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import volumes

    rc = 0
    for name in args.volumes:
        try:
            volumes.remove(name, ctx, force=args.force)
        except PalletError as e:
            print(f"Error: {e}", file=sys.stderr)
            rc = rc or (1 if "no such" in str(e) else e.exit_code)
            continue
        print(name)
    return rc


def cmd_prune(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli import render
    from pallet.engine import volumes

    if not args.force:
        what = (
            "all volumes not used by at least one container"
            if args.all
            else "all anonymous local volumes not used by at least one container"
        )
        sys.stdout.write(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    removed, reclaimed = volumes.prune(ctx, all_volumes=args.all, filters=args.filter)
    if removed:
        print("Deleted Volumes:")
        for n in removed:
            print(n)
        print()
    print(f"Total reclaimed space: {render.human_size(reclaimed)}")
    return 0


def register(subparsers: Any, verb: str) -> None:
    p = subparsers.add_parser("volume", help="manage volumes")
    sub = p.add_subparsers(dest="volume_command", metavar="COMMAND", parser_class=type(p))
    c = sub.add_parser("create", help="create a volume")
    c.add_argument("-d", "--driver", default="local", help="volume driver (local)")
    c.add_argument("--name", dest="name_opt", help="volume name")
    c.add_argument("-l", "--label", action="append", default=[], help="set a label KEY=VALUE")
    c.add_argument("-o", "--opt", action="append", default=[], help="driver option: type=, device=, o=")
    c.add_argument("name", nargs="?", metavar="VOLUME")
    c.set_defaults(func=cmd_create)
    ls = sub.add_parser("ls", aliases=["list"], help="list volumes")
    ls.add_argument("-q", "--quiet", action="store_true", help="only names")
    ls.add_argument("-f", "--filter", action="append", default=[], help="dangling=, name=, label=, driver=")
    ls.add_argument("--format", help="json, or a Go template")
    ls.set_defaults(func=cmd_ls)
    i = sub.add_parser("inspect", help="show volumes' details")
    i.add_argument("-f", "--format", help="json, or a Go template")
    i.add_argument("volumes", nargs="+", metavar="VOLUME")
    i.set_defaults(func=cmd_inspect)
    r = sub.add_parser("rm", aliases=["remove"], help="remove volumes")
    r.add_argument("-f", "--force", action="store_true", help="ignore missing volumes")
    r.add_argument("volumes", nargs="+", metavar="VOLUME")
    r.set_defaults(func=cmd_rm)
    pr = sub.add_parser("prune", help="remove unused volumes")
    pr.add_argument("-a", "--all", action="store_true", help="all unused volumes, not just anonymous ones")
    pr.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    pr.add_argument("--filter", action="append", default=[], help="label=, label!=")
    pr.set_defaults(func=cmd_prune)
