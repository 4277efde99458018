"""Run the registry: granian (Rust HTTP/1.1 + HTTP/2, TLS) driving the ASGI app in worker processes.

Why granian: its ASGI server implements ``http.response.pathsend``, so a blob GET is served by
Rust reading the file, with no bytes crossing into Python (uvicorn has no such extension and
would push every 1 MiB of a 100 MB blob through the event loop); it streams request bodies to
the app as they arrive, terminates TLS itself, and on SIGTERM stops accepting, lets in-flight
requests finish (up to ``shutdown_timeout``) and exits 0.

The settings reach the worker processes through the environment (``PALLET_REGISTRY_CONFIG``);
workers ask the kernel to kill them if the main process dies (kill -9 included), so a dead server
never leaves an orphan still holding the port.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from pathlib import Path

from pallet.context import Context
from pallet.errors import ConfigError
from pallet.registry.server.config import ENV, ServerConfig

PR_SET_PDEATHSIG = 1


def resolve_root(cfg: ServerConfig, ctx: Context | None) -> Path:
    if cfg.root is not None:
        return Path(cfg.root)
    from pallet.context import default

    return (ctx or default()).root / "registry"


def prepare(cfg: ServerConfig, ctx: Context | None = None) -> ServerConfig:
    """Validate, resolve the root and make what workers must not race to make (dirs, token key)."""
    cfg.validate()
    root = resolve_root(cfg, ctx)
    cfg.root = root
    for d in ("blobs", "repositories", "uploads"):
        (root / d).mkdir(parents=True, exist_ok=True)
    if cfg.htpasswd and cfg.auth == "token":
        from pallet.registry.server.auth import load_or_make_key

        load_or_make_key(cfg.token_key or root / "token.key")
    return cfg


def die_with_parent() -> None:
    """Worker side: SIGKILL us when the process that spawned us dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # parent already gone before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def serve(cfg: ServerConfig, ctx: Context | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    prepare(cfg, ctx)
    try:
        from granian.constants import HTTPModes, Interfaces, Loops
        from granian.server import Server
    except ImportError:
        raise ConfigError("the registry server needs the 'server' extra: "
                          "pip install 'pallet[server]'") from None
    host, port = cfg.host_port
    os.environ[ENV] = cfg.to_json()
    loop = Loops.auto
    try:
        import uvloop  # noqa: F401

        loop = Loops.uvloop
    except ImportError:
        pass
    scheme = "https" if cfg.tls else "http"
    print(f"pallet registry: serving {cfg.root} on {scheme}://{cfg.addr}"
          + (" (read-only)" if cfg.read_only else ""), file=sys.stderr, flush=True)
    logging.getLogger("_granian").setLevel(logging.WARNING)
    server = Server(
        "pallet.registry.server.app:create_app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=cfg.workers,
        runtime_threads=max(1, cfg.threads),
        loop=loop,
        http=HTTPModes.auto,
        websockets=False,
        backlog=1024,
        log_enabled=True,
        log_level="warning",
        log_access=False,
        ssl_cert=Path(cfg.tls_cert) if cfg.tls_cert else None,
        ssl_key=Path(cfg.tls_key) if cfg.tls_key else None,
        workers_kill_timeout=int(cfg.shutdown_timeout) or None,
    )
    server.serve()
    print("pallet registry: stopped", file=sys.stderr, flush=True)
    return 0
