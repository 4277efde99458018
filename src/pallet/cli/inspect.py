"""``pallet inspect``: low-level JSON of images now, containers (and more) as the engine adds them.

Each object type has an *inspector*: ``fn(name, ctx) -> dict`` that raises a ``NotFound`` error
when ``name`` is not of its type. Without ``--type`` the types are tried in docker's order
(container, image, volume, network). A component adds its type with one line in ``INSPECTORS``
("type": "module:function"); the module is imported only when used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pallet.errors import NotFound, UsageError

if TYPE_CHECKING:
    from pallet.context import Context

Inspector = Callable[[str, "Context"], dict[str, Any]]

INSPECTORS: dict[str, str] = {
    "container": "pallet.cli.containers:inspect_data",
    "image": "pallet.cli.images:image_inspect_data",
    "volume": "pallet.cli.volumes:inspect_data",
}
ORDER = ("container", "image", "volume", "network")


def register(subparsers: argparse._SubParsersAction, verb: str) -> None:
    p = subparsers.add_parser(
        verb,
        help="display low-level information on objects",
        description="Display detailed information on images (and other objects).",
    )
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("-f", "--format", help="Go template, or 'json' (default)")
    p.add_argument("--type", help=f"only objects of this type ({', '.join(ORDER)})")
    p.add_argument("-s", "--size", action="store_true", help="include sizes (always included for images)")
    p.set_defaults(func=_inspect)


def inspector(kind: str) -> Inspector:
    try:
        target = INSPECTORS[kind]
    except KeyError:
        known = ", ".join(k for k in ORDER if k in INSPECTORS)
        raise UsageError(f"unknown --type {kind!r} (available: {known})") from None
    module, _, fn = target.partition(":")
    return getattr(importlib.import_module(module), fn)


def _inspect(args: argparse.Namespace, ctx: Context) -> int:
    kinds = [args.type] if args.type else [k for k in ORDER if k in INSPECTORS]
    return emit(args.names, args.format, [(k, inspector(k)) for k in kinds], ctx)


def emit(
    names: Sequence[str], fmt: str | None, inspectors: Sequence[tuple[str, Inspector]], ctx: Context
) -> int:
    """Inspect each name with the first inspector that knows it; print a JSON array or the template.

    As docker, objects found are printed even when some names are not; then one error line per
    missing name and exit 125.
    """
    from pallet.cli import gotemplate

    found: list[dict[str, Any]] = []
    errors: list[str] = []
    for name in names:
        last: Exception | None = None
        for _kind, fn in inspectors:
            try:
                found.append(fn(name, ctx))
                break
            except NotFound as e:
                last = e
        else:
            errors.append(str(last) if len(inspectors) == 1 and last else f"no such object: {name}")
    if fmt and fmt.strip() != "json":
        out = gotemplate.render(fmt, found)  # template errors raise before anything is printed
        sys.stdout.write(out)
    else:
        sys.stdout.write(gotemplate.to_json(found, indent=4) + "\n")
    for e in errors:
        print(f"Error: {e}", file=sys.stderr)
    return 125 if errors else 0
