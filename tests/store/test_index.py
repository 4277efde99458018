"""The image index: registration from real layouts, podman-style lookups, moving tags, holders, gc."""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from pallet.content import parse
from pallet.errors import ContentError, InvalidReference, StoreError
from pallet.store import AmbiguousImage, ImageInUse, ImageNotFound, Store, chain_ids
from tests.store.helpers import add_layout, build_image, tar_bytes


def test_register_small_layout_as_a_pull_would(store: Store, small_layout: Path) -> None:
    img = add_layout(store, small_layout, names=("docker.io/library/small:latest",))
    config = json.loads((small_layout / "blobs" / "sha256" / img.id.encoded).read_bytes())
    assert [x.diff_id for x in img.layers] == config["rootfs"]["diff_ids"]
    assert list(img.chain_ids) == chain_ids(config["rootfs"]["diff_ids"])
    # diff sizes were learned by decompressing each layer blob once
    for layer in img.layers:
        raw = gzip.decompress(store.read_blob(layer.digest))
        assert layer.diff_size == len(raw) and hashlib.sha256(raw).hexdigest() == layer.diff_id.encoded
    assert img.size == sum(x.diff_size for x in img.layers)
    assert (img.os, img.architecture) == ("linux", config["architecture"])
    assert img.created == "2023-11-14T22:13:20Z"
    index = json.loads((small_layout / "index.json").read_bytes())
    assert img.manifest_digest == index["manifests"][0]["digest"]
    assert img.repo_digests == (f"docker.io/library/small@{img.manifest_digest}",)
    assert store.manifest(img).raw == store.read_blob(img.manifest_digest)
    assert store.referenced_chain_ids() == set(img.chain_ids)


def test_lookup_like_podman(store: Store, small_layout: Path) -> None:
    img = add_layout(
        store,
        small_layout,
        names=("docker.io/library/busybox:latest", "localhost/app:1", "quay.io/team/tool:2"),
    )
    for text in (
        "busybox",
        "busybox:latest",
        "docker.io/busybox",
        "docker.io/library/busybox:latest",
        "library/busybox",
        "app:1",
        "localhost/app:1",
        "tool:2",
        "team/tool:2",
        "quay.io/team/tool:2",
        img.id,
        img.id.encoded,
        img.id.encoded[:12],
        img.id.encoded[:3],
        f"sha256:{img.id.encoded[:8]}",
        f"busybox@{img.manifest_digest}",
        f"quay.io/team/tool@{img.manifest_digest}",
    ):
        assert store.lookup(text).id == img.id, text
    r = store.resolve("busybox")
    assert (r.by, r.ref) == ("name", "docker.io/library/busybox:latest")
    assert store.resolve(img.id.encoded[:5]).by == "id"
    for missing in (
        "busybox:other",
        "app",
        "quay.io/team/tool",
        "nothere",
        "registry.example/team/tool:2",
        f"other@{img.manifest_digest}",
        "sha256:" + "0" * 64,
    ):
        with pytest.raises(ImageNotFound, match="no such image"):
            store.lookup(missing)
    with pytest.raises(InvalidReference):
        store.lookup("Upper/Case")
    assert store.exists("busybox") and not store.exists("Upper/Case")


def test_ambiguous_id_prefix_and_short_name(store: Store) -> None:
    images = []
    i = 0
    while True:  # two images whose IDs share their first hex digit
        images.append(build_image(store, f"img{i}"))
        firsts = [x.id.encoded[0] for x in images]
        dup = next((c for c in firsts if firsts.count(c) > 1), None)
        if dup:
            break
        i += 1
    with pytest.raises(AmbiguousImage, match=f"prefix '{dup}' is ambiguous"):
        store.lookup(dup)
    a, b = [x for x in images if x.id.encoded[0] == dup][:2]
    store.tag(a.id, "quay.io/one/tool:latest")
    store.tag(b.id, "ghcr.io/two/tool:latest")
    with pytest.raises(AmbiguousImage, match="matches several images"):
        store.lookup("tool")
    assert store.lookup("one/tool").id == a.id


def test_tags_move_and_leave_dangling(store: Store) -> None:
    a = build_image(store, "a", names=("localhost/app:latest",))
    b = build_image(store, "b")
    assert b.dangling
    assert store.tag(b.id, "localhost/app:latest") == a.id, "tag returns where the name came from"
    assert store.get(a.id).dangling and store.get(b.id).names == ("localhost/app:latest",)
    assert store.lookup("app").id == b.id
    assert store.untag("localhost/app:latest") == b.id
    assert store.get(b.id).dangling
    with pytest.raises(InvalidReference, match="qualified and tagged"):
        store.tag(a.id, "app")
    with pytest.raises(ImageNotFound):
        store.tag("sha256:" + "1" * 64, "localhost/x:1")


