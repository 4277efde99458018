"""``pallet network ...`` through the real CLI entry point."""

from __future__ import annotations

import io
import json

from pallet import network
from pallet.cli.main import main
from tests.network.conftest import free_subnet


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["network", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_create_ls_inspect_rm(ctx, pallet_root, capsys):
    sub = free_subnet()
    assert run(capsys, "create", "--subnet", sub, "--label", "tier=db", "--internal", "dbnet") == (
        0,
        "dbnet\n",
        "",
    )
    rc, out, _ = run(capsys, "create", "dbnet")
    assert rc == 125
    rc, out, _ = run(capsys, "ls")
    lines = out.splitlines()
    assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER"]
    assert [ln.split()[1] for ln in lines[1:]] == ["dbnet", "pallet"]
    assert run(capsys, "ls", "-q", "--filter", "label=tier=db")[1] == "dbnet\n"
    assert run(capsys, "ls", "--format", "{{.Name}} {{.Internal}}", "-f", "name=^db")[1] == "dbnet True\n"
    rc, out, _ = run(capsys, "inspect", "dbnet")
    doc = json.loads(out)[0]
    assert doc["subnets"][0]["subnet"] == sub and doc["internal"] and doc["labels"] == {"tier": "db"}
    rc, out, err = run(capsys, "inspect", "dbnet", "nosuch")
    assert rc == 125 and "nosuch" in err and json.loads(out)[0]["name"] == "dbnet"
    assert run(capsys, "exists", "dbnet")[0] == 0
    assert run(capsys, "rm", "dbnet") == (0, "dbnet\n", "")
    assert run(capsys, "exists", "dbnet")[0] == 1
    rc, _, err = run(capsys, "rm", "pallet")
    assert rc == 125 and "cannot be removed" in err


def test_prune_asks_first(ctx, pallet_root, capsys, monkeypatch):
    run(capsys, "create", "--subnet", free_subnet(), "spare")
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert run(capsys, "prune")[1] == ""
    assert network.exists("spare", ctx)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert run(capsys, "prune")[1] == "spare\n"
    assert not network.exists("spare", ctx)


def test_bad_input_is_one_line_and_exit_125(ctx, pallet_root, capsys):
    for argv, needle in (
        (["create", "--subnet", "10.0.0.0/99", "x"], "invalid subnet"),
        (["create", "--bogus", "x"], "unrecognized arguments"),
        (["create", "-o", "mtu=abc", "x"], "invalid mtu"),
        (["ls", "--filter", "color=red"], "invalid filter"),
        (["connect", "pallet", "web"], "no such container: web"),
        (["disconnect", "pallet", "web"], "no such container: web"),
    ):
        rc, out, err = run(capsys, *argv)
        assert rc == 125 and needle in err, (argv, err)
        assert err.count("\n") == 1 and out == ""
