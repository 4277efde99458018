"""``pallet``: the engine's command line. It parses, calls the library, and renders; nothing else.

Start-up cost matters (``pallet run`` is benchmarked against podman), so only the module that
owns the verb being run is imported. Each CLI module exposes ``register(subparsers, verb)``,
which adds the parser for ``verb`` and sets ``func`` to a handler ``(args, ctx) -> int | None``.
argparse itself is imported only once ``pallet run`` has forked its monitor (pallet.cli.parser).
"""

from __future__ import annotations

import importlib
import os
import sys

from pallet.errors import PalletError, UsageError

# verb -> module that registers it. Groups (image, container, network ...) register their own subverbs.
COMMANDS: dict[str, str] = {
    # images (issue: foundation and images)
    "pull": "pallet.cli.images",
    "push": "pallet.cli.images",
    "images": "pallet.cli.images",
    "tag": "pallet.cli.images",
    "rmi": "pallet.cli.images",
    "history": "pallet.cli.images",
    "save": "pallet.cli.images",
    "load": "pallet.cli.images",
    "import": "pallet.cli.images",
    "login": "pallet.cli.auth",
    "logout": "pallet.cli.auth",
    "image": "pallet.cli.images",
    "inspect": "pallet.cli.inspect",
    # registry server
    "registry": "pallet.cli.registry",
    # containers (engine)
    "run": "pallet.cli.containers",
    "create": "pallet.cli.containers",
    "start": "pallet.cli.containers",
    "stop": "pallet.cli.containers",
    "kill": "pallet.cli.containers",
    "restart": "pallet.cli.containers",
    "rm": "pallet.cli.containers",
    "ps": "pallet.cli.containers",
    "logs": "pallet.cli.containers",
    "exec": "pallet.cli.containers",
    "wait": "pallet.cli.containers",
    "attach": "pallet.cli.containers",
    "cp": "pallet.cli.containers",
    "top": "pallet.cli.containers",
    "stats": "pallet.cli.containers",
    "port": "pallet.cli.containers",
    "rename": "pallet.cli.containers",
    "pause": "pallet.cli.containers",
    "unpause": "pallet.cli.containers",
    "commit": "pallet.cli.containers",
    "export": "pallet.cli.containers",
    "container": "pallet.cli.containers",
    "volume": "pallet.cli.volumes",
    "network": "pallet.cli.network",
    "system": "pallet.cli.system",
    "info": "pallet.cli.system",
    "version": "pallet.cli.system",
}

_GLOBAL_WITH_VALUE = {"--root", "--runroot", "--log-level", "--storage-driver", "--registries-conf",
                      "--runtime"}


_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class _ConfigureLoggingOnImport:
    """A meta-path finder that configures :mod:`logging` right after the first module imports
    it. ``pallet run`` never logs on its way and importing logging costs ~8 ms of start-up
    (traceback, string, threading ...), so the CLI configures it only if something uses it."""

    def __init__(self, level: str) -> None:
        self.level = level

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name != "logging":
            return None
        sys.meta_path.remove(self)
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run, level = loader.exec_module, self.level

        def exec_module(module: object) -> None:
            run(module)
            module.basicConfig(level=level, format=_LOG_FORMAT)  # type: ignore[attr-defined]

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _configure_logging(level: str) -> None:
    if "logging" in sys.modules:
        sys.modules["logging"].basicConfig(level=level, format=_LOG_FORMAT)
    else:
        sys.meta_path.insert(0, _ConfigureLoggingOnImport(level))


def _find_verb(argv: list[str]) -> str | None:
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _GLOBAL_WITH_VALUE:
            skip = True
            continue
        if arg.startswith("-"):
            continue
        return arg
    return None


def _available(verbs: list[str]) -> list[str]:
    """Verbs whose module exists (components land one by one)."""
    out = []
    for verb in verbs:
        try:
            importlib.import_module(COMMANDS[verb])
        except ModuleNotFoundError as e:
            if e.name != COMMANDS[verb]:
                raise
            continue
        out.append(verb)
    return out


