"""Errors of the registry client, finer than :class:`pallet.errors.RegistryError`.

Each carries what the registry said: the HTTP status and the distribution-spec error codes
(``{"errors": [{"code", "message", "detail"}]}``), and prints as one line a user can act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pallet.errors import NotFound, RegistryError


@dataclass(frozen=True)
class APIError:
    """One entry of a registry's ``errors`` array."""

    code: str
    message: str = ""
    detail: Any = None


class RegistryClientError(RegistryError):
    """Base of the client's errors; ``status`` and ``errors`` say what the registry answered."""

    def __init__(self, message: str, *, status: int | None = None, errors: tuple[APIError, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(e.code for e in self.errors)


class AuthenticationError(RegistryClientError):
    """The registry or its token server refused our credentials, or wants some (401)."""


class DeniedError(RegistryClientError):
    """Authenticated, but not allowed to do this (403, DENIED)."""


class NotFoundError(RegistryClientError, NotFound):
    """Manifest, blob, repository or upload unknown (404, *_UNKNOWN)."""


class UnsupportedError(RegistryClientError):
    """The registry does not support the operation (405, UNSUPPORTED), e.g. deletes disabled."""


class TooManyRequests(RegistryClientError):
    """Rate limited (429) and retries did not help."""


class RegistryUnavailable(RegistryClientError):
    """Could not reach the registry: connection refused, timed out, TLS failure, server errors."""


class InvalidResponse(RegistryClientError):
    """The registry answered something the distribution spec does not allow."""


def parse_errors(body: bytes) -> tuple[APIError, ...]:
    """The spec's error array from a response body; () if the body is not one."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ()
    if not isinstance(doc, dict) or not isinstance(doc.get("errors"), list):
        return ()
    out = []
    for e in doc["errors"]:
        if isinstance(e, dict) and isinstance(e.get("code"), str):
            out.append(APIError(e["code"], str(e.get("message") or ""), e.get("detail")))
    return tuple(out)


_NOT_FOUND_CODES = {"BLOB_UNKNOWN", "BLOB_UPLOAD_UNKNOWN", "MANIFEST_UNKNOWN", "NAME_UNKNOWN"}


def error_for(status: int, errors: tuple[APIError, ...], what: str, body: bytes = b"") -> RegistryClientError:
    """The exception for a failed response to ``what`` (e.g. "GET manifest latest of host/repo")."""
    codes = {e.code for e in errors}
    if errors:
        reason = "; ".join(_describe(e) for e in errors)
        if status >= 500:  # a server fault: the status says more than the body's generic code
            reason = f"HTTP {status}: {reason}"
    else:
        text = body[:200].decode("utf-8", "replace").strip().splitlines()
        reason = f"HTTP {status}" + (f": {text[0]}" if text and len(text[0]) < 160 else "")
    msg = f"{what}: {reason}"
    cls: type[RegistryClientError]
    if status == 401 or "UNAUTHORIZED" in codes:
        cls = AuthenticationError
    elif status == 403 or "DENIED" in codes:
        cls = DeniedError
    elif status == 404 or codes & _NOT_FOUND_CODES:
        cls = NotFoundError
    elif status == 405 or "UNSUPPORTED" in codes:
        cls = UnsupportedError
    elif status == 429 or "TOOMANYREQUESTS" in codes:
        cls = TooManyRequests
    elif status >= 500:
        cls = RegistryUnavailable
    else:
        cls = RegistryClientError
    return cls(msg, status=status, errors=errors)


def _describe(e: APIError) -> str:
    return f"{e.message or e.code.lower().replace('_', ' ')} ({e.code})"
