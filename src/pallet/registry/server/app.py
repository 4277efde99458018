"""The OCI distribution API (v1.1, and what Docker clients send) as a bare ASGI application.

Why bare ASGI and not a framework: the API is fifteen routes with exact header and status rules,
and the hot paths (a manifest GET, a 100 MB blob GET) must cost as little Python as possible, so
routing is one regular expression and responses are two ``send`` calls. Request bodies are streamed
to disk chunk by chunk through a hasher (memory stays flat whatever the blob size); whole-blob GETs
use the ASGI ``http.response.pathsend`` extension, so granian reads and sends the file from Rust
without the bytes passing through Python (byte ranges are streamed from the file in 1 MiB reads).

Every refusal is an :class:`~pallet.registry.server.errors.APIError` rendered in the spec's JSON
error form; malformed input of any kind is a 4xx, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from pallet.content import Digest, InvalidDigest, InvalidManifest, parse
from pallet.content import mediatypes as mt
from pallet.errors import DigestMismatch
from pallet.reference import NAME_TOTAL_LENGTH_MAX, PATH_RE, TAG_RE
from pallet.registry.server import errors as E
from pallet.registry.server.auth import Authorizer, Need
from pallet.registry.server.config import ServerConfig
from pallet.registry.server.errors import APIError
from pallet.registry.server.layout import RegistryStore, UploadWriter, blob_key
from pallet.registry.server.storage import Busy, FilesystemStorage

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

log = logging.getLogger("pallet.registry.server")
access_log = logging.getLogger("pallet.registry.access")

_ROUTE = re.compile(
    r"^/v2/(?P<name>.+?)/(?:blobs/uploads/?(?P<uuid>[^/]*)|(?P<kind>blobs|manifests|referrers)/(?P<ref>[^/]+)"
    r"|(?P<tags>tags/list))$")
_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
READ_CHUNK = 1 << 20
MAX_PAGE = 10000
API_VERSION = (b"docker-distribution-api-version", b"registry/2.0")
JSON = b"application/json"


class ClientGone(Exception):
    """The client disconnected mid-request."""


class Request:
    """What a handler needs from an ASGI scope, parsed once."""

    __slots__ = ("_q", "headers", "method", "path", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope, self.receive = scope, receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            key = k.decode("latin-1").lower()
            val = v.decode("latin-1")
            self.headers[key] = f"{self.headers[key]}, {val}" if key in self.headers else val
        self._q: list[tuple[str, str]] | None = None

    @property
    def query(self) -> list[tuple[str, str]]:
        if self._q is None:
            self._q = parse_qsl(self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        return self._q

    def arg(self, name: str) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return None

    def args(self, name: str) -> list[str]:
        return [v for k, v in self.query if k == name]

    @property
    def host(self) -> str:
        return self.headers.get("host") or "localhost"

    @property
    def scheme(self) -> str:
        return self.scope.get("scheme", "http")

    def content_length(self) -> int | None:
        raw = self.headers.get("content-length")
        if raw is None:
            return None
        if not raw.strip().isdigit():
            raise E.size_invalid(f"invalid Content-Length {raw!r}")
        return int(raw)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                raise ClientGone()
            body = msg.get("body")
            if body:
                yield body
            if not msg.get("more_body", False):
                return

    async def read(self, limit: int) -> bytes:
        declared = self.content_length()
        if declared is not None and declared > limit:
            raise E.size_invalid(f"body of {declared} bytes exceeds the limit of {limit}", 413)
        parts, size = [], 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise E.size_invalid(f"body exceeds the limit of {limit} bytes", 413)
            parts.append(chunk)
        return b"".join(parts)


class Response:
    """Sends one response and remembers what went out, for the access log."""

    __slots__ = ("bytes", "send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 0
        self.bytes = 0

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        headers.append(API_VERSION)
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, more: bool = False) -> None:
        self.bytes += len(data)
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def full(self, status: int, headers: list[tuple[bytes, bytes]], data: bytes = b"",
                   length: int | None = None) -> None:
        headers.append((b"content-length", str(len(data) if length is None else length).encode()))
        await self.start(status, headers)
        await self.body(data)

    async def json(self, status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None,
                   content_type: bytes = JSON) -> None:
        hs = headers or []
        hs.append((b"content-type", content_type))
        await self.full(status, hs, json.dumps(obj).encode())

    async def error(self, err: APIError, head: bool = False) -> None:
        body = err.body()
        headers = [(b"content-type", JSON), *err.headers]
        if head:
            headers.append((b"content-length", str(len(body)).encode()))
            await self.start(err.status, headers)
            await self.body(b"")
        else:
            await self.full(err.status, headers, body)


def _digest(value: str | None, what: str = "digest") -> Digest:
    if not value:
        raise E.digest_invalid(f"{what} missing")
    try:
        d = Digest(value)
    except InvalidDigest as e:
        raise E.digest_invalid(str(e), value) from None
    if not d.verifiable:
        raise E.digest_invalid(f"unsupported digest algorithm {d.algorithm!r} (supported: sha256, sha512)",
                               value)
    return d


def _bad_tag(tag: str) -> str:
    return f"invalid tag {tag!r}: up to 128 of [A-Za-z0-9_.-], not starting with . or -"


def _check_name(name: str) -> None:
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise E.name_invalid(name, f"longer than {NAME_TOTAL_LENGTH_MAX} characters")
    if not PATH_RE.fullmatch(name):
        raise E.name_invalid(name, "components are lowercase letters and digits separated by . _ __ or -")


def _range_header(size: int) -> bytes:
    return f"0-{max(size - 1, 0)}".encode()


def _needs_for(method: str, name: str) -> list[Need]:
    if method in ("GET", "HEAD"):
        return [Need("repository", name, "pull")]
    if method == "DELETE":
        return [Need("repository", name, "delete")]
    return [Need("repository", name, "pull"), Need("repository", name, "push")]


class RegistryApp:
    """The ASGI callable. One per worker process; all state lives in storage."""

    def __init__(self, cfg: ServerConfig, root: Path) -> None:
        self.cfg = cfg
        self.root = root
        self.storage = FilesystemStorage(root, fsync=cfg.fsync)
        self.store = RegistryStore(self.storage)
        self.auth = Authorizer(cfg, root)
        self._receiving = 0  # request bodies being streamed to uploads right now

    # -- ASGI entry -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        resp = Response(send)
        req = Request(scope, receive)
        try:
            await self.dispatch(req, resp)
        except APIError as e:
            if not resp.status:
                await resp.error(e, head=req.method == "HEAD")
        except ClientGone:
            resp.status = resp.status or 499
        except Exception:
            log.exception("internal error serving %s %s", req.method, req.path)
            if not resp.status:
                await resp.error(APIError(500, "UNKNOWN", "internal server error (a bug: see the log)"))
        finally:
            if self.cfg.log_requests:
                client = scope.get("client") or ("-", 0)
                access_log.info("%s %s %s %d %d %.1fms", client[0], req.method, req.path, resp.status,
                                resp.bytes, (time.perf_counter() - t0) * 1000)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def dispatch(self, req: Request, resp: Response) -> None:
        path, method = req.path, req.method
        if path in ("/v2/", "/v2"):
            if method not in ("GET", "HEAD"):
                raise E.unsupported(f"{method} is not allowed on /v2/")
            await self.auth.authorize(req.headers.get("authorization", ""), [], req.host, req.scheme)
            await resp.full(200, [(b"content-type", JSON)], b"{}" if method == "GET" else b"", length=2)
            return
        if path == "/token":
            await self.token(req, resp)
            return
        if path == "/v2/_catalog":
            if method != "GET":
                raise E.unsupported(f"{method} is not allowed on /v2/_catalog")
            await self.auth.authorize(req.headers.get("authorization", ""),
                                      [Need("registry", "catalog", "*")], req.host, req.scheme)
            await self.catalog(req, resp)
            return
        m = _ROUTE.match(path)
        if m is None:
            raise APIError(404, "NAME_UNKNOWN" if path.startswith("/v2/") else "UNSUPPORTED",
                           f"no such endpoint: {path}")
        name = m["name"]
        _check_name(name)
        if self.cfg.read_only and method not in ("GET", "HEAD"):
            raise E.unsupported("the registry is in read-only mode")
        await self.auth.authorize(req.headers.get("authorization", ""), _needs_for(method, name),
                                  req.host, req.scheme)
        if m["uuid"] is not None:
            await self.uploads(req, resp, name, m["uuid"])
        elif m["tags"]:
            if method != "GET":
                raise E.unsupported(f"{method} is not allowed on tags/list")
            await self.tags_list(req, resp, name)
        elif m["kind"] == "blobs":
            await self.blobs(req, resp, name, m["ref"])
        elif m["kind"] == "manifests":
            await self.manifests(req, resp, name, m["ref"])
        else:
            if method != "GET":
                raise E.unsupported(f"{method} is not allowed on referrers")
            await self.referrers(req, resp, name, m["ref"])

    # -- blobs ----------------------------------------------------------------------------------

    async def blobs(self, req: Request, resp: Response, name: str, ref: str) -> None:
        method = req.method
        digest = _digest(ref)
        if method == "DELETE":
            if not self.store.unlink_blob(name, digest):
                raise E.blob_unknown(digest)
            await resp.full(202, [])
            return
        if method not in ("GET", "HEAD"):
            raise E.unsupported(f"{method} is not allowed on blobs")
        size = self.store.blob_size(name, digest)
        if size is None:
            raise E.blob_unknown(digest)
        headers = [(b"content-type", b"application/octet-stream"),
                   (b"docker-content-digest", digest.encode()), (b"etag", f'"{digest}"'.encode()),
                   (b"accept-ranges", b"bytes"), (b"cache-control", b"max-age=31536000")]
        rng = req.headers.get("range")
        span = _parse_range(rng, size) if rng else None
        if span == "unsatisfiable":
            raise APIError(416, "SIZE_INVALID", f"range {rng!r} not satisfiable: the blob is {size} bytes",
                           headers=[(b"content-range", f"bytes */{size}".encode())])
        key = blob_key(digest)
        if isinstance(span, tuple):
            start, end = span
            headers.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
            headers.append((b"content-length", str(end - start + 1).encode()))
            await resp.start(206, headers)
            if method == "HEAD":
                await resp.body(b"")
                return
            await self._stream_file(resp, key, start, end + 1)
            return
        headers.append((b"content-length", str(size).encode()))
        if method == "HEAD":
            await resp.start(200, headers)
            await resp.body(b"")
            return
        path = self.storage.local_path(key)
        if path is not None and "http.response.pathsend" in (req.scope.get("extensions") or {}):
            await resp.start(200, headers)
            resp.bytes += size
            await resp.send({"type": "http.response.pathsend", "path": path})
            return
        await resp.start(200, headers)
        await self._stream_file(resp, key, 0, size)

    async def _stream_file(self, resp: Response, key: str, start: int, stop: int) -> None:
        f = self.storage.open_read(key)
        if f is None:  # swept between stat and open: the client sees a short body and retries
            await resp.body(b"")
            return
        with f:
            f.seek(start)
            pos = start
            while pos < stop:
                data = f.read(min(READ_CHUNK, stop - pos))
                if not data:
                    break
                pos += len(data)
                await resp.body(data, more=pos < stop)
        if pos < stop:
            await resp.body(b"")

    # -- uploads --------------------------------------------------------------------------------

    async def uploads(self, req: Request, resp: Response, name: str, uuid: str) -> None:
        method = req.method
        if not uuid:
            if method != "POST":
                raise E.unsupported(f"{method} is not allowed on blobs/uploads/")
            await self.start_upload(req, resp, name)
            return
        info = self.store.upload_info(uuid) if _UUID.match(uuid) else None
        if info is None or info.repo != name:
            raise E.blob_upload_unknown(uuid)
        location = f"/v2/{name}/blobs/uploads/{uuid}".encode()
        if method == "GET":
            size = self.store.upload_size(uuid)
            if size is None:
                raise E.blob_upload_unknown(uuid)
            await resp.full(204, [(b"location", location), (b"range", _range_header(size)),
                                  (b"docker-upload-uuid", uuid.encode())])
        elif method == "DELETE":
            self.store.cancel_upload(uuid)
            await resp.full(204, [])
        elif method == "PATCH":
            with self._open_upload(uuid) as w:
                await self._receive_chunk(req, w, location)
                size = w.size
            await resp.full(202, [(b"location", location), (b"range", _range_header(size)),
                                  (b"docker-upload-uuid", uuid.encode())])
        elif method == "PUT":
            digest = _digest(req.arg("digest"), "digest parameter")
            with self._open_upload(uuid) as w:
                await self._receive_chunk(req, w, location)
            await self._commit(resp, name, uuid, digest)
        else:
            raise E.unsupported(f"{method} is not allowed on an upload")

    def _open_upload(self, uuid: str) -> UploadWriter:
        try:
            return self.store.open_upload(uuid)
        except FileNotFoundError:
            raise E.blob_upload_unknown(uuid) from None
        except Busy:
            raise E.range_invalid("another request is writing to this upload") from None

    async def _receive_chunk(self, req: Request, w: UploadWriter, location: bytes) -> None:
        """Append the request body to the upload, checking Content-Range and Content-Length; on any
        failure the upload is cut back to where it was, so the client can retry the chunk."""
        limit = self.cfg.max_concurrent_uploads
        if limit and self._receiving >= limit:
            raise APIError(429, "TOOMANYREQUESTS", f"too many uploads in progress (limit {limit})",
                           headers=[(b"retry-after", b"1")])
        self._receiving += 1
        try:
            await self._receive_body(req, w, location)
        finally:
            self._receiving -= 1

    async def _receive_body(self, req: Request, w: UploadWriter, location: bytes) -> None:
        expect = req.content_length()
        crange = req.headers.get("content-range")
        if crange is not None:
            m = _CONTENT_RANGE.match(crange.strip())
            if m is None:
                raise E.range_invalid(f"malformed Content-Range {crange!r} (expected START-END)",
                                      [(b"location", location), (b"range", _range_header(w.size))])
            start, end = int(m[1]), int(m[2])
            if start != w.size or end < start:
                raise E.range_invalid(f"Content-Range {crange} does not continue the upload at {w.size}",
                                      [(b"location", location), (b"range", _range_header(w.size))])
            if expect is not None and expect != end - start + 1:
                raise E.size_invalid(f"Content-Length {expect} does not match Content-Range {crange}")
            expect = end - start + 1
        try:
            async for chunk in req.chunks():
                w.write(chunk)
        except BaseException:
            w.rollback()
            raise
        got = w.size - w.start
        if expect is not None and got != expect:
            w.rollback()
            raise E.size_invalid(f"received {got} bytes, expected {expect}")

    async def _commit(self, resp: Response, name: str, uuid: str, digest: Digest) -> None:
        try:
            await asyncio.to_thread(self.store.commit_upload, uuid, name, digest)
        except DigestMismatch as e:
            raise E.digest_invalid(f"upload does not match the digest: {e}", digest) from None
        except FileNotFoundError:
            raise E.blob_upload_unknown(uuid) from None
        await resp.full(201, [(b"location", f"/v2/{name}/blobs/{digest}".encode()),
                              (b"docker-content-digest", digest.encode())])

    async def start_upload(self, req: Request, resp: Response, name: str) -> None:
        mount = req.arg("mount")
        if mount is not None:
            digest = _digest(mount, "mount digest")
            source = req.arg("from")
            if source is not None:
                _check_name(source)
            if await self._may_pull(req, source) and \
                    self.store.mount(name, digest, source) is not None:
                await resp.full(201, [(b"location", f"/v2/{name}/blobs/{digest}".encode()),
                                      (b"docker-content-digest", digest.encode())])
                return
            # not mountable: start an ordinary upload, as the spec says (202)
        algorithm = req.arg("digest-algorithm") or "sha256"
        if algorithm not in ("sha256", "sha512"):
            raise E.digest_invalid(f"unsupported digest algorithm {algorithm!r} (supported: sha256, sha512)")
        digest_arg = req.arg("digest")
        digest = _digest(digest_arg) if digest_arg is not None else None
        if digest is not None:
            algorithm = digest.algorithm
        uuid = self.store.start_upload(name, algorithm)
        location = f"/v2/{name}/blobs/uploads/{uuid}".encode()
        if digest is not None:  # single-POST monolithic upload
            try:
                with self.store.open_upload(uuid) as w:
                    await self._receive_chunk(req, w, location)
                await self._commit(resp, name, uuid, digest)
            except BaseException:
                self.store.cancel_upload(uuid)
                raise
            return
        if req.content_length():
            with self.store.open_upload(uuid) as w:
                await self._receive_chunk(req, w, location)
        size = self.store.upload_size(uuid) or 0
        await resp.full(202, [(b"location", location), (b"range", _range_header(size)),
                              (b"docker-upload-uuid", uuid.encode())])

    async def _may_pull(self, req: Request, source: str | None) -> bool:
        if source is None or not self.auth.enabled:
            return True
        try:
            await self.auth.authorize(req.headers.get("authorization", ""),
                                      [Need("repository", source, "pull")], req.host, req.scheme)
        except APIError:
            return False
        return True

    # -- manifests ------------------------------------------------------------------------------

    def _resolve(self, name: str, ref: str) -> Digest:
        if ":" in ref:
            digest = _digest(ref)
        else:
            if not TAG_RE.fullmatch(ref):
                raise E.manifest_unknown(ref)
            found = self.store.resolve_tag(name, ref)
            if found is None:
                raise self._manifest_absent(name, ref)
            digest = found
        return digest

    def _manifest_absent(self, name: str, ref: str) -> APIError:
        return E.manifest_unknown(ref) if self.store.repo_exists(name) else E.name_unknown(name)

    async def manifests(self, req: Request, resp: Response, name: str, ref: str) -> None:
        method = req.method
        if method in ("GET", "HEAD"):
            digest = self._resolve(name, ref)
            media_type = self.store.manifest_type(name, digest)
            if media_type is None:
                raise self._manifest_absent(name, ref)
            etag = f'"{digest}"'.encode()
            headers = [(b"content-type", media_type.encode()), (b"docker-content-digest", digest.encode()),
                       (b"etag", etag)]
            if req.headers.get("if-none-match", "").encode() == etag:
                await resp.full(304, headers)
                return
            if method == "HEAD":
                size = self.store.manifest_size(digest)
                if size is None:
                    raise self._manifest_absent(name, ref)
                headers.append((b"content-length", str(size).encode()))
                await resp.start(200, headers)
                await resp.body(b"")
                return
            raw = self.store.manifest_bytes(digest)
            if raw is None:
                raise self._manifest_absent(name, ref)
            await resp.full(200, headers, raw)
        elif method == "PUT":
            await self.put_manifest(req, resp, name, ref)
        elif method == "DELETE":
            await self.delete_manifest(resp, name, ref)
        else:
            raise E.unsupported(f"{method} is not allowed on manifests")

    async def put_manifest(self, req: Request, resp: Response, name: str, ref: str) -> None:
        tags: list[str] = []
        want: Digest | None = None
        if ":" in ref:
            want = _digest(ref)
        elif TAG_RE.fullmatch(ref):
            tags.append(ref)
        else:
            raise E.manifest_invalid(_bad_tag(ref))
        extra_tags = req.args("tag")
        if extra_tags and want is None:
            raise E.manifest_invalid("tag parameters are only allowed when pushing by digest")
        for t in extra_tags:
            if not TAG_RE.fullmatch(t):
                raise E.manifest_invalid(_bad_tag(t))
            if t not in tags:
                tags.append(t)
        raw = await req.read(self.cfg.max_manifest_size)
        content_type = req.headers.get("content-type", "").split(";", 1)[0].strip()
        try:
            doc = parse(raw, content_type or None)
        except InvalidManifest as e:
            raise E.manifest_invalid(str(e)) from None
        except (TypeError, ValueError, AttributeError, KeyError) as e:  # a field of the wrong JSON type
            raise E.manifest_invalid(f"malformed manifest: {e}") from None
        if not isinstance(doc.artifact_type, str) or not isinstance(doc.annotations, dict) or \
                any(not isinstance(v, str) for v in doc.annotations.values()):
            raise E.manifest_invalid("malformed manifest: artifactType and annotation values must be strings")
        digest = Digest.of(raw, want.algorithm if want else "sha256")
        if want is not None and digest != want:
            raise E.digest_invalid(f"manifest content hashes to {digest}, not {want}", want)
        media_type = doc.media_type
        if doc.is_index:
            # children may be absent (sparse indexes, e.g. one platform of many); nothing to check
            artifact_type = doc.artifact_type
        else:
            for desc in (doc.config, *doc.layers):  # type: ignore[union-attr]
                if desc.media_type in mt.NONDISTRIBUTABLE:
                    continue
                size = self.store.blob_size(name, desc.digest)
                if size is None:
                    if not self._is_manifest(name, desc.digest):
                        raise E.manifest_blob_unknown(desc.digest)
                elif size != desc.size:
                    raise E.manifest_invalid(f"descriptor of {desc.digest} says {desc.size} bytes; the blob "
                                             f"is {size}")
            artifact_type = doc.artifact_type or doc.config.media_type  # type: ignore[union-attr]
        referrer = None
        if doc.subject is not None:
            d: dict[str, Any] = {"mediaType": media_type, "digest": str(digest), "size": len(raw)}
            if artifact_type:
                d["artifactType"] = artifact_type
            if doc.annotations:
                d["annotations"] = doc.annotations
            referrer = (doc.subject.digest, d)
        await asyncio.to_thread(self.store.put_manifest, name, digest, media_type, raw, tags, referrer)
        headers = [(b"location", f"/v2/{name}/manifests/{digest}".encode()),
                   (b"docker-content-digest", digest.encode())]
        if doc.subject is not None:
            headers.append((b"oci-subject", str(doc.subject.digest).encode()))
        if extra_tags:
            headers.append((b"oci-tag", ", ".join(tags).encode()))
        await resp.full(201, headers)

    def _is_manifest(self, name: str, digest: Digest) -> bool:
        return self.store.manifest_type(name, digest) is not None

    async def delete_manifest(self, resp: Response, name: str, ref: str) -> None:
        if ":" not in ref:
            if not TAG_RE.fullmatch(ref) or not self.store.delete_tag(name, ref):
                raise self._manifest_absent(name, ref)
            await resp.full(202, [])
            return
        digest = _digest(ref)
        if self.store.manifest_type(name, digest) is None:
            raise self._manifest_absent(name, ref)
        subject = None
        raw = self.store.manifest_bytes(digest)
        if raw is not None:
            try:
                doc = parse(raw)
                subject = doc.subject.digest if doc.subject else None
            except (InvalidManifest, TypeError, ValueError, AttributeError, KeyError):
                pass
        if not self.store.delete_manifest(name, digest, subject):
            raise self._manifest_absent(name, ref)
        await resp.full(202, [])

    # -- listings -------------------------------------------------------------------------------

    def _page(self, req: Request, items: list[str], path: str) -> tuple[list[str], list[tuple[bytes, bytes]]]:
        last = req.arg("last")
        n_raw = req.arg("n")
        if last:
            items = [i for i in items if i > last]
        n = MAX_PAGE
        if n_raw is not None and n_raw != "":
            if not n_raw.isdigit():
                raise APIError(400, "UNSUPPORTED", f"invalid page size n={n_raw!r}: expected an integer >= 0")
            n = min(int(n_raw), MAX_PAGE)
        if n == 0:
            return [], []
        page = items[:n]
        headers = []
        if len(items) > n:
            link = f'<{path}?n={n}&last={quote(page[-1], safe="")}>; rel="next"'
            headers.append((b"link", link.encode()))
        return page, headers

    async def tags_list(self, req: Request, resp: Response, name: str) -> None:
        if not self.store.repo_exists(name):
            raise E.name_unknown(name)
        page, headers = self._page(req, self.store.tags(name), f"/v2/{name}/tags/list")
        await resp.json(200, {"name": name, "tags": page}, headers)

    async def catalog(self, req: Request, resp: Response) -> None:
        repos = await asyncio.to_thread(self.store.repositories)
        page, headers = self._page(req, repos, "/v2/_catalog")
        await resp.json(200, {"repositories": page}, headers)

    async def referrers(self, req: Request, resp: Response, name: str, ref: str) -> None:
        digest = _digest(ref)
        descs = self.store.referrers(name, digest)
        headers: list[tuple[bytes, bytes]] = []
        wanted = req.arg("artifactType")
        if wanted:
            descs = [d for d in descs if d.get("artifactType") == wanted]
            headers.append((b"oci-filters-applied", b"artifactType"))
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descs}
        await resp.json(200, index, headers, content_type=mt.OCI_INDEX.encode())

    # -- tokens ---------------------------------------------------------------------------------

    async def token(self, req: Request, resp: Response) -> None:
        if req.method != "GET":
            raise E.unsupported(f"{req.method} is not allowed on /token (use GET)")
        body = await self.auth.issue_token(req.headers.get("authorization", ""), req.arg("service") or "",
                                           req.args("scope"))
        await resp.json(200, body)


def _parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range → (start, end inclusive); "unsatisfiable"; None to ignore (send it all)."""
    m = _RANGE.match(value.strip())
    if m is None:
        return None  # multiple ranges or another unit: RFC 9110 lets us answer 200 with everything
    first, last = m[1], m[2]
    if first == "" and last == "":
        return None
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(size - n, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return "unsatisfiable"  # invalid byte-range-spec (RFC 9110 14.1.1); Go's ServeContent says 416 too
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def setup_logging() -> None:
    """One access line per request on stderr (the worker's), plus the server's warnings."""
    root = logging.getLogger("pallet.registry")
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        root.addHandler(h)
        root.setLevel(logging.INFO)
        root.propagate = False


def create_app() -> RegistryApp:
    """Granian's factory target: the app for the config the parent process put in the environment."""
    from pallet.registry.server.serve import die_with_parent

    die_with_parent()
    cfg = ServerConfig.from_env()
    setup_logging()
    root = Path(cfg.root) if cfg.root else Path(os.environ.get("PALLET_ROOT", ".")) / "registry"
    return RegistryApp(cfg, root)
