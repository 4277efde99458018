"""``pallet pull`` and ``pallet push`` (also ``pallet image pull/push``), with podman's flags and output.

Progress goes to stderr (bars on a terminal, plain lines otherwise, nothing with ``-q``); the
pulled image's ID, or nothing for a push, goes to stdout, as podman prints them.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pallet.context import Context


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-verify", nargs="?", const=True, default=None, type=_bool, metavar="BOOL",
                   help="require HTTPS and verify certificates (default: loopback and insecure "
                        "registries may use HTTP)")
    p.add_argument("--authfile", help="auth.json to use (default: $REGISTRY_AUTH_FILE, then the usual paths)")
    p.add_argument("--cert-dir", help="directory of CA certificates (*.crt) and client keys")
    p.add_argument("--creds", metavar="USER[:PASS]", help="credentials for the registry")
    p.add_argument("-q", "--quiet", action="store_true", help="print no progress")
    p.add_argument("--retry", type=int, metavar="N", help="retries on network errors and 429/5xx (default 3)")
    p.add_argument("--retry-delay", type=float, metavar="SECONDS", help="delay before the first retry")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="give up on a request after this long (default 30, $PALLET_REGISTRY_TIMEOUT)")


def register_pull(sub: argparse._SubParsersAction, verb: str = "pull") -> argparse.ArgumentParser:
    p = sub.add_parser(verb, help="pull an image from a registry",
                       description="Pull images from a registry into local storage, unpacked, ready to run.")
    p.add_argument("names", nargs="+", metavar="NAME[:TAG|@DIGEST]")
    _common(p)
    p.add_argument("--platform", help="OS/ARCH[/VARIANT] to choose from a multi-platform image")
    p.add_argument("--arch", help="architecture to choose (overrides the host's)")
    p.add_argument("--os", help="operating system to choose (default linux)")
    p.add_argument("--variant", help="architecture variant to choose")
    p.add_argument("-a", "--all-tags", action="store_true", help="pull every tag of the repository")
    p.set_defaults(func=_pull)
    return p


def register_push(sub: argparse._SubParsersAction, verb: str = "push") -> argparse.ArgumentParser:
    p = sub.add_parser(verb, help="push an image to a registry", description="Push an image to a registry.")
    p.add_argument("source", metavar="IMAGE")
    p.add_argument("destination", nargs="?", metavar="DESTINATION",
                   help="where to push (default: the image's name)")
    _common(p)
    p.add_argument("--format", "-f", dest="format", choices=["oci", "v2s2", "docker"],
                   help="manifest format to push (default: as stored)")
    p.add_argument("--digestfile", help="write the pushed manifest's digest to this file")
    p.add_argument("--chunk-size", type=int, metavar="BYTES",
                   help="upload blobs in chunks of this size (default: one request per blob)")
    p.set_defaults(func=_push)
    return p


def _transport(args: argparse.Namespace):
    from pallet.images.remote import Transport

    return Transport(timeout=args.timeout, retries=args.retry, retry_delay=args.retry_delay)


def _ctx(args: argparse.Namespace, ctx: Context) -> Context:
    from pathlib import Path

    if args.cert_dir:
        ctx = ctx.with_(cert_dir=Path(args.cert_dir))
    return ctx


def _platform(args: argparse.Namespace) -> str | None:
    if args.platform:
        return args.platform
    if args.arch or args.os or args.variant:
        from pallet.content import Platform

        host = Platform.host()
        parts = [args.os or "linux", args.arch or host.architecture]
        if args.variant:
            parts.append(args.variant)
        return "/".join(parts)
    return None


def _pull(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli import progress as _progress
    from pallet.images import remote

    ctx = _ctx(args, ctx)
    creds = remote.parse_creds(args.creds) if args.creds else None
    prog = _progress.create(sys.stderr, quiet=args.quiet)
    try:
        for name in args.names:
            kw = dict(platform=_platform(args), tls_verify=args.tls_verify, authfile=args.authfile,
                      creds=creds, progress=prog, transport=_transport(args))
            if args.all_tags:
                results = remote.pull_all_tags(name, ctx, **kw)
            else:
                results = [remote.pull(name, ctx, **kw)]
            for r in results:
                print(r.image.id.encoded)
    finally:
        prog.close()
    return 0


def _push(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli import progress as _progress
    from pallet.images import remote

    ctx = _ctx(args, ctx)
    creds = remote.parse_creds(args.creds) if args.creds else None
    prog = _progress.create(sys.stderr, quiet=args.quiet)
    try:
        digest = remote.push(args.source, args.destination, ctx, tls_verify=args.tls_verify,
                             authfile=args.authfile, creds=creds, progress=prog, format=args.format,
                             chunk_size=args.chunk_size, transport=_transport(args))
    finally:
        prog.close()
    if args.digestfile:
        from pallet.fsutil import atomic_write

        atomic_write(args.digestfile, str(digest).encode(), sync=False)
    return 0
