#!/usr/bin/env python3
"""One container's worth of networking, as a fresh process: what `pallet run` adds for its network.

    cycle.py ROOT                  make a netns, set it up on the default network, tear it down,
                                   remove the netns (the bridge and firewall table come and go too
                                   when no other container is on the network)
    cycle.py ROOT --resident up    park one container on the default network (bridge stays up)
    cycle.py ROOT --resident down  remove it
    cycle.py ROOT --timings N      N cycles in one process, printing setup/teardown times (ms)

Run as root. ROOT is a scratch pallet root (its runroot is ROOT/run).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> int:
    root = Path(sys.argv[1])
    from pallet import network
    from pallet.context import Context
    from pallet.network import netns

    ctx = Context(root=root / "root", runroot=root / "run")
    if "--resident" in sys.argv:
        path = root / "resident.ns"
        if sys.argv[-1] == "up":
            netns.create(path)
            network.setup("resident", path, [network.Attachment()], container_name="resident", ctx=ctx)
        else:
            network.teardown("resident", ctx=ctx)
            netns.remove(path)
        return 0
    count = int(sys.argv[sys.argv.index("--timings") + 1]) if "--timings" in sys.argv else 1
    for i in range(count):
        cid = f"bench{os.getpid()}x{i}"
        path = root / f"{cid}.ns"
        netns.create(path)
        try:
            t0 = time.perf_counter()
            network.setup(cid, path, [network.Attachment()], container_name=cid, ctx=ctx)
            t1 = time.perf_counter()
            network.teardown(cid, ctx=ctx)
            t2 = time.perf_counter()
        finally:
            netns.remove(path)
        if count > 1:
            print(f"setup {1e3 * (t1 - t0):6.1f} ms   teardown {1e3 * (t2 - t1):6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
