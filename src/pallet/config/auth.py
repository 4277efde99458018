"""containers-auth.json(5): registry credentials, read as podman reads them and written as it writes them.

Reading tries, in order, until one has credentials for the registry:

1. the primary file: ``ctx.auth_file`` / ``$REGISTRY_AUTH_FILE`` if set (then nothing else is read),
   else ``${XDG_RUNTIME_DIR}/containers/auth.json`` (``/run/containers/UID/auth.json`` without it);
2. ``${XDG_CONFIG_HOME:-~/.config}/containers/auth.json``;
3. ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``;
4. ``~/.dockercfg`` (the legacy format: a bare map of registries).

Within a file the most specific key wins (``host/ns/repo``, ``host/ns``, ``host``), then a
``credHelpers`` entry for the host, then docker's old URL keys (``https://index.docker.io/v1/``),
then ``credsStore``. Helpers run as ``docker-credential-NAME get``. Writes (login, logout) go to
the primary file only, atomically, mode 0600, under a lock.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pallet.context import Context
from pallet.errors import ConfigError
from pallet.fsutil import atomic_write, file_lock


class CredentialHelperError(ConfigError):
    """A docker-credential-* helper is missing or failed."""


class NotLoggedIn(ConfigError):
    """logout for a registry that has no stored credentials."""

    exit_code = 125


@dataclass(frozen=True)
class Credentials:
    """What to authenticate with: a username and password, or an identity (refresh) token."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __bool__(self) -> bool:
        return bool(self.username or self.password or self.identity_token)

    def __repr__(self) -> str:  # never print secrets
        token = "***" if self.identity_token else ""
        return f"Credentials(username={self.username!r}, password=***, identity_token={token!r})"


@dataclass(frozen=True)
class _AuthPath:
    path: Path
    legacy: bool = False


def _home() -> Path:
    return Path(os.environ.get("HOME") or os.path.expanduser("~"))


def primary_path(ctx: Context | None = None, authfile: str | os.PathLike[str] | None = None) -> Path:
    """The read/write auth file: ``authfile``, ``ctx.auth_file``, $REGISTRY_AUTH_FILE, or the XDG default."""
    if authfile:
        return Path(authfile)
    if ctx is not None and ctx.auth_file:
        return Path(ctx.auth_file)
    if env := os.environ.get("REGISTRY_AUTH_FILE"):
        return Path(env)
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(runtime) / "containers" / "auth.json"
    return Path(f"/run/containers/{os.getuid()}/auth.json")


def _explicit(ctx: Context | None, authfile: str | os.PathLike[str] | None) -> bool:
    return bool(authfile or (ctx is not None and ctx.auth_file) or os.environ.get("REGISTRY_AUTH_FILE"))


def read_paths(ctx: Context | None = None, authfile: str | os.PathLike[str] | None = None) -> list[_AuthPath]:
    """Files consulted when looking credentials up, in order."""
    paths = [_AuthPath(primary_path(ctx, authfile))]
    if _explicit(ctx, authfile):
        return paths
    cfg = os.environ.get("XDG_CONFIG_HOME") or str(_home() / ".config")
    paths.append(_AuthPath(Path(cfg) / "containers" / "auth.json"))
    if docker_cfg := os.environ.get("DOCKER_CONFIG"):
        paths.append(_AuthPath(Path(docker_cfg) / "config.json"))
    else:
        paths.append(_AuthPath(_home() / ".docker" / "config.json"))
    paths.append(_AuthPath(_home() / ".dockercfg", legacy=True))
    return paths


def normalize_key(key: str) -> str:
    """A login key as podman stores it: no scheme, no trailing slash, docker.io for Docker Hub."""
    k = key.strip()
    for scheme in ("https://", "http://"):
        if k.startswith(scheme):
            k = k[len(scheme) :]
            k = k.split("/", 1)[0]  # a URL names a registry, not a namespace
    k = k.rstrip("/")
    host, sep, rest = k.partition("/")
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = "docker.io"
    if not host:
        raise ConfigError(f"invalid registry {key!r}")
    if "@" in k or (sep and ":" in rest):
        raise ConfigError(
            f"invalid registry key {key!r}: expected HOST[:PORT][/NAMESPACE...], without tag or digest"
        )
    return host + sep + rest


