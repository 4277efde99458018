"""A synchronous, thread-safe client of the OCI distribution API (v1.1) and Docker registry v2.

One :class:`RegistryClient` talks to one registry (``HOST[:PORT]``); it knows nothing of name
resolution (registries.conf is the caller's business, :mod:`pallet.config.registries`). Its
threads share one connection pool, one bearer-token cache and one idea of the registry's scheme,
so a pull can fetch several layers at once.

Every byte is verified: manifests against the digest asked for (or the registry's
``Docker-Content-Digest`` when fetched by tag), blobs as they stream (:class:`BlobReader`).
Requests are retried with exponential backoff on 429 (honouring ``Retry-After``), 5xx and
connection errors; each has a connect and a read timeout, so a hung registry fails with an
error that says so instead of hanging.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import httpx

from pallet.config.auth import Credentials
from pallet.content import mediatypes as mt
from pallet.content.digest import Digest, Hasher, InvalidDigest, is_digest
from pallet.content.manifest import Descriptor, Index, Manifest, parse
from pallet.content.platform import Platform
from pallet.context import Context
from pallet.errors import DigestMismatch, RegistryError
from pallet.registry.client.auth import (
    CATALOG_SCOPE,
    Challenge,
    TokenCache,
    _reason,
    basic_header,
    parse_www_authenticate,
    repository_scope,
)
from pallet.registry.client.blobs import CHUNK, BlobReader
from pallet.registry.client.errors import (
    AuthenticationError,
    InvalidResponse,
    NotFoundError,
    RegistryClientError,
    RegistryUnavailable,
    TooManyRequests,
    error_for,
    parse_errors,
)

log = logging.getLogger(__name__)

MAX_MANIFEST_SIZE = 4 << 20  # distribution's limit
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_RANGE = re.compile(r"^(?:bytes=)?(\d+)-(\d+)$")
_TAG_OR_DIGEST = re.compile(r"^[\w][\w.-]{0,127}$")


def _user_agent() -> str:
    from pallet import __version__

    return f"pallet/{__version__}"


@dataclass(frozen=True)
class ImageResolution:
    """What :meth:`RegistryClient.resolve_image` found: the image manifest, its digest, and the index."""

    manifest: Manifest
    digest: Digest
    index_digest: Digest | None = None
    index: Index | None = None

    def __iter__(self):  # (manifest, digest, index_digest) unpacking
        return iter((self.manifest, self.digest, self.index_digest))


class _TLSError(RegistryUnavailable):
    """TLS itself failed (untrusted certificate, not a TLS server): retrying cannot help."""


class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying."""

    def __init__(self, error: RegistryClientError, delay: float | None = None) -> None:
        self.error, self.delay = error, delay


