"""``pallet``'s argument parser: argparse, with docker's exit status for bad usage and a help
formatter that asks for the terminal's width once. Its own module so that ``pallet run`` forks
its monitor before argparse is imported (the monitor never needs it)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pallet.errors import UsageError

TYPE_CHECKING = False  # typing costs an import on pallet run's path; annotations are strings
if TYPE_CHECKING:
    from typing import Any


class Formatter(argparse.HelpFormatter):
    """argparse's help formatter with the terminal's width looked up once per process, as
    ``shutil.get_terminal_size`` does ($COLUMNS, then stdout's terminal, else 80 columns), but
    without importing shutil (with bz2 and lzma, ~2 ms of ``pallet run``): argparse builds a
    formatter for every add_argument, and ``run`` has ~70 options."""

    _width: int | None = None

    def __init__(self, prog: str, **kw: Any) -> None:
        if Formatter._width is None:
            try:
                columns = int(os.environ.get("COLUMNS", ""))
            except ValueError:
                columns = 0
            if columns <= 0:
                try:
                    columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
                except (AttributeError, ValueError, OSError):
                    columns = 0
            Formatter._width = max(40, (columns or 80) - 2)
        kw.setdefault("width", Formatter._width)
        super().__init__(prog, **kw)


class Parser(argparse.ArgumentParser):
    """argparse with docker's exit status for bad usage (125) instead of 2, and :class:`Formatter`."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kw)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _untranslated(message: str) -> str:
    return message


def _untranslated_plural(singular: str, plural: str, n: int) -> str:
    return singular if n == 1 else plural


# argparse looks every message up through gettext, which stats the locale directories for
# catalogues CPython does not ship (and imports locale) on each call: ~1.5 ms of every command.
argparse._ = _untranslated  # type: ignore[attr-defined]
argparse.ngettext = _untranslated_plural  # type: ignore[attr-defined]


def build_parser(verbs: list[str]) -> Parser:
    from pallet.cli.main import COMMANDS

    parser = Parser(prog="pallet", description="Manage images, containers and registries, with no daemon.")
    parser.add_argument("--root", help="storage root (default /var/lib/pallet, $PALLET_ROOT)")
    parser.add_argument("--runroot", help="runtime state (default /run/pallet, $PALLET_RUNROOT)")
    parser.add_argument("--storage-driver", help="graph driver: overlay, vfs, fuse-overlayfs")
    parser.add_argument("--registries-conf", help="registries.conf to use instead of the system's")
    parser.add_argument("--runtime", help="OCI runtime for containers (default pallet-runtime)")
    parser.add_argument("--log-level", default=os.environ.get("PALLET_LOG_LEVEL", "warning"),
                        choices=["debug", "info", "warning", "warn", "error", "critical"],
                        help="log messages at and above this level (default warning)")
    parser.add_argument("-v", "--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for verb in verbs:
        importlib.import_module(COMMANDS[verb]).register(sub, verb)
    return parser
