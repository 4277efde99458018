import json

import pytest

from pallet.content import Digest, Index, InvalidManifest, Manifest, Platform, canonical_json, parse
from pallet.content import mediatypes as mt

CFG = {"mediaType": mt.OCI_CONFIG, "digest": str(Digest.of(b"{}")), "size": 2}
LAYER = {"mediaType": mt.OCI_LAYER_GZIP, "digest": str(Digest.of(b"layer")), "size": 5}


def test_manifest_roundtrip_keeps_raw_bytes():
    raw = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": CFG, "layers": [LAYER]},
                     indent=3).encode()
    m = parse(raw)
    assert isinstance(m, Manifest)
    assert m.raw == raw and m.digest == Digest.of(raw)
    assert m.layers[0].digest == LAYER["digest"] and m.config.size == 2


def test_manifest_without_media_type_is_told_by_fields():
    m = parse(canonical_json({"schemaVersion": 2, "config": CFG, "layers": []}))
    assert m.media_type == mt.OCI_MANIFEST
    i = parse(canonical_json({"schemaVersion": 2, "manifests": []}))
    assert isinstance(i, Index)


def test_docker_list_platform_choice():
    amd = dict(LAYER, mediaType=mt.DOCKER_MANIFEST, platform={"os": "linux", "architecture": "amd64"})
    arm = dict(LAYER, mediaType=mt.DOCKER_MANIFEST, digest=str(Digest.of(b"arm")),
               platform={"os": "linux", "architecture": "arm64", "variant": "v8"})
    armv7 = dict(LAYER, mediaType=mt.DOCKER_MANIFEST, digest=str(Digest.of(b"armv7")),
                 platform={"os": "linux", "architecture": "arm", "variant": "v7"})
    idx = parse(canonical_json({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST,
                                "manifests": [amd, arm, armv7]}))
    assert idx.for_platform(Platform.parse("linux/amd64")).digest == amd["digest"]
    assert idx.for_platform(Platform.parse("linux/arm64")).digest == arm["digest"]
    assert idx.for_platform(Platform.parse("arm")).digest == armv7["digest"]
    assert idx.for_platform(Platform.parse("linux/s390x")) is None


@pytest.mark.parametrize("doc,match", [
    (b"{not json", "malformed manifest"),
    (b"[]", "not a JSON object"),
    (canonical_json({"schemaVersion": 1, "name": "x"}), "schema 1"),
    (canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "layers": []}), "config missing"),
    (canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": CFG, "layers": {}}),
     "layers must be a list"),
    (canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                     "config": dict(CFG, digest="sha256:nothex"), "layers": []}), "config: invalid"),
    (canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                     "config": dict(CFG, size=-1), "layers": []}), "size must be"),
    (canonical_json({"schemaVersion": 2, "mediaType": "text/plain"}), "unsupported manifest media type"),
])
def test_malformed(doc, match):
    with pytest.raises(InvalidManifest, match=match):
        parse(doc)


def test_content_type_must_agree():
    raw = canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": CFG, "layers": []})
    with pytest.raises(InvalidManifest, match="does not match"):
        parse(raw, mt.DOCKER_MANIFEST)
    assert parse(raw, mt.OCI_MANIFEST + "; charset=utf-8").media_type == mt.OCI_MANIFEST


def test_platform_parse():
    assert str(Platform.parse("linux/arm64")) == "linux/arm64/v8"
    assert str(Platform.parse("x86_64")) == "linux/amd64"
    assert Platform.host().os == "linux"
    from pallet.errors import UsageError

    for bad in ["", "linux//", "a/b/c/d"]:
        with pytest.raises(UsageError):
            Platform.parse(bad)
