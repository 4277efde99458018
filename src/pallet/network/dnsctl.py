"""Starting, feeding and stopping the per-network DNS responder (:mod:`pallet.network.dnsserver`).

Setup writes the network's records file (atomically; the responder notices the new inode) and
starts the responder if none is alive; teardown rewrites the file and stops the responder when
the last container leaves. The responder is a detached process (double fork, own session, cwd
/), so it outlives the engine command that started it and is never its zombie; its pid is in
``RUNROOT/networks/dns/<network>/pid`` and is checked against /proc/PID/cmdline before any
signal, so a recycled pid is never killed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import sys
import time
from pathlib import Path

from pallet.context import Context
from pallet.network import store
from pallet.network.errors import NetworkError
from pallet.network.types import DNS_DOMAIN, Network

TYPE_CHECKING = False  # typing costs an import on `pallet run`'s path: annotations are strings
if TYPE_CHECKING:
    from typing import Any

MODULE = "pallet.network.dnsserver"


def dns_dir(ctx: Context, network: str) -> Path:
    return store.run_dir(ctx) / "dns" / network


def records_path(ctx: Context, network: str) -> Path:
    return dns_dir(ctx, network) / "records"


def write_records(ctx: Context, net: Network, containers: list[dict[str, Any]]) -> None:
    """containers: {"id", "ip", "names", "upstreams"} for every container on ``net``."""
    data = {
        "network": net.name,
        "gateway": net.subnet.gateway,
        "domain": DNS_DOMAIN,
        "upstreams": list(net.network_dns_servers),
        "containers": containers,
    }
    store.write_json(records_path(ctx, net.name), data)


def pid_of(ctx: Context, network: str) -> int | None:
    """The responder's pid if it is alive and really ours."""
    d = dns_dir(ctx, network)
    try:
        pid = int((d / "pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if MODULE.encode() in cmdline and os.fsencode(records_path(ctx, network)) in cmdline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return None
        return None if state in ("Z", "X") else pid
    return None


def ensure(ctx: Context, net: Network) -> int:
    """Start the responder for ``net`` unless one is running; returns its pid."""
    pid = pid_of(ctx, net.name)
    if pid is not None:
        return pid
    gw = net.subnet.gateway
    assert gw is not None
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 2.0
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, kind)
            socks.append(s)
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            while True:
                try:
                    s.bind((gw, 53))
                    break
                except OSError as e:
                    # a responder just killed may not have released the port yet
                    if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)
            if kind == socket.SOCK_STREAM:
                s.listen(64)
        return _spawn(ctx, net.name, socks[0], socks[1])
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise NetworkError(
                f"cannot start DNS for network {net.name}: {gw}:53 is already in use"
            ) from None
        raise NetworkError(f"cannot start DNS for network {net.name} on {gw}:53: {e.strerror}") from None
    finally:
        for s in socks:
            s.close()


def _spawn(ctx: Context, network: str, udp: socket.socket, tcp: socket.socket) -> int:
    d = dns_dir(ctx, network)
    d.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", MODULE, str(records_path(ctx, network)), "--udp-fd", "3", "--tcp-fd", "4"]
    env = dict(os.environ)
    # the responder must import this very pallet, wherever the engine was imported from
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, *filter(None, [env.get("PYTHONPATH")])])
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    logfd = os.open(d / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    rpipe, wpipe = os.pipe()
    try:
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the intermediate child
            try:
                os.setsid()
                grandchild = os.fork()
                if grandchild == 0:
                    os.chdir("/")
                    os.umask(0o022)
                    os.dup2(null, 0)
                    os.dup2(null, 1)
                    os.dup2(logfd, 2)
                    os.dup2(udp.fileno(), 3)
                    os.dup2(tcp.fileno(), 4)
                    signal.pthread_sigmask(signal.SIG_SETMASK, [])
                    os.execve(argv[0], argv, env)
                os.write(wpipe, str(grandchild).encode())
            finally:
                os._exit(0)
        os.close(wpipe)
        wpipe = -1
        data = b""
        while chunk := os.read(rpipe, 32):
            data += chunk
        os.waitpid(child, 0)
    finally:
        for fd in (null, logfd, rpipe, wpipe):
            if fd >= 0:
                os.close(fd)
    if not data:
        raise NetworkError(f"cannot start DNS for network {network}: fork failed")
    pid = int(data)
    (d / "pid").write_text(f"{pid}\n")
    return pid


def stop(ctx: Context, network: str, timeout: float = 2.0) -> None:
    """Stop the responder (if ours and alive) and remove its state.

    SIGKILL, not SIGTERM: the responder keeps nothing worth flushing, and a prompt exit frees
    port 53 on the gateway for the next responder at once.
    """
    pid = pid_of(ctx, network)
    d = dns_dir(ctx, network)
    with contextlib.suppress(FileNotFoundError):
        records_path(ctx, network).unlink()
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while pid_of(ctx, network) == pid and time.monotonic() < deadline:
            time.sleep(0.001)
    for name in ("pid", "log"):
        with contextlib.suppress(FileNotFoundError):
            (d / name).unlink()
    with contextlib.suppress(OSError):
        d.rmdir()
