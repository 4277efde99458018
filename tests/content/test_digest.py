import hashlib
import io

import pytest

from pallet.content import Digest, Hasher, InvalidDigest, is_digest
from pallet.errors import DigestMismatch

SHA = "sha256:" + hashlib.sha256(b"hello").hexdigest()


def test_parse_and_parts():
    d = Digest(SHA)
    assert d.algorithm == "sha256"
    assert d.encoded == hashlib.sha256(b"hello").hexdigest()
    assert d.short == d.encoded[:12]
    assert d == SHA


@pytest.mark.parametrize("bad", ["", "sha256", "sha256:", "sha256:abc", "SHA256:" + "a" * 64,
                                 "sha256:" + "A" * 64, "sha512:" + "a" * 64, "sha256:" + "g" * 64, ":abc",
                                 "sha256:" + "a" * 64 + "\n"])
def test_invalid(bad):
    with pytest.raises(InvalidDigest):
        Digest(bad)
    assert not is_digest(bad)


def test_unregistered_algorithm_parses_but_cannot_hash():
    d = Digest("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8")
    assert not d.verifiable
    with pytest.raises(InvalidDigest):
        d.hasher()


def test_of_and_sha512():
    assert Digest.of(b"hello") == SHA
    d512 = Digest.of(b"hello", "sha512")
    assert d512 == "sha512:" + hashlib.sha512(b"hello").hexdigest()
    assert Digest.of_file(io.BytesIO(b"hello")) == SHA


def test_hasher_verify():
    h = Hasher()
    h.update(b"hel")
    h.update(memoryview(b"lo"))
    assert h.size == 5
    assert h.verify(SHA, 5) == SHA
    with pytest.raises(DigestMismatch, match="size 5"):
        h.verify(SHA, 6)
    with pytest.raises(DigestMismatch, match="hashes to"):
        h.verify(Digest.of(b"other"))
