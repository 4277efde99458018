#!/usr/bin/env python3
"""Throughput and memory of `pallet registry serve` side by side with docker-registry 2.8.

One run starts each server on loopback with a fresh root, seeds it, and drives it with the same
clients (Debian's `hey`, a Go HTTP load generator, for GETs; `curl` for pushes), alternating the
servers round by round:

* pull: 32 concurrent clients each GET one 100 MB blob (`hey -n 32 -c 32`)
* push: 16 concurrent pushes of distinct 50 MB blobs (POST, then PUT with the body, by curl)
* manifests: 2,000 GETs of a small manifest by tag, 16 at a time (`hey -n 2000 -c 16`)

The server's peak RSS (the sum over its process tree, sampled every 20 ms) is recorded for each
phase. Prints a Markdown table for BENCHMARKS.md.

    python bench/registry/bench.py [--rounds 3] [--workers 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support import peers  # noqa: E402

MB = 1 << 20


def tree_rss(pid: int) -> int:
    """RSS in bytes of ``pid`` and all its descendants."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


class RSSSampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> RSSSampler:
        self.peak = tree_rss(self.pid)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def make_file(path: Path, size: int, seed: int) -> str:
    """Incompressible deterministic content; returns its sha256 digest."""
    h = hashlib.sha256()
    block = hashlib.sha512(str(seed).encode()).digest()
    with open(path, "wb") as f:
        written = 0
        while written < size:
            chunk = hashlib.shake_256(block + written.to_bytes(8, "big")).digest(min(MB, size - written))
            f.write(chunk)
            h.update(chunk)
            written += len(chunk)
    return "sha256:" + h.hexdigest()


def curl_push(base: str, repo: str, path: Path, digest: str) -> None:
    """POST for an upload URL, then PUT the whole body: what skopeo and docker do for one layer."""
    out = subprocess.run(["curl", "-sS", "-f", "-X", "POST", "-o", "/dev/null", "-D", "-",
                          f"{base}/v2/{repo}/blobs/uploads/"],
                         check=True, capture_output=True, text=True).stdout
    loc = re.search(r"^location:\s*(\S+)", out, re.I | re.M)
    if loc is None:
        raise RuntimeError(f"no Location in {out!r}")
    url = loc[1]
    if url.startswith("/"):
        url = base + url
    url += ("&" if "?" in url else "?") + f"digest={digest}"
    subprocess.run(["curl", "-sS", "-f", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                    "-T", str(path), "-o", "/dev/null", url], check=True, capture_output=True)


def hey(args: list[str]) -> dict[str, float]:
    out = subprocess.run(["hey", *args], check=True, capture_output=True, text=True).stdout
    total = float(re.search(r"Total:\s+([\d.]+) secs", out)[1])  # type: ignore[index]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", out))
    if set(codes) != {"200"}:
        raise RuntimeError(f"non-200 responses: {codes}\n{out}")
    return {"total": total, "rps": rps}


def seed(base: str, files: dict[str, tuple[Path, str]]) -> None:
    big, big_digest = files["big"]
    curl_push(base, "bench/pull", big, big_digest)
    cfg, cfg_digest = files["config"]
    curl_push(base, "bench/pull", cfg, cfg_digest)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest,
                   "size": cfg.stat().st_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": big_digest,
                    "size": big.stat().st_size}]}).encode()
    subprocess.run(["curl", "-sS", "-f", "-X", "PUT", "-H",
                    "Content-Type: application/vnd.oci.image.manifest.v1+json",
                    "--data-binary", "@-", "-o", "/dev/null", f"{base}/v2/bench/pull/manifests/latest"],
                   input=manifest, check=True)


def phase_pull(base: str, files: dict) -> float:
    _, digest = files["big"]
    r = hey(["-n", "32", "-c", "32", "-t", "300", "-disable-compression",
             f"{base}/v2/bench/pull/blobs/{digest}"])
    return 32 * 100 / r["total"]  # MB/s


def phase_push(base: str, files: dict, round_: int) -> float:
    pushes = files["push"]
    errors: list[BaseException] = []

    def one(i: int) -> None:
        path, digest = pushes[i]
        try:
            curl_push(base, f"bench/push{round_}-{i}", path, digest)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(pushes))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return len(pushes) * 50 / dt  # MB/s