def _legacy_host(key: str, legacy: bool) -> str:
    """docker's old keys (``https://index.docker.io/v1/``) reduced to a comparable host."""
    stripped = key
    for scheme in ("https://", "http://"):
        if stripped.startswith(scheme):
            stripped = stripped[len(scheme) :]
    if legacy or stripped != key:
        stripped = stripped.split("/", 1)[0]
    return _canon_host(stripped)


def _canon_host(host: str) -> str:
    return "index.docker.io" if host in ("docker.io", "registry-1.docker.io", "index.docker.io") else host


def _read(ap: _AuthPath) -> dict[str, Any]:
    try:
        raw = ap.path.read_bytes()
    except FileNotFoundError:
        return {}
    except NotADirectoryError:
        return {}
    except PermissionError as e:
        raise ConfigError(f"reading auth file {ap.path}: {e.strerror}") from None
    except IsADirectoryError:
        raise ConfigError(f"auth file {ap.path} is a directory") from None
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"auth file {ap.path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"auth file {ap.path}: expected a JSON object")
    if ap.legacy:
        return {"auths": doc}
    for k in ("auths", "credHelpers"):
        if k in doc and not isinstance(doc[k], dict):
            raise ConfigError(f"auth file {ap.path}: {k!r} must be an object")
    return doc


def _decode(entry: Any, key: str, path: Path) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    token = entry.get("identitytoken") or ""
    auth = entry.get("auth") or ""
    user, password = "", ""
    if auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError(f"auth file {path}: entry {key!r} has an invalid base64 'auth' field") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            user, password = "", ""
        password = password.strip("\x00")
    elif entry.get("username"):  # docker's expanded form
        user, password = str(entry.get("username", "")), str(entry.get("password", ""))
    creds = Credentials(user, password, str(token))
    return creds or None


def _lookup_keys(key: str) -> list[str]:
    out = [key]
    while "/" in key:
        key = key.rsplit("/", 1)[0]
        out.append(key)
    return out


def _find_in(doc: dict[str, Any], key: str, registry: str, ap: _AuthPath) -> Credentials | None:
    auths = doc.get("auths") or {}
    helpers = doc.get("credHelpers") or {}
    if not ap.legacy:
        for k in _lookup_keys(key):
            if k in auths:
                found = _decode(auths[k], k, ap.path)
                if found:
                    return found
    for host in {registry, "docker.io" if _canon_host(registry) == "index.docker.io" else registry}:
        if host in helpers:
            return helper_get(str(helpers[host]), registry)
    want = _canon_host(registry)
    for k, v in auths.items():
        if _legacy_host(k, ap.legacy) == want:
            found = _decode(v, k, ap.path)
            if found:
                return found
    if store := doc.get("credsStore"):
        return helper_get(str(store), registry)
    return None


AUTH_FILES_HELPER = "containers-auth.json"


def lookup(
    key: str,
    ctx: Context | None = None,
    authfile: str | os.PathLike[str] | None = None,
    helpers: list[str] | None = None,
) -> Credentials | None:
    """Credentials for ``key`` (``host[:port]`` or ``host/namespace/repo``), or None for anonymous.

    ``helpers`` is registries.conf's ``credential-helpers``: each is tried in order, the name
    ``containers-auth.json`` meaning the auth files; None means the auth files alone.
    """
    key = normalize_key(key)
    registry = key.split("/", 1)[0]
    for helper in helpers or [AUTH_FILES_HELPER]:
        if helper == AUTH_FILES_HELPER:
            for ap in read_paths(ctx, authfile):
                doc = _read(ap)
                if not doc:
                    continue
                found = _find_in(doc, key, registry, ap)
                if found:
                    return found
        else:
            found = helper_get(helper, registry)
            if found:
                return found
    return None


# -- credential helpers ----------------------------------------------------------------------------


