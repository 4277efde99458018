"""Blob uploads and downloads over HTTP, every path of the spec and every way to get them wrong."""

from __future__ import annotations

import hashlib
import os
import threading

import httpx

from tests.registry.server.conftest import errors_of, push_blob, sha256


def test_ping_says_registry_v2(client: httpx.Client) -> None:
    r = client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    assert r.json() == {}


def test_monolithic_post_put_then_get_and_head(client: httpx.Client, repo: str) -> None:
    data = os.urandom(300_000)
    digest = push_blob(client, repo, data)
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["docker-content-digest"] == digest
    assert r.headers["content-length"] == str(len(data))
    h = client.head(f"/v2/{repo}/blobs/{digest}")
    assert h.status_code == 200 and h.content == b""
    assert h.headers["content-length"] == str(len(data)) and h.headers["docker-content-digest"] == digest


def test_single_post_with_digest(client: httpx.Client, repo: str) -> None:
    data = b"single post"
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, content=data)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v2/{repo}/blobs/{sha256(data)}"
    assert client.get(r.headers["location"]).content == data


def test_single_post_with_wrong_digest_stores_nothing(client: httpx.Client, repo: str) -> None:
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(b"other")}, content=b"data")
    assert r.status_code == 400 and errors_of(r) == ["DIGEST_INVALID"]
    assert client.head(f"/v2/{repo}/blobs/{sha256(b'data')}").status_code == 404


def test_chunked_upload_with_status_and_out_of_order_chunk(client: httpx.Client, repo: str) -> None:
    data = os.urandom(250_000)
    loc = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    r = client.patch(loc, content=data[:100_000], headers={"content-range": "0-99999"})
    assert r.status_code == 202 and r.headers["range"] == "0-99999"
    loc = r.headers["location"]
    # a chunk that does not continue at 100000: 416, and the upload is unchanged
    r = client.patch(loc, content=data[150_000:], headers={"content-range": "150000-249999"})
    assert r.status_code == 416 and errors_of(r) == ["BLOB_UPLOAD_INVALID"]
    s = client.get(loc)
    assert s.status_code == 204 and s.headers["range"] == "0-99999"
    r = client.patch(loc, content=data[100_000:200_000], headers={"content-range": "100000-199999"})
    assert r.status_code == 202 and r.headers["range"] == "0-199999"
    # the last chunk comes with the closing PUT
    r = client.put(loc, params={"digest": sha256(data)}, content=data[200_000:],
                   headers={"content-range": "200000-249999"})
    assert r.status_code == 201, r.text
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_chunk_length_disagreeing_with_range_is_refused(client: httpx.Client, repo: str) -> None:
    loc = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    r = client.patch(loc, content=b"x" * 10, headers={"content-range": "0-19"})
    assert r.status_code == 400 and errors_of(r) == ["SIZE_INVALID"]
    assert client.get(loc).headers["range"] == "0-0"


def test_streamed_patch_without_content_range(client: httpx.Client, repo: str) -> None:
    parts = [os.urandom(64 * 1024) for _ in range(20)]
    data = b"".join(parts)
    loc = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]

    def body():
        yield from parts  # chunked transfer encoding: no Content-Length

    r = client.patch(loc, content=body())
    assert r.status_code == 202 and r.headers["range"] == f"0-{len(data) - 1}"
    r = client.put(r.headers["location"], params={"digest": sha256(data)})
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_sha512_upload(client: httpx.Client, repo: str) -> None:
    data = b"sha512 content"
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest-algorithm": "sha512"})
    assert r.status_code == 202
    r = client.put(r.headers["location"], params={"digest": digest}, content=data)
    assert r.status_code == 201 and r.headers["docker-content-digest"] == digest
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_put_with_wrong_digest_keeps_upload_for_retry(client: httpx.Client, repo: str) -> None:
    loc = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    r = client.put(loc, params={"digest": sha256(b"something else")}, content=b"payload")
    assert r.status_code == 400 and errors_of(r) == ["DIGEST_INVALID"]
    r = client.put(loc, params={"digest": sha256(b"payload")})
    assert r.status_code == 201


def test_cancel_upload(client: httpx.Client, repo: str) -> None:
    loc = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    client.patch(loc, content=b"abc")
    assert client.delete(loc).status_code == 204
    r = client.get(loc)
    assert r.status_code == 404 and errors_of(r) == ["BLOB_UPLOAD_UNKNOWN"]
    assert client.patch(loc, content=b"x").status_code == 404


def test_upload_belongs_to_its_repository(client: httpx.Client, repo: str) -> None:
    loc = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    other = loc.replace(f"/v2/{repo}/", "/v2/t/someone-else/")
    r = client.patch(other, content=b"x")
    assert r.status_code == 404 and errors_of(r) == ["BLOB_UPLOAD_UNKNOWN"]
    r = client.get(f"/v2/{repo}/blobs/uploads/not-a-uuid")
    assert r.status_code == 404 and errors_of(r) == ["BLOB_UPLOAD_UNKNOWN"]


def test_cross_repo_mount_with_and_without_from(client: httpx.Client, repo: str) -> None:
    data = os.urandom(1000)
    digest = push_blob(client, repo, data)
    r = client.post(f"/v2/{repo}-copy/blobs/uploads/", params={"mount": digest, "from": repo})
    assert r.status_code == 201 and r.headers["location"] == f"/v2/{repo}-copy/blobs/{digest}"
    assert client.get(r.headers["location"]).content == data
    r = client.post(f"/v2/{repo}-anon/blobs/uploads/", params={"mount": digest})
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}-anon/blobs/{digest}").content == data
    # not in the source repository: an ordinary upload starts instead
    r = client.post(f"/v2/{repo}-other/blobs/uploads/", params={"mount": digest, "from": f"{repo}-nothere"})
    assert r.status_code == 202 and "/blobs/uploads/" in r.headers["location"]


