"""save and load against real peers: archives skopeo writes, archives skopeo and oci-image-tool read."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from pallet import images
from pallet.content import mediatypes as mt
from pallet.context import Context
from tests.images.conftest import derived_layout, pallet
from tests.support.peers import skopeo_copy

pytestmark = pytest.mark.peer


def _config_digest(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_bytes())
    man = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    return man["config"]["digest"]


def _archive_manifest(path: Path) -> list:
    with tarfile.open(path) as tf:
        return json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]


def _skopeo_json(*args: str) -> dict:
    res = subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True)
    return json.loads(res.stdout)


def test_load_layout_registers_small(ctx: Context, small_layout: Path) -> None:
    (loaded,) = images.load_layout(small_layout, "latest", name="small", ctx=ctx)
    assert loaded.names == ("localhost/small:latest",)
    img = images.lookup("small", ctx=ctx)
    assert img.id == _config_digest(small_layout)
    info = images.inspect("small", ctx=ctx)
    config = json.loads((small_layout / "blobs/sha256" / img.id.encoded).read_bytes())
    assert info["Id"] == img.id and info["RepoTags"] == ["localhost/small:latest"]
    assert info["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]
    assert info["Config"]["Cmd"] == ["/bin/sh"] and info["Config"]["Entrypoint"] is None
    assert info["Labels"] == {"org.example.fixture": "latest"}
    assert info["Os"] == "linux" and info["Architecture"] == config["architecture"]
    assert info["Size"] == img.size > 2_000_000
    with pytest.raises(images.ArchiveError, match="no image named 'nope'"):
        images.load_layout(small_layout, "nope", ctx=ctx)


def test_load_archives_made_by_skopeo(ctx: Context, small_layout: Path, tmp_path: Path) -> None:
    image_id = _config_digest(small_layout)
    unnamed, named, docker = tmp_path / "unnamed.tar", tmp_path / "named.tar", tmp_path / "docker.tar"
    skopeo_copy(f"oci:{small_layout}:latest", f"oci-archive:{unnamed}")
    skopeo_copy(f"oci:{small_layout}:latest", f"oci-archive:{named}:myname:v2")
    skopeo_copy(f"oci:{small_layout}:latest", f"docker-archive:{docker}:foo/bar:v1")
    (a,) = images.load(unnamed, ctx=ctx)
    assert a.image.id == image_id and a.names == () and a.label == image_id
    (b,) = images.load(named, ctx=ctx)
    assert b.names == ("localhost/myname:v2",), "podman names a short annotation under localhost/"
    (c,) = images.load(docker, ctx=ctx)
    assert c.names == ("docker.io/foo/bar:v1",) and c.image.id == image_id
    # a docker-archive carries uncompressed layers: the stored blobs are the diffs themselves
    assert all(x.media_type == mt.DOCKER_LAYER and x.digest == x.diff_id for x in c.image.layers)
    assert [x.diff_size for x in c.image.layers] == [x.size for x in c.image.layers]
    assert images.lookup("foo/bar:v1", ctx=ctx).id == image_id
    assert len(images.list(ctx=ctx)) == 1


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_load_compressed_archives(ctx: Context, small_layout: Path, tmp_path: Path, compression: str) -> None:
    plain = tmp_path / "plain.tar"
    skopeo_copy(f"oci:{small_layout}:latest", f"docker-archive:{plain}:comp/ressed:1")
    packed = tmp_path / f"packed.tar.{compression}"
    data = plain.read_bytes()
    packed.write_bytes(
        gzip.compress(data) if compression == "gzip" else zstandard.ZstdCompressor().compress(data)
    )
    (loaded,) = images.load(packed, ctx=ctx)
    assert loaded.names == ("docker.io/comp/ressed:1",)
    assert loaded.image.id == _config_digest(small_layout)


def test_saved_oci_archive_is_read_by_skopeo_and_valid(
    ctx: Context, small: images.Image, tmp_path: Path
) -> None:
    out = tmp_path / "small.oci.tar"
    images.save(["small"], out, format="oci-archive", ctx=ctx)
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci-archive:{out}"], check=True, capture_output=True
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == small.manifest_digest
    info = _skopeo_json("inspect", f"oci-archive:{out}")
    assert info["Digest"] == small.manifest_digest
    assert info["Layers"] == [x.digest for x in small.layers]
    # skopeo copies it out with every digest intact
    d = tmp_path / "copied"
    skopeo_copy(f"oci-archive:{out}", f"dir:{d}")
    for f in d.iterdir():
        if f.name not in ("manifest.json", "version"):
            assert hashlib.sha256(f.read_bytes()).hexdigest() == f.name
    assert json.loads((d / "manifest.json").read_bytes())["config"]["digest"] == small.id
    # the layout inside validates with oci-image-tool
    layout = tmp_path / "extracted"
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(out), "-C", str(layout)], check=True)
    index = json.loads((layout / "index.json").read_bytes())
    assert (
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "localhost/small:latest"
    )
    res = subprocess.run(
        ["oci-image-tool", "validate", "--type", "image", str(layout)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "imageLayout" in res.stdout + res.stderr and "Validation succeeded" in res.stdout + res.stderr


def test_docker_archive_round_trip_through_skopeo(ctx: Context, small: images.Image, tmp_path: Path) -> None:
    out = tmp_path / "small.docker.tar"
    images.save(["small"], out, format="docker-archive", ctx=ctx)
    info = _skopeo_json("inspect", f"docker-archive:{out}")
    assert info["Layers"] == [x.diff_id for x in small.layers]
    manifest = _archive_manifest(out)
    assert manifest[0]["RepoTags"] == ["localhost/small:latest"]
    raw_config = subprocess.run(
        ["skopeo", "inspect", "--config", "--raw", f"docker-archive:{out}"], check=True, capture_output=True
    ).stdout
    assert "sha256:" + hashlib.sha256(raw_config).hexdigest() == small.id, "the config travels byte for byte"
    # skopeo converts it to OCI (re-marshalling the config, so a new ID) with the same layer diffs
    oci = tmp_path / "from-docker"
    skopeo_copy(f"docker-archive:{out}", f"oci:{oci}:back")
    # another store loads both the archive and skopeo's re-export; all their layers are shared
    other = Context(root=tmp_path / "other", runroot=tmp_path / "other-run")
    (loaded,) = images.load(out, ctx=other)
    assert loaded.image.id == small.id and loaded.names == ("localhost/small:latest",)
    (again,) = images.load_layout(oci, "back", name="back", ctx=other)
    assert [x.diff_id for x in again.image.layers] == [x.diff_id for x in small.layers]
    assert again.image.chain_ids == loaded.image.chain_ids
    assert images.lookup("back", ctx=other).id == again.image.id != small.id


def test_oci_dir_and_docker_dir(ctx: Context, small: images.Image, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    images.save(["small"], layout, format="oci-dir", ctx=ctx)
    res = subprocess.run(
        ["oci-image-tool", "validate", "--type", "image", str(layout)], capture_output=True, text=True
    )
    assert res.returncode == 0 and "imageLayout" in res.stdout + res.stderr, res.stdout + res.stderr
    info = _skopeo_json("inspect", f"oci:{layout}:localhost/small:latest")
    assert info["Digest"] == small.manifest_digest
    ddir = tmp_path / "ddir"
    images.save(["small"], ddir, format="docker-dir", ctx=ctx)
    assert (ddir / "version").read_text().startswith("Directory Transport Version")
    man = json.loads((ddir / "manifest.json").read_bytes())
    assert man["mediaType"] == mt.DOCKER_MANIFEST and man["config"]["digest"] == small.id
    assert all(x["mediaType"] == mt.DOCKER_LAYER_GZIP for x in man["layers"])
    info = _skopeo_json("inspect", f"dir:{ddir}")
    assert info["Layers"] == [x.digest for x in small.layers]
    other = Context(root=tmp_path / "other", runroot=tmp_path / "other-run")
    (loaded,) = images.load(ddir, ctx=other)
    assert loaded.image.id == small.id and loaded.names == ()
    (from_layout,) = images.load(layout, ctx=other)
    assert from_layout.names == ("localhost/small:latest",)


def test_multi_image_archives(ctx: Context, small: images.Image, small_layout: Path, tmp_path: Path) -> None:
    images.load_layout(derived_layout(small_layout, tmp_path / "derived", 2, "child"), name="child", ctx=ctx)
    child = images.lookup("child", ctx=ctx)
    for fmt in ("oci-archive", "docker-archive"):
        out = tmp_path / f"both.{fmt}.tar"
        images.save(["small", "child"], out, format=fmt, multi=True, ctx=ctx)
        other = Context(root=tmp_path / f"other-{fmt}", runroot=tmp_path / "run2")
        loaded = images.load(out, ctx=other)
        assert {x.image.id for x in loaded} == {small.id, child.id}
        assert {n for x in loaded for n in x.names} == {"localhost/small:latest", "localhost/child:latest"}
        # the two images share their base layers: stored once
        blobs = {x.digest for i in images.list(ctx=other) for x in i.layers}
        assert len(blobs) == 3
    with pytest.raises(Exception, match="use -m"):
        images.save(["small", "child"], tmp_path / "x.tar", format="oci-archive", ctx=ctx)
    # without -m, a docker-archive takes further names as extra tags of the first image
    out = tmp_path / "tags.tar"
    images.save(["small", "extra:tag"], out, ctx=ctx)
    manifest = _archive_manifest(out)
    assert manifest[0]["RepoTags"] == ["localhost/small:latest", "localhost/extra:tag"]


def test_cli_save_to_stdout_and_load_from_stdin(ctx: Context, small: images.Image, tmp_path: Path) -> None:
    res = pallet(ctx, "save", "--format", "oci-archive", "small", check=True)
    assert res.stdout[:512].find(b"oci-layout") >= 0
    other = Context(root=tmp_path / "other", runroot=tmp_path / "run2")
    res = pallet(other, "load", input=gzip.compress(res.stdout, compresslevel=1), check=True)
    assert res.stdout.decode() == "Loaded image: localhost/small:latest\n"
    res = pallet(other, "image", "save", "-o", str(tmp_path / "o.tar"), "small", check=True)
    assert res.stdout == b"" and (tmp_path / "o.tar").stat().st_size > 2_000_000
    res = pallet(other, "save", "--format", "oci-dir", "small")
    assert res.returncode == 125 and b"needs -o DIR" in res.stderr


def test_zstd_layers_made_by_skopeo(ctx: Context, small_layout: Path, tmp_path: Path) -> None:
    zdir = tmp_path / "zstd-layout"
    skopeo_copy(f"oci:{small_layout}:latest", f"oci:{zdir}:z", "--dest-compress-format", "zstd", "-f", "oci")
    (loaded,) = images.load_layout(zdir, "z", name="zsmall", ctx=ctx)
    img = loaded.image
    assert all(x.media_type == mt.OCI_LAYER_ZSTD for x in img.layers)
    with images.open_store(ctx) as s:
        assert all(s.read_blob(x.digest)[:4] == b"\x28\xb5\x2f\xfd" for x in img.layers)
    assert img.id == _config_digest(small_layout), "same config, so the same image"
    assert [x.diff_size for x in img.layers] == [2027520, 317440, 10240]
    # a docker-archive needs uncompressed layers: save decompresses zstd on the fly
    out = tmp_path / "z.docker.tar"
    images.save(["zsmall"], out, ctx=ctx)
    assert _skopeo_json("inspect", f"docker-archive:{out}")["Layers"] == [x.diff_id for x in img.layers]
    with pytest.raises(Exception, match="zstd-compressed"):
        images.save(["zsmall"], tmp_path / "ddir", format="docker-dir", ctx=ctx)


def test_layout_with_a_multi_platform_index(ctx: Context, small_layout: Path, tmp_path: Path) -> None:
    """index.json → an image index (amd64 + a foreign arch whose blobs are absent): the host's is loaded."""
    import platform as host

    layout = tmp_path / "multi"
    skopeo_copy(f"oci:{small_layout}:latest", f"oci:{layout}:tmp")
    top = json.loads((layout / "index.json").read_bytes())
    desc = top["manifests"][0]
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(host.machine(), host.machine())
    other = "s390x" if arch != "s390x" else "amd64"
    inner = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {
                "mediaType": desc["mediaType"],
                "digest": "sha256:" + "ab" * 32,
                "size": 700,
                "platform": {"os": "linux", "architecture": other},
            },
            {
                "mediaType": desc["mediaType"],
                "digest": desc["digest"],
                "size": desc["size"],
                "platform": {"os": "linux", "architecture": arch},
            },
        ],
    }
    raw = json.dumps(inner).encode()
    digest = hashlib.sha256(raw).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(raw)
    top["manifests"] = [
        {
            "mediaType": mt.OCI_INDEX,
            "digest": f"sha256:{digest}",
            "size": len(raw),
            "annotations": {"org.opencontainers.image.ref.name": "docker.io/library/multi:1"},
        }
    ]
    (layout / "index.json").write_text(json.dumps(top))
    (loaded,) = images.load(layout, ctx=ctx)
    assert loaded.names == ("docker.io/library/multi:1",)
    assert loaded.image.manifest_digest == desc["digest"]
    assert f"sha256:{digest}" in loaded.image.digests
    assert images.lookup(f"multi@sha256:{digest}", ctx=ctx).id == loaded.image.id
    assert images.lookup(f"multi@{desc['digest']}", ctx=ctx).id == loaded.image.id
