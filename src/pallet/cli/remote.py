"""Commands that ask a registry without touching the local store: ``pallet image tags``.

The ``image`` group's owner calls :func:`register_image_tags` with its subparsers.
"""

from __future__ import annotations

import argparse
from typing import Any

from pallet.context import Context
from pallet.errors import UsageError


def register_image_tags(image_subparsers: Any) -> None:
    """Add ``tags [--tls-verify] [--authfile] [--cert-dir] REPO`` to the ``image`` group."""
    from pallet.cli.auth import add_tls_flags

    p = image_subparsers.add_parser(
        "tags",
        help="list the tags of a repository in a registry",
        description="List a repository's tags, one per line (short names are "
        "resolved through registries.conf).",
    )
    add_tls_flags(p)
    p.add_argument("--authfile", help="auth file to use (default ${XDG_RUNTIME_DIR}/containers/auth.json)")
    p.add_argument("repository", metavar="REPO", help="[REGISTRY/]NAME, without tag or digest")
    p.set_defaults(func=image_tags)


def image_tags(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli.auth import _ctx
    from pallet.config import registries
    from pallet.errors import InvalidReference, RegistryError
    from pallet.reference import parse
    from pallet.registry.client import AuthenticationError, NotFoundError, RegistryClient

    ctx = _ctx(args, ctx)
    ref = parse(args.repository)
    if ref.tag or ref.digest:
        raise UsageError(
            f"pallet image tags: {args.repository!r} must name a repository, without tag or digest"
        )
    conf = registries.load(ctx)
    candidates = conf.resolve(args.repository)
    if not candidates:
        raise InvalidReference(f"cannot resolve {args.repository!r}: no unqualified-search registry fits it")
    first_error: RegistryError | None = None
    for cand in candidates:
        conf.check_blocked(cand.name)
        tls = None if ctx.tls_verify is not None else conf.is_insecure(cand.domain)
        try:
            with RegistryClient(cand.domain, ctx, insecure=tls) as client:
                tags = list(client.tags(cand.path))
        except (NotFoundError, AuthenticationError) as e:
            if len(candidates) == 1:
                raise
            first_error = first_error or e
            continue
        for t in tags:
            print(t)
        return 0
    assert first_error is not None
    raise first_error
