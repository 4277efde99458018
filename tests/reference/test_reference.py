import pytest

from pallet.errors import InvalidReference
from pallet.reference import is_short_name, parse, parse_normalized, split_host_port

DIG = "sha256:" + "a" * 64


@pytest.mark.parametrize("text,expected", [
    ("fedora", "docker.io/library/fedora:latest"),
    ("user/app", "docker.io/user/app:latest"),
    ("registry.access.redhat.com/rhel7", "registry.access.redhat.com/rhel7:latest"),
    ("index.docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36"),
    ("localhost/app", "localhost/app:latest"),
    ("localhost:5000/a/b/c:v1.0", "localhost:5000/a/b/c:v1.0"),
    ("127.0.0.1:5000/ns/repo", "127.0.0.1:5000/ns/repo:latest"),
    ("[::1]:5000/repo:tag", "[::1]:5000/repo:tag"),
    ("[fe80::1]/repo", "[fe80::1]/repo:latest"),
    (f"busybox@{DIG}", f"docker.io/library/busybox@{DIG}"),
    (f"busybox:1@{DIG}", f"docker.io/library/busybox:1@{DIG}"),
    ("a__b/c-d---e/f.g_h:TAG_1.x-y", "docker.io/a__b/c-d---e/f.g_h:TAG_1.x-y"),
    ("Registry.Example.COM/app", "Registry.Example.COM/app:latest"),
])
def test_normalize(text, expected):
    assert str(parse_normalized(text)) == expected


def test_parts_and_familiar():
    r = parse_normalized("fedora")
    assert (r.domain, r.path, r.tag, r.digest) == ("docker.io", "library/fedora", "latest", None)
    assert r.familiar() == "fedora:latest"
    assert parse_normalized("user/app:1").familiar_name == "user/app"
    assert parse_normalized("quay.io/a/b").familiar_name == "quay.io/a/b"
    assert parse_normalized(f"x@{DIG}").object == DIG
    assert parse_normalized("x").object == "latest"


def test_sha512_digest():
    d = "sha512:" + "b" * 128
    assert parse(f"repo@{d}").digest == d


def test_tag_length_limit():
    assert parse("r:" + "t" * 128).tag == "t" * 128
    with pytest.raises(InvalidReference, match="bad tag"):
        parse("r:" + "t" * 129)


@pytest.mark.parametrize("text,match", [
    ("", "empty"),
    ("Fedora", "must be lowercase"),
    ("docker.io/Library/x", "must be lowercase"),
    ("repo:-bad", "bad tag"),
    ("repo:", "bad tag"),
    ("repo@sha256:abc", "invalid sha256 digest"),
    ("repo@", "invalid digest"),
    ("@" + DIG, "missing repository"),
    ("a//b", "empty path component"),
    ("a/b_/c", "bad path component 'b_'"),
    ("-host.com/x", "bad registry host"),
    ("host.com:port/x", "bad registry host"),
    ("repo name", "white space"),
    ("a/" + "b" * 255, "longer than 255"),
])
def test_invalid(text, match):
    with pytest.raises(InvalidReference, match=match):
        parse_normalized(text)


def test_short_names_and_ports():
    assert is_short_name("fedora") and is_short_name("user/app")
    assert not is_short_name("quay.io/fedora") and not is_short_name("localhost/x")
    assert split_host_port("[::1]:5000") == ("::1", 5000)
    assert split_host_port("localhost") == ("localhost", None)
    assert split_host_port("r.io:443") == ("r.io", 443)
