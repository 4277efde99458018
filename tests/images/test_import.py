"""import: one gzip layer with the right diff ID, from a directory, tarballs (plain/gzip/zstd), stdin, URL."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from pallet import images
from pallet.content import mediatypes as mt
from pallet.context import Context
from pallet.errors import UsageError
from pallet.images.changes import apply_changes
from pallet.store import Store
from tests.images.conftest import pallet


def _layer(ctx: Context, name: str) -> tuple[bytes, dict, images.Image]:
    """(uncompressed layer tar, config, image) of an imported image."""
    with Store.open(ctx) as s:
        img = s.lookup(name)
        (layer,) = img.layers
        blob = s.read_blob(layer.digest)
        assert blob[:2] == b"\x1f\x8b" and layer.media_type == mt.OCI_LAYER_GZIP
        assert s.manifest(img).layers[0].digest == hashlib.sha256(blob).hexdigest().join(("sha256:", ""))
        return gzip.decompress(blob), s.config(img), img


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(root / "bin" / "tool", 0o755)
    (root / "etc" / "motd").write_text("hello\n")
    os.link(root / "etc" / "motd", root / "etc" / "motd.hard")
    os.symlink("../bin/tool", root / "etc" / "tool-link")
    (root / "etc" / "secret").write_bytes(b"s")
    os.chmod(root / "etc" / "secret", 0o600)
    os.chown(root / "etc" / "secret", 1000, 1000)
    (root / "caf\u00e9-\u65e5\u672c").write_text("unicode name\n")
    (root / "d" / ("x" * 120)).mkdir(parents=True)
    (root / "d" / ("x" * 120) / ("y" * 130)).write_text("long path\n")
    return root


def test_import_directory(ctx: Context, rootfs: Path) -> None:
    img = images.import_(
        rootfs,
        "myroot:1",
        changes=[
            'CMD ["/bin/tool"]',
            "ENV A=1 B='two words'",
            "WORKDIR /srv",
            "LABEL x=y",
            "EXPOSE 8080/udp 80",
            "USER 1000:1000",
            "ENTRYPOINT /bin/sh",
            "VOLUME /data",
        ],
        message="from a directory",
        ctx=ctx,
    )
    assert img.names == ("localhost/myroot:1",)
    raw, cfg, img = _layer(ctx, "myroot:1")
    assert (
        cfg["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(raw).hexdigest()] == [img.layers[0].diff_id]
    )
    assert img.layers[0].diff_size == len(raw)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert sorted(members) == sorted(
            [
                "bin",
                "bin/tool",
                "caf\u00e9-\u65e5\u672c",
                "d",
                "d/" + "x" * 120,
                f"d/{'x' * 120}/{'y' * 130}",
                "etc",
                "etc/motd",
                "etc/motd.hard",
                "etc/secret",
                "etc/tool-link",
            ]
        )
        assert tf.extractfile("bin/tool").read() == b"#!/bin/sh\necho tool\n"  # type: ignore[union-attr]
        assert members["bin/tool"].mode == 0o755
        assert members["etc/motd.hard"].islnk() and members["etc/motd.hard"].linkname == "etc/motd"
        assert members["etc/tool-link"].issym() and members["etc/tool-link"].linkname == "../bin/tool"
        assert (members["etc/secret"].uid, members["etc/secret"].gid, members["etc/secret"].mode) == (
            1000,
            1000,
            0o600,
        )
    c = cfg["config"]
    assert c["Cmd"] == ["/bin/tool"] and c["Entrypoint"] == ["/bin/sh", "-c", "/bin/sh"]
    assert c["Env"] == ["A=1", "B=two words"] and c["WorkingDir"] == "/srv" and c["User"] == "1000:1000"
    assert c["Labels"] == {"x": "y"} and c["ExposedPorts"] == {"8080/udp": {}, "80/tcp": {}}
    assert c["Volumes"] == {"/data": {}}
    assert cfg["history"][0]["comment"] == "from a directory" and cfg["os"] == "linux"
    assert images.history("myroot:1", ctx=ctx)[0].comment == "from a directory"
    # the same directory imports to the same layer (reproducible tar)
    again = images.import_(rootfs, ctx=ctx)
    assert again.layers[0].diff_id == img.layers[0].diff_id and again.names == ()


@pytest.mark.parametrize("kind", ["plain", "gzip", "zstd"])
def test_import_tarball(ctx: Context, rootfs: Path, tmp_path: Path, kind: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        tf.add(rootfs, arcname=".")
    raw = buf.getvalue()
    data = {"plain": raw, "gzip": gzip.compress(raw), "zstd": zstandard.ZstdCompressor().compress(raw)}[kind]
    src = tmp_path / f"rootfs.{kind}"
    src.write_bytes(data)
    img = images.import_(src, "docker.io/me/rootfs", ctx=ctx)
    assert img.names == ("docker.io/me/rootfs:latest",)
    layer, cfg, _ = _layer(ctx, "me/rootfs")
    assert layer == raw, "the tarball's own bytes are the layer, unchanged"
    assert cfg["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(raw).hexdigest()]
    assert cfg["history"][0]["comment"] == f"Imported from {src}"


def test_import_from_stdin_via_cli(ctx: Context, rootfs: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(rootfs, arcname=".")
    res = pallet(
        ctx, "import", "-c", "CMD=/bin/tool", "-m", "piped", "-", "piped", input=buf.getvalue(), check=True
    )
    image_id = res.stdout.decode().strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    with Store.open(ctx) as s:
        img = s.lookup("localhost/piped:latest")
        assert img.id == image_id
        assert s.config(img)["config"]["Cmd"] == ["/bin/sh", "-c", "/bin/tool"]


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", root
    finally:
        srv.shutdown()
        srv.server_close()


def test_import_from_url(ctx: Context, rootfs: Path, http_server: tuple[str, Path]) -> None:
    base, www = http_server
    with tarfile.open(www / "root.tar.gz", "w:gz") as tf:
        tf.add(rootfs, arcname=".")
    img = images.import_(f"{base}/root.tar.gz", "fromurl", ctx=ctx)
    raw, _, _ = _layer(ctx, "fromurl")
    assert hashlib.sha256(raw).hexdigest() == img.layers[0].diff_id.encoded
    with pytest.raises(UsageError, match="HTTP 404"):
        images.import_(f"{base}/missing.tar", ctx=ctx)


def test_bad_import_sources_leave_no_trace(ctx: Context, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-tar"
    bad.write_bytes(os.urandom(4000))
    with pytest.raises(Exception, match="not a tar archive"):
        images.import_(bad, "bad", ctx=ctx)
    truncated = tmp_path / "trunc.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("big")
        payload = os.urandom(200_000)
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    truncated.write_bytes(buf.getvalue()[:50_000])
    with pytest.raises(Exception, match="corrupted or truncated"):
        images.import_(truncated, "bad", ctx=ctx)
    with pytest.raises(UsageError, match="no such file"):
        images.import_(tmp_path / "absent", ctx=ctx)
    with pytest.raises(UsageError, match="unknown instruction 'RUN'"):
        images.import_(tmp_path, changes=["RUN make"], ctx=ctx)
    assert images.list(ctx=ctx, all=True) == []
    with Store.open(ctx) as s:
        assert list(s.blobs.walk()) == [] and list(s.blobs.ingest_dir.iterdir()) == []


def test_change_parsing() -> None:
    assert apply_changes(["CMD echo hi"]) == {"Cmd": ["/bin/sh", "-c", "echo hi"]}
    assert apply_changes(['ENTRYPOINT ["a", "b"]']) == {"Entrypoint": ["a", "b"]}
    assert apply_changes(["ENV PATH /usr/bin", "ENV PATH=/bin"]) == {"Env": ["PATH=/bin"]}
    assert apply_changes(["WORKDIR /a", "WORKDIR b/../c"]) == {"WorkingDir": "/a/c"}
    assert apply_changes(['LABEL "a b"="c d" e=f']) == {"Labels": {"a b": "c d", "e": "f"}}
    assert apply_changes(["STOPSIGNAL SIGTERM", "ONBUILD RUN x"]) == {
        "StopSignal": "SIGTERM",
        "OnBuild": ["RUN x"],
    }
    assert json.dumps(apply_changes(['VOLUME ["/a", "/b"]'])) == '{"Volumes": {"/a": {}, "/b": {}}}'
    # docker's parseMaybeJSONToList: what is not a JSON array of strings is a list of words
    assert apply_changes(["VOLUME [/a /b"]) == {"Volumes": {"[/a": {}, "/b": {}}}
    assert apply_changes(["CMD=[\"a\"]", "expose 80 53/udp"]) == {
        "Cmd": ["a"],
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
    }
    base = {"Env": ["A=1"], "Labels": {"l": "1"}}
    assert apply_changes(["ENV B=2", "LABEL m=2"], base) == {
        "Env": ["A=1", "B=2"],
        "Labels": {"l": "1", "m": "2"},
    }
    assert base == {"Env": ["A=1"], "Labels": {"l": "1"}}, "the base config is not changed in place"
    for bad in ("EXPOSE http", "ENV", "LABEL novalue", "USER ", "FROM x", "VOLUME", "VOLUME []"):
        with pytest.raises(UsageError):
            apply_changes([bad])
