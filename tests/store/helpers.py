"""Small synthetic images for store and image tests (the refimage layouts are the real fixtures)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

from pallet.content import Digest, parse
from pallet.content import mediatypes as mt
from pallet.store import Image, Store


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 1700000000, 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def build_image(
    store: Store,
    label: str,
    layers: list[bytes] | None = None,
    names: tuple[str, ...] = (),
    created: str = "2024-01-01T00:00:00Z",
) -> Image:
    """An image of ``layers`` (raw tars; default one layer holding ``label``), gzip-compressed."""
    layers = layers if layers is not None else [tar_bytes({f"{label}.txt": label.encode()})]
    descs, diffs = [], []
    for raw in layers:
        blob = gz(raw)
        d = store.put(blob)
        descs.append({"mediaType": mt.OCI_LAYER_GZIP, "digest": d, "size": len(blob)})
        diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
    cfg = json.dumps(
        {
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"test.label": label}, "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diffs},
            "history": [{"created": created, "created_by": f"layer {i}"} for i in range(len(layers))],
        },
        sort_keys=True,
    ).encode()
    cd = store.put(cfg)
    man = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": cd, "size": len(cfg)},
            "layers": descs,
        }
    ).encode()
    return store.add_image(parse(man), names=names)


def add_layout(store: Store, layout: Path, names: tuple[str, ...] = ()) -> Image:
    """Register the single image of an OCI layout by hand (blob by blob, as a pull would)."""
    index = json.loads((layout / "index.json").read_bytes())
    desc = index["manifests"][0]
    raw = (layout / "blobs" / "sha256" / desc["digest"].split(":")[1]).read_bytes()
    manifest = parse(raw, desc["mediaType"])
    for d in [manifest.config, *manifest.layers]:
        with open(layout / "blobs" / d.digest.algorithm / d.digest.encoded, "rb") as f:
            w = store.writer(d.digest, d.size)
            while chunk := f.read(65536):
                w.write(chunk)
            w.commit()
    return store.add_image(manifest, names=names)


def digest_of(data: bytes) -> Digest:
    return Digest.of(data)
