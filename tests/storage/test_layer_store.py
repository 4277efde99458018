"""LayerStore.apply semantics: verification, reuse, tar formats, OCI whiteout rules; image
mounts, GC and df."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from tests.storage.conftest import needs_root
from tests.storage.helpers import E, compress, d, diff_id, f, hard, make_tar, sym, tree

from pallet.content import mediatypes as mt
from pallet.errors import ContentError, DigestMismatch, StorageError
from pallet.storage.driver import Kind
from pallet.storage.layers import ImageRef, LayerNotFound, LayerStore, chain_id, chain_ids
from pallet.storage.tarstream import TarFormatError

pytestmark = needs_root

# vfs_cap_data revision 2, effective, permitted = CAP_NET_RAW (as `setcap cap_net_raw+ep`)
NET_RAW_CAP = "\x01\x00\x00\x02" "\x00\x20\x00\x00" + "\x00" * 12


def apply_raw(store: LayerStore, parent: str | None, raw: bytes, kind: str = "gzip", **kw) -> str:
    media = {"gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD, "none": mt.OCI_LAYER}[kind]
    data = compress(raw, kind) if kind != "none" else raw
    return store.apply(parent, io.BytesIO(data), media, **kw).chain_id


def no_leftovers(store: LayerStore) -> None:
    assert [i.name for i in store.driver.walk() if i.kind != Kind.COMMITTED] == []
    assert os.listdir(store.home / "tmp") == []


def view(store: LayerStore, cid: str, name: str = "v") -> Path:
    return store.mount_image(name, cid)


# ------------------------------------------------------------------------------ chain IDs


def test_chain_ids_follow_the_image_spec() -> None:
    a, b, c = ("sha256:" + hashlib.sha256(x).hexdigest() for x in (b"a", b"b", b"c"))
    ids = chain_ids([a, b, c])
    assert ids[0] == a
    assert ids[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert ids[2] == "sha256:" + hashlib.sha256(f"{ids[1]} {c}".encode()).hexdigest()
    assert chain_id(ids[1], c) == ids[2]


# ------------------------------------------------------------------------------ verification


def test_apply_verifies_and_records(store: LayerStore) -> None:
    raw = make_tar([d("etc"), f("etc/hostname", b"box\n")])
    blob = compress(raw)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    layer = store.apply(None, io.BytesIO(blob), mt.OCI_LAYER_GZIP, expected_diff_id=diff_id(raw),
                        compressed_digest=digest, compressed_size=len(blob))
    assert layer.applied and layer.chain_id == diff_id(raw) == layer.diff_id
    assert (layer.size, layer.compressed_digest, layer.compressed_size) == (len(raw), digest, len(blob))
    assert store.get(layer.chain_id) == layer.__class__(**{**layer.__dict__, "applied": False})
    # applied again: reused without reading the stream
    again = store.apply(None, io.BytesIO(b"not even a tar"), mt.OCI_LAYER_GZIP, expected_diff_id=diff_id(raw))
    assert not again.applied and again.chain_id == layer.chain_id


def test_diff_id_mismatch_discards_the_layer(store: LayerStore) -> None:
    raw = make_tar([f("a", b"a")])
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch, match=wrong):
        apply_raw(store, None, raw, expected_diff_id=wrong)
    assert store.layers() == []
    no_leftovers(store)


def test_compressed_digest_and_size_mismatch(store: LayerStore) -> None:
    raw = make_tar([f("a", b"a")])
    with pytest.raises(DigestMismatch, match="blob hashes to"):
        apply_raw(store, None, raw, compressed_digest="sha256:" + "1" * 64)
    with pytest.raises(DigestMismatch, match="bytes, expected 3"):
        apply_raw(store, None, raw, compressed_size=3)
    assert store.layers() == []
    no_leftovers(store)


def test_drain_existing_reads_the_stream(store: LayerStore) -> None:
    raw = make_tar([f("a", b"a")])
    blob = compress(raw)
    apply_raw(store, None, raw, expected_diff_id=diff_id(raw))
    s = io.BytesIO(blob)
    store.apply(None, s, mt.OCI_LAYER_GZIP, expected_diff_id=diff_id(raw), drain_existing=True,
                compressed_digest="sha256:" + hashlib.sha256(blob).hexdigest())
    assert s.tell() == len(blob)


def test_apply_without_expected_diff_id_reuses_by_content(store: LayerStore) -> None:
    raw = make_tar([f("a", b"a")])
    first = store.apply(None, io.BytesIO(raw), mt.OCI_LAYER)
    second = store.apply(None, io.BytesIO(raw), mt.OCI_LAYER)
    assert first.applied and not second.applied and first.chain_id == second.chain_id
    no_leftovers(store)


def test_missing_parent(store: LayerStore) -> None:
    with pytest.raises(LayerNotFound, match="parent layer"):
        raw = make_tar([f("a")])
        apply_raw(store, "sha256:" + "2" * 64, raw, expected_diff_id=diff_id(raw))
    no_leftovers(store)


@pytest.mark.parametrize("damage", ["truncated-gzip", "garbage", "bad-checksum", "truncated-tar",
                                    "bad-media"])
def test_corrupt_layers_fail_cleanly(store: LayerStore, damage: str) -> None:
    raw = make_tar([f("a", b"a" * 5000), f("b", b"b")])
    if damage == "truncated-gzip":
        data, media = compress(raw)[:-20], mt.OCI_LAYER_GZIP
        exc: type[Exception] = ContentError
    elif damage == "garbage":
        data, media, exc = b"\x1f\x8bnot gzip at all", mt.OCI_LAYER_GZIP, ContentError
    elif damage == "bad-checksum":
        bad = bytearray(raw)
        bad[0] ^= 0xFF
        data, media, exc = bytes(bad), mt.OCI_LAYER, TarFormatError
    elif damage == "truncated-tar":
        data, media, exc = raw[:1500], mt.OCI_LAYER, TarFormatError
    else:
        data, media, exc = raw, "application/vnd.example.unknown", ContentError
    with pytest.raises(exc):
        store.apply(None, io.BytesIO(data), media)
    assert store.layers() == []
    no_leftovers(store)


# ------------------------------------------------------------------------------ tar formats


def test_tar_formats_and_metadata(store: LayerStore) -> None:
    long_dir = "l" * 120
    entries = [
        d("dir", mode=0o2775, uid=7, gid=8),
        f("dir/inherits", b"g", uid=0, gid=0),
        f("setuid", b"s", mode=0o4755), f("setgid", b"s", mode=0o2711), d("sticky", mode=0o1777),
        f("xattrs", b"x", pax={"SCHILY.xattr.user.one": "1",
                               "SCHILY.xattr.security.capability": NET_RAW_CAP}),
        f("libarchive", b"x", pax={"LIBARCHIVE.xattr.user.two": "Mg"}),
        f("bigid", b"b", uid=3_000_000, gid=2_000_000),
        f("subsecond", b"t", pax={"mtime": "1700000000.123456789"}),
        d(long_dir), f(long_dir + "/" + "n" * 200, b"long"),
        f("caf\udce9", b"latin-1 name"),
        sym("abs", "/etc/passwd"),
        f(".wh..wh.plnk", b""),  # AUFS metadata: ignored
    ]
    raw = make_tar(entries)
    root = view(store, apply_raw(store, None, raw))
    st = os.lstat(root / "dir")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o2775, 7, 8)
    assert os.lstat(root / "dir/inherits").st_gid == 0
    assert os.lstat(root / "setuid").st_mode & 0o7777 == 0o4755
    assert os.lstat(root / "setgid").st_mode & 0o7777 == 0o2711
    assert os.lstat(root / "sticky").st_mode & 0o7777 == 0o1777
    assert os.getxattr(root / "xattrs", "user.one") == b"1"
    assert os.getxattr(root / "xattrs", "security.capability") == NET_RAW_CAP.encode("latin-1")
    assert os.getxattr(root / "libarchive", "user.two") == b"2"
    st = os.lstat(root / "bigid")
    assert (st.st_uid, st.st_gid) == (3_000_000, 2_000_000)
    assert os.lstat(root / "subsecond").st_mtime_ns == 1_700_000_000_123_456_789
    assert (root / long_dir / ("n" * 200)).read_bytes() == b"long"
    assert os.path.exists(os.fsencode(root) + b"/caf\xe9")
    assert not (root / ".wh..wh.plnk").exists()


def test_gnu_format_long_names_and_base256(store: LayerStore) -> None:
    name = "g" * 150
    raw = make_tar([f(name, b"gnu", uid=0o77777777 + 5), sym("s" * 120, "t" * 130)], fmt=tarfile.GNU_FORMAT)
    root = view(store, apply_raw(store, None, raw))
    assert (root / name).read_bytes() == b"gnu" and (root / name).stat().st_uid == 0o77777777 + 5
    assert os.readlink(root / ("s" * 120)) == "t" * 130


def test_overlay_xattrs_from_a_layer_are_ignored(store: LayerStore) -> None:
    raw = make_tar([d("d", pax={"SCHILY.xattr.trusted.overlay.opaque": "y"}), f("d/x")])
    lower = apply_raw(store, None, make_tar([d("d"), f("d/kept", b"k")]))
    root = view(store, apply_raw(store, lower, raw))
    assert sorted(os.listdir(root / "d")) == ["kept", "x"]


# ------------------------------------------------------------------------------ OCI whiteout rules


def test_whiteouts_and_opaque_dirs(store: LayerStore) -> None:
    base = apply_raw(store, None, make_tar([d("a"), f("a/1"), f("a/2"), d("b"), f("b/x"), d("b/sub"),
                                            f("b/sub/y"), f("c"), d("e"), f("e/old")]))
    top = apply_raw(store, base, make_tar([
        f("a/.wh.1"),  # a file
        f(".wh.b"),  # a whole directory
        d("e"), f("e/.wh..wh..opq"), f("e/new"),  # opaque: lower contents hidden
        f(".wh.c"), d("c"), f("c/now-a-dir"),  # a file replaced by a directory in one layer
        f("a/.wh.not-there"),
    ]))
    root = view(store, top)
    assert sorted(os.listdir(root)) == ["a", "c", "e"]
    assert os.listdir(root / "a") == ["2"]
    assert os.listdir(root / "e") == ["new"]
    assert os.listdir(root / "c") == ["now-a-dir"]


def test_whiteout_only_hides_lower_layers(store: LayerStore) -> None:
    """image-spec: files present in the same layer as a whiteout are not hidden by it."""
    base = apply_raw(store, None, make_tar([d("d"), f("d/lower"), f("f", b"lower")]))
    top = apply_raw(store, base, make_tar([f("f", b"same layer"), f(".wh.f"),
                                           f(".wh.d"), d("d"), f("d/upper")]))
    root = view(store, top)
    assert (root / "f").read_bytes() == b"same layer"
    assert os.listdir(root / "d") == ["upper"]


def test_implicit_parents_keep_lower_attributes(store: LayerStore) -> None:
    base = apply_raw(store, None, make_tar([d("srv", mode=0o750, uid=5, gid=6, mtime=1_500_000_000),
                                            d("srv/deep", mode=0o711)]))
    top = apply_raw(store, base, make_tar([f("srv/deep/new", b"n")]))  # no directory entries
    root = view(store, top)
    st = os.stat(root / "srv")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime) == (0o750, 5, 6, 1_500_000_000)
    assert os.stat(root / "srv/deep").st_mode & 0o7777 == 0o711
    new = apply_raw(store, None, make_tar([f("x/y/z", b"z")]))  # parents nobody defined: 0755
    assert os.stat(view(store, new, "v2") / "x/y").st_mode & 0o7777 == 0o755


def test_cross_layer_hardlink(store: LayerStore) -> None:
    base = apply_raw(store, None, make_tar([d("bin"), f("bin/tool", b"tool", mode=0o755)]))
    top = apply_raw(store, base, make_tar([hard("bin/alias", "bin/tool")]))
    root = view(store, top)
    assert (root / "bin/alias").read_bytes() == b"tool"
    assert os.stat(root / "bin/alias").st_mode & 0o777 == 0o755


def test_parallel_apply_of_one_image(store: LayerStore) -> None:
    """apply_image: every layer of an image, concurrently where the driver allows."""
    from pallet.storage.layers import LayerSource

    raws = [make_tar([d(f"l{i}"), *[f(f"l{i}/f{j}", os.urandom(2000)) for j in range(200)],
                      f("top", str(i).encode())]) for i in range(5)]
    srcs = [LayerSource(open=lambda r=r: io.BytesIO(compress(r)), media_type=mt.OCI_LAYER_GZIP,
                        diff_id=diff_id(r)) for r in raws]
    layers = store.apply_image(srcs, parallel=5)
    assert [x.chain_id for x in layers] == chain_ids([diff_id(r) for r in raws])
    assert [x.parent for x in layers] == [None, *[x.chain_id for x in layers[:-1]]]
    root = view(store, layers[-1].chain_id)
    assert (root / "top").read_bytes() == b"4"
    assert sorted(os.listdir(root)) == ["l0", "l1", "l2", "l3", "l4", "top"]


# ------------------------------------------------------------------------------ mounts, GC, df


def test_image_mounts_are_refcounted(store: LayerStore) -> None:
    cid = apply_raw(store, None, make_tar([f("a", b"a")]))
    p1 = store.mount_image("img", cid)
    p2 = store.mount_image("img", cid)
    assert p1 == p2 and store.image_mounts() == {"img": p1}
    assert not store.unmount_image("img")
    assert (p1 / "a").read_bytes() == b"a"
    assert store.unmount_image("img")
    assert store.image_mounts() == {}
    assert [i.name for i in store.driver.walk() if i.kind == Kind.VIEW] == []
    empty = store.mount_image("scratch", None)
    assert os.listdir(empty) == []
    store.unmount_image("scratch", force=True)


def test_gc_keeps_what_is_used(store: LayerStore) -> None:
    l1 = apply_raw(store, None, make_tar([f("1")]))
    l2 = apply_raw(store, l1, make_tar([f("2")]))
    l3 = apply_raw(store, l2, make_tar([f("3")]))
    other = apply_raw(store, None, make_tar([f("other")]))
    mounted = apply_raw(store, None, make_tar([f("mounted")]))
    used_by_container = apply_raw(store, None, make_tar([f("c")]))
    store.create_container_layer("c1", used_by_container)
    store.mount_image("m", mounted)
    removed = store.gc(keep=[l2])
    assert set(removed) == {l3, other}
    assert {x.chain_id for x in store.layers()} == {l1, l2, mounted, used_by_container}
    store.unmount_image("m")
    store.remove_container_layer("c1")
    assert set(store.gc(keep=[])) == {l1, l2, mounted, used_by_container}
    assert store.layers() == []


def test_disk_usage_shared_and_unique(store: LayerStore) -> None:
    base = apply_raw(store, None, make_tar([f("base", b"b" * 1000)]))
    a = apply_raw(store, base, make_tar([f("a", b"a" * 300)]))
    b = apply_raw(store, base, make_tar([f("b", b"b" * 70)]))
    store.create_container_layer("c1", a, labels={"pallet.image": "img-a"})
    p = store.mount_container("c1")
    (p / "written").write_bytes(b"w" * 5)
    store.unmount_container("c1")
    images = [ImageRef("img-a", a, ("example.com/a:1",)), ImageRef("img-b", b, ("example.com/b:1",))]
    du = store.disk_usage(images)
    by_id = {i.id: i for i in du.images}
    base_use = store.get(base).usage
    assert base_use >= 1000
    assert (by_id["img-a"].shared, by_id["img-a"].unique) == (base_use, store.get(a).usage)
    assert (by_id["img-b"].shared, by_id["img-b"].unique) == (base_use, store.get(b).usage)
    assert by_id["img-a"].containers == 1 and by_id["img-b"].containers == 0
    assert [(c.id, c.image_id, c.size) for c in du.containers] == [("c1", "img-a", 5)]
    assert du.images_size == base_use + store.get(a).usage + store.get(b).usage
    assert du.images_reclaimable == store.get(b).usage
    assert {x.chain_id: (x.images, x.containers) for x in du.layers} == {
        base: (2, 1), a: (1, 1), b: (1, 0)}


def test_remove_layer_rules(store: LayerStore) -> None:
    l1 = apply_raw(store, None, make_tar([f("1")]))
    l2 = apply_raw(store, l1, make_tar([f("2")]))
    with pytest.raises(StorageError, match="depend"):
        store.remove_layer(l1)
    store.remove_layer(l2)
    store.remove_layer(l1)
    with pytest.raises(LayerNotFound):
        store.remove_layer(l1)


def test_store_survives_a_gzip_blob_from_python(store: LayerStore) -> None:
    """gzip streams from other encoders (several members, extra fields) decompress fine."""
    raw = make_tar([f("a", b"a" * 100_000), f("b", b"b")])
    multi = gzip.compress(raw[:10240]) + gzip.compress(raw[10240:])
    layer = store.apply(None, io.BytesIO(multi), mt.OCI_LAYER_GZIP, expected_diff_id=diff_id(raw))
    assert sorted(tree(view(store, layer.chain_id))) == ["a", "b"]


def test_entries_of_every_type(store: LayerStore) -> None:
    raw = make_tar([d("dev"), E("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3),
                    E("dev/sda", tarfile.BLKTYPE, mode=0o660, devmajor=8, devminor=0, gid=6),
                    E("fifo", tarfile.FIFOTYPE, mode=0o620), f("file", b"f"), sym("link", "file"),
                    hard("hard", "file"), d("empty")])
    t = tree(view(store, apply_raw(store, None, raw)))
    assert {k: v[:6] for k, v in t.items()} == {
        "dev": ("dir", 0o755, 0, "", 0, 0), "dev/null": ("chr1,3", 0o666, 0, "", 0, 0),
        "dev/sda": ("blk8,0", 0o660, 0, "", 0, 6), "fifo": ("fifo", 0o620, 0, "", 0, 0),
        "file": ("file", 0o644, 1, "", 0, 0), "link": ("symlink", 0o777, 0, "file", 0, 0),
        "hard": ("file", 0o644, 1, "", 0, 0), "empty": ("dir", 0o755, 0, "", 0, 0)}


def test_parallel_apply_when_the_top_finishes_first(store: LayerStore) -> None:
    """A tiny top layer done before its big parent even started must wait, not fail."""
    from pallet.storage.layers import LayerSource

    big = make_tar([d("big"), *[f(f"big/{i}", os.urandom(1000)) for i in range(3000)]])
    tiny = [make_tar([]), make_tar([f("t", b"t")])]
    raws = [big, *tiny]
    srcs = [LayerSource(open=lambda r=r: io.BytesIO(compress(r)), media_type=mt.OCI_LAYER_GZIP,
                        diff_id=diff_id(r)) for r in raws]
    layers = store.apply_image(srcs, parallel=3)
    assert [x.parent for x in layers] == [None, layers[0].chain_id, layers[1].chain_id]
    assert len(os.listdir(view(store, layers[-1].chain_id) / "big")) == 3000


def test_explicit_directory_after_its_children_wins(store: LayerStore) -> None:
    base = apply_raw(store, None, make_tar([d("a", mode=0o700, uid=3)]))
    top = apply_raw(store, base, make_tar([f("a/b/file", b"x"), d("a", mode=0o751, uid=9),
                                           d("a/b", mode=0o705)]))
    root = view(store, top)
    st = os.stat(root / "a")
    assert (st.st_mode & 0o7777, st.st_uid) == (0o751, 9)
    assert os.stat(root / "a/b").st_mode & 0o7777 == 0o705


def test_stale_image_view_after_a_reboot_is_cleaned(store: LayerStore) -> None:
    from pallet.storage.mount import unmount

    cid = apply_raw(store, None, make_tar([f("a", b"a")]))
    p = store.mount_image("img", cid)
    unmount(p)  # as a reboot would: the mount is gone, the view is not
    assert store.image_mounts() == {}
    assert "image-img" in store.cleanup()
    assert store.gc(keep=[]) == [cid]
    assert store.mount_image("img2", None).is_dir()
    store.unmount_image("img2")


def _sparse_sources(src: Path) -> dict[str, bytes]:
    """Files with holes, made as a user would (truncate, then data written at offsets)."""
    src.mkdir()
    layout = {
        "holes": (8 << 20, [(0, b"HEAD"), (3_000_000, b"MIDDLE"), ((8 << 20) - 4, b"TAIL")]),
        # 60 regions: more than old GNU's header holds (4), so extension blocks follow it
        "many": (64 << 20, [(i << 20, b"region %d" % i) for i in range(0, 60)]),
        "allhole": (5 << 20, []),
    }
    for name, (size, parts) in layout.items():
        with open(src / name, "wb") as fh:
            fh.truncate(size)
            for off, data in parts:
                fh.seek(off)
                fh.write(data)
    (src / "after").write_bytes(b"a plain file after the sparse ones")
    return {n: (src / n).read_bytes() for n in [*layout, "after"]}


@pytest.mark.parametrize("fmt", ["gnu", "posix:0.0", "posix:0.1", "posix:1.0"])
def test_sparse_members_from_gnu_tar(store: LayerStore, tmp_path: Path, fmt: str) -> None:
    """GNU tar's sparse formats (old GNU, PAX 0.0, 0.1, 1.0), as containerd and podman (Go's
    archive/tar) read them: the content is exact and the holes stay holes on disk."""
    import subprocess

    want = _sparse_sources(tmp_path / "src")
    kind, _, version = fmt.partition(":")
    args = ["tar", "--sparse", f"--format={kind}", "-C", str(tmp_path / "src"), "-cf", "-"]
    if version:
        args.insert(2, f"--sparse-version={version}")
    raw = subprocess.run([*args, *want], capture_output=True, check=True).stdout
    root = view(store, apply_raw(store, None, raw))
    for name, data in want.items():
        assert (root / name).read_bytes() == data, name
    assert (root / "holes").stat().st_blocks * 512 < 1 << 20
    assert (root / "many").stat().st_blocks * 512 < 8 << 20
    assert (root / "allhole").stat().st_blocks == 0


@pytest.mark.parametrize("pax,why", [
    ({"GNU.sparse.size": "100", "GNU.sparse.map": "50,5,10,5"}, "bad sparse map"),
    ({"GNU.sparse.size": "12", "GNU.sparse.map": "5,10"}, "bad sparse map"),
    ({"GNU.sparse.size": "100", "GNU.sparse.map": "0,3"}, "does not match its 10 stored bytes"),
    ({"GNU.sparse.size": "100", "GNU.sparse.map": "0,3,5"}, "odd number"),
    ({"GNU.sparse.size": "x", "GNU.sparse.map": "0,10"}, "malformed sparse headers"),
    ({"GNU.sparse.major": "1", "GNU.sparse.minor": "7", "GNU.sparse.realsize": "10"}, "sparse format 1.7"),
])
def test_bad_sparse_maps_are_refused_by_name(store: LayerStore, pax: dict, why: str) -> None:
    raw = make_tar([f("sparse-file", b"0123456789", pax=pax)])
    with pytest.raises(TarFormatError, match=rf"sparse-file.*{why}"):
        apply_raw(store, None, raw)
    no_leftovers(store)


def test_a_failing_source_is_one_clear_error(store: LayerStore) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.data = io.BytesIO(compress(make_tar([f("a", os.urandom(300_000))])))

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
            if self.data.tell() > 100_000:
                raise ConnectionResetError("connection reset by peer")
            return self.data.readinto(b)

    with pytest.raises(ContentError, match="ConnectionResetError: connection reset by peer"):
        store.apply(None, io.BufferedReader(Broken(), 4096), mt.OCI_LAYER_GZIP)
    no_leftovers(store)