def test_range_requests(client: httpx.Client, repo: str) -> None:
    data = os.urandom(5000)
    digest = push_blob(client, repo, data)
    url = f"/v2/{repo}/blobs/{digest}"
    r = client.get(url, headers={"range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == "bytes 100-199/5000"
    r = client.get(url, headers={"range": "bytes=4000-"})
    assert r.status_code == 206 and r.content == data[4000:]
    r = client.get(url, headers={"range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    for bad in ("bytes=5000-6000", "bytes=500-0"):
        r = client.get(url, headers={"range": bad})
        assert r.status_code == 416, bad
        assert r.headers["content-range"] == "bytes */5000"


def test_blob_delete(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, repo, b"to delete")
    assert client.delete(f"/v2/{repo}/blobs/{digest}").status_code == 202
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 404 and errors_of(r) == ["BLOB_UNKNOWN"]
    assert client.delete(f"/v2/{repo}/blobs/{digest}").status_code == 404


def test_malformed_digests_are_400_never_500(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, b"exists")
    for bad in ("sha256:abc", "sha256:" + "g" * 64, "nonsense", "sha512:" + "a" * 64, "md5:" + "a" * 32,
                "sha256:" + "A" * 64):
        for method in ("GET", "HEAD", "DELETE"):
            r = client.request(method, f"/v2/{repo}/blobs/{bad}")
            assert r.status_code == 400, (method, bad, r.status_code)
            if method != "HEAD":
                assert errors_of(r) == ["DIGEST_INVALID"]
        loc = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
        r = client.put(loc, params={"digest": bad}, content=b"x")
        assert r.status_code == 400 and errors_of(r) == ["DIGEST_INVALID"], bad
        r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": bad}, content=b"x")
        assert r.status_code == 400 and errors_of(r) == ["DIGEST_INVALID"], bad
    loc = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    r = client.put(loc, content=b"no digest")
    assert r.status_code == 400 and errors_of(r) == ["DIGEST_INVALID"]
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest-algorithm": "md5"})
    assert r.status_code == 400 and errors_of(r) == ["DIGEST_INVALID"]


def test_bad_names_and_unknown_things(client: httpx.Client, repo: str) -> None:
    for bad in ("UPPER/case", "a//b", "-lead", "a" * 256):
        r = client.get(f"/v2/{bad}/tags/list")
        assert r.status_code == 400 and errors_of(r) == ["NAME_INVALID"], bad
    r = client.get(f"/v2/{repo}/blobs/{sha256(b'never pushed')}")
    assert r.status_code == 404 and errors_of(r) == ["BLOB_UNKNOWN"]
    r = client.get(f"/v2/{repo}-nothing/tags/list")
    assert r.status_code == 404 and errors_of(r) == ["NAME_UNKNOWN"]
    r = client.request("PATCH", f"/v2/{repo}/blobs/{sha256(b'x')}")
    assert r.status_code == 405 and errors_of(r) == ["UNSUPPORTED"]


def test_bad_content_length_and_range_headers(client: httpx.Client, repo: str) -> None:
    loc = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    r = client.patch(loc, content=b"abc", headers={"content-range": "zero-to-two"})
    assert r.status_code == 416 and errors_of(r) == ["BLOB_UPLOAD_INVALID"]
    r = client.patch(loc, content=b"abc", headers={"content-range": "5-2"})
    assert r.status_code == 416


def test_same_blob_pushed_concurrently_ends_up_once_and_intact(client: httpx.Client, repo: str,
                                                                server: str) -> None:
    data = os.urandom(4 << 20)
    digest = sha256(data)
    results: list[int] = []

    def push(i: int) -> None:
        with httpx.Client(base_url=f"http://{server}", timeout=60) as c:
            loc = c.post(f"/v2/{repo}-{i}/blobs/uploads/").headers["location"]
            for off in range(0, len(data), 1 << 20):
                c.patch(loc, content=data[off:off + (1 << 20)],
                        headers={"content-range": f"{off}-{off + (1 << 20) - 1}"})
            results.append(c.put(loc, params={"digest": digest}).status_code)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [201] * 4
    for i in range(4):
        assert sha256(client.get(f"/v2/{repo}-{i}/blobs/{digest}").content) == digest


def test_memory_stays_flat_for_a_large_upload(tmp_path, server: str) -> None:
    """A 256 MB blob streamed through the server: its RSS must not grow by anything like that."""
    import re
    import subprocess

    port = server.rsplit(":", 1)[1]
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    pids = [int(p) for p in re.findall(r"pid=(\d+)", out)]

    def rss() -> int:
        total = 0
        for pid in set(pids):
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
        return total

    before = rss()
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    for _ in range(256):
        h.update(block)
    digest = "sha256:" + h.hexdigest()

    def body():
        for _ in range(256):
            yield block

    with httpx.Client(base_url=f"http://{server}", timeout=120) as c:
        loc = c.post("/v2/t/bigblob/blobs/uploads/").headers["location"]
        r = c.put(loc, params={"digest": digest}, content=body())
        assert r.status_code == 201, r.text
        got = hashlib.sha256()
        with c.stream("GET", f"/v2/t/bigblob/blobs/{digest}") as resp:
            for chunk in resp.iter_bytes():
                got.update(chunk)
        assert "sha256:" + got.hexdigest() == digest
    assert rss() - before < 64 << 20
