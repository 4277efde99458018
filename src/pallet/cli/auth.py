"""``pallet login`` and ``pallet logout``: credentials in auth.json, as podman keeps them.

Login checks the credentials against the registry before storing anything, so a typo never
lands in auth.json. Only this module and the config/client it calls are imported.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pallet.context import Context
from pallet.errors import UsageError


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool, as podman's ``--tls-verify=false`` accepts it."""
    t = text.strip().lower()
    if t in ("1", "t", "true", "yes", "on"):
        return True
    if t in ("0", "f", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r} (true or false)")


def add_tls_flags(p: argparse.ArgumentParser, cert_dir: bool = True) -> None:
    p.add_argument(
        "--tls-verify",
        nargs="?",
        const=True,
        default=None,
        type=parse_bool,
        metavar="BOOL",
        help="require HTTPS and verify certificates (default: yes, except loopback and "
        "registries.conf insecure registries)",
    )
    if cert_dir:
        p.add_argument(
            "--cert-dir",
            metavar="DIR",
            help="use the certificates in DIR (*.crt CAs, *.cert/*.key client pair)",
        )


def register(subparsers: Any, verb: str) -> None:
    if verb == "login":
        p = subparsers.add_parser(
            "login",
            help="log in to a container registry",
            description="Log in to a registry; credentials are checked, then stored in auth.json.",
        )
        p.add_argument("-u", "--username", help="user name")
        p.add_argument("-p", "--password", help="password (prefer --password-stdin)")
        p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        p.add_argument(
            "--authfile", help="auth file to use (default ${XDG_RUNTIME_DIR}/containers/auth.json)"
        )
        p.add_argument("--get-login", action="store_true", help="print the user name logged in to REGISTRY")
        add_tls_flags(p)
        p.add_argument(
            "registry",
            nargs="?",
            metavar="REGISTRY",
            help="HOST[:PORT][/NAMESPACE] (default: the first unqualified-search registry)",
        )
        p.set_defaults(func=login)
    elif verb == "logout":
        p = subparsers.add_parser(
            "logout",
            help="log out of a container registry",
            description="Remove stored credentials for a registry.",
        )
        p.add_argument(
            "--authfile", help="auth file to use (default ${XDG_RUNTIME_DIR}/containers/auth.json)"
        )
        p.add_argument("-a", "--all", action="store_true", help="remove the credentials of every registry")
        p.add_argument("registry", nargs="?", metavar="REGISTRY", help="HOST[:PORT][/NAMESPACE]")
        p.set_defaults(func=logout)
    else:  # pragma: no cover - COMMANDS maps only these two here
        raise ValueError(verb)


def _ctx(args: argparse.Namespace, ctx: Context) -> Context:
    from pathlib import Path

    changes: dict[str, Any] = {}
    if getattr(args, "authfile", None):
        changes["auth_file"] = Path(args.authfile)
    if getattr(args, "tls_verify", None) is not None:
        changes["tls_verify"] = args.tls_verify
    if getattr(args, "cert_dir", None):
        changes["cert_dir"] = Path(args.cert_dir)
    return ctx.with_(**changes) if changes else ctx


def _default_registry(ctx: Context) -> str:
    from pallet.config import registries

    conf = registries.load(ctx)
    return conf.search[0] if conf.search else "docker.io"


def _key(text: str) -> str:
    from pallet.config import auth

    if text.startswith(("http://", "https://")):
        print(f"WARNING: scheme in {text!r} ignored", file=sys.stderr)
    return auth.normalize_key(text)


def login(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.config import auth
    from pallet.registry.client import RegistryClient

    ctx = _ctx(args, ctx)
    key = _key(args.registry or _default_registry(ctx))
    host = key.split("/", 1)[0]
    if args.get_login:
        creds = auth.lookup(key, ctx)
        if not creds or not creds.username:
            raise UsageError(f"not logged into {key}")
        print(creds.username)
        return 0
    if args.password_stdin and args.password is not None:
        raise UsageError("pallet login: --password and --password-stdin are mutually exclusive")
    username = args.username
    if username is None:
        if not sys.stdin.isatty() or args.password_stdin:
            raise UsageError("pallet login: a user name is needed: use -u USER")
        username = input("Username: ").strip()
    if not username:
        raise UsageError("pallet login: the user name must not be empty")
    if args.password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    elif args.password is not None:
        password = args.password
    elif sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
    else:
        raise UsageError("pallet login: a password is needed: use -p, --password-stdin, or a terminal")
    if not password:
        raise UsageError("pallet login: the password must not be empty")
    creds = auth.Credentials(username, password)
    with RegistryClient(host, ctx, auth=creds, retries=1) as client:  # a typo in the host fails fast
        client.check_login()
    auth.store(key, creds, ctx)
    print("Login Succeeded!")
    return 0


def logout(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.config import auth

    ctx = _ctx(args, ctx)
    if args.all:
        if args.registry:
            raise UsageError("pallet logout: --all takes no REGISTRY")
        auth.remove_all(ctx)
        print("Removed login credentials for all registries")
        return 0
    key = _key(args.registry or _default_registry(ctx))
    try:
        auth.remove(key, ctx)
    except auth.NotLoggedIn:
        elsewhere = auth.lookup(key, ctx.with_(auth_file=None)) if ctx.auth_file is None else None
        if elsewhere:
            raise auth.NotLoggedIn(
                f"not logged into {key} with pallet's auth file; existing credentials "
                "come from another file (docker login?): log out with that tool"
            ) from None
        raise
    print(f"Removed login credentials for {key}")
    return 0
