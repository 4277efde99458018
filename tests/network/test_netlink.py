"""The netlink layer: pyroute2's codec without its package __init__, and batch deletion."""

from __future__ import annotations

import os
import subprocess
import sys

from pallet.network.netlink import Netlink


def test_codec_loads_little_and_pyroute2_stays_whole():
    code = (
        "import sys; from pallet.network.netlink import Netlink; nl = Netlink(); nl.links();"
        "heavy = [m for m in ('pyroute2.ndb.main', 'pyroute2.conntrack', 'pyroute2.ipdb')"
        " if m in sys.modules];"
        "print('heavy', heavy);"
        "import pyroute2; from pyroute2 import IPRoute; print('full', IPRoute.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "heavy []" in out and "full IPRoute" in out


def test_delete_links_in_one_batch_and_missing_ones():
    tag = os.urandom(3).hex()
    names = [f"pt{tag}a", f"pt{tag}b"]
    subprocess.run(["ip", "link", "add", names[0], "type", "veth", "peer", "name", names[1]], check=True)
    try:
        with Netlink() as nl:
            assert nl.link(names[0]).kind == "veth"
            # both ends of the pair, and a name that does not exist
            deleted = nl.delete_links([names[0], names[1], f"pt{tag}x"])
            assert names[0] in deleted
            assert nl.link(names[0]) is None and nl.link(names[1]) is None
            assert nl.delete_links([f"pt{tag}x"]) == []
    finally:
        for n in names:
            subprocess.run(["ip", "link", "del", n], capture_output=True)