class RegistryClient:
    """Client for one registry. Thread-safe; close it (or use ``with``) to free its connections.

    ``registry`` is ``HOST[:PORT]`` (an ``http://``/``https://`` prefix forces the scheme).
    ``tls_verify``: True forces verified HTTPS; False allows HTTP and skips verification; None
    (default) takes ``ctx.tls_verify``, then ``insecure`` (None: registries.conf's setting for the
    host), and lets loopback registries speak plain HTTP as docker does. ``auth``: credentials to
    use; None looks them up per repository in auth.json and docker's config.
    """

    def __init__(
        self,
        registry: str,
        ctx: Context | None = None,
        *,
        tls_verify: bool | None = None,
        insecure: bool | None = None,
        auth: Credentials | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_retry_after: float = 60.0,
        user_agent: str | None = None,
    ) -> None:
        from pallet import context as _context
        from pallet.config import certs
        from pallet.config.registries import is_loopback

        self.ctx = ctx or _context.default()
        forced = ""
        for scheme in ("http", "https"):
            if registry.startswith(f"{scheme}://"):
                forced, registry = scheme, registry[len(scheme) + 3 :]
        registry = registry.rstrip("/")
        if not registry or "/" in registry:
            raise RegistryError(f"invalid registry {registry!r}: expected HOST[:PORT]")
        self.registry = DOCKER_HUB if registry in ("index.docker.io", DOCKER_HUB_API) else registry
        self.host = DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._auth = auth
        self._helpers: list[str] | None = None  # registries.conf credential-helpers, when read
        if tls_verify is None:
            tls_verify = self.ctx.tls_verify
        if tls_verify is None:
            if insecure is None:
                from pallet.config import registries

                conf = registries.load(self.ctx)
                conf.check_blocked(self.registry)
                insecure = conf.is_insecure(self.registry)
                self._helpers = conf.credential_helpers
            if insecure:
                verify, allow_http = False, True
            else:
                verify, allow_http = True, is_loopback(self.registry)
        else:
            verify, allow_http = tls_verify, not tls_verify
        self.verify = verify
        if forced:
            self._schemes = (forced,)
        else:
            self._schemes = ("https", "http") if allow_http else ("https",)
        self._http = httpx.Client(
            verify=certs.ssl_context(self.host, self.ctx, verify=verify),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            follow_redirects=True,
            headers={"User-Agent": user_agent or _user_agent()},
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        self._tokens = TokenCache(self._http, self.registry)
        self._base: str | None = None
        self._challenge: Challenge | None = None
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._creds: dict[str, Credentials | None] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r})"

    @property
    def scheme(self) -> str:
        """ "https" or "http", once the registry has been contacted."""
        return self._base_url().split(":", 1)[0]

    @property
    def token_fetches(self) -> int:
        return self._tokens.fetches

    # -- plumbing -------------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        return self.backoff * (2**attempt) * (0.75 + random.random() / 2)

    def _retry_after(self, resp: httpx.Response) -> float | None:
        value = resp.headers.get("Retry-After")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())

    def _credentials(self, repo: str = "") -> Credentials | None:
        if self._auth is not None:
            return self._auth or None
        key = f"{self.registry}/{repo}" if repo else self.registry
        with self._lock:
            if key in self._creds:
                return self._creds[key]
        from pallet.config import auth as authconf

        creds = authconf.lookup(key, self.ctx, helpers=self._helpers)
        with self._lock:
            self._creds[key] = creds
        return creds

    def _transport_error(self, e: Exception, what: str) -> RegistryClientError:
        if isinstance(e, httpx.TimeoutException):
            phase = "connect" if isinstance(e, httpx.ConnectTimeout) else "read"
            limit = self.connect_timeout if phase == "connect" else self.timeout
            return RegistryUnavailable(f"registry {self.registry} did not answer within {limit:g}s ({what})")
        reason = _reason(e)
        if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in reason:
            return _TLSError(
                f"TLS certificate of registry {self.registry} is not trusted ({reason}); add its CA to "
                f"/etc/containers/certs.d/{self.registry}/ or use --tls-verify=false"
            )
        if "wrong version number" in reason.lower() or "record layer failure" in reason.lower():
            return _TLSError(
                f"registry {self.registry} does not speak TLS ({reason}; {what}); if it serves plain HTTP, "
                "use --tls-verify=false or mark it insecure in registries.conf"
            )
        return RegistryUnavailable(f"cannot reach registry {self.registry}: {reason} ({what})")

    def _base_url(self) -> str:
        """Contact the registry once (GET /v2/) to learn its scheme and how it wants to be authenticated."""
        if self._base is not None:
            return self._base
        with self._probe_lock:  # one probe, however many threads start at once
            if self._base is not None:
                return self._base
            return self._probe_with_retries()

    def _probe_with_retries(self) -> str:
        last: RegistryClientError | None = None
        for attempt in range(self.retries + 1):
            try:
                base, challenge = self._probe()
            except _Retry as r:
                last = r.error
                if attempt < self.retries:
                    delay = r.delay if r.delay is not None else self._backoff(attempt)
                    if delay > self.max_retry_after:
                        break
                    time.sleep(delay)
                continue
            with self._lock:
                if self._base is None:
                    self._base, self._challenge = base, challenge
                return self._base
        assert last is not None
        raise last

    def _probe(self) -> tuple[str, Challenge | None]:
        what = "GET /v2/"
        for i, scheme in enumerate(self._schemes):
            url = f"{scheme}://{self.host}/v2/"
            try:
                resp = self._http.get(url)
            except httpx.TimeoutException as e:
                raise _Retry(self._transport_error(e, what)) from None
            except httpx.TransportError as e:
                err = self._transport_error(e, what)
                untrusted = isinstance(err, _TLSError) and "not trusted" in str(err)
                if i + 1 < len(self._schemes) and not untrusted:
                    log.debug("%s failed (%s); trying the next scheme", url, _reason(e))
                    continue
                if isinstance(err, _TLSError):
                    raise err from None
                raise _Retry(err) from None
            if resp.status_code in RETRY_STATUSES:
                raise _Retry(
                    error_for(
                        resp.status_code,
                        parse_errors(resp.content),
                        f"{what} on {self.registry}",
                        resp.content,
                    ),
                    self._retry_after(resp),
                )
            if resp.status_code == 401:
                chs = parse_www_authenticate(resp.headers.get("WWW-Authenticate", ""))
                ch = _pick_challenge(chs)
                if ch is None:
                    raise AuthenticationError(
                        f"registry {self.registry} answered 401 without a usable WWW-Authenticate challenge",
                        status=401,
                    )
                return f"{scheme}://{self.host}", ch
            if resp.status_code == 200:
                return f"{scheme}://{self.host}", None
            if resp.status_code == 404:
                raise InvalidResponse(
                    f"{url} answered 404: {self.registry} does not serve the registry API v2", status=404
                )
            raise error_for(
                resp.status_code, parse_errors(resp.content), f"{what} on {self.registry}", resp.content
            )
        raise AssertionError("unreachable")

    def _authorize(self, headers: dict[str, str], scopes: list[str], repo: str) -> Challenge | None:
        ch = self._challenge
        if ch is None:
            return None
        creds = self._credentials(repo)
        if ch.scheme == "basic":
            if creds:
                headers["Authorization"] = basic_header(creds)
        elif ch.scheme == "bearer":
            headers["Authorization"] = "Bearer " + self._tokens.get(ch, scopes, creds)
        return ch

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        repo: str = "",
        scopes: Iterable[str] = (),
        headers: dict[str, str] | None = None,
        params: Any = None,
        content: Any = None,
        stream: bool = False,
        replayable: bool = True,
    ) -> httpx.Response:
        """Send with auth and retries; returns any final response (the caller checks its status)."""
        base = self._base_url()
        url = path if path.startswith(("http://", "https://")) else base + path
        scopes = list(scopes)
        reauthed = False
        attempt = 0
        while True:
            h = dict(headers or {})
            ch = self._authorize(h, scopes, repo)
            try:
                req = self._http.build_request(method, url, headers=h, params=params, content=content)
                resp = self._http.send(req, stream=stream)
            except httpx.TransportError as e:
                err = self._transport_error(e, what)
                if replayable and attempt < self.retries and not isinstance(err, _TLSError):
                    log.info("%s; retrying", err)
                    time.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                raise err from None
            if resp.status_code == 401 and not reauthed and replayable:
                chs = parse_www_authenticate(resp.headers.get("WWW-Authenticate", ""))
                new = _pick_challenge(chs)
                if new is not None:
                    reauthed = True
                    if ch is not None and ch.scheme == "bearer":
                        self._tokens.invalidate(ch, scopes, self._credentials(repo))
                    for s in new.scopes:
                        if s not in scopes:
                            scopes.append(s)
                    retry = (
                        ch is None
                        or new.scheme == "bearer"
                        or (new.scheme == "basic" and ch.scheme != "basic")
                    )
                    with self._lock:
                        self._challenge = new
                    if retry:
                        resp.close()
                        continue
            if resp.status_code in RETRY_STATUSES and replayable and attempt < self.retries:
                delay = self._retry_after(resp)
                if delay is None:
                    delay = self._backoff(attempt)
                if delay <= self.max_retry_after:
                    log.info(
                        "%s: HTTP %d from %s; retrying in %.1fs", what, resp.status_code, self.registry, delay
                    )
                    resp.close()
                    time.sleep(delay)
                    attempt += 1
                    continue
            return resp

    def _fail(self, resp: httpx.Response, what: str) -> RegistryClientError:
        try:
            body = resp.read()
        except (httpx.HTTPError, httpx.StreamError):
            body = b""
        resp.close()
        err = error_for(resp.status_code, parse_errors(body), what, body)
        if isinstance(err, AuthenticationError) and self._credentials_known_bad(resp):
            err = AuthenticationError(
                f"{what}: invalid username/password", status=err.status, errors=err.errors
            )
        if resp.status_code == 429 and isinstance(err, TooManyRequests):
            after = self._retry_after(resp)
            if after:
                err = TooManyRequests(
                    f"{err} (registry asks to retry after {after:.0f}s)", status=429, errors=err.errors
                )
        return err

    def _credentials_known_bad(self, resp: httpx.Response) -> bool:
        """A Basic-auth registry that still says 401 to our credentials: the password is wrong."""
        ch = self._challenge
        return bool(ch is not None and ch.scheme == "basic" and "Authorization" in resp.request.headers)

    def _repo_path(self, repo: str) -> str:
        if not repo or repo.startswith("/") or repo.endswith("/") or ".." in repo.split("/"):
            raise RegistryError(f"invalid repository name {repo!r}")
        return f"/v2/{repo}"

    # -- API: base --------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check the registry answers the v2 API (raises RegistryUnavailable & co. if not)."""
        self._base_url()

    def check_login(self) -> None:
        """Verify our credentials against the registry; raises AuthenticationError if they are refused."""
        self._base_url()
        ch = self._challenge
        if ch is None:
            return
        creds = self._credentials()
        if ch.scheme == "bearer":
            self._tokens.invalidate(ch, [], creds)
        resp = self._request("GET", "/v2/", what=f"logging in to {self.registry}")
        if resp.status_code == 401:
            resp.close()
            if creds:
                raise AuthenticationError(
                    f"logging in to {self.registry}: invalid username/password", status=401
                )
            raise AuthenticationError(f"logging in to {self.registry}: authentication required", status=401)
        if resp.status_code != 200:
            raise self._fail(resp, f"logging in to {self.registry}")
        resp.close()

    # -- API: manifests ---------------------------------------------------------------------------

    def get_manifest(
        self, repo: str, reference: str, *, accept: str = mt.MANIFEST_ACCEPT
    ) -> tuple[Manifest | Index, Digest]:
        """Fetch and verify a manifest or index by tag or digest; returns it and its digest."""
        _check_reference(reference)
        what = f"fetching manifest {reference} of {self.registry}/{repo}"
        resp = self._request(
            "GET",
            f"{self._repo_path(repo)}/manifests/{reference}",
            what=what,
            repo=repo,
            scopes=[repository_scope(repo, "pull")],
            headers={"Accept": accept},
            stream=True,
        )
        try:
            if resp.status_code != 200:
                raise self._fail(resp, what)
            body = _read_limited(resp, MAX_MANIFEST_SIZE, what)
        finally:
            resp.close()
        digest = _verify_manifest(body, reference, resp.headers.get("Docker-Content-Digest"), what)
        manifest = parse(body, resp.headers.get("Content-Type"))
        return manifest, digest

    def head_manifest(self, repo: str, reference: str, *, accept: str = mt.MANIFEST_ACCEPT) -> Descriptor:
        """The descriptor (media type, digest, size) of a manifest, without its body."""
        _check_reference(reference)
        what = f"checking manifest {reference} of {self.registry}/{repo}"
        resp = self._request(
            "HEAD",
            f"{self._repo_path(repo)}/manifests/{reference}",
            what=what,
            repo=repo,
            scopes=[repository_scope(repo, "pull")],
            headers={"Accept": accept},
        )
        if resp.status_code != 200:
            raise self._fail(resp, what)
        dig = resp.headers.get("Docker-Content-Digest") or (reference if is_digest(reference) else "")
        if not dig:
            raise InvalidResponse(f"{what}: the registry did not say the manifest's digest")
        try:
            digest = Digest(dig)
        except InvalidDigest:
            raise InvalidResponse(f"{what}: registry sent an invalid Docker-Content-Digest {dig!r}") from None
        if is_digest(reference) and digest != reference:
            raise DigestMismatch(f"{what}: registry says digest {digest}")
        size = int(resp.headers.get("Content-Length") or -1)
        ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip()
        return Descriptor(ctype, digest, size)

    def manifest_exists(self, repo: str, reference: str) -> bool:
        try:
            self.head_manifest(repo, reference)
        except NotFoundError:
            return False
        return True

    def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str | None = None) -> Digest:
        """Push manifest bytes under a tag or their digest; returns the digest the registry confirmed."""
        _check_reference(reference)
        if media_type is None:
            media_type = parse(raw).media_type
        algo = Digest(reference).algorithm if is_digest(reference) else "sha256"
        digest = Digest.of(raw, algo)
        if is_digest(reference) and digest != reference:
            raise DigestMismatch(f"manifest pushed as {reference} hashes to {digest}")
        what = f"pushing manifest {reference} to {self.registry}/{repo}"
        resp = self._request(
            "PUT",
            f"{self._repo_path(repo)}/manifests/{reference}",
            what=what,
            repo=repo,
            scopes=[repository_scope(repo, "pull", "push")],
            headers={"Content-Type": media_type},
            content=bytes(raw),
        )
        if resp.status_code not in (200, 201, 202):
            raise self._fail(resp, what)
        resp.close()
        said = resp.headers.get("Docker-Content-Digest")
        if said and algo == "sha256" and said != digest:
            raise DigestMismatch(f"{what}: registry stored it as {said}, but it hashes to {digest}")
        return digest

    def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete a manifest by digest (registries refuse deletes by tag)."""
        self._delete(repo, "manifest", digest)

    def resolve_image(
        self, repo: str, reference: str, platform: Platform | str | None = None
    ) -> ImageResolution:
        """The image manifest for ``platform`` (default: this host's) behind a tag or digest.

        An index is resolved to its entry for the platform; unpacks as
        ``(manifest, digest, index_digest_or_None)``.
        """
        want = Platform.parse(platform) if isinstance(platform, str) else (platform or Platform.host())
        top, digest = self.get_manifest(repo, reference)
        if isinstance(top, Manifest):
            return ImageResolution(top, digest)
        desc = top.for_platform(want)
        if desc is None:
            have = sorted({str(d.platform) for d in top.manifests if d.platform})
            raise NotFoundError(
                f"{self.registry}/{repo}:{reference} has no image for platform {want} "
                f"(available: {', '.join(have) or 'none'})"
            )
        child, child_digest = self.get_manifest(repo, str(desc.digest))
        if isinstance(child, Index):
            raise InvalidResponse(
                f"{self.registry}/{repo}@{desc.digest}: an index entry for {want} is itself an "
                "index; nested indexes are not supported"
            )
        return ImageResolution(child, child_digest, digest, top)

    # -- API: blobs ----------------------------------------------------------------------------

    def _blob_get(self, repo: str, digest: str, headers: dict[str, str]) -> httpx.Response:
        what = f"fetching blob {digest} of {self.registry}/{repo}"
        resp = self._request(
            "GET",
            f"{self._repo_path(repo)}/blobs/{digest}",
            what=what,
            repo=repo,
            scopes=[repository_scope(repo, "pull")],
            headers=headers,
            stream=True,
        )
        if resp.status_code not in (200, 206):
            raise self._fail(resp, what)
        return resp

    def open_blob(
        self, repo: str, digest: str, size: int | None = None, *, chunk_size: int = CHUNK, on_progress=None
    ) -> BlobReader:
        """A verified, resuming stream of a blob (file-like and iterable of chunks). Close it when done."""
        return BlobReader(self, repo, digest, size, chunk_size=chunk_size, on_progress=on_progress)

    def get_blob(self, repo: str, digest: str, size: int | None = None, *, max_size: int = 64 << 20) -> bytes:
        """A small blob (a config) in memory, verified."""
        if size is not None and size > max_size:
            raise RegistryError(f"blob {digest} is {size} bytes, more than the {max_size} allowed in memory")
        parts, n = [], 0
        with self.open_blob(repo, digest, size) as r:
            for chunk in r:
                n += len(chunk)
                if n > max_size:
                    raise RegistryError(f"blob {digest} is more than the {max_size} bytes allowed in memory")
                parts.append(chunk)
        data = b"".join(parts)
        return data

    def blob_exists(self, repo: str, digest: str) -> bool:
        what = f"checking blob {digest} in {self.registry}/{repo}"
        resp = self._request(
            "HEAD",
            f"{self._repo_path(repo)}/blobs/{digest}",
            what=what,
            repo=repo,
            scopes=[repository_scope(repo, "pull", "push")],
        )
        resp.close()
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise self._fail(resp, what)

    def delete_blob(self, repo: str, digest: str) -> None:
        self._delete(repo, "blob", digest)

    def _delete(self, repo: str, kind: str, digest: str) -> None:
        """``DELETE /v2/<repo>/<kind>s/<digest>`` (kind: manifest or blob), by digest only."""
        Digest(digest)
        what = f"deleting {kind} {digest} of {self.registry}/{repo}"
        resp = self._request(
            "DELETE",
            f"{self._repo_path(repo)}/{kind}s/{digest}",
            what=what,
            repo=repo,
            scopes=[repository_scope(repo, "delete"), repository_scope(repo, "pull", "push")],
        )
        if resp.status_code not in (200, 202):
            raise self._fail(resp, what)
        resp.close()

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; True if the registry mounted it (False: upload it instead)."""
        location = self._start_upload(repo, digest, from_repo)
        if location is None:
            return True
        self._cancel_upload(location[0], repo)
        return False

    def _start_upload(self, repo: str, digest: str, from_repo: str | None = None) -> tuple[str, int] | None:
        """POST an upload session (or a mount); None if mounted, else (location, minimum chunk length)."""
        params = {"mount": digest, "from": from_repo} if from_repo else None
        scopes = [repository_scope(repo, "pull", "push")]
        if from_repo:
            scopes.append(repository_scope(from_repo, "pull"))
        what = f"starting an upload of {digest} to {self.registry}/{repo}"
        resp = self._request(
            "POST",
            f"{self._repo_path(repo)}/blobs/uploads/",
            what=what,
            repo=repo,
            scopes=scopes,
            params=params,
            headers={"Content-Length": "0"},
        )
        if resp.status_code == 201 and from_repo:
            resp.close()
            return None
        if resp.status_code != 202:
            raise self._fail(resp, what)
        resp.close()
        location = resp.headers.get("Location")
        if not location:
            raise InvalidResponse(f"{what}: the registry gave no Location for the upload")
        min_len = resp.headers.get("OCI-Chunk-Min-Length", "")
        return self._absolute(location), int(min_len) if min_len.isdigit() else 0

    def _absolute(self, location: str) -> str:
        return str(httpx.URL(self._base_url() + "/").join(location))

    def _cancel_upload(self, location: str, repo: str) -> None:
        try:
            resp = self._request(
                "DELETE",
                location,
                what="cancelling an upload",
                repo=repo,
                scopes=[repository_scope(repo, "pull", "push")],
            )
            resp.close()
        except RegistryError:
            pass

    def upload_blob(
        self,
        repo: str,
        source: bytes | IO[bytes] | Iterable[bytes],
        digest: str,
        size: int | None = None,
        *,
        chunk_size: int | None = None,
        mount_from: str | None = None,
        check_exists: bool = True,
    ) -> str:
        """Push a blob unless the registry has it. Returns "exists", "mounted" or "uploaded".

        ``source``: bytes, a binary file, or an iterable of chunks. ``chunk_size`` None uploads in
        one PUT; else in PATCH chunks of at least that size (raised to OCI-Chunk-Min-Length).
        ``mount_from``: a repository on the same registry that has the blob.
        """
        digest = Digest(digest)
        if isinstance(source, bytes | bytearray | memoryview):
            source = bytes(source)
            if size is None:
                size = len(source)
        if size is None:
            raise RegistryError(f"uploading {digest}: the blob's size is needed for a streamed upload")
        if check_exists and self.blob_exists(repo, digest):
            return "exists"
        started = self._start_upload(repo, digest, mount_from)
        if started is None:
            return "mounted"
        location, min_len = started
        try:
            if chunk_size is None:
                self._put_monolithic(repo, location, source, digest, size)
            else:
                self._put_chunked(repo, location, source, digest, size, max(chunk_size, min_len, 1))
        except BaseException:
            self._cancel_upload(location, repo)
            raise
        return "uploaded"

    def _put_monolithic(self, repo: str, location: str, source: Any, digest: Digest, size: int) -> None:
        what = f"uploading blob {digest} to {self.registry}/{repo}"
        hasher = Hasher(digest.algorithm)
        replayable = isinstance(source, bytes)
        if replayable:
            hasher.update(source)
            body: Any = _Slices(source, CHUNK)
        else:
            body = _hashing(_chunks_of(source, CHUNK), hasher)
        url = str(httpx.URL(location).copy_merge_params({"digest": str(digest)}))
        resp = self._request(
            "PUT",
            url,
            what=what,
            repo=repo,
            scopes=[repository_scope(repo, "pull", "push")],
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            content=body,
            replayable=replayable,
        )
        if resp.status_code != 201:
            err = self._fail(resp, what)
            if "DIGEST_INVALID" in err.codes or "SIZE_INVALID" in err.codes:
                raise DigestMismatch(
                    f"{what}: the registry refused the content ({err}); the bytes sent hash "
                    f"to {hasher.digest()} ({hasher.size} bytes)"
                )
            raise err
        resp.close()
        if hasher.size != size or hasher.digest() != digest:
            raise DigestMismatch(
                f"{what}: the bytes sent hash to {hasher.digest()} ({hasher.size} bytes), "
                f"yet the registry accepted them"
            )

    def _put_chunked(
        self, repo: str, location: str, source: Any, digest: Digest, size: int, chunk: int
    ) -> None:
        what = f"uploading blob {digest} to {self.registry}/{repo} in chunks"
        scopes = [repository_scope(repo, "pull", "push")]
        hasher = Hasher(digest.algorithm)
        offset = 0
        pieces = _chunks_of(source, chunk)
        for data in pieces:
            hasher.update(data)
            end = offset + len(data) - 1
            resp = self._request(
                "PATCH",
                location,
                what=what,
                repo=repo,
                scopes=scopes,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{end}",
                    "Content-Length": str(len(data)),
                },
                content=_Slices(data, CHUNK),
            )
            if resp.status_code != 202:
                raise self._fail(resp, what)
            resp.close()
            location = self._absolute(resp.headers.get("Location") or location)
            got = _RANGE.match(resp.headers.get("Range", "").strip())
            if got and (int(got.group(1)) != 0 or int(got.group(2)) != end):
                raise InvalidResponse(
                    f"{what}: after sending bytes {offset}-{end} the registry reports it has "
                    f"range {got.group(0)}"
                )
            offset = end + 1
        if offset != size or hasher.digest() != digest:
            raise DigestMismatch(
                f"{what}: the content hashes to {hasher.digest()} ({offset} bytes), not "
                f"{digest} ({size} bytes)"
            )
        url = str(httpx.URL(location).copy_merge_params({"digest": str(digest)}))
        resp = self._request(
            "PUT",
            url,
            what=what,
            repo=repo,
            scopes=scopes,
            headers={"Content-Length": "0", "Content-Type": "application/octet-stream"},
        )
        if resp.status_code != 201:
            raise self._fail(resp, what)
        resp.close()

    # -- API: listing ----------------------------------------------------------------------------

    def _paginate(
        self, path: str, key: str, what: str, repo: str, scopes: list[str], page_size: int | None
    ) -> Iterator[str]:
        url: str | None = path
        params = {"n": str(page_size)} if page_size else None
        seen: set[str] = set()
        while url:
            resp = self._request("GET", url, what=what, repo=repo, scopes=scopes, params=params)
            if resp.status_code != 200:
                raise self._fail(resp, what)
            try:
                doc = resp.json()
            except ValueError:
                raise InvalidResponse(f"{what}: the registry answered invalid JSON") from None
            items = doc.get(key) if isinstance(doc, dict) else None
            if items is not None and not (isinstance(items, list) and all(isinstance(t, str) for t in items)):
                raise InvalidResponse(f"{what}: {key!r} is not a list of strings")
            yield from items or ()
            nxt = resp.links.get("next", {}).get("url")
            if not nxt:
                break
            url = self._absolute(nxt)
            params = None  # the link carries n and last
            if url in seen:
                raise InvalidResponse(f"{what}: the registry's Link header loops back to {nxt}")
            seen.add(url)

    def tags(self, repo: str, page_size: int | None = None) -> Iterator[str]:
        """Tags of a repository, following the registry's pagination (``n``/``last`` and Link)."""
        yield from self._paginate(
            f"{self._repo_path(repo)}/tags/list",
            "tags",
            f"listing tags of {self.registry}/{repo}",
            repo,
            [repository_scope(repo, "pull")],
            page_size,
        )

    def catalog(self, page_size: int | None = None) -> Iterator[str]:
        """Repositories of the registry (if it offers /v2/_catalog)."""
        yield from self._paginate(
            "/v2/_catalog",
            "repositories",
            f"listing repositories of {self.registry}",
            "",
            [CATALOG_SCOPE],
            page_size,
        )

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose subject is ``digest``: the referrers API, else the ``sha256-HEX`` tag schema."""
        d = Digest(digest)
        what = f"listing referrers of {digest} in {self.registry}/{repo}"
        params = {"artifactType": artifact_type} if artifact_type else None
        resp = self._request(
            "GET",
            f"{self._repo_path(repo)}/referrers/{d}",
            what=what,
            repo=repo,
            scopes=[repository_scope(repo, "pull")],
            params=params,
            headers={"Accept": mt.OCI_INDEX},
        )
        if resp.status_code == 200:
            index = parse(resp.content, resp.headers.get("Content-Type") or mt.OCI_INDEX)
            filtered = "artifactType" in resp.headers.get("OCI-Filters-Applied", "")
        elif resp.status_code == 404:
            resp.close()
            try:
                index, _ = self.get_manifest(repo, f"{d.algorithm}-{d.encoded}", accept=mt.OCI_INDEX)
            except NotFoundError:
                return []
            filtered = False
        else:
            raise self._fail(resp, what)
        if not isinstance(index, Index):
            raise InvalidResponse(f"{what}: the registry answered a manifest, not an index")
        out = list(index.manifests)
        if artifact_type and not filtered:
            out = [m for m in out if m.artifact_type == artifact_type]
        return out


def _pick_challenge(chs: list[Challenge]) -> Challenge | None:
    for scheme in ("bearer", "basic"):
        for c in chs:
            if c.scheme == scheme:
                return c
    return None


def _check_reference(reference: str) -> None:
    if not (is_digest(reference) or _TAG_OR_DIGEST.fullmatch(reference)):
        raise RegistryError(f"invalid tag or digest {reference!r}")


def _read_limited(resp: httpx.Response, limit: int, what: str) -> bytes:
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        raise InvalidResponse(f"{what}: manifest of {length} bytes exceeds the {limit}-byte limit")
    parts, n = [], 0
    try:
        for chunk in resp.iter_bytes():
            n += len(chunk)
            if n > limit:
                raise InvalidResponse(f"{what}: manifest exceeds the {limit}-byte limit")
            parts.append(chunk)
    except httpx.TransportError as e:
        raise RegistryUnavailable(f"{what}: connection failed while reading ({_reason(e)})") from None
    return b"".join(parts)


def _verify_manifest(body: bytes, reference: str, header: str | None, what: str) -> Digest:
    if is_digest(reference):
        want = Digest(reference)
        if not want.verifiable:
            raise InvalidResponse(f"{what}: cannot verify digest algorithm {want.algorithm}")
        got = Digest.of(body, want.algorithm)
        if got != want:
            raise DigestMismatch(f"{what}: the registry sent content that hashes to {got}")
        return want
    if header:
        try:
            said = Digest(header)
        except InvalidDigest:
            raise InvalidResponse(
                f"{what}: registry sent an invalid Docker-Content-Digest {header!r}"
            ) from None
        if said.verifiable:
            got = Digest.of(body, said.algorithm)
            if got != said:
                raise DigestMismatch(f"{what}: the registry says {said}, but the content hashes to {got}")
            return said if said.algorithm == "sha256" else Digest.of(body)
    return Digest.of(body)


def _chunks_of(source: Any, size: int) -> Iterator[bytes]:
    if isinstance(source, bytes):
        for i in range(0, len(source), size):
            yield source[i : i + size]
        return
    if hasattr(source, "read"):
        while True:
            data = source.read(size)
            if not data:
                return
            # a file may return short reads: gather a full chunk so PATCH sizes stay above the minimum
            while len(data) < size:
                more = source.read(size - len(data))
                if not more:
                    break
                data += more
            yield bytes(data)
        return
    buf = b""
    for piece in source:
        buf += piece
        while len(buf) >= size:
            yield buf[:size]
            buf = buf[size:]
    if buf:
        yield buf


class _Slices:
    """A bytes body sent in slices: httpx writes one huge bytes object far slower than 1 MiB pieces.

    Iterable again for each retry, unlike a generator.
    """

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size = data, size

    def __iter__(self) -> Iterator[bytes]:
        view = memoryview(self.data)
        for i in range(0, len(view), self.size):
            yield bytes(view[i : i + self.size])


def _hashing(chunks: Iterator[bytes], hasher: Hasher) -> Iterator[bytes]:
    for c in chunks:
        hasher.update(c)
        yield c
