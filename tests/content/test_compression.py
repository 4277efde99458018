import gzip
import io
import os

import pytest
import zstandard

from pallet.content import compression


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
def test_roundtrip_and_sniff(kind):
    data = os.urandom(200_000) + b"text" * 100_000
    buf = io.BytesIO()
    w = compression.compressor(buf, kind)
    w.write(data)
    if w is not buf:
        w.close()
    blob = buf.getvalue()
    assert compression.detect(blob[:4]) == kind
    out = compression.sniffing_decompressor(io.BytesIO(blob)).read()
    assert out == data
    assert compression.decompressor(io.BytesIO(blob), kind).read() == data


def test_peers_can_read_ours():
    buf = io.BytesIO()
    w = compression.compressor(buf, "gzip")
    w.write(b"abc" * 1000)
    w.close()
    assert gzip.decompress(buf.getvalue()) == b"abc" * 1000
    buf = io.BytesIO()
    w = compression.compressor(buf, "zstd")
    w.write(b"abc" * 1000)
    w.close()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(buf.getvalue()) == b"abc" * 1000


def test_unknown_media_type():
    from pallet.errors import ContentError

    with pytest.raises(ContentError):
        compression.of_media_type("application/x-foo")
