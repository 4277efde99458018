"""kill -9 in the middle of 20 concurrent pushes: completed pushes survive, nothing partial is served."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.registry.server.conftest import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256
from tests.support import peers

PUSHES = 20
CHUNK = 512 * 1024
LAYER = 16 * CHUNK  # 8 MiB per push


def _push(base: str, i: int, layer: bytes, config: bytes, done: dict, stop: threading.Event,
          delay: float = 0.03) -> None:
    repo = f"crash/p{i}"
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            time.sleep(i * delay)
            for data in (config, layer):
                loc = c.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
                for off in range(0, len(data), CHUNK):
                    r = c.patch(loc, content=data[off:off + CHUNK],
                                headers={"content-range": f"{off}-{off + min(CHUNK, len(data) - off) - 1}"})
                    assert r.status_code == 202
                    loc = r.headers["location"]
                    time.sleep(0.005)
                assert c.put(loc, params={"digest": sha256(data)}).status_code == 201
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer), "size": len(layer)}]}).encode()
            r = c.put(f"/v2/{repo}/manifests/v1", content=manifest, headers={"content-type": OCI_MANIFEST})
            assert r.status_code == 201
            done[i] = manifest
    except (httpx.HTTPError, AssertionError):
        stop.set()  # the server is gone


@pytest.mark.slow
def test_kill_9_mid_push_loses_nothing_completed(tmp_path: Path) -> None:
    layers = [os.urandom(LAYER) for _ in range(PUSHES)]
    configs = [json.dumps({"os": "linux", "architecture": "amd64", "n": i}).encode() for i in range(PUSHES)]
    proc, addr = peers.start_pallet_registry(tmp_path)
    done: dict[int, bytes] = {}
    stop = threading.Event()
    threads = [threading.Thread(target=_push, args=(f"http://{addr}", i, layers[i], configs[i], done, stop))
               for i in range(PUSHES)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(done) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its worker, mid-push
        proc.wait()
        for t in threads:
            t.join(60)
    finally:
        peers.stop_process(proc)
    completed = dict(done)
    assert 5 <= len(completed) < PUSHES, f"{len(completed)} pushes completed: the kill came at the wrong time"
    # nothing under blobs/ is anything but exactly the content its name promises
    blobs = tmp_path / "data" / "blobs" / "sha256"
    for f in blobs.glob("*/*"):
        assert hashlib.sha256(f.read_bytes()).hexdigest() == f.name, f"partial blob {f}"
    with peers.pallet_registry(tmp_path) as addr2, httpx.Client(base_url=f"http://{addr2}", timeout=30) as c:
        for i, manifest in completed.items():
            r = c.get(f"/v2/crash/p{i}/manifests/v1")
            assert r.status_code == 200 and r.content == manifest
            for data in (configs[i], layers[i]):
                assert c.get(f"/v2/crash/p{i}/blobs/{sha256(data)}").content == data
        for i in set(range(PUSHES)) - set(completed):
            # the kill may land after the server stored a manifest but before the client saw the 201:
            # then the manifest is there whole; otherwise it is absent, never partial
            r = c.get(f"/v2/crash/p{i}/manifests/v1")
            assert r.status_code == 404 or json.loads(r.content)["layers"][0]["digest"] == sha256(layers[i])
            for data in (configs[i], layers[i]):
                r = c.get(f"/v2/crash/p{i}/blobs/{sha256(data)}")
                assert r.status_code == 404 or r.content == data  # whole, or not at all
        # and the interrupted pushes go through on a second try
        again: dict[int, bytes] = {}
        for i in set(range(PUSHES)) - set(completed):
            _push(f"http://{addr2}", i, layers[i], configs[i], again, threading.Event(), delay=0)
            assert i in again
            assert c.get(f"/v2/crash/p{i}/manifests/v1").content == again[i]
