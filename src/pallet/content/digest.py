"""Digests as the OCI image spec defines them: ``algorithm:encoded``.

Registered algorithms (sha256, sha512) are checked strictly: lowercase hex of the right length.
Anything else that fits the grammar parses, but cannot be verified.
"""

from __future__ import annotations

import re

from pallet.errors import ContentError, DigestMismatch

TYPE_CHECKING = False  # no typing import at start-up (pallet run)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import BinaryIO

# image-spec descriptor.md: digest ::= algorithm ":" encoded
_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_REGISTERED = {"sha256": re.compile(r"^[a-f0-9]{64}$"), "sha512": re.compile(r"^[a-f0-9]{128}$")}

CHUNK = 1 << 20


class InvalidDigest(ContentError, ValueError):
    """A string that is not a digest."""


class Digest(str):
    """A validated digest string; ``.algorithm`` and ``.encoded`` split it."""

    __slots__ = ()

    def __new__(cls, value: str) -> Digest:
        if isinstance(value, Digest):
            return value
        if not isinstance(value, str) or not _GRAMMAR.fullmatch(value):
            raise InvalidDigest(f"invalid digest {value!r}: expected algorithm:hex")
        algorithm, encoded = value.split(":", 1)
        pattern = _REGISTERED.get(algorithm)
        if pattern is not None and not pattern.fullmatch(encoded):
            raise InvalidDigest(f"invalid {algorithm} digest {value!r}: wrong length or characters")
        return super().__new__(cls, value)

    @property
    def algorithm(self) -> str:
        return self.split(":", 1)[0]

    @property
    def encoded(self) -> str:
        return self.split(":", 1)[1]

    @property
    def short(self) -> str:
        """The 12-hex image ID docker shows."""
        return self.encoded[:12]

    @property
    def verifiable(self) -> bool:
        return self.algorithm in _REGISTERED

    def hasher(self) -> Hasher:
        return Hasher(self.algorithm)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(f"{algorithm}:{_new(algorithm, data).hexdigest()}")

    @classmethod
    def of_file(cls, f: BinaryIO, algorithm: str = "sha256") -> Digest:
        h = Hasher(algorithm)
        while chunk := f.read(CHUNK):
            h.update(chunk)
        return h.digest()


def _new(algorithm: str, data: bytes = b""):
    if algorithm not in _REGISTERED:
        raise InvalidDigest(f"unsupported digest algorithm {algorithm!r} (supported: sha256, sha512)")
    import hashlib  # on first use: loading OpenSSL costs ~3 ms of every `pallet run`, which hashes nothing

    return hashlib.new(algorithm, data)


def sha256_of(data: bytes) -> bytes:
    """SHA-256 of a short string (a key, a name) with CPython's built-in implementation when it has
    one: hashlib's OpenSSL backend costs ~3 ms to load, more than `pallet run` hashes in total."""
    try:
        from _sha256 import sha256  # CPython 3.11 (3.12 renamed it _sha2)
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[no-redef]
        except ImportError:
            from hashlib import sha256
    return sha256(data).digest()


def chain_id(parent: str | None, diff_id: str) -> Digest:
    """ChainID of a layer with DiffID ``diff_id`` on the layer whose ChainID is ``parent``
    (image-spec config.md: ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n)))."""
    diff = Digest(diff_id)
    if not parent:
        return diff
    return Digest("sha256:" + sha256_of(f"{parent} {diff}".encode()).hex())


def chain_ids(diff_ids: Iterable[str]) -> list[Digest]:
    """Chain IDs of every layer of an image whose rootfs.diff_ids are ``diff_ids``."""
    out: list[Digest] = []
    for d in diff_ids:
        out.append(chain_id(out[-1] if out else None, d))
    return out


def is_digest(value: str) -> bool:
    try:
        Digest(value)
    except InvalidDigest:
        return False
    return True


class Hasher:
    """Incremental digest with a byte count, for verifying streams as they pass."""

    __slots__ = ("_h", "algorithm", "size")

    def __init__(self, algorithm: str = "sha256") -> None:
        self.algorithm = algorithm
        self._h = _new(algorithm)
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)
        self.size += len(data)

    def copy(self) -> Hasher:
        c = Hasher.__new__(Hasher)
        c.algorithm, c._h, c.size = self.algorithm, self._h.copy(), self.size
        return c

    def digest(self) -> Digest:
        return Digest(f"{self.algorithm}:{self._h.hexdigest()}")

    def verify(self, expected: str, size: int | None = None, what: str = "content") -> Digest:
        """Raise :class:`DigestMismatch` unless the bytes seen hash to ``expected`` (and have ``size``)."""
        got = self.digest()
        if size is not None and size >= 0 and self.size != size:
            raise DigestMismatch(f"{what} {expected}: size {self.size} does not match expected {size}")
        if got != expected:
            raise DigestMismatch(f"{what} {expected}: content hashes to {got}")
        return got
