"""Manifests, tags, referrers and listings over HTTP."""

from __future__ import annotations

import hashlib
import json

import httpx

from tests.registry.server.conftest import (
    OCI_INDEX,
    OCI_MANIFEST,
    errors_of,
    image_manifest,
    push_blob,
    put_manifest,
    sha256,
)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def test_put_get_head_delete_by_tag_and_digest(client: httpx.Client, repo: str) -> None:
    raw = image_manifest(client, repo)
    digest = sha256(raw)
    r = put_manifest(client, repo, "v1", raw)
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == digest
    assert r.headers["location"] == f"/v2/{repo}/manifests/{digest}"
    for ref in ("v1", digest):
        g = client.get(f"/v2/{repo}/manifests/{ref}", headers={"accept": OCI_MANIFEST})
        assert g.status_code == 200 and g.content == raw  # the exact bytes, indentation and all
        assert g.headers["content-type"] == OCI_MANIFEST
        assert g.headers["content-length"] == str(len(raw))
        assert g.headers["docker-content-digest"] == digest
        h = client.head(f"/v2/{repo}/manifests/{ref}")
        assert h.status_code == 200 and h.headers["content-length"] == str(len(raw))
        assert h.headers["docker-content-digest"] == digest and h.headers["content-type"] == OCI_MANIFEST
    assert client.delete(f"/v2/{repo}/manifests/v1").status_code == 202  # the tag only
    r = client.get(f"/v2/{repo}/manifests/v1")
    assert r.status_code == 404 and errors_of(r) == ["MANIFEST_UNKNOWN"]
    assert client.get(f"/v2/{repo}/manifests/{digest}").status_code == 200
    put_manifest(client, repo, "v2", raw)
    assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202
    for ref in ("v2", digest):
        assert client.get(f"/v2/{repo}/manifests/{ref}").status_code == 404
    assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 404


def test_unknown_repository_and_manifest(client: httpx.Client, repo: str) -> None:
    r = client.get(f"/v2/{repo}/manifests/latest")
    assert r.status_code == 404 and errors_of(r) == ["NAME_UNKNOWN"]
    put_manifest(client, repo, "v1", image_manifest(client, repo))
    r = client.get(f"/v2/{repo}/manifests/nope")
    assert r.status_code == 404 and errors_of(r) == ["MANIFEST_UNKNOWN"]
    r = client.get(f"/v2/{repo}/manifests/{sha256(b'nope')}")
    assert r.status_code == 404 and errors_of(r) == ["MANIFEST_UNKNOWN"]
    r = client.get(f"/v2/{repo}/manifests/sha256:short")
    assert r.status_code == 400 and errors_of(r) == ["DIGEST_INVALID"]


def test_push_by_digest_with_tag_params_and_sha512(client: httpx.Client, repo: str) -> None:
    raw = image_manifest(client, repo)
    d512 = "sha512:" + hashlib.sha512(raw).hexdigest()
    r = put_manifest(client, repo, d512, raw, params=[("tag", "a"), ("tag", "b")])
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == d512
    assert r.headers["oci-tag"] == "a, b"
    assert client.get(f"/v2/{repo}/manifests/b").headers["docker-content-digest"] == d512
    r = put_manifest(client, repo, sha256(b"other"), raw)
    assert r.status_code == 400 and errors_of(r) == ["DIGEST_INVALID"]
    r = put_manifest(client, repo, d512, raw, params=[("tag", "-bad")])
    assert r.status_code == 400 and errors_of(r) == ["MANIFEST_INVALID"]


def test_referenced_blobs_must_exist_except_nondistributable(client: httpx.Client, repo: str) -> None:
    raw = image_manifest(client, repo)
    doc = json.loads(raw)
    missing = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(b"missing"),
               "size": 7}
    doc["layers"].append(missing)
    r = put_manifest(client, repo, "broken", json.dumps(doc).encode())
    assert r.status_code == 400 and errors_of(r) == ["MANIFEST_BLOB_UNKNOWN"]
    assert r.json()["errors"][0]["detail"] == {"digest": missing["digest"]}
    doc["layers"][-1]["mediaType"] = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    doc["layers"][-1]["urls"] = ["https://example.invalid/layer"]
    assert put_manifest(client, repo, "foreign", json.dumps(doc).encode()).status_code == 201
    # a descriptor whose size lies about the blob
    doc = json.loads(raw)
    doc["layers"][0]["size"] += 1
    r = put_manifest(client, repo, "lying", json.dumps(doc).encode())
    assert r.status_code == 400 and errors_of(r) == ["MANIFEST_INVALID"]


