"""Authentication and authorization: htpasswd (bcrypt) Basic auth, or Bearer tokens we issue.

Two modes, as docker's registry has them:

* ``basic``: every request carries ``Authorization: Basic``; the password is checked against the
  htpasswd file (bcrypt, re-read when the file changes; successful checks are cached for a minute,
  since bcrypt is deliberately slow and clients send credentials on every request).
* ``token``: the server is its own token issuer. ``GET /token?service=..&scope=repository:NAME:pull,push``
  with Basic credentials (or none, for anonymous pull) returns a signed JWT (HS256) whose ``access``
  claim lists what was granted; registry requests carry it as ``Authorization: Bearer``. A request
  the token does not cover gets 401 with a challenge naming the scope it needs (so clients fetch a
  new token), or 403 DENIED when the token shows that scope was asked for and refused.

Users in the htpasswd file may pull, push and delete, except those listed in ``readers`` (pull only).
Without credentials, pull is allowed only with ``anonymous_pull``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from pallet.registry.server.config import ServerConfig
from pallet.registry.server.errors import APIError

ALL_ACTIONS = frozenset({"pull", "push", "delete"})


@dataclass(frozen=True)
class Need:
    """One thing a request needs: ``repository:NAME:pull`` or ``registry:catalog:*``."""

    type: str
    name: str
    action: str

    @property
    def scope(self) -> str:
        return f"{self.type}:{self.name}:{self.action}"


@dataclass
class Principal:
    user: str  # "" for anonymous


class Htpasswd:
    """An htpasswd file of bcrypt entries, re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._users: dict[str, bytes] = {}
        self._ok: dict[bytes, float] = {}  # sha256(user:password:hash) -> expiry

    def _load(self) -> None:
        st = os.stat(self.path)
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return
        users: dict[str, bytes] = {}
        for line in self.path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#") or ":" not in line:
                continue
            user, _, hashed = line.partition(":")
            if hashed.startswith(("$2y$", "$2a$", "$2b$")):
                users[user] = hashed.encode()
        self._users, self._stamp, self._ok = users, stamp, {}

    def users(self) -> set[str]:
        self._load()
        return set(self._users)

    async def check(self, user: str, password: str) -> bool:
        self._load()
        hashed = self._users.get(user)
        if hashed is None:
            return False
        key = hashlib.sha256(b"\0".join([user.encode(), password.encode(), hashed])).digest()
        now = time.monotonic()
        if self._ok.get(key, 0) > now:
            return True
        import bcrypt

        try:
            ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed)
        except ValueError:
            return False
        if ok:
            if len(self._ok) > 1024:
                self._ok.clear()
            self._ok[key] = now + 60
        return ok


def parse_scope(scope: str) -> tuple[str, str, set[str]] | None:
    """``repository:NAME:pull,push`` → (type, name, actions); names may contain ':' (host:port/x)."""
    typ, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not typ or not name:
        return None
    return typ, name, {a for a in actions.split(",") if a}


def load_or_make_key(path: Path) -> bytes:
    """The token signing key, made (0600, 32 random bytes) on first use."""
    with contextlib.suppress(FileNotFoundError):
        key = path.read_bytes().strip()
        if len(key) >= 32:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    from pallet.fsutil import atomic_write

    key = secrets.token_hex(32).encode()
    atomic_write(path, key, mode=0o600)
    return key


