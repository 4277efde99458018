"""``python -m pallet.network.reaper ROOT RUNROOT NETWORK GENERATION DELAY``.

Started detached by a teardown with ``linger``: waits DELAY seconds, then removes the network's
bridge and firewall elements if no container joined it meanwhile (its IPAM generation is
unchanged). The heavy imports come after the wait, and only if there is work left.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    root, runroot, network, generation, delay = argv
    time.sleep(float(delay))
    try:
        data = json.loads((Path(root) / "networks" / "ipam" / f"{network}.json").read_bytes())
    except (OSError, ValueError):
        data = {}
    if data.get("allocations") or int(data.get("generation", 0)) != int(generation):
        return 0  # in use again, or a later teardown scheduled its own reaper
    from pallet.context import Context
    from pallet.network import bridge

    bridge.reap_idle(Context(root=Path(root), runroot=Path(runroot)), network, int(generation))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