def gc_on() -> None:
    """Turn the cycle collector back on (the launcher starts with it off, see scripts/pallet),
    with what was imported so far frozen out of its passes."""
    import gc

    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def is_entry_process() -> bool:
    """Is this process the ``pallet`` command itself (not a library caller such as a test)?"""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == "pallet.cli.main":
        return True
    return os.path.basename(getattr(main, "__file__", "") or "") == "pallet"


def end_helpers() -> None:
    """Before the command exits, by any path: `run`'s network helper and a monitor never handed a
    container must not outlive it (see _prefork_monitor)."""
    networking = sys.modules.get("pallet.engine.networking")
    if networking is not None:
        networking.discard_helpers()
    launch = sys.modules.get("pallet.engine.launch")
    if launch is not None:
        launch.discard_preforked()


def _prefork_monitor(argv: list[str]) -> None:
    """``pallet run``: fork the container's monitor, and for a bridge network the network helper,
    before anything else is imported (see pallet.engine.launch.Launch and
    pallet.engine.networking.Helper). Not for ``--help``. The options are guessed from the raw
    command line (the container's own arguments may fool it: then a helper goes unused, or the
    CLI sets the network up itself, or a monitor imports a runtime it will not call)."""
    if "-h" in argv or "--help" in argv:
        return
    network, runtime = "bridge", ""  # the defaults (pallet-runtime when installed)
    for i, a in enumerate(argv):
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if a in ("--network", "--net"):
            network = value
        elif a.startswith(("--network=", "--net=")):
            network = a.partition("=")[2]
        elif a == "--runtime":
            runtime = value
        elif a.startswith("--runtime="):
            runtime = a.partition("=")[2]
    if network.split(":", 1)[0] not in ("none", "host", "container", "ns", "private", "slirp4netns"):
        from pallet.engine import networking

        networking.prefork_helper()  # first: its imports are the longest (~35 ms of pyroute2)
    from pallet.engine import launch

    launch.prefork(preload=runtime in ("", "pallet-runtime"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verb = _find_verb(argv)
    if verb == "run" and is_entry_process():
        _prefork_monitor(argv)
    try:
        if verb in COMMANDS:
            verbs = [verb] if _available([verb]) else []
            if not verbs:
                raise UsageError(f"pallet: '{verb}' is not available in this build")
        elif verb is None or verb == "help":
            verbs = _available(list(COMMANDS))
        else:
            raise UsageError(f"pallet: unknown command {verb!r}; see 'pallet --help'")
        from pallet.cli.parser import build_parser

        parser = build_parser(verbs)
        args = parser.parse_args(argv if verb != "help" else ["--help"])
        if args.version:
            from pallet import __version__

            print(f"pallet version {__version__}")
            return 0
        level = "warning" if args.log_level == "warn" else args.log_level
        _configure_logging(level.upper())
        func = getattr(args, "func", None)
        if func is None:  # no verb, or a group (image, network ...) without its subverb: as podman
            parser.print_help(sys.stderr)
            raise UsageError("missing command; see 'pallet --help'")
        from pathlib import Path

        from pallet.context import Context

        paths = {k: Path(v) for k, v in (("root", args.root), ("runroot", args.runroot),
                                         ("registries_conf", args.registries_conf)) if v}
        ctx_args = {k: v for k, v in (("storage_driver", args.storage_driver),
                                      ("runtime", args.runtime)) if v is not None}
        ctx_args.update(paths)
        ctx = Context(**ctx_args)
        if verb != "run":  # `run` does it once the engine is imported (cmd_run)
            gc_on()
        rc = func(args, ctx)
        return int(rc or 0)
    except PalletError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (pallet images | head): not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0
    finally:
        end_helpers()


if __name__ == "__main__":
    sys.exit(main())
