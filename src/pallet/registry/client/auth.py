"""Registry authentication: WWW-Authenticate challenges, Basic, and distribution's bearer tokens.

The token flow is distribution's (docs/spec/auth/token.md): a 401 names a ``realm``, a
``service`` and a ``scope``; the client asks the realm for a token for that service and those
scopes (with Basic credentials, or a refresh token by the OAuth2 POST), then retries with
``Authorization: Bearer``. Tokens are cached per (realm, service, scopes, user) until
``expires_in`` runs out; a 401 with a cached token drops it and fetches a fresh one.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from pallet.config.auth import Credentials
from pallet.registry.client.errors import (
    AuthenticationError,
    InvalidResponse,
    RegistryUnavailable,
    error_for,
    parse_errors,
)

DEFAULT_TOKEN_LIFETIME = 60.0
CLIENT_ID = "pallet"

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*(,|$)')
_SCHEME = re.compile(rf"\s*,?\s*({_TOKEN})(?:\s+|$)")


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header: ``Bearer realm="...",service="..."``."""

    scheme: str  # lowercased: "basic", "bearer"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scopes(self) -> list[str]:
        return self.params.get("scope", "").split()


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse RFC 7235 challenges; unknown syntax yields what could be read, never raises."""
    out: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = _SCHEME.match(header, pos)
        if not m:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: dict[str, str] = {}
        while pos < len(header):
            pm = _PARAM.match(header, pos)
            if not pm:
                break
            value = pm.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[pm.group(1).lower()] = value
            pos = pm.end()
        out.append(Challenge(scheme, params))
    return out


def basic_header(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


def repository_scope(repo: str, *actions: str) -> str:
    return f"repository:{repo}:{','.join(actions)}"


CATALOG_SCOPE = "registry:catalog:*"


@dataclass
class _Token:
    value: str
    expires: float  # time.monotonic()
    lifetime: float

    def fresh(self) -> bool:
        margin = min(10.0, self.lifetime * 0.1)
        return time.monotonic() < self.expires - margin


class TokenCache:
    """Bearer tokens by scope, shared by a client's threads; one fetch per key at a time."""

    def __init__(self, http: httpx.Client, registry: str) -> None:
        self._http = http
        self._registry = registry
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()
        self.fetches = 0  # how many tokens were fetched (observability, tests)

    @staticmethod
    def _key(ch: Challenge, scopes: Iterable[str], creds: Credentials | None) -> tuple[str, ...]:
        return (ch.realm, ch.service, " ".join(sorted(set(scopes))), creds.username if creds else "")

    def get(self, ch: Challenge, scopes: Iterable[str], creds: Credentials | None) -> str:
        scopes = sorted(set(scopes))
        key = self._key(ch, scopes, creds)
        with self._guard:
            tok = self._tokens.get(key)
            if tok is not None and tok.fresh():
                return tok.value
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                tok = self._tokens.get(key)
                if tok is not None and tok.fresh():
                    return tok.value
            tok = self._fetch(ch, scopes, creds)
            with self._guard:
                self._tokens[key] = tok
                self.fetches += 1
            return tok.value

    def invalidate(self, ch: Challenge, scopes: Iterable[str], creds: Credentials | None) -> None:
        with self._guard:
            self._tokens.pop(self._key(ch, scopes, creds), None)

    def _fetch(self, ch: Challenge, scopes: list[str], creds: Credentials | None) -> _Token:
        realm = ch.realm
        if not realm:
            raise InvalidResponse(f"registry {self._registry} asked for a bearer token without a realm")
        if not realm.startswith(("https://", "http://")):
            raise InvalidResponse(
                f"registry {self._registry} gave a token realm that is not an http(s) URL: {realm!r}"
            )
        try:
            if creds and creds.identity_token:
                resp = self._oauth_post(ch, scopes, creds)
                if resp.status_code in (404, 405):  # no OAuth2 endpoint: docker falls back to GET
                    resp = self._basic_get(ch, scopes, None)
            else:
                resp = self._basic_get(ch, scopes, creds)
        except httpx.TimeoutException:
            raise RegistryUnavailable(
                f"token server {realm} for {self._registry} did not answer within "
                f"{_timeout_of(self._http):g}s"
            ) from None
        except httpx.TransportError as e:
            raise RegistryUnavailable(
                f"cannot reach token server {realm} for {self._registry}: {_reason(e)}"
            ) from None
        if resp.status_code in (401, 403):
            errors = parse_errors(resp.content)
            if creds:
                raise AuthenticationError(
                    f"authenticating to {self._registry}: invalid username/password "
                    f"(token server {realm} answered {resp.status_code})",
                    status=resp.status_code,
                    errors=errors,
                )
            raise AuthenticationError(
                f"authenticating to {self._registry}: authentication required "
                f"(anonymous token refused by {realm}); log in first",
                status=resp.status_code,
                errors=errors,
            )
        if resp.status_code != 200:
            raise error_for(
                resp.status_code,
                parse_errors(resp.content),
                f"getting a token for {self._registry} from {realm}",
                resp.content,
            )
        try:
            doc = resp.json()
        except ValueError:
            raise InvalidResponse(
                f"token server {realm} for {self._registry} answered invalid JSON"
            ) from None
        value = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value:
            raise InvalidResponse(f"token server {realm} for {self._registry} answered without a token")
        lifetime = doc.get("expires_in")
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        return _Token(value, time.monotonic() + float(lifetime), float(lifetime))

    def _basic_get(self, ch: Challenge, scopes: list[str], creds: Credentials | None) -> httpx.Response:
        params: list[tuple[str, str]] = []
        if ch.service:
            params.append(("service", ch.service))
        params += [("scope", s) for s in scopes]
        headers = {}
        if creds and (creds.username or creds.password):
            params.append(("account", creds.username))
            headers["Authorization"] = basic_header(creds)
        return self._http.get(ch.realm, params=params, headers=headers)

    def _oauth_post(self, ch: Challenge, scopes: list[str], creds: Credentials) -> httpx.Response:
        form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token, "client_id": CLIENT_ID}
        if ch.service:
            form["service"] = ch.service
        if scopes:
            form["scope"] = " ".join(scopes)
        return self._http.post(ch.realm, data=form)


def _timeout_of(http: httpx.Client) -> float:
    t = http.timeout
    return t.read or t.connect or 0.0


def _reason(e: Exception) -> str:
    """The innermost useful words of a transport error."""
    text = str(e) or type(e).__name__
    cause = e.__cause__ or e.__context__
    while cause is not None:
        if str(cause):
            text = str(cause)
        cause = cause.__cause__ or cause.__context__
    text = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    if text.startswith("[") and "] " in text:  # "[Errno 111] Connection refused"
        text = text.split("] ", 1)[1]
    return text