def phase_manifests(base: str, files: dict) -> float:
    r = hey(["-n", "2000", "-c", "16", "-H", "Accept: application/vnd.oci.image.manifest.v1+json",
             f"{base}/v2/bench/pull/manifests/latest"])
    return r["rps"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="pallet worker processes")
    ap.add_argument("--threads", type=int, default=1, help="pallet I/O threads per worker")
    ap.add_argument("--json", type=Path, help="also write raw figures here")
    args = ap.parse_args()
    for tool in ("hey", "curl", "docker-registry"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install {tool})")
    tmp = Path(tempfile.mkdtemp(prefix="pallet-regbench-"))
    try:
        files: dict = {"big": (tmp / "big", make_file(tmp / "big", 100 * MB, 0))}
        (tmp / "config").write_bytes(
            b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
        cfg_digest = "sha256:" + hashlib.sha256((tmp / "config").read_bytes()).hexdigest()
        files["config"] = (tmp / "config", cfg_digest)
        files["push"] = [(tmp / f"push{i}", make_file(tmp / f"push{i}", 50 * MB, 100 + i)) for i in range(16)]
        results: dict[str, dict[str, list[float]]] = {}
        servers: dict[str, Callable] = {
            "docker-registry": lambda root: peers.docker_registry(root),
            "pallet": lambda root: peers.pallet_registry(
                root, extra=("--workers", str(args.workers), "--threads", str(args.threads))),
        }
        for rnd in range(args.rounds):
            for name, start in servers.items():
                root = tmp / f"{name}-{rnd}"
                with start(root) as addr:
                    base = f"http://{addr}"
                    pid = _server_pid(name, addr)
                    seed(base, files)
                    r = results.setdefault(name, {})
                    with RSSSampler(pid) as s:
                        r.setdefault("pull", []).append(phase_pull(base, files))
                    r.setdefault("pull_rss", []).append(s.peak / MB)
                    with RSSSampler(pid) as s:
                        r.setdefault("push", []).append(phase_push(base, files, rnd))
                    r.setdefault("push_rss", []).append(s.peak / MB)
                    with RSSSampler(pid) as s:
                        r.setdefault("manifests", []).append(phase_manifests(base, files))
                    r.setdefault("manifests_rss", []).append(s.peak / MB)
                shutil.rmtree(root, ignore_errors=True)
                print(f"round {rnd + 1} {name}: " + ", ".join(f"{k}={v[-1]:.1f}" for k, v in r.items()),
                      file=sys.stderr, flush=True)
        med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}
        peak = {n: max(max(r[k]) for k in r if k.endswith("_rss")) for n, r in results.items()}
        d, p = med["docker-registry"], med["pallet"]
        print(f"| workload (median of {args.rounds}) | docker-registry 2.8 | pallet | ratio |")
        print("| --- | --- | --- | --- |")
        print(f"| pull: 32 clients x 100 MB blob | {d['pull']:.0f} MB/s | {p['pull']:.0f} MB/s | "
              f"{p['pull'] / d['pull']:.2f}x |")
        print(f"| push: 16 x distinct 50 MB blobs | {d['push']:.0f} MB/s | {p['push']:.0f} MB/s | "
              f"{p['push'] / d['push']:.2f}x |")
        print(f"| 2,000 manifest GETs (16 at a time) "
              f"| {d['manifests']:.0f} req/s | {p['manifests']:.0f} req/s | "
              f"{p['manifests'] / d['manifests']:.2f}x |")
        print(f"| server peak RSS (any phase, any round) | {peak['docker-registry']:.0f} MB | "
              f"{peak['pallet']:.0f} MB | |")
        if args.json:
            args.json.write_text(json.dumps({"rounds": results}, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _server_pid(name: str, addr: str) -> int:
    """The pid listening on addr (the session leader the fixture started)."""
    port = addr.rsplit(":", 1)[1]
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    pids = [int(p) for p in re.findall(r"pid=(\d+)", out)]
    if not pids:
        raise RuntimeError(f"no process listens on {addr}")
    # granian workers listen on the socket their parent made: take the topmost of them
    pid = min(pids)
    while True:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{ppid}/cmdline", "rb") as f:
            if b"registry" not in f.read():
                return pid
        pid = ppid


if __name__ == "__main__":
    main()
