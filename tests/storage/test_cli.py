"""`image mount/unmount` and `system df` handlers, registered on a bare parser (the lead wires
them into the real `image` and `system` groups)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.storage.conftest import make_store, needs_root, unmount_all
from tests.storage.test_refimage import sources

from pallet.cli.parser import Parser
from pallet.cli.storage import register_image_mount, register_system_df
from pallet.context import Context
from pallet.errors import PalletError, UsageError
from pallet.storage.layers import ImageRef
from pallet.storage.mount import is_mountpoint

pytestmark = needs_root


@pytest.fixture
def env(tmp_path: Path, small_layout: Path):
    store = make_store(tmp_path, "overlay")
    top = store.apply_image(sources(small_layout))[-1].chain_id
    images = {"example.com/small:latest": ImageRef("sha256:" + "a" * 64, top, ("example.com/small:latest",),
                                                   "2023-11-14T22:13:20Z")}

    def resolve(ctx: Context, name: str) -> ImageRef:
        if name in images:
            return images[name]
        raise PalletError(f"{name}: image not known")

    def list_images(ctx: Context) -> list[ImageRef]:
        return list(images.values())

    parser = Parser(prog="pallet")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    isub = sub.add_parser("image").add_subparsers(dest="sub", parser_class=Parser)
    register_image_mount(isub, resolve=resolve, list_images=list_images)
    ssub = sub.add_parser("system").add_subparsers(dest="sub", parser_class=Parser)
    register_system_df(ssub, list_images=list_images, container_names=lambda ctx: {"c1": "web"})
    ctx = store.ctx

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return int(args.func(args, ctx) or 0)

    try:
        yield run, store, top
    finally:
        unmount_all(tmp_path)


def test_image_mount_prints_path_and_unmount_releases(env, capsys) -> None:
    run, _, _ = env
    assert run("image", "mount", "example.com/small:latest") == 0
    path = Path(capsys.readouterr().out.strip())
    assert is_mountpoint(path) and (path / "bin" / "busybox").is_file()
    assert run("image", "mount", "example.com/small:latest") == 0  # a second reference
    capsys.readouterr()
    assert run("image", "mount") == 0
    listing = capsys.readouterr().out
    assert "example.com/small:latest" in listing and str(path) in listing
    assert run("image", "mount", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)[0]["mountpoint"] == str(path)
    assert run("image", "unmount", "example.com/small:latest") == 0
    assert is_mountpoint(path)  # one reference left
    assert run("image", "umount", "example.com/small:latest") == 0
    assert not is_mountpoint(path)
    assert run("image", "unmount", "example.com/small:latest") == 125
    assert "is not mounted" in capsys.readouterr().err


def test_unmount_all_and_usage_errors(env, capsys) -> None:
    run, store, _ = env
    run("image", "mount", "example.com/small:latest")
    run("image", "mount", "example.com/small:latest")
    assert run("image", "unmount", "--all") == 0
    assert store.image_mounts() == {}
    with pytest.raises(UsageError):
        run("image", "unmount")
    with pytest.raises(UsageError):
        run("image", "mount", "--bogus")
    assert run("image", "mount", "nope:latest") == 125
    assert "nope:latest: image not known" in capsys.readouterr().err


def test_default_resolver_takes_a_chain_id(tmp_path: Path, small_layout: Path, capsys) -> None:
    store = make_store(tmp_path, "vfs")
    top = store.apply_image(sources(small_layout))[-1].chain_id
    parser = Parser(prog="pallet")
    isub = parser.add_subparsers(dest="sub", parser_class=Parser)
    register_image_mount(isub)
    try:
        args = parser.parse_args(["mount", top[7:19]])
        assert args.func(args, store.ctx) == 0
        assert (Path(capsys.readouterr().out.strip()) / "etc" / "motd").is_file()
        args = parser.parse_args(["unmount", top])
        assert args.func(args, store.ctx) == 0
    finally:
        unmount_all(tmp_path)


def test_system_df(env, capsys) -> None:
    run, store, top = env
    store.create_container_layer("c1", top, labels={"pallet.image": "sha256:" + "a" * 64})
    p = store.mount_container("c1")
    (p / "data.bin").write_bytes(b"x" * 4000)
    store.unmount_container("c1")
    assert run("system", "df") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert rows["Images"][1:3] == ["1", "1"]
    assert rows["Containers"][1:4] == ["1", "1", "4kB"]
    assert rows["Layers"][1:3] == ["3", "3"]
    assert run("system", "df", "-v") == 0
    verbose = capsys.readouterr().out
    assert "example.com/small" in verbose and "SHARED SIZE" in verbose and "web" in verbose
    assert run("system", "df", "--format", "json") == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    images = next(x for x in lines if x["Type"] == "Images")
    assert images["Size"] == sum(x.usage for x in store.layers())