def test_invalid_manifests(client: httpx.Client, repo: str) -> None:
    raw = image_manifest(client, repo)
    cases = [
        (b"{not json", OCI_MANIFEST),
        (b"[]", OCI_MANIFEST),
        (json.dumps({"schemaVersion": 1, "name": "x"}).encode(), OCI_MANIFEST),
        (raw, OCI_INDEX),  # Content-Type disagrees with the mediaType in the body
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode(), OCI_MANIFEST),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"digest": "x"},
                     "layers": []}).encode(), OCI_MANIFEST),
    ]
    for body, ctype in cases:
        r = put_manifest(client, repo, "bad", body, ctype)
        assert r.status_code == 400 and errors_of(r) == ["MANIFEST_INVALID"], body[:40]
    r = put_manifest(client, repo, "-notatag", raw)
    assert r.status_code == 400 and errors_of(r) == ["MANIFEST_INVALID"]
    r = put_manifest(client, repo, "huge", b" " * (9 << 20))
    assert r.status_code == 413 and errors_of(r) == ["SIZE_INVALID"]
    assert client.get(f"/v2/{repo}/manifests/bad").status_code == 404


def test_index_docker_schema2_and_manifest_list(client: httpx.Client, repo: str) -> None:
    oci = image_manifest(client, repo)
    assert put_manifest(client, repo, "oci", oci).status_code == 201
    docker = image_manifest(client, repo, media_type=DOCKER_MANIFEST)
    assert put_manifest(client, repo, "docker", docker, DOCKER_MANIFEST).status_code == 201
    assert client.get(f"/v2/{repo}/manifests/docker").headers["content-type"] == DOCKER_MANIFEST
    plat = {"architecture": "amd64", "os": "linux"}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha256(oci), "size": len(oci), "platform": plat}]}).encode()
    assert put_manifest(client, repo, "index", index, OCI_INDEX).status_code == 201
    g = client.get(f"/v2/{repo}/manifests/index")
    assert g.headers["content-type"] == OCI_INDEX and g.content == index
    mlist = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": sha256(docker), "size": len(docker),
         "platform": plat}]}).encode()
    assert put_manifest(client, repo, "list", mlist, DOCKER_LIST).status_code == 201
    assert client.get(f"/v2/{repo}/manifests/list").headers["content-type"] == DOCKER_LIST
    # no mediaType in the body: the Content-Type it was pushed with is what comes back
    bare = json.loads(oci)
    del bare["mediaType"]
    raw = json.dumps(bare).encode()
    assert put_manifest(client, repo, "bare", raw, OCI_MANIFEST).status_code == 201
    assert client.get(f"/v2/{repo}/manifests/bare").headers["content-type"] == OCI_MANIFEST


def test_subject_and_referrers(client: httpx.Client, repo: str) -> None:
    subject_raw = image_manifest(client, repo)
    subject = sha256(subject_raw)
    empty = push_blob(client, repo, b"{}")
    # referrers may be pushed before their subject
    r = client.get(f"/v2/{repo}/referrers/{subject}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    assert r.headers["content-type"] == OCI_INDEX
    sig = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x-sig",
                      "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty,
                                 "size": 2},
                      "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": subject,
                                                "size": len(subject_raw)},
                      "annotations": {"org.example": "yes"}}).encode()
    r = put_manifest(client, repo, sha256(sig), sig)
    assert r.status_code == 201 and r.headers["oci-subject"] == subject
    sbom = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/x-sbom-config", "digest": empty, "size": 2},
                       "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": subject,
                                                 "size": len(subject_raw)}}).encode()
    assert put_manifest(client, repo, sha256(sbom), sbom).status_code == 201
    put_manifest(client, repo, "subject", subject_raw)
    got = client.get(f"/v2/{repo}/referrers/{subject}").json()["manifests"]
    by_digest = {d["digest"]: d for d in got}
    assert by_digest[sha256(sig)] == {"mediaType": OCI_MANIFEST, "digest": sha256(sig), "size": len(sig),
                                      "artifactType": "application/x-sig",
                                      "annotations": {"org.example": "yes"}}
    assert by_digest[sha256(sbom)]["artifactType"] == "application/x-sbom-config"  # config type stands in
    r = client.get(f"/v2/{repo}/referrers/{subject}", params={"artifactType": "application/x-sig"})
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(sig)]
    assert r.headers["oci-filters-applied"] == "artifactType"
    assert client.delete(f"/v2/{repo}/manifests/{sha256(sig)}").status_code == 202
    got = client.get(f"/v2/{repo}/referrers/{subject}").json()["manifests"]
    assert [d["digest"] for d in got] == [sha256(sbom)]
    r = client.get(f"/v2/{repo}/referrers/sha256:nothex")
    assert r.status_code == 400 and errors_of(r) == ["DIGEST_INVALID"]


