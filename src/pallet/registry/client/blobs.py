"""Verified, resumable blob downloads.

A :class:`BlobReader` is a file-like object (and an iterator of chunks) over one blob. It hashes
what passes and checks size and digest at the end; the final bytes are held back until the check
passes, so a consumer never sees a complete stream that turns out to be wrong. A connection that
drops mid-body is resumed with ``Range: bytes=N-``; a server that ignores ``Range`` and starts
again from 0 is read past the bytes already delivered.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import httpx

from pallet.content.digest import Digest, Hasher
from pallet.errors import DigestMismatch
from pallet.registry.client.errors import InvalidResponse, RegistryUnavailable

if TYPE_CHECKING:
    from pallet.registry.client.client import RegistryClient

log = logging.getLogger(__name__)
CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class BlobReader(io.RawIOBase):
    """Read a blob as it downloads; raises DigestMismatch instead of returning the last bytes if wrong."""

    def __init__(
        self,
        client: RegistryClient,
        repo: str,
        digest: str,
        size: int | None = None,
        *,
        chunk_size: int = CHUNK,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.repo = repo
        self.digest = Digest(digest)
        self.size = size if size is not None and size >= 0 else None
        self.chunk_size = chunk_size
        self.on_progress = on_progress
        self.resumes = 0  # how many times the download was resumed or restarted (observability, tests)
        self.restarts = 0  # of which the server ignored Range
        self._gen: Iterator[bytes] | None = None
        self._buf = b""
        self._resp: httpx.Response | None = None
        self._eof = False
        if not self.digest.verifiable:
            raise InvalidResponse(f"cannot verify blob {digest}: unsupported digest algorithm")

    # -- file-like -----------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if not self._buf:
            self._buf = self._next()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        if size is None or size < 0:
            return self.readall()
        if not self._buf:
            self._buf = self._next()
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def readall(self) -> bytes:
        parts = [self._buf]
        self._buf = b""
        while chunk := self._next():
            parts.append(chunk)
        return b"".join(parts)

    def __iter__(self) -> Iterator[bytes]:  # type: ignore[override]
        """Chunks as they arrive (after any buffered bytes)."""
        if self._buf:
            buf, self._buf = self._buf, b""
            yield buf
        while chunk := self._next():
            yield chunk

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
        if self._gen is not None:
            self._gen.close()
            self._gen = None
        super().close()

    def _next(self) -> bytes:
        if self._eof:
            return b""
        if self.closed:
            raise ValueError("read from a closed BlobReader")
        if self._gen is None:
            self._gen = self._chunks()
        chunk = next(self._gen, b"")
        if not chunk:
            self._eof = True
        return chunk

    # -- download ------------------------------------------------------------------------------

    def _open(self, offset: int) -> tuple[httpx.Response, int]:
        """GET the blob from ``offset``; returns the response and how many leading bytes to skip."""
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        resp = self.client._blob_get(self.repo, self.digest, headers)
        if offset == 0:
            return resp, 0
        if resp.status_code == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                resp.close()
                raise InvalidResponse(
                    f"registry {self.client.registry} answered a Range request for blob "
                    f"{self.digest} with Content-Range {resp.headers.get('Content-Range')!r}"
                )
            return resp, 0
        self.restarts += 1
        log.info(
            "registry %s ignored Range for %s; re-reading from the start", self.client.registry, self.digest
        )
        return resp, offset

    def _chunks(self) -> Iterator[bytes]:
        hasher = Hasher(self.digest.algorithm)
        what = f"blob {self.digest} of {self.client.registry}/{self.repo}"
        held = b""
        failures = 0
        resp, skip = self._open(0)
        self._resp = resp
        while True:
            progressed = False
            try:
                for chunk in resp.iter_raw(self.chunk_size):
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk, skip = chunk[skip:], 0
                    hasher.update(chunk)
                    progressed = True
                    if self.size is not None and hasher.size > self.size:
                        raise DigestMismatch(
                            f"{what}: registry sent more than the expected {self.size} bytes"
                        )
                    if self.on_progress:
                        self.on_progress(len(chunk))
                    if held:
                        yield held
                    held = chunk
                if self.size is not None and hasher.size < self.size:
                    raise httpx.RemoteProtocolError(f"body ended after {hasher.size} of {self.size} bytes")
                break
            except (httpx.TransportError, httpx.StreamError) as e:
                resp.close()
                if isinstance(e, httpx.StreamError) and not isinstance(e, httpx.StreamClosed):
                    raise
                failures = 0 if progressed else failures + 1
                if failures > self.client.retries:
                    raise RegistryUnavailable(
                        f"downloading {what}: connection failed {failures} times "
                        f"without progress ({type(e).__name__}: {e})"
                    ) from None
                self.resumes += 1
                log.info("resuming %s at byte %d after %s", what, hasher.size, e)
                if failures:
                    time.sleep(self.client._backoff(failures - 1))
                resp, skip = self._open(hasher.size)
                self._resp = resp
        resp.close()
        self._resp = None
        hasher.verify(self.digest, self.size, what=f"{self.client.registry}/{self.repo} blob")
        if held:
            yield held
