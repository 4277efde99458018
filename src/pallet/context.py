"""Where pallet keeps things and which configuration it reads: one value passed to every API.

The library's public functions take an optional :class:`Context`; the CLI builds one from its
global options. Nothing here touches the disk until asked, so making a Context is free.
"""

from __future__ import annotations

import os
from pathlib import Path

from pallet.records import dataclass, field, replace


def _is_root() -> bool:
    return os.geteuid() == 0


def default_root() -> Path:
    if env := os.environ.get("PALLET_ROOT"):
        return Path(env)
    if _is_root():
        return Path("/var/lib/pallet")
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "pallet"


def default_runroot() -> Path:
    if env := os.environ.get("PALLET_RUNROOT"):
        return Path(env)
    if _is_root():
        return Path("/run/pallet")
    run = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/pallet-run-{os.getuid()}"
    return Path(run) / "pallet"


@dataclass(frozen=True)
class Context:
    """Paths and settings shared by the store, storage, engine and registry client."""

    root: Path = field(default_factory=default_root)
    runroot: Path = field(default_factory=default_runroot)
    #: graph driver name ("overlay", "vfs", "fuse-overlayfs"); None: storage.conf or the default
    storage_driver: str | None = None
    #: override for registries.conf (else $CONTAINERS_REGISTRIES_CONF, then /etc/containers/...)
    registries_conf: Path | None = None
    #: override for auth.json (else $REGISTRY_AUTH_FILE, then ${XDG_RUNTIME_DIR}/containers/auth.json)
    auth_file: Path | None = None
    #: None: decide per registry (loopback and registries.conf insecure=true may use HTTP)
    tls_verify: bool | None = None
    #: directory of extra CA certificates (as /etc/containers/certs.d/HOST:PORT/*.crt)
    cert_dir: Path | None = None
    #: OCI runtime for containers (name on PATH or absolute path)
    runtime: str | None = None

    def with_(self, **changes: object) -> Context:
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        """The settings as JSON values, for a process this one hands work to (a container's
        monitor, ``run``'s network helper); :meth:`from_json` makes the Context again."""
        values = {k: getattr(self, k) for k in _FIELDS}
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Context:
        return cls(**{k: Path(v) if k in _PATHS else v for k, v in data.items()  # type: ignore[arg-type]
                      if k in _FIELDS and v is not None})


_FIELDS = tuple(Context.__record_fields__)  # type: ignore[attr-defined]
_PATHS = tuple(k for k, f in Context.__record_fields__.items() if "Path" in str(f.type))  # type: ignore[attr-defined]


_default: Context | None = None


def default() -> Context:
    """The process-wide default context (from the environment), made once."""
    global _default
    if _default is None:
        _default = Context()
    return _default


def set_default(ctx: Context) -> None:
    global _default
    _default = ctx