def test_tags_list_pagination(client: httpx.Client, repo: str) -> None:
    raw = image_manifest(client, repo)
    tags = ["b", "a", "C", "c10", "c2", "latest"]
    for t in tags:
        assert put_manifest(client, repo, t, raw).status_code == 201
    r = client.get(f"/v2/{repo}/tags/list")
    assert r.json() == {"name": repo, "tags": sorted(tags)}
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 2})
    assert r.json()["tags"] == ["C", "a"]
    assert r.headers["link"] == f'</v2/{repo}/tags/list?n=2&last=a>; rel="next"'
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 2, "last": "a"})
    assert r.json()["tags"] == ["b", "c10"]
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 10, "last": "c2"})
    assert r.json()["tags"] == ["latest"] and "link" not in r.headers
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 0})
    assert r.json()["tags"] == [] and "link" not in r.headers
    r = client.get(f"/v2/{repo}/tags/list", params={"n": "-1"})
    assert r.status_code == 400 and errors_of(r) == ["UNSUPPORTED"]


def test_catalog_pagination(client: httpx.Client, repo: str) -> None:
    raw = image_manifest(client, f"{repo}/one")
    put_manifest(client, f"{repo}/one", "x", raw)
    push_blob(client, f"{repo}/two/deeper", b"only a blob")
    everything = client.get("/v2/_catalog").json()["repositories"]
    assert f"{repo}/one" in everything and f"{repo}/two/deeper" in everything
    assert everything == sorted(everything)
    first = client.get("/v2/_catalog", params={"n": 1})
    assert len(first.json()["repositories"]) == 1 and 'rel="next"' in first.headers["link"]
    after = client.get("/v2/_catalog", params={"last": f"{repo}/one", "n": 1}).json()["repositories"]
    assert after == [f"{repo}/two/deeper"]


def test_hostile_input_is_4xx_never_500(client: httpx.Client, repo: str) -> None:
    """Fields of the wrong JSON type, odd paths and headers: every answer is a 4xx in the spec's form."""
    good = json.loads(image_manifest(client, repo))
    d = good["config"]["digest"]
    bodies = [
        {**good, "layers": [1]},
        {**good, "layers": "nope"},
        {**good, "config": {**good["config"], "urls": 5}},
        {**good, "config": {**good["config"], "size": -1}},
        {**good, "config": {**good["config"], "size": True}},
        {**good, "config": {**good["config"], "digest": "sha256:zz"}},
        {**good, "annotations": {"a": 1}},
        {**good, "artifactType": ["x"]},
        {**good, "subject": 5},
        {**good, "subject": {"mediaType": OCI_MANIFEST, "digest": "nope", "size": 1}},
        {**good, "mediaType": 7},
        {**good, "schemaVersion": "2"},
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": {"a": 1}},
        None, 5, "string",
    ]
    for body in bodies:
        ctype = body.get("mediaType") if isinstance(body, dict) and isinstance(body.get("mediaType"), str) \
            else OCI_MANIFEST
        r = put_manifest(client, repo, "hostile", json.dumps(body).encode(), ctype)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert r.json()["errors"][0]["code"] in ("MANIFEST_INVALID", "DIGEST_INVALID"), body
    # odd platform values are the reader's business (the bytes are stored as pushed): no 5xx either way
    for platform in ({"os": 5}, {"os": "linux", "architecture": "amd64", "os.features": 5}):
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d, "size": 1, "platform": platform}]}
        r = put_manifest(client, repo, "odd-platform", json.dumps(index).encode(), OCI_INDEX)
        assert r.status_code < 500, r.text
    for method, path, headers in [
        ("GET", "/v2/%2e%2e/%2e%2e/etc/passwd/tags/list", {}),
        ("GET", f"/v2/{repo}/manifests/" + "a" * 300, {}),
        ("GET", f"/v2/{repo}/blobs/{d}", {"range": "bytes=abc"}),
        ("GET", f"/v2/{repo}/blobs/{d}", {"range": "bytes=1-2,5-6"}),
        ("GET", f"/v2/{repo}/tags/list?n=99999999999999999999999&last=%ff%fe", {}),
        ("POST", f"/v2/{repo}/blobs/uploads/?mount=nope&from=UPPER", {}),
        ("POST", f"/v2/{repo}/blobs/uploads/?mount={d}&from=UPPER", {}),
        ("GET", "/v2/_catalog?n=x", {}),
        ("DELETE", "/v2/", {}),
        ("GET", "/nothing/here", {}),
        ("GET", f"/v2/{repo}/referrers/{d}?artifactType=%00", {}),
        ("PUT", f"/v2/{repo}/blobs/uploads/", {}),
    ]:
        r = client.request(method, path, headers=headers)
        assert r.status_code < 500, (method, path, r.status_code, r.text)
        if r.status_code >= 400:
            assert r.json()["errors"][0]["code"].isupper()
