"""refimage.py's `small` image applied from its blobs (the pull's streams) and mounted must be
exactly what `refimage.py expect small` prints, and what umoci unpacks from the same layout."""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.storage.helpers import blob, compress, expected_owners, read_layout, tree

from pallet.content import mediatypes as mt
from pallet.storage.layers import LayerSource, LayerStore, chain_ids

pytestmark = pytest.mark.peer


def sources(layout: Path) -> list[LayerSource]:
    layers, diff_ids = read_layout(layout)
    return [LayerSource(open=functools.partial(open, blob(layout, desc["digest"]), "rb"),
                        media_type=desc["mediaType"], diff_id=diff, compressed_digest=desc["digest"],
                        compressed_size=desc["size"])
            for desc, diff in zip(layers, diff_ids, strict=True)]


def apply_small(store: LayerStore, layout: Path) -> Path:
    applied = store.apply_image(sources(layout))
    _, diff_ids = read_layout(layout)
    assert [x.chain_id for x in applied] == chain_ids(diff_ids)
    assert all(x.applied for x in applied)
    return store.mount_image("small", applied[-1].chain_id)


def test_small_matches_refimage_expect(store: LayerStore, small_layout: Path, small_expect) -> None:
    root = apply_small(store, small_layout)
    got = tree(root, content=False)
    want = {path: (kind, mode, size, target) for path, kind, mode, size, target in small_expect}
    assert {p: row[:4] for p, row in got.items()} == want
    owners = expected_owners(small_layout)
    assert {p: row[4:6] for p, row in got.items()} == {p: owners[p] for p in want}
    assert (root / "data" / "owned-by-app").stat().st_uid == 1000
    # hardlinks within a layer stay hardlinks
    assert (root / "data/linked2.txt").stat().st_ino == (root / "data/hardlink-to-linked2").stat().st_ino
    assert (root / "bin/sh").stat().st_ino == (root / "bin/busybox").stat().st_ino
    assert store.unmount_image("small")
    assert store.image_mounts() == {}


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed")
def test_small_matches_umoci_unpack(store: LayerStore, small_layout: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{small_layout}:latest", str(bundle)], check=True,
                   capture_output=True)
    root = apply_small(store, small_layout)
    ours = tree(root, mtimes=True)
    theirs = tree(bundle / "rootfs", mtimes=True)
    # umoci records its own metadata xattr-free; compare everything incl. contents and mtimes
    assert ours == theirs


@pytest.mark.parametrize("media_type,kind", [
    (mt.OCI_LAYER, "none"), (mt.OCI_LAYER_ZSTD, "zstd"), (mt.DOCKER_LAYER_GZIP, "gzip"),
    (mt.DOCKER_LAYER, "none"), (mt.DOCKER_LAYER_ZSTD, "zstd"), (mt.OCI_LAYER_ND_GZIP, "gzip"),
])
def test_every_layer_media_type(tmp_path: Path, small_layout: Path, small_expect, media_type: str,
                                kind: str) -> None:
    from tests.storage.conftest import make_store, unmount_all

    store = make_store(tmp_path, "overlay")
    layers, diff_ids = read_layout(small_layout)
    try:
        srcs = []
        for desc, diff in zip(layers, diff_ids, strict=True):
            import gzip

            raw = gzip.decompress(blob(small_layout, desc["digest"]).read_bytes())
            data = compress(raw, kind) if kind != "none" else raw
            srcs.append(LayerSource(open=functools.partial(io.BytesIO, data), media_type=media_type,
                                    diff_id=diff))
        applied = store.apply_image(srcs)
        root = store.mount_image("small", applied[-1].chain_id)
        want = {path: (k, mode, size, target) for path, k, mode, size, target in small_expect}
        assert {p: row[:4] for p, row in tree(root, content=False).items()} == want
    finally:
        unmount_all(tmp_path)