def _helper(name: str, action: str, payload: str) -> str:
    exe = f"docker-credential-{name}"
    try:
        res = subprocess.run([exe, action], input=payload, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise CredentialHelperError(
            f"credential helper {exe} is not installed (configured in an auth "
            "file's credHelpers or credsStore)"
        ) from None
    except subprocess.TimeoutExpired:
        raise CredentialHelperError(f"credential helper {exe} {action} did not finish within 60s") from None
    if res.returncode != 0:
        msg = (res.stdout.strip() or res.stderr.strip()).splitlines()
        text = msg[0] if msg else f"exit status {res.returncode}"
        if "credentials not found" in text.lower():
            raise _HelperNotFound(text)
        raise CredentialHelperError(f"credential helper {exe} {action} failed: {text}")
    return res.stdout


class _HelperNotFound(Exception):
    pass


def helper_get(name: str, registry: str) -> Credentials | None:
    """``docker-credential-NAME get``; None when the helper has nothing for ``registry``."""
    try:
        out = _helper(name, "get", registry)
    except _HelperNotFound:
        return None
    try:
        doc = json.loads(out)
    except ValueError:
        raise CredentialHelperError(
            f"credential helper docker-credential-{name} printed invalid JSON"
        ) from None
    user, secret = str(doc.get("Username") or ""), str(doc.get("Secret") or "")
    if user == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(user, secret) or None


def helper_store(name: str, registry: str, creds: Credentials) -> None:
    _helper(
        name,
        "store",
        json.dumps({"ServerURL": registry, "Username": creds.username, "Secret": creds.password}),
    )


def helper_erase(name: str, registry: str) -> bool:
    try:
        _helper(name, "erase", registry)
    except _HelperNotFound:
        return False
    return True


# -- login / logout --------------------------------------------------------------------------------


def _edit(path: Path, editor) -> Any:
    """Run ``editor(doc)`` on the auth file under a lock; write it back (0600, atomically) if it says so."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with file_lock(path.with_name(f".{path.name}.lock"), what=str(path)):
        doc = _read(_AuthPath(path))
        doc.setdefault("auths", {})
        changed, result = editor(doc)
        if changed:
            atomic_write(path, (json.dumps(doc, indent="\t") + "\n").encode(), mode=0o600)
        return result


def store(
    key: str, creds: Credentials, ctx: Context | None = None, authfile: str | os.PathLike[str] | None = None
) -> Path:
    """Save credentials for ``key`` in the primary auth file (or its credHelpers entry). Returns the file."""
    key = normalize_key(key)
    registry = key.split("/", 1)[0]
    path = primary_path(ctx, authfile)

    def edit(doc: dict[str, Any]) -> tuple[bool, None]:
        helper = (doc.get("credHelpers") or {}).get(registry)
        if helper and key == registry:
            helper_store(str(helper), registry, creds)
            return False, None
        entry: dict[str, str] = {
            "auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        }
        if creds.identity_token:
            entry["identitytoken"] = creds.identity_token
        doc["auths"][key] = entry
        return True, None

    _edit(path, edit)
    return path


def remove(key: str, ctx: Context | None = None, authfile: str | os.PathLike[str] | None = None) -> Path:
    """Forget ``key``'s credentials in the primary file; raises :class:`NotLoggedIn` if there were none."""
    key = normalize_key(key)
    registry = key.split("/", 1)[0]
    path = primary_path(ctx, authfile)

    def edit(doc: dict[str, Any]) -> tuple[bool, bool]:
        found = False
        helper = (doc.get("credHelpers") or {}).get(registry)
        if helper and key == registry:
            found = helper_erase(str(helper), registry)
        if key in doc["auths"]:
            del doc["auths"][key]
            return True, True
        return False, found

    if not _edit(path, edit):
        raise NotLoggedIn(f"not logged into {key}")
    return path


def remove_all(ctx: Context | None = None, authfile: str | os.PathLike[str] | None = None) -> Path:
    """Forget every credential in the primary file (as ``podman logout --all``)."""
    path = primary_path(ctx, authfile)

    def edit(doc: dict[str, Any]) -> tuple[bool, None]:
        for registry, helper in list((doc.get("credHelpers") or {}).items()):
            try:
                helper_erase(str(helper), registry)
            except CredentialHelperError:
                pass
        had = bool(doc["auths"])
        doc["auths"] = {}
        return had, None

    if path.exists():
        _edit(path, edit)
    return path
