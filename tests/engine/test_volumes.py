"""``pallet volume``: create, ls (filters, formats), inspect, rm (in use), prune, driver options."""

from __future__ import annotations

import json
import os

from tests.engine.conftest import Pallet


def test_volume_create_ls_inspect_rm(pallet: Pallet) -> None:
    assert pallet.ok("volume", "create", "v1") == "v1\n"
    assert pallet.ok("volume", "create", "--label", "team=a", "--name", "v2") == "v2\n"
    assert pallet.ok("volume", "create", "v1") == "v1\n", "creating an existing volume returns it"
    anon = pallet.ok("volume", "create").strip()
    assert len(anon) == 64
    ls = pallet.ok("volume", "ls")
    assert ls.splitlines()[0].split() == ["DRIVER", "VOLUME", "NAME"] and "v1" in ls and "v2" in ls
    assert pallet.ok("volume", "ls", "-q", "--filter", "label=team=a") == "v2\n"
    assert pallet.ok("volume", "ls", "--format", "{{.Name}}:{{.Driver}}", "-f", "name=v1") == "v1:local\n"
    info = json.loads(pallet.ok("volume", "inspect", "v2"))[0]
    assert info["Name"] == "v2" and info["Labels"] == {"team": "a"} and info["Scope"] == "local"
    assert info["Mountpoint"].endswith("/volumes/v2/_data") and os.path.isdir(info["Mountpoint"])
    assert pallet.ok("volume", "inspect", "-f", "{{.Driver}}", "v1") == "local\n"
    r = pallet("volume", "inspect", "nope")
    assert r.rc == 1 and "no such volume" in r.err
    assert pallet.ok("volume", "rm", "v1", "v2", anon) == f"v1\nv2\n{anon}\n"
    assert not os.path.exists(info["Mountpoint"])
    r = pallet("volume", "rm", "v1")
    assert r.rc == 1 and "no such volume" in r.err
    assert pallet("volume", "rm", "-f", "v1").rc == 0
    r = pallet("volume", "create", "bad/name")
    assert r.rc == 125 and "invalid volume name" in r.err


def test_volume_in_use_dangling_and_prune(pallet: Pallet) -> None:
    pallet.ok("volume", "create", "named")
    pallet.ok("run", "-d", "--name", "user", "-v", "named:/n", "-v", "/anon", "small", "sleep", "300")
    r = pallet("volume", "rm", "named")
    assert r.rc == 2 and "in use" in r.err
    assert pallet.ok("volume", "ls", "-q", "-f", "dangling=true") == ""
    assert len(pallet.ok("volume", "ls", "-q", "-f", "dangling=false").split()) == 2
    pallet.ok("volume", "create", "unused")
    out = pallet.ok("volume", "prune", "-f")
    assert "unused" not in out, "without -a only anonymous volumes are pruned (docker 23+)"
    pallet.ok("rm", "-f", "user")
    assert set(pallet.ok("volume", "ls", "-q").split()) >= {"named", "unused"}
    out = pallet.ok("volume", "prune", "-f")
    assert out.startswith("Deleted Volumes:"), "the now-unused anonymous volume goes"
    out = pallet.ok("volume", "prune", "-a", "-f")
    assert "named" in out and "unused" in out
    assert pallet.ok("volume", "ls", "-q") == ""


def test_volume_with_tmpfs_driver_options(pallet: Pallet) -> None:
    pallet.ok("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "-o", "o=size=1m", "tv")
    out = pallet.ok(
        "run", "--rm", "-v", "tv:/t", "small", "sh", "-c", "echo x > /t/f; grep ' /t ' /proc/mounts"
    )
    assert out.split()[2] == "tmpfs" and "size=1024k" in out
    info = json.loads(pallet.ok("volume", "inspect", "tv"))[0]
    assert info["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    pallet.ok("volume", "rm", "tv")
    assert [m for m in pallet.leaks() if m.startswith("mount")] == []
    r = pallet("volume", "create", "-o", "type=tmpfs", "half")
    assert r.rc == 125 and "device" in r.err
