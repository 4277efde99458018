"""Streaming (de)compression of layers: gzip through ISA-L, zstd through zstandard.

Readers are file-like objects with ``read(n)``, so a layer flows registry → hash → decompress →
tar → disk without being staged anywhere.
"""

from __future__ import annotations

import io

from pallet.content import mediatypes as mt
from pallet.errors import ContentError

TYPE_CHECKING = False  # no typing import at start-up (pallet run)
if TYPE_CHECKING:
    from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def detect(head: bytes) -> str:
    """Compression of a stream from its first bytes: "gzip", "zstd" or "none"."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def of_media_type(media_type: str) -> str:
    try:
        return mt.LAYER_COMPRESSION[media_type]
    except KeyError:
        raise ContentError(f"unsupported layer media type {media_type!r}") from None


def decompressor(stream: BinaryIO, compression: str) -> BinaryIO:
    """Wrap ``stream`` so reads return decompressed bytes."""
    if compression == "none":
        return stream
    if compression == "gzip":
        from isal.igzip import IGzipFile

        return IGzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)  # type: ignore[return-value]
    raise ContentError(f"unsupported compression {compression!r}")


def sniffing_decompressor(stream: BinaryIO) -> BinaryIO:
    """Decompress whatever ``stream`` holds, telling the compression from its magic bytes."""
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(_Raw(stream), 1 << 16)
    return decompressor(buffered, detect(buffered.peek(4)[:4]))  # type: ignore[arg-type]


def compressor(stream: BinaryIO, compression: str, level: int | None = None) -> BinaryIO:
    """Wrap a writable ``stream`` so writes are compressed; close the wrapper to flush."""
    if compression == "none":
        return stream
    if compression == "gzip":
        from isal.igzip import IGzipFile

        return IGzipFile(fileobj=stream, mode="wb", compresslevel=1 if level is None else level,
                         mtime=0)  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3 if level is None else level).stream_writer(
            stream, closefd=False)  # type: ignore[return-value]
    raise ContentError(f"unsupported compression {compression!r}")


class _Raw(io.RawIOBase):
    """Adapts any object with read(n) to RawIOBase so BufferedReader can peek."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._f.read(len(b))
        n = len(data)
        b[:n] = data
        return n
