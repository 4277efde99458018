"""containers-certs.d(5): per-registry CA certificates and client certificates for TLS.

For registry ``HOST[:PORT]`` the directories searched are ``ctx.cert_dir`` alone when set (its
files apply to the registry being contacted, as ``podman --cert-dir``), else
``~/.config/containers/certs.d/HOST[:PORT]``, ``/etc/containers/certs.d/HOST[:PORT]`` and
``/etc/docker/certs.d/HOST[:PORT]``. In each: ``*.crt`` are CAs trusted in addition to the
system's, ``NAME.cert`` with ``NAME.key`` is a client certificate pair.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from pallet.context import Context
from pallet.errors import ConfigError

SYSTEM_DIRS = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))


def _home() -> Path:
    return Path(os.environ.get("HOME") or os.path.expanduser("~"))


def cert_dirs(host: str, ctx: Context | None = None) -> list[Path]:
    """Directories holding ``host``'s certificates, in the order they are read."""
    if ctx is not None and ctx.cert_dir:
        return [Path(ctx.cert_dir)]
    bases = [_home() / ".config/containers/certs.d", *SYSTEM_DIRS]
    return [b / host for b in bases]


def ssl_context(host: str, ctx: Context | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """An SSLContext for ``host`` (``HOST[:PORT]``): system CAs + certs.d CAs and client certificate.

    ``verify=False`` skips server verification (insecure registries) but still offers a client
    certificate if one is configured.
    """
    sc = ssl.create_default_context()
    if not verify:
        sc.check_hostname = False
        sc.verify_mode = ssl.CERT_NONE
    client_pair: tuple[Path, Path] | None = None
    for d in cert_dirs(host, ctx):
        try:
            names = sorted(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise ConfigError(f"reading certificate directory {d}: {e.strerror}") from None
        for name in names:
            path = d / name
            if name.endswith(".crt"):
                if verify:
                    try:
                        sc.load_verify_locations(cafile=str(path))
                    except (ssl.SSLError, OSError) as e:
                        raise ConfigError(f"CA certificate {path} is unusable: {e}") from None
            elif name.endswith(".cert") and client_pair is None:
                key = d / (name[: -len(".cert")] + ".key")
                if not key.exists():
                    raise ConfigError(f"client certificate {path} has no matching key {key.name}")
                client_pair = (path, key)
            elif name.endswith(".key"):
                cert = d / (name[: -len(".key")] + ".cert")
                if not cert.exists():
                    raise ConfigError(f"client key {path} has no matching certificate {cert.name}")
    if client_pair is not None:
        try:
            sc.load_cert_chain(certfile=str(client_pair[0]), keyfile=str(client_pair[1]))
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(
                f"client certificate {client_pair[0]} and key {client_pair[1]} are unusable: {e}"
            ) from None
    return sc