class Authorizer:
    """Decides whether a request may proceed; issues tokens in token mode."""

    def __init__(self, cfg: ServerConfig, root: Path) -> None:
        self.cfg = cfg
        self.htpasswd = Htpasswd(cfg.htpasswd) if cfg.htpasswd else None
        self.token_mode = self.htpasswd is not None and cfg.auth == "token"
        self.key = load_or_make_key(cfg.token_key or root / "token.key") if self.token_mode else b""
        self.readers = set(cfg.readers)

    @property
    def enabled(self) -> bool:
        return self.htpasswd is not None

    def allowed_actions(self, user: str, typ: str, name: str) -> set[str]:
        if not user:
            return {"pull"} if self.cfg.anonymous_pull and typ == "repository" else set()
        if typ == "registry" and name == "catalog":
            return {"*"}
        if typ != "repository":
            return set()
        return {"pull"} if user in self.readers else set(ALL_ACTIONS)

    # -- requests -------------------------------------------------------------------------------

    async def authorize(self, authorization: str, needs: list[Need], host: str, scheme: str) -> Principal:
        """Return who is asking, or raise a 401/403 APIError with the right challenge."""
        if self.htpasswd is None:
            return Principal("")
        if self.token_mode:
            return self._authorize_bearer(authorization, needs, host, scheme)
        user = ""
        if authorization:
            user = await self._basic_user(authorization)
        for need in needs:
            if need.action not in self.allowed_actions(user, need.type, need.name) and \
                    "*" not in self.allowed_actions(user, need.type, need.name):
                if user:
                    raise APIError(403, "DENIED", f"requested access to {need.scope} is denied",
                                   {"scope": need.scope})
                raise self._basic_challenge()
        if not needs and not user and not self.cfg.anonymous_pull:
            raise self._basic_challenge()
        return Principal(user)

    def _basic_challenge(self, message: str = "authentication required") -> APIError:
        return APIError(401, "UNAUTHORIZED", message, headers=[
            (b"www-authenticate", f'Basic realm="{self.cfg.service}"'.encode())])

    async def _basic_user(self, authorization: str) -> str:
        """The user of valid Basic credentials; raises 401 for bad ones."""
        assert self.htpasswd is not None
        kind, _, creds = authorization.partition(" ")
        if kind.lower() != "basic":
            raise self._basic_challenge("unsupported authorization scheme (use Basic)")
        try:
            user, sep, password = base64.b64decode(creds.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise self._basic_challenge("malformed Basic credentials") from None
        if not sep or not await self.htpasswd.check(user, password):
            raise self._basic_challenge("invalid username or password")
        return user

    def realm(self, host: str, scheme: str) -> str:
        return self.cfg.realm or f"{scheme}://{host}/token"

    def _bearer_challenge(self, needs: list[Need], host: str, scheme: str, error: str = "",
                          message: str = "authentication required") -> APIError:
        parts = [f'realm="{self.realm(host, scheme)}"', f'service="{self.cfg.service}"']
        scopes: dict[tuple[str, str], list[str]] = {}
        for n in needs:
            acts = scopes.setdefault((n.type, n.name), [])
            if n.action not in acts:
                acts.append(n.action)
        if scopes:
            parts.append('scope="' + " ".join(f"{t}:{nm}:{','.join(a)}" for (t, nm), a in scopes.items())
                         + '"')
        if error:
            parts.append(f'error="{error}"')
        detail = [{"Type": n.type, "Name": n.name, "Action": n.action} for n in needs] or None
        return APIError(401, "UNAUTHORIZED", message, detail,
                        headers=[(b"www-authenticate", ("Bearer " + ",".join(parts)).encode())])

    def _authorize_bearer(self, authorization: str, needs: list[Need], host: str, scheme: str) -> Principal:
        import jwt

        kind, _, token = authorization.partition(" ")
        if not authorization or kind.lower() != "bearer":
            raise self._bearer_challenge(needs, host, scheme)
        try:
            claims = jwt.decode(token.strip(), self.key, algorithms=["HS256"], audience=self.cfg.service,
                                issuer=self.cfg.service, options={"require": ["exp", "iat"]})
        except jwt.ExpiredSignatureError:
            raise self._bearer_challenge(needs, host, scheme, "invalid_token", "token expired") from None
        except jwt.PyJWTError as e:
            raise self._bearer_challenge(needs, host, scheme, "invalid_token",
                                         f"invalid token: {e}") from None
        granted: dict[tuple[str, str], set[str]] = {}
        for entry in claims.get("access") or []:
            with contextlib.suppress(KeyError, TypeError):
                granted.setdefault((entry["type"], entry["name"]), set()).update(entry["actions"])
        denied: dict[tuple[str, str], set[str]] = {}
        for entry in claims.get("denied") or []:
            with contextlib.suppress(KeyError, TypeError):
                denied.setdefault((entry["type"], entry["name"]), set()).update(entry["actions"])
        missing = [n for n in needs if not ({n.action, "*"} & granted.get((n.type, n.name), set()))]
        if missing:
            if all(n.action in denied.get((n.type, n.name), set()) for n in missing):
                raise APIError(403, "DENIED", f"requested access to {missing[0].scope} is denied",
                               {"scope": missing[0].scope})
            raise self._bearer_challenge(missing, host, scheme, "insufficient_scope",
                                         "token does not grant " + ", ".join(n.scope for n in missing))
        return Principal(str(claims.get("sub") or ""))

    # -- the token endpoint ---------------------------------------------------------------------

    async def issue_token(self, authorization: str, service: str, scopes: list[str]) -> dict:
        """The body of a /token response (docker's token protocol)."""
        import jwt

        if not self.token_mode:
            raise APIError(404, "UNSUPPORTED", "this registry does not issue tokens")
        if service and service != self.cfg.service:
            raise APIError(400, "DENIED", f"unknown service {service!r}; this is {self.cfg.service!r}")
        user = await self._basic_user(authorization) if authorization else ""
        access, denied = [], []
        for s in scopes:
            for one in s.split(" "):
                parsed = parse_scope(one)
                if parsed is None:
                    continue
                typ, name, actions = parsed
                allowed = self.allowed_actions(user, typ, name)
                ok = actions if "*" in allowed else actions & allowed
                if ok:
                    access.append({"type": typ, "name": name, "actions": sorted(ok)})
                if user and actions - ok:
                    denied.append({"type": typ, "name": name, "actions": sorted(actions - ok)})
        now = int(time.time())
        claims = {"iss": self.cfg.service, "sub": user, "aud": self.cfg.service, "iat": now, "nbf": now - 1,
                  "exp": now + self.cfg.token_ttl, "jti": secrets.token_hex(8), "access": access}
        if denied:
            claims["denied"] = denied
        token = jwt.encode(claims, self.key, algorithm="HS256")
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return {"token": token, "access_token": token, "expires_in": self.cfg.token_ttl, "issued_at": issued}
