"""The server's settings: one dataclass, filled from a TOML file and/or command-line flags.

A config file uses the flag names as keys (``addr``, ``root``, ``tls-cert``, ``htpasswd``,
``read-only`` ...), at the top level or under a ``[registry]`` table; flags given on the command
line win over the file.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pallet.errors import ConfigError

ENV = "PALLET_REGISTRY_CONFIG"


@dataclass
class ServerConfig:
    #: HOST:PORT to listen on ([::1]:5000 for IPv6)
    addr: str = "127.0.0.1:5000"
    #: storage root (default: <pallet root>/registry)
    root: Path | None = None
    tls_cert: Path | None = None
    #: PKCS#8 PEM key (what `openssl req -newkey ... -nodes` writes)
    tls_key: Path | None = None
    #: htpasswd file with bcrypt entries (`htpasswd -B`); no file: no authentication
    htpasswd: Path | None = None
    #: "basic" (HTTP Basic on every request) or "token" (Bearer tokens issued at /token)
    auth: str = "basic"
    #: let clients without credentials pull (push still needs a login)
    anonymous_pull: bool = False
    #: htpasswd users who may only pull (everyone else in the file may push and delete)
    readers: list[str] = field(default_factory=list)
    #: refuse every write (push, delete)
    read_only: bool = False
    #: lifetime of issued bearer tokens, seconds
    token_ttl: int = 300
    #: HMAC key for signing tokens (default: <root>/token.key, made on first start)
    token_key: Path | None = None
    #: the token "service" (audience) and realm URL (default: this server's /token)
    service: str = "pallet-registry"
    realm: str | None = None
    #: fsync blobs, manifests and directories before they become visible (power-loss safety)
    fsync: bool = True
    #: server worker processes (each runs one event loop)
    workers: int = 1
    #: Rust I/O threads per worker (network and file sends)
    threads: int = 1
    max_manifest_size: int = 8 << 20
    #: request bodies being received at once, per worker, before clients get 429 TOOMANYREQUESTS
    #: (0: no limit)
    max_concurrent_uploads: int = 0
    #: uploads idle for longer than this many seconds are removed by gc
    upload_max_age: float = 7 * 24 * 3600
    #: seconds to let in-flight requests finish after SIGTERM
    shutdown_timeout: float = 30.0
    log_requests: bool = True

    @property
    def host_port(self) -> tuple[str, int]:
        addr = self.addr
        if addr.startswith("["):
            host, _, rest = addr[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, _, port = addr.rpartition(":")
        if not port.isdigit() or not host:
            raise ConfigError(f"invalid listen address {self.addr!r}: expected HOST:PORT")
        return host, int(port)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def validate(self) -> None:
        self.host_port  # noqa: B018 - raises on a bad address
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        for f in ("tls_cert", "tls_key", "htpasswd"):
            p = getattr(self, f)
            if p is not None and not Path(p).is_file():
                raise ConfigError(f"{f.replace('_', '-')} {p}: no such file")
        if self.auth not in ("basic", "token"):
            raise ConfigError(f"auth must be 'basic' or 'token', not {self.auth!r}")
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in d.items()})

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> ServerConfig:
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"{where}: unknown setting {key!r}")
            if value is not None and name in ("root", "tls_cert", "tls_key", "htpasswd", "token_key"):
                value = Path(value)
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from None

    @classmethod
    def from_env(cls) -> ServerConfig:
        raw = os.environ.get(ENV)
        if not raw:
            raise ConfigError(f"{ENV} is not set")
        return cls.from_dict(json.loads(raw), ENV)


def load_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML config file (top level, or its [registry] table)."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"registry config {path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"registry config {path}: {e}") from None
    table = doc.get("registry", doc)
    if not isinstance(table, dict):
        raise ConfigError(f"registry config {path}: [registry] must be a table")
    return {k: v for k, v in table.items() if k != "registry"}
