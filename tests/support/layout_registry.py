"""A read-only registry on loopback that serves an OCI layout, and misbehaves on request.

It stands in for a broken real registry in the bad-input tests of pull: every answer is real
HTTP from a real socket; ``faults`` picks what goes wrong (set it, run the command, clear it,
run again to show nothing was left broken).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path


class LayoutRegistry:
    """Serves ``layout`` as repository ``repo`` with the layout's ref names as tags.

    ``faults`` keys: "manifest" → "malformed" | "500" | "hang" | "wrong-digest";
    "blob" → "corrupt" | "truncate" | "500" | "hang" | "slow" (applied to the largest layer blob);
    "auth" → "basic" (every request needs Basic credentials ``user:pass``).
    """

    def __init__(self, layout: Path, repo: str = "test/img") -> None:
        self.layout = Path(layout)
        self.repo = repo
        self.faults: dict[str, str] = {}
        self.hits: list[str] = []
        index = json.loads((self.layout / "index.json").read_text())
        self.tags = {m.get("annotations", {}).get("org.opencontainers.image.ref.name", "latest"): m
                     for m in index["manifests"]}
        self._stop = threading.Event()
        reg = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _send(self, status: int, body: bytes, ctype: str = "application/json",
                      headers: dict[str, str] | None = None, head: bool = False,
                      length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _hang(self) -> None:
                reg._stop.wait(120)

            def _serve(self, head: bool) -> None:
                reg.hits.append(self.path)
                if reg.faults.get("auth") == "basic":
                    import base64

                    want = "Basic " + base64.b64encode(b"user:pass").decode()
                    if self.headers.get("Authorization") != want:
                        body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
                        self._send(401, body, headers={"WWW-Authenticate": 'Basic realm="test"'}, head=head)
                        return
                if self.path in ("/v2/", "/v2"):
                    self._send(200, b"{}", head=head)
                    return
                prefix = f"/v2/{reg.repo}/"
                if not self.path.startswith(prefix):
                    self._send(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"no such repository"}]}',
                               head=head)
                    return
                kind, _, ref = self.path[len(prefix):].partition("/")
                if kind == "manifests":
                    self._manifest(ref, head)
                elif kind == "blobs":
                    self._blob(ref, head)
                else:
                    self._send(404, b"{}", head=head)

            def _manifest(self, ref: str, head: bool) -> None:
                fault = reg.faults.get("manifest")
                if fault == "500":
                    self._send(500, b'{"errors":[{"code":"UNKNOWN","message":"internal error"}]}', head=head)
                    return
                if fault == "hang":
                    self._hang()
                    return
                desc = reg.tags.get(ref) or next((m for m in reg.tags.values() if m["digest"] == ref), None)
                if desc is None:
                    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}'
                    self._send(404, body, head=head)
                    return
                body = reg.blob_path(desc["digest"]).read_bytes()
                digest = desc["digest"]
                if fault == "malformed":
                    body = body[: len(body) // 2]
                    import hashlib

                    digest = "sha256:" + hashlib.sha256(body).hexdigest()
                elif fault == "wrong-digest":
                    digest = "sha256:" + "0" * 64
                self._send(200, body, desc["mediaType"], {"Docker-Content-Digest": digest}, head=head)

            def _blob(self, digest: str, head: bool) -> None:
                path = reg.blob_path(digest)
                if not path.is_file():
                    self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}', head=head)
                    return
                data = path.read_bytes()
                fault = reg.faults.get("blob") if digest == reg.largest_blob() else None
                if fault == "500":
                    self._send(500, b'{"errors":[{"code":"UNKNOWN","message":"internal error"}]}', head=head)
                    return
                if fault == "hang":
                    self._hang()
                    return
                if fault == "corrupt":
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                if fault == "slow" and not head:  # 16 KiB every 20 ms: a pull to kill in the middle
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for off in range(0, len(data), 16384):
                        if reg._stop.is_set():
                            return
                        self.wfile.write(data[off:off + 16384])
                        self.wfile.flush()
                        time.sleep(0.02)
                    return
                if fault == "truncate" and not head:
                    # promise everything, send half, then drop the connection
                    self._send(200, data[: len(data) // 2], "application/octet-stream", length=len(data))
                    self.close_connection = True
                    return
                headers = {"Docker-Content-Digest": digest}
                self._send(200, data, "application/octet-stream", headers, head=head)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def blob_path(self, digest: str) -> Path:
        return self.layout / "blobs" / digest.replace(":", "/")

    def largest_blob(self) -> str:
        blobs = sorted((p.stat().st_size, f"sha256:{p.name}")
                       for p in (self.layout / "blobs" / "sha256").iterdir())
        return blobs[-1][1]

    def close(self) -> None:
        self._stop.set()
        time.sleep(0.01)
        self.server.shutdown()
        self.server.server_close()
