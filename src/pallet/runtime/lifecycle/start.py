"""``start``: release the init waiting on exec.fifo, then run poststart hooks."""

from __future__ import annotations

import os
import select
import time

from pallet.errors import RuntimeFailure
from pallet.runtime import hooks
from pallet.runtime.state import Container


def start(c: Container) -> None:
    """Caller holds the container lock."""
    status = c.status()
    if status != "created":
        if status == "stopped":
            raise RuntimeFailure(f"cannot start container {c.id}: it has stopped")
        raise RuntimeFailure(f"cannot start container {c.id}: it is {status}, not created")
    try:
        fd = os.open(c.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RuntimeFailure(f"cannot start container {c.id}: already started") from None
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        got = b""
        while True:  # "0", then EOF when the init execs the user's program (or dies)
            if p.poll(50):
                data = os.read(fd, 16)
                if data:
                    got += data
                    continue
                if got:
                    break
            if not c.alive():
                if got:
                    break  # it started and has already finished
                raise RuntimeFailure(f"cannot start container {c.id}: its init process has exited")
            time.sleep(0)
    finally:
        os.close(fd)
    try:
        os.unlink(c.fifo)
    except FileNotFoundError:
        pass
    # no save: "running" is what the kernel says once the fifo is gone (Container.status)
    cfg = c.data.get("config") or {}
    if hooks.has(cfg, "poststart"):
        hooks.run("poststart", cfg["hooks"]["poststart"], c.oci_state(), warn_only=True)
