"""Peer tools and servers the tests check pallet against: refimage.py, docker-registry, skopeo.

Everything here starts real processes on loopback and cleans them up; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def refimage_script() -> Path:
    """../shared/bench/refimage.py beside the checkout (or $PALLET_REFIMAGE)."""
    candidates = [os.environ.get("PALLET_REFIMAGE", ""), REPO.parent / "shared" / "bench" / "refimage.py",
                  Path("/work/shared/bench/refimage.py")]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    raise RuntimeError("refimage.py not found: set PALLET_REFIMAGE or check out beside ../shared")


def build_refimage(profile: str, out: Path, tag: str = "latest") -> str:
    """Write an OCI layout with refimage.py; returns the manifest digest."""
    res = subprocess.run([sys.executable, str(refimage_script()), profile, str(out), "--tag", tag],
                         check=True, capture_output=True, text=True)
    return res.stdout.split()[0]


def refimage_expect(profile: str) -> list[tuple[str, str, int, int, str]]:
    """(path, kind, mode, size, link target) rows an unpacked profile must match."""
    res = subprocess.run([sys.executable, str(refimage_script()), "expect", profile],
                         check=True, capture_output=True, text=True)
    rows = []
    for line in res.stdout.splitlines():
        path, kind, mode, size, target = line.split("\t")
        rows.append((path, kind, int(mode, 8), int(size), target))
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            httpx.get(url, timeout=1.0, verify=False)
            return
        except httpx.HTTPError as e:
            last = e
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s: {last}")


@contextlib.contextmanager
def docker_registry(root: Path, htpasswd: Path | None = None, token: dict | None = None,
                    tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """Debian's docker-registry (CNCF distribution 2.8) on a free loopback port; yields HOST:PORT.

    ``token``: {"realm", "service", "issuer", "rootcertbundle"} for bearer-token auth.
    """
    exe = shutil.which("docker-registry")
    if exe is None:
        raise RuntimeError("docker-registry is not installed (make setup installs it)")
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    lines = [
        "version: 0.1",
        "log: {level: error, accesslog: {disabled: true}}",
        "storage:",
        f"  filesystem: {{rootdirectory: {root / 'data'}}}",
        "  delete: {enabled: true}",
        "http:",
        f"  addr: 127.0.0.1:{port}",
    ]
    if tls:
        lines += [f"  tls: {{certificate: {tls[0]}, key: {tls[1]}}}"]
    if htpasswd:
        lines += ["auth:", f"  htpasswd: {{realm: pallet-test, path: {htpasswd}}}"]
    elif token:
        lines += ["auth:", "  token:"] + [f"    {k}: {v}" for k, v in token.items()]
    cfg = root / "config.yml"
    cfg.write_text("\n".join(lines) + "\n")
    log = open(root / "registry.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([exe, "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        scheme = "https" if tls else "http"
        wait_http(f"{scheme}://127.0.0.1:{port}/v2/", proc=proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def skopeo_copy(src: str, dest: str, *extra: str) -> None:
    """skopeo copy with TLS verification off for loopback registries."""
    args = ["skopeo", "copy", "--quiet"]
    if src.startswith("docker://"):
        args.append("--src-tls-verify=false")
    if dest.startswith("docker://"):
        args.append("--dest-tls-verify=false")
    subprocess.run([*args, *extra, src, dest], check=True, capture_output=True, text=True)


def start_pallet_registry(root: Path, *, port: int | None = None, htpasswd: Path | None = None,
                          auth: str | None = None, tls: tuple[Path, Path] | None = None,
                          read_only: bool = False, anonymous_pull: bool = False,
                          token_ttl: int | None = None, config: Path | None = None,
                          extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """Start ``pallet registry serve`` on loopback (storage in ``root/data``, log in
    ``root/registry.log``) and wait until it answers; returns (process, HOST:PORT).

    The process leads its own session, so ``os.killpg(proc.pid, SIGKILL)`` takes its workers too
    (they also die with it on their own: the server sets PR_SET_PDEATHSIG)."""
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "pallet.cli.main", "registry", "serve", "--addr", f"127.0.0.1:{port}",
            "--root", str(root / "data")]
    if config:
        args += ["--config", str(config)]
    if htpasswd:
        args += ["--htpasswd", str(htpasswd)]
    if auth:
        args += ["--auth", auth]
    if tls:
        args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    if read_only:
        args.append("--read-only")
    if anonymous_pull:
        args.append("--anonymous-pull")
    if token_ttl is not None:
        args += ["--token-ttl", str(token_ttl)]
    args += list(extra)
    log = open(root / "registry.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        wait_http(f"{'https' if tls else 'http'}://127.0.0.1:{port}/v2/", proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc, f"127.0.0.1:{port}"


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL to the whole session if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()


@contextlib.contextmanager
def pallet_registry(root: Path, **opts) -> Iterator[str]:
    """``pallet registry serve`` on a free loopback port; yields HOST:PORT (see start_pallet_registry
    for the options: htpasswd, auth, tls, read_only, anonymous_pull, token_ttl, config, extra)."""
    proc, addr = start_pallet_registry(root, **opts)
    try:
        yield addr
    finally:
        stop_process(proc)
def umoci_unpack(layout: Path, tag: str, bundle: Path) -> None:
    """umoci unpack LAYOUT:TAG into an OCI runtime bundle (rootfs + config.json)."""
    if shutil.which("umoci") is None:
        raise RuntimeError("umoci is not installed (make setup installs it)")
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True,
                   capture_output=True, text=True)