def test_adding_an_image_again_merges_names(store: Store, small_layout: Path) -> None:
    first = add_layout(store, small_layout, names=("localhost/one:1",))
    again = add_layout(store, small_layout, names=("localhost/two:2",))
    assert first.id == again.id
    assert again.names == ("localhost/one:1", "localhost/two:2")
    assert len(store.images()) == 1


def test_holders_block_removal_unless_forced(store: Store) -> None:
    img = build_image(store, "held", names=("localhost/held:1",))
    store.add_holder(img.id, "c0ffee" * 10)
    store.add_holder(img.id, "c0ffee" * 10)  # idempotent
    assert store.holders(img.id) == ("c0ffee" * 10,)
    with pytest.raises(ImageInUse, match="in use by container"):
        store.remove_image(img.id)
    assert store.lookup("held:1").id == img.id
    assert store.remove_holder(img.id, "c0ffee" * 10)
    assert not store.remove_holder(img.id, "c0ffee" * 10)
    store.add_holder(img.id, "other")
    removed = store.remove_image(img.id, force=True)
    assert removed.holders == ("other",)
    with pytest.raises(ImageNotFound):
        store.add_holder(img.id, "late")


def test_holds_commit_without_their_own_sync_and_leave_the_index_durable(store: Store) -> None:
    """add_holder/remove_holder relax synchronous for their own transaction only (docs/images.md):
    the index is FULL again after them, also when the transaction fails."""
    def level() -> int:
        return store._db.execute("PRAGMA synchronous").fetchone()[0]

    full = 2
    img = build_image(store, "held2", names=("localhost/held2:1",))
    assert level() == full
    store.add_holder(img.id, "feed" * 16)
    assert level() == full
    assert store.holders(img.id) == ("feed" * 16,)
    with pytest.raises(ImageNotFound):
        store.add_holder("sha256:" + "9" * 64, "feed" * 16)
    assert level() == full
    assert store.remove_holder(img.id, "feed" * 16)
    assert level() == full
    assert store.holders(img.id) == ()


def test_remove_deletes_only_unshared_blobs(store: Store) -> None:
    base = tar_bytes({"base.txt": b"shared base"})
    a = build_image(store, "a", layers=[base, tar_bytes({"a": b"a"})])
    b = build_image(store, "b", layers=[base, tar_bytes({"b": b"b"})])
    assert a.layers[0].digest == b.layers[0].digest and a.chain_ids[0] == b.chain_ids[0]
    store.remove_image(a.id)
    assert store.has_blob(a.layers[0].digest), "the shared base layer stays"
    assert not store.has_blob(a.layers[1].digest)
    assert not store.has_blob(a.id) and not store.has_blob(a.manifest_digest)
    assert store.has_blob(b.layers[1].digest) and store.has_blob(b.manifest_digest)
    assert store.referenced_chain_ids() == set(b.chain_ids)


def test_gc_removes_unreferenced_blobs(tmp_path: Path) -> None:
    root = tmp_path / "images"
    with Store(root) as s:
        keep = build_image(s, "keep")
        stray = s.put(b"left over by a failed pull")
    with Store(root) as s:  # the writer's lease ended with its Store
        report = s.gc()
        assert report.removed_blobs == [stray]
        assert report.freed_bytes == len(b"left over by a failed pull")
        assert s.has_blob(keep.id) and s.has_blob(keep.layers[0].digest)
        assert s.gc().removed_blobs == []


def test_add_image_refuses_inconsistent_content(store: Store) -> None:
    raw = tar_bytes({"f": b"x"})
    layer = store.put(gzip.compress(raw))
    cfg = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
        }
    ).encode()
    cd = store.put(cfg)
    man = parse(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": cd,
                    "size": len(cfg),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer,
                        "size": len(gzip.compress(raw)),
                    }
                ],
            }
        ).encode()
    )
    with pytest.raises(ContentError, match="unpacks to diff ID"):
        store.add_image(man)
    missing = parse(
        json.dumps(
            {
                "schemaVersion": 2,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": "sha256:" + "2" * 64,
                    "size": 2,
                },
                "layers": [],
            }
        ).encode()
    )
    with pytest.raises(StoreError, match="not in the store"):
        store.add_image(missing)
    assert store.images() == []


def test_index_is_sqlite_wal_and_survives_reopen(tmp_path: Path) -> None:
    root = tmp_path / "images"
    with Store(root) as s:
        img = build_image(s, "persist", names=("localhost/persist:1",))
    db = sqlite3.connect(root / "index.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with Store(root) as s:
        assert s.lookup("persist:1").id == img.id
