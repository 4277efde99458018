"""The distribution spec's error codes, as exceptions the ASGI app turns into JSON responses.

Every 4xx the server sends carries ``{"errors": [{"code", "message", "detail"}]}`` with one of the
codes the OCI distribution spec lists. Handlers raise :class:`APIError`; anything else that escapes
a handler is a bug in the server (logged, answered with a 500 that says so), never a client's fault.
"""

from __future__ import annotations

import json
from typing import Any

from pallet.errors import RegistryError


class APIError(RegistryError):
    """A refusal the client caused: ``status`` and the spec's ``code`` go on the wire."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers or []

    def body(self) -> bytes:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            err["detail"] = self.detail
        return json.dumps({"errors": [err]}).encode()


def blob_unknown(digest: str) -> APIError:
    return APIError(404, "BLOB_UNKNOWN", "blob unknown to registry", {"digest": digest})


def blob_upload_unknown(uuid: str) -> APIError:
    return APIError(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", {"uuid": uuid})


def blob_upload_invalid(message: str) -> APIError:
    return APIError(400, "BLOB_UPLOAD_INVALID", message)


def digest_invalid(message: str, digest: str = "") -> APIError:
    return APIError(400, "DIGEST_INVALID", message, {"digest": digest} if digest else None)


def manifest_unknown(reference: str) -> APIError:
    return APIError(404, "MANIFEST_UNKNOWN", "manifest unknown to registry", {"reference": reference})


def manifest_invalid(message: str) -> APIError:
    return APIError(400, "MANIFEST_INVALID", message)


def manifest_blob_unknown(digest: str) -> APIError:
    return APIError(400, "MANIFEST_BLOB_UNKNOWN", f"manifest references blob {digest} unknown to the "
                    "repository", {"digest": digest})


def name_invalid(name: str, why: str) -> APIError:
    return APIError(400, "NAME_INVALID", f"invalid repository name {name!r}: {why}", {"name": name})


def name_unknown(name: str) -> APIError:
    return APIError(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name})


def size_invalid(message: str, status: int = 400) -> APIError:
    return APIError(status, "SIZE_INVALID", message)


def unsupported(message: str, status: int = 405) -> APIError:
    return APIError(status, "UNSUPPORTED", message)


def range_invalid(message: str, headers: list[tuple[bytes, bytes]] | None = None) -> APIError:
    return APIError(416, "BLOB_UPLOAD_INVALID", message, headers=headers)
