"""`make demo`: pallet's main job end to end, offline, on an embedded default image.

It builds a tiny busybox image from the host's static busybox (Debian's busybox-static), starts
pallet's own registry on loopback, pushes the image there, forgets it locally, pulls it back
(unpacking while downloading), lists it, and runs a container from it. Everything lives under
``.demo/`` in the checkout (its own storage root), so the demo never touches /var/lib/pallet and
can be run again; ``make demo`` prints each command as it runs it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
BIN = Path(sys.executable).parent
APPLETS = ["sh", "echo", "cat", "ls", "id", "uname", "hostname", "true", "false", "sleep", "env", "ps"]


def say(text: str) -> None:
    print(f"\n\033[1m# {text}\033[0m" if sys.stdout.isatty() else f"\n# {text}", flush=True)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    shown = ["pallet" if a == str(BIN / "pallet") else a for a in args]
    print("$ " + " ".join(shlex.quote(a) for a in shown), flush=True)
    res = subprocess.run(args, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if res.stdout:
        print(res.stdout.rstrip(), flush=True)
    if check and res.returncode != 0:
        sys.exit(f"demo: {args[0]} {args[1] if len(args) > 1 else ''} failed with status {res.returncode}")
    return res


def pallet(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(str(BIN / "pallet"), *args, check=check)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_rootfs(root: Path) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).is_file():
        sys.exit("demo: busybox is missing (apt-get install busybox-static; `make demo` does this)")
    shutil.rmtree(root, ignore_errors=True)
    for d in ("bin", "etc", "tmp", "root", "proc", "sys", "dev"):
        (root / d).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")  # noqa: E501
    (root / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")


def main() -> None:
    os.environ["PALLET_ROOT"] = str(DEMO / "root")
    os.environ["PALLET_RUNROOT"] = str(DEMO / "run")
    os.environ["PATH"] = f"{BIN}:{os.environ.get('PATH', '')}"  # pallet-runtime beside pallet
    DEMO.mkdir(exist_ok=True)
    port = free_port()
    registry = f"127.0.0.1:{port}"
    image = f"{registry}/demo/busybox:latest"

    say("an image of the host's static busybox, imported as a one-layer image")
    build_rootfs(DEMO / "rootfs")
    image_id = pallet("import", "--change", "CMD=/bin/sh", "--message", "pallet demo", str(DEMO / "rootfs"),
                      "demo/busybox:latest").stdout.strip().removeprefix("sha256:")[:12]

    say(f"pallet's own registry server on {registry}")
    log = open(DEMO / "registry.log", "w")  # noqa: SIM115 - lives as long as the server
    print(f"$ pallet registry serve --addr {registry} --root {DEMO / 'registry'} &", flush=True)
    server = subprocess.Popen([str(BIN / "pallet"), "registry", "serve", "--addr", registry, "--root",
                               str(DEMO / "registry")], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"demo: the registry did not start; see {DEMO / 'registry.log'}")
                time.sleep(0.1)

        say("push it, forget it locally, pull it back (layers unpack while they download)")
        pallet("push", "localhost/demo/busybox:latest", image)
        pallet("rmi", image_id)
        pallet("pull", image)

        say("what the registry and the local store now hold")
        pallet("image", "tags", f"{registry}/demo/busybox")
        pallet("images")
        pallet("image", "tree")

        say("run a container from it")
        pallet("run", "--rm", image, "sh", "-c",
               'echo "hello from $(hostname), a pallet container on $(uname -sr)"; id')
        say("done: everything is under .demo/ (remove it with: rm -rf .demo)")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


if __name__ == "__main__":
    main()
