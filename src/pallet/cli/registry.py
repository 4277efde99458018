"""``pallet registry serve|gc``: run the OCI distribution server, collect its garbage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pallet.context import Context
from pallet.errors import UsageError

# flag dest -> ServerConfig field, for the flags that override the config file
_OVERRIDES = ("addr", "root", "tls_cert", "tls_key", "htpasswd", "auth", "read_only", "anonymous_pull",
              "token_ttl", "workers", "threads", "service", "realm")


def register(subparsers: Any, verb: str) -> None:
    p = subparsers.add_parser(verb, help="run an OCI distribution registry server")
    sub = p.add_subparsers(dest="registry_command", metavar="COMMAND", parser_class=type(p))

    s = sub.add_parser("serve", help="serve the OCI distribution API (pushes and pulls)")
    s.add_argument("--config", type=Path, help="TOML file with the same settings as the flags")
    s.add_argument("--addr", help="HOST:PORT to listen on (default 127.0.0.1:5000)")
    s.add_argument("--root", type=Path, help="storage directory (default <pallet root>/registry)")
    s.add_argument("--tls-cert", type=Path, help="serve HTTPS with this PEM certificate")
    s.add_argument("--tls-key", type=Path, help="PKCS#8 PEM key of --tls-cert")
    s.add_argument("--htpasswd", type=Path, help="require logins from this htpasswd file (bcrypt)")
    s.add_argument("--auth", choices=["basic", "token"],
                   help="with --htpasswd: Basic auth on every request, or bearer tokens from /token")
    s.add_argument("--anonymous-pull", action="store_true", default=None,
                   help="let clients without credentials pull")
    s.add_argument("--read-only", action="store_true", default=None, help="refuse pushes and deletes")
    s.add_argument("--token-ttl", type=int, help="lifetime of issued tokens in seconds (default 300)")
    s.add_argument("--service", help="token service name (default pallet-registry)")
    s.add_argument("--realm", help="token realm URL to advertise (default this server's /token)")
    s.add_argument("--workers", type=int, help="worker processes (default 1)")
    s.add_argument("--threads", type=int, help="I/O threads per worker (default 1)")
    s.set_defaults(func=_serve)

    g = sub.add_parser("gc", help="delete blobs no manifest references, and stale uploads")
    g.add_argument("--config", type=Path, help="the server's TOML config (for its root)")
    g.add_argument("--root", type=Path, help="storage directory (default <pallet root>/registry)")
    g.add_argument("--dry-run", action="store_true", help="only report what would be deleted")
    g.add_argument("--grace", type=float, default=3600.0,
                   help="keep unreferenced blobs younger than this many seconds (default 3600: pushes "
                        "in progress upload blobs before their manifest)")
    g.add_argument("--upload-max-age", type=float,
                   help="remove uploads idle for longer than this many seconds (default 7 days)")
    g.set_defaults(func=_gc)
    p.set_defaults(func=None)


def _config(args: argparse.Namespace) -> Any:
    from pallet.registry.server.config import ServerConfig, load_file

    data = load_file(args.config) if getattr(args, "config", None) else {}
    for name in _OVERRIDES:
        value = getattr(args, name, None)
        if value is not None:
            data[name] = value
    return ServerConfig.from_dict(data, str(args.config or "flags"))


def _serve(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.registry.server.serve import serve

    cfg = _config(args)
    return serve(cfg, ctx)


def _gc(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli.render import human_size
    from pallet.registry.server.gc import collect
    from pallet.registry.server.layout import RegistryStore
    from pallet.registry.server.serve import resolve_root
    from pallet.registry.server.storage import FilesystemStorage

    cfg = _config(args)
    root = resolve_root(cfg, ctx)
    if not (root / "blobs").is_dir():
        raise UsageError(f"registry gc: {root} is not a registry root (no blobs/ directory)")
    store = RegistryStore(FilesystemStorage(root, fsync=cfg.fsync))
    max_age = args.upload_max_age if args.upload_max_age is not None else cfg.upload_max_age
    rep = collect(store, dry_run=args.dry_run, grace=args.grace, upload_max_age=max_age)
    verb = "would delete" if args.dry_run else "deleted"
    for d in rep.swept:
        print(f"{verb} blob {d}")
    for u in rep.uploads_removed:
        print(f"{verb} upload {u}")
    print(f"{rep.marked} blobs referenced; {verb} {len(rep.swept)} blobs ({human_size(rep.swept_bytes)}), "
          f"{rep.links_removed} stale links, {len(rep.uploads_removed)} uploads")
    return 0
