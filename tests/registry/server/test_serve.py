"""`pallet registry serve` as a process: config file, request log, SIGTERM draining, limits, bad input."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.registry.server.conftest import errors_of, sha256
from tests.support import peers


def test_config_file_and_request_log(tmp_path: Path) -> None:
    port = peers.free_port()
    cfg = tmp_path / "registry.toml"
    cfg.write_text(f'addr = "127.0.0.1:{port}"\nroot = "{tmp_path / "store"}"\nread-only = true\n')
    proc = subprocess.Popen([sys.executable, "-m", "pallet.cli.main", "registry", "serve", "--config",
                             str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        peers.wait_http(f"http://127.0.0.1:{port}/v2/", proc=proc)
        assert httpx.get(f"http://127.0.0.1:{port}/v2/x/tags/list").status_code == 404
        assert httpx.post(f"http://127.0.0.1:{port}/v2/x/blobs/uploads/").status_code == 405  # read-only
        assert (tmp_path / "store" / "blobs").is_dir()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert f"serving {tmp_path / 'store'} on http://127.0.0.1:{port} (read-only)" in out
    # one line per request: client, method, path, status, bytes, milliseconds
    assert re.search(r"127\.0\.0\.1 GET /v2/x/tags/list 404 \d+ \d+\.\dms$", out, re.M), out
    assert re.search(r"127\.0\.0\.1 POST /v2/x/blobs/uploads/ 405 \d+ \d+\.\dms$", out, re.M), out


@pytest.mark.parametrize("args, message", [
    (["--addr", "nonsense"], "invalid listen address"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "no such file"),
    (["--tls-cert", "/etc/hostname"], "go together"),
    (["--workers", "x"], "invalid int value"),
])
def test_bad_settings_exit_125_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "pallet.cli.main", "registry", "serve", "--root", str(tmp_path),
                        *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 125
    assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_bad_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("colour = 'blue'\n")
    r = subprocess.run([sys.executable, "-m", "pallet.cli.main", "registry", "serve", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 125 and "unknown setting 'colour'" in r.stderr


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    proc, addr = peers.start_pallet_registry(tmp_path)
    try:
        base = f"http://{addr}"
        loc = httpx.post(f"{base}/v2/drain/blobs/uploads/").headers["location"]
        chunk = os.urandom(64 * 1024)
        started = threading.Event()
        result: dict[str, object] = {}

        def slow_body():
            for i in range(30):  # ~1.5 s of upload
                if i == 3:
                    started.set()
                yield chunk
                time.sleep(0.05)

        def upload() -> None:
            try:
                r = httpx.put(f"{base}{loc}", params={"digest": sha256(chunk * 30)}, content=slow_body(),
                              timeout=30)
                result["status"] = r.status_code
            except Exception as e:
                result["error"] = e

        t = threading.Thread(target=upload)
        t.start()
        assert started.wait(10)
        proc.send_signal(signal.SIGTERM)
        t.join(30)
        assert result.get("status") == 201, result
        assert proc.wait(30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/v2/", timeout=2)
    finally:
        peers.stop_process(proc)
    # and the blob it finished is there after a restart
    with peers.pallet_registry(tmp_path) as addr2:
        r = httpx.get(f"http://{addr2}/v2/drain/blobs/{sha256(chunk * 30)}")
        assert r.status_code == 200 and r.content == chunk * 30


def test_too_many_concurrent_uploads_get_429(tmp_path: Path) -> None:
    cfg = tmp_path / "registry.toml"
    cfg.write_text("max-concurrent-uploads = 1\n")
    with peers.pallet_registry(tmp_path, config=cfg) as addr:
        base = f"http://{addr}"
        slow_loc = httpx.post(f"{base}/v2/busy/blobs/uploads/").headers["location"]
        loc = httpx.post(f"{base}/v2/busy/blobs/uploads/").headers["location"]
        started, release = threading.Event(), threading.Event()

        def slow_body():
            yield b"first"
            started.set()
            release.wait(10)
            yield b"last"

        t = threading.Thread(target=lambda: httpx.patch(f"{base}{slow_loc}", content=slow_body(), timeout=30))
        t.start()
        try:
            assert started.wait(10)
            time.sleep(0.2)
            r = httpx.patch(f"{base}{loc}", content=b"other")
            assert r.status_code == 429 and errors_of(r) == ["TOOMANYREQUESTS"]
            assert r.headers["retry-after"] == "1"
        finally:
            release.set()
            t.join()
        assert httpx.patch(f"{base}{loc}", content=b"other").status_code == 202
