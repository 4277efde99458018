"""save and load: OCI layouts (directory or tar), docker-archive tars, and the ``dir:`` transport.

Loading streams: a (possibly gzip- or zstd-compressed) archive is read once, front to back, and
every file in it goes straight into the blob store (verified against its name when the name is a
digest), so stdin works and nothing is staged. Only then are the index files read and images
registered. Whatever a failed load wrote is released again, and the store keeps its old state.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import posixpath
import re
import shutil
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pallet.content import compression
from pallet.content import mediatypes as mt
from pallet.content.digest import CHUNK, Digest, Hasher
from pallet.content.manifest import Descriptor, Index, InvalidManifest, Manifest, parse
from pallet.content.platform import Platform
from pallet.errors import ContentError, DigestMismatch, InvalidReference, StoreError, UsageError
from pallet.fsutil import atomic_write, atomic_writer
from pallet.store import Image, Store
from pallet.store import names as naming

FORMATS = ("docker-archive", "oci-archive", "oci-dir", "docker-dir")
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
DIR_VERSION = b"Directory Transport Version: 1.1\n"
_BLOB_PATH = re.compile(r"blobs/(sha256|sha512)/([a-f0-9]+)")
_SMALL = 1 << 20  # archive members up to this size are held in memory until we know what they are


class ArchiveError(ContentError):
    """An archive or layout that is not a readable image."""


@dataclass(frozen=True)
class Loaded:
    image: Image
    names: tuple[str, ...]

    @property
    def label(self) -> str:
        """What ``load`` prints: the names, or the ID of an unnamed image."""
        return ", ".join(self.names) if self.names else str(self.image.id)


# =====================================================================================================
# load
# =====================================================================================================
class _Source:
    """Files of an archive or directory, by path; blobs land in the store on demand."""

    def __init__(self, store: Store, label: str) -> None:
        self.store = store
        self.label = label
        self.ingested: set[str] = set()

    def has(self, name: str) -> bool:
        raise NotImplementedError

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        raise NotImplementedError

    def blob(self, name: str, expected: str | None = None, size: int | None = None) -> Digest:
        """Make sure the file ``name`` is in the store (verified if ``expected``); its digest."""
        raise NotImplementedError

    def oci_blob(self, desc: Descriptor) -> Digest:
        name = f"blobs/{desc.digest.algorithm}/{desc.digest.encoded}"
        if not self.has(name):
            if self.store.has_blob(desc.digest) and self.store.blob_size(desc.digest) == desc.size:
                self.store.lease_blob(desc.digest)
                self.ingested.add(desc.digest)
                return desc.digest
            raise ArchiveError(f"{self.label}: blob {desc.digest} is missing")
        return self.blob(name, desc.digest, desc.size)

    def oci_read(self, desc: Descriptor, limit: int = 16 << 20) -> bytes:
        if desc.size > limit:
            raise ArchiveError(
                f"{self.label}: {desc.media_type} {desc.digest} is too large ({desc.size} bytes)"
            )
        name = f"blobs/{desc.digest.algorithm}/{desc.digest.encoded}"
        if not self.has(name):
            raise ArchiveError(f"{self.label}: blob {desc.digest} is missing")
        data = self.read(name, limit)
        h = Hasher(desc.digest.algorithm)
        h.update(data)
        try:
            h.verify(desc.digest, desc.size, what=f"{self.label}: blob")
        except DigestMismatch as e:
            raise ArchiveError(str(e)) from None
        return data


class _StreamSource(_Source):
    """An archive read once from a stream: members are ingested or held as they pass."""

    def __init__(self, store: Store, label: str) -> None:
        super().__init__(store, label)
        self.files: dict[str, tuple[str, Any]] = {}  # name → ("blob", digest) | ("mem", bytes)
        self.links: dict[str, str] = {}

    def consume(self, stream: BinaryIO) -> None:
        """Read the whole archive once; on failure, what was ingested so far is released."""
        try:
            self._consume(stream)
        except BaseException:
            self.store.release(self.ingested)
            raise

    def _consume(self, stream: BinaryIO) -> None:
        raw = (
            stream
            if isinstance(stream, io.BufferedReader)
            else io.BufferedReader(_RawAdapter(stream), 1 << 16)
        )
        kind = compression.detect(raw.peek(4)[:4])
        data = compression.decompressor(raw, kind)  # type: ignore[arg-type]
        try:
            tf = tarfile.open(fileobj=data, mode="r|")  # noqa: SIM115
        except tarfile.ReadError as e:
            what = "" if kind == "none" else f" ({kind}-compressed)"
            raise ArchiveError(f"{self.label}: not a tar archive{what}: {e}") from None
        except (OSError, EOFError) as e:
            raise ArchiveError(f"{self.label}: cannot read the archive: {e}") from None
        try:
            for member in tf:
                self._member(tf, member)
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise ArchiveError(f"{self.label}: corrupted or truncated archive: {e}") from None
        except Exception as e:
            if type(e).__name__ == "ZstdError":
                raise ArchiveError(f"{self.label}: corrupted zstd stream: {e}") from None
            raise

    def _member(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = _clean(member.name)
        if not name or member.isdir():
            return
        if member.issym():
            self.links[name] = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
            return
        if member.islnk():
            self.links[name] = _clean(member.linkname)
            return
        if not member.isfile():
            return
        f = tf.extractfile(member)
        assert f is not None
        m = _BLOB_PATH.fullmatch(name)
        if m:
            expected = f"{m.group(1)}:{m.group(2)}"
            try:
                digest = self._known(f, expected, member.size) or self.store.ingest(f, expected, member.size)
            except DigestMismatch as e:
                raise ArchiveError(f"{self.label}: {name} does not match its digest: {e}") from None
            except ValueError as e:
                raise ArchiveError(f"{self.label}: bad blob name {name}: {e}") from None
            self.ingested.add(digest)
            self.files[name] = ("blob", digest)
        elif member.size <= _SMALL:
            self.files[name] = ("mem", f.read())
        else:
            digest = self.store.ingest(f, None, member.size)
            self.ingested.add(digest)
            self.files[name] = ("blob", digest)

    def _known(self, f: BinaryIO, expected: str, size: int) -> Digest | None:
        """A blob the store already holds: the archive's copy is only hashed (it must still match
        its name: a corrupted archive is an error even when we would not need its bytes)."""
        digest = Digest(expected)
        if digest.algorithm not in ("sha256", "sha512") or not self.store.has_blob(digest):
            return None
        self.store.lease_blob(digest)  # lease first, then re-check: a concurrent gc may have won
        if not (self.store.has_blob(digest) and self.store.blob_size(digest) == size):
            return None
        h = Hasher(digest.algorithm)
        while chunk := f.read(CHUNK):
            h.update(chunk)
        h.verify(digest, size, what="blob")
        self.ingested.add(digest)
        return digest

    def _resolve(self, name: str) -> tuple[str, Any]:
        name = _clean(name)
        for _ in range(16):
            if name in self.files:
                return self.files[name]
            if name in self.links:
                name = self.links[name]
                continue
            break
        raise ArchiveError(f"{self.label}: the archive has no file {name!r}")

    def has(self, name: str) -> bool:
        try:
            self._resolve(name)
        except ArchiveError:
            return False
        return True

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        kind, value = self._resolve(name)
        if kind == "mem":
            return value
        return self.store.read_blob(value, limit)

    def blob(self, name: str, expected: str | None = None, size: int | None = None) -> Digest:
        kind, value = self._resolve(name)
        if kind == "mem":
            try:
                digest = self.store.put(value, expected)
            except DigestMismatch as e:
                raise ArchiveError(f"{self.label}: {name} does not match its digest: {e}") from None
            self.ingested.add(digest)
            return digest
        if expected is not None and value != expected:
            raise ArchiveError(f"{self.label}: {name} hashes to {value}, expected {expected}")
        return value


class _DirSource(_Source):
    """A directory (OCI layout, ``dir:`` transport, or an unpacked docker-archive)."""

    def __init__(self, store: Store, root: Path) -> None:
        super().__init__(store, str(root))
        self.root = root

    def _path(self, name: str) -> Path:
        p = (self.root / _clean(name)).resolve()
        if not p.is_relative_to(self.root.resolve()):
            raise ArchiveError(f"{self.label}: {name!r} points outside the directory")
        return p

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise ArchiveError(f"{self.label}: missing {name}") from None
        if len(data) > limit:
            raise ArchiveError(f"{self.label}: {name} is larger than {limit} bytes")
        return data

    def blob(self, name: str, expected: str | None = None, size: int | None = None) -> Digest:
        if (
            expected is not None
            and self.store.has_blob(expected)
            and (size is None or self.store.blob_size(expected) == size)
        ):
            self.store.lease_blob(expected)
            self.ingested.add(expected)
            return Digest(expected)
        try:
            with open(self._path(name), "rb") as f:
                digest = self.store.ingest(f, expected, size)
        except FileNotFoundError:
            raise ArchiveError(f"{self.label}: missing {name}") from None
        except DigestMismatch as e:
            raise ArchiveError(f"{self.label}: {name} does not match its digest: {e}") from None
        self.ingested.add(digest)
        return digest


def _clean(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return posixpath.normpath(name.lstrip("/")) if name.strip("/") else ""


def load(store: Store, source: str | os.PathLike[str] | BinaryIO) -> builtins.list[Loaded]:
    """Load every image of an archive or layout: OCI (tar or dir), docker-archive, ``dir:``."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            src: _Source = _DirSource(store, path)
            return _load_source(store, src)
        try:
            f = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file or directory") from None
        except IsADirectoryError:
            raise UsageError(f"{path}: is a directory") from None
        with f:
            return _load_stream(store, f, str(path))
    return _load_stream(store, source, "stdin")


def _load_stream(store: Store, stream: BinaryIO, label: str) -> builtins.list[Loaded]:
    src = _StreamSource(store, label)
    src.consume(stream)
    return _load_source(store, src)


def _load_source(store: Store, src: _Source) -> builtins.list[Loaded]:
    try:
        if src.has("index.json") and (src.has("oci-layout") or not src.has("manifest.json")):
            loaded = _load_oci(store, src)
        elif src.has("manifest.json") and src.has("version"):
            loaded = _load_dir_transport(store, src)
        elif src.has("manifest.json"):
            loaded = _load_docker(store, src)
        else:
            raise ArchiveError(
                f"{src.label}: not an image archive (neither an OCI layout with index.json "
                "nor a docker-archive with manifest.json)"
            )
    except BaseException:
        store.release(src.ingested)
        raise
    store.release(src.ingested)  # keeps what images reference, drops stray files
    return loaded


def _json(src: _Source, name: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ArchiveError(f"{src.label}: {name} is not valid JSON: {e}") from None


# -- OCI ------------------------------------------------------------------------------------------------
def _name_from_annotations(annotations: dict[str, str]) -> str:
    return annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME) or ""


def _load_oci(
    store: Store, src: _Source, *, select: str | None = None, name: str | None = None
) -> builtins.list[Loaded]:
    layout = _json(src, "oci-layout", src.read("oci-layout")) if src.has("oci-layout") else {}
    if layout and not (
        isinstance(layout, dict) and str(layout.get("imageLayoutVersion", "")).startswith("1.")
    ):
        raise ArchiveError(f"{src.label}: unsupported oci-layout {layout!r}")
    index_raw = src.read("index.json", 16 << 20)
    try:
        index = parse(index_raw, mt.OCI_INDEX)
    except InvalidManifest as e:
        raise ArchiveError(f"{src.label}: index.json: {e}") from None
    if not isinstance(index, Index):
        raise ArchiveError(f"{src.label}: index.json is not an image index")
    descs = builtins.list(index.manifests)
    if select is not None:
        descs = [
            d for d in descs if select in (d.annotations.get(REF_NAME), d.annotations.get(CONTAINERD_NAME))
        ]
        if not descs:
            refs = sorted({d.annotations.get(REF_NAME, "") for d in index.manifests} - {""})
            raise ArchiveError(
                f"{src.label}: no image named {select!r} in the layout (it has: "
                f"{', '.join(refs) or 'no named images'})"
            )
    if not descs:
        raise ArchiveError(f"{src.label}: the layout's index.json lists no images")
    out = []
    for desc in descs:
        if name is not None:
            names = [naming.tag_name(name)]
        else:
            annotated = _name_from_annotations(desc.annotations)
            names = []
            if annotated:
                try:
                    ref = naming.normalize_new_name(annotated)
                except InvalidReference:
                    ref = None
                if ref is not None and ref.digest is None:
                    names = [str(ref)]
        out.append(_register_oci_desc(store, src, desc, names, None))
    return out


def _register_oci_desc(
    store: Store, src: _Source, desc: Descriptor, names: builtins.list[str], parent: Index | None
) -> Loaded:
    raw = src.oci_read(desc)
    try:
        doc = parse(raw, desc.media_type)
    except InvalidManifest as e:
        raise ArchiveError(f"{src.label}: manifest {desc.digest}: {e}") from None
    if isinstance(doc, Index):
        if parent is not None:
            raise ArchiveError(f"{src.label}: nested image indexes are not supported")
        host = Platform.host()
        chosen = doc.for_platform(host)
        if chosen is None:
            present = {
                d.digest: d
                for d in doc.manifests
                if d.media_type in mt.IMAGE_MANIFESTS
                and src.has(f"blobs/{d.digest.algorithm}/{d.digest.encoded}")
            }
            if len(present) == 1:
                chosen = next(iter(present.values()))
            else:
                raise ArchiveError(f"{src.label}: index {desc.digest} has no image for {host}")
        return _register_oci_desc(store, src, chosen, names, doc)
    src.oci_blob(doc.config)
    for layer in doc.layers:
        if layer.media_type in mt.NONDISTRIBUTABLE and not src.has(
            f"blobs/{layer.digest.algorithm}/{layer.digest.encoded}"
        ):
            raise ArchiveError(f"{src.label}: non-distributable layer {layer.digest} is not in the archive")
        src.oci_blob(layer)
    image = store.add_image(doc, names=names, index=parent)
    return Loaded(image, tuple(names))


def load_layout(
    store: Store, path: str | os.PathLike[str], ref: str | None = None, *, name: str | None = None
) -> builtins.list[Loaded]:
    """Load images from an OCI layout directory (or oci-archive file).

    ``ref`` picks the manifest whose ``org.opencontainers.image.ref.name`` is ``ref`` (all when
    None); ``name`` is the name to store it under (default: from the annotations, as podman).
    """
    p = Path(path)
    src: _Source = _DirSource(store, p) if p.is_dir() else None  # type: ignore[assignment]
    if src is None:
        with open(p, "rb") as f:
            src = _StreamSource(store, str(p))
            src.consume(f)
    try:
        loaded = _load_oci(store, src, select=ref, name=name)
    except BaseException:
        store.release(src.ingested)
        raise
    store.release(src.ingested)
    return loaded


# -- docker-archive -----------------------------------------------------------------------------------------
def _load_docker(store: Store, src: _Source) -> builtins.list[Loaded]:
    items = _json(src, "manifest.json", src.read("manifest.json"))
    if not isinstance(items, list) or not items:
        raise ArchiveError(f"{src.label}: manifest.json must be a non-empty list of images")
    out = []
    for i, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("Config"), str)
            or not isinstance(item.get("Layers"), list)
        ):
            raise ArchiveError(f"{src.label}: manifest.json entry {i} lacks Config or Layers")
        config_raw = src.read(item["Config"], 32 << 20)
        config_digest = src.blob(item["Config"])
        cfg = _json(src, item["Config"], config_raw)
        diff_ids = (cfg.get("rootfs") or {}).get("diff_ids") or [] if isinstance(cfg, dict) else []
        if len(diff_ids) != len(item["Layers"]):
            raise ArchiveError(
                f"{src.label}: image {config_digest.short} lists {len(item['Layers'])} layers but "
                f"its config has {len(diff_ids)} diff_ids"
            )
        layers = []
        for layer_name in item["Layers"]:
            digest = src.blob(layer_name)
            size = store.blob_size(digest)
            with store.open_blob(digest) as f:
                kind = compression.detect(f.read(4))
            media = {"none": mt.DOCKER_LAYER, "gzip": mt.DOCKER_LAYER_GZIP, "zstd": mt.DOCKER_LAYER_ZSTD}[
                kind
            ]
            layers.append({"mediaType": media, "size": size, "digest": digest})
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": mt.DOCKER_CONFIG, "size": len(config_raw), "digest": config_digest},
            "layers": layers,
        }
        manifest = parse(json.dumps(manifest_doc, separators=(",", ":")).encode(), mt.DOCKER_MANIFEST)
        assert isinstance(manifest, Manifest)
        names = []
        for tag in item.get("RepoTags") or []:
            try:
                ref = naming.normalize_docker_name(str(tag))
            except InvalidReference as e:
                raise ArchiveError(f"{src.label}: bad RepoTags entry {tag!r}: {e}") from None
            names.append(str(ref))
        image = store.add_image(manifest, names=names)
        out.append(Loaded(image, tuple(names)))
    return out


# -- dir: transport ------------------------------------------------------------------------------------
def _load_dir_transport(store: Store, src: _Source) -> builtins.list[Loaded]:
    raw = src.read("manifest.json", 16 << 20)
    try:
        doc = parse(raw)
    except InvalidManifest as e:
        raise ArchiveError(f"{src.label}: manifest.json: {e}") from None
    if isinstance(doc, Index):
        raise ArchiveError(f"{src.label}: a dir: layout holding an index is not supported; save one image")
    src.blob(doc.config.digest.encoded, doc.config.digest, doc.config.size)
    for layer in doc.layers:
        src.blob(layer.digest.encoded, layer.digest, layer.size)
    image = store.add_image(doc)
    return [Loaded(image, ())]


# =====================================================================================================
# save
# =====================================================================================================
@dataclass
class _Saved:
    image: Image
    tags: builtins.list[str]


def _select(store: Store, names: Iterable[str], multi: bool, fmt: str) -> builtins.list[_Saved]:
    names = builtins.list(names)
    if not names:
        raise UsageError("save needs at least one image")
    out: builtins.list[_Saved] = []
    by_id: dict[str, _Saved] = {}

    def add(text: str) -> None:
        r = store.resolve(text)
        entry = by_id.get(r.image.id)
        if entry is None:
            entry = by_id[r.image.id] = _Saved(r.image, [])
            out.append(entry)
        if r.by == "name" and r.ref not in entry.tags:
            entry.tags.append(r.ref)

    if multi:
        for n in names:
            add(n)
    else:
        add(names[0])
        for extra in names[1:]:  # podman: without -m, further names are extra tags for the image
            if fmt not in ("docker-archive",):
                raise UsageError(f"{fmt} holds one image; use -m (--multi-image-archive) to save several")
            t = naming.tag_name(extra)
            if t not in out[0].tags:
                out[0].tags.append(t)
    return out


def save(
    store: Store,
    names: Iterable[str],
    output: str | os.PathLike[str] | BinaryIO,
    *,
    format: str = "docker-archive",
    multi: bool = False,
    compress: bool = False,
) -> None:
    """Write images to ``output`` (a path, or a binary stream for the archive formats)."""
    if format not in FORMATS:
        raise UsageError(f"unknown save format {format!r} (supported: {', '.join(FORMATS)})")
    if compress and format != "docker-dir":
        raise UsageError("--compress can only be used with --format docker-dir")
    selected = _select(store, names, multi, format)
    if format in ("oci-dir", "docker-dir"):
        if not isinstance(output, (str, os.PathLike)):
            raise UsageError(f"{format} needs a directory: use -o DIR")
        if format == "oci-dir":
            save_layout(store, output, selected)
        else:
            if len(selected) != 1:
                raise UsageError("docker-dir holds one image")
            _save_dir_transport(store, Path(output), selected[0], compress)
        return
    writer = _write_oci_tar if format == "oci-archive" else _write_docker_tar
    if not isinstance(output, (str, os.PathLike)):
        try:
            writer(store, selected, output)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise StoreError(f"writing the archive: {e.strerror or e}") from None
        return
    path = Path(output)
    if path.is_dir():
        raise UsageError(f"{path} is a directory; {format} writes a file")
    if path.exists() and not path.is_file():  # /dev/stdout, a FIFO: write straight through
        with open(path, "wb") as f:
            writer(store, selected, f)
        return
    try:
        with atomic_writer(path) as f:
            writer(store, selected, f)
    except OSError as e:
        raise StoreError(f"writing {path}: {e.strerror or e}") from None


class _Tar:
    """A streaming tar writer with fixed metadata (reproducible archives)."""

    def __init__(self, out: BinaryIO) -> None:
        self.tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.dirs: set[str] = set()

    def _info(
        self, name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, mode: int = 0o644
    ) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.size, ti.mode, ti.mtime = kind, size, mode, 0
        ti.uname = ti.gname = ""
        return ti

    def dir(self, name: str) -> None:
        if name not in self.dirs:
            self.dirs.add(name)
            self.tf.addfile(self._info(name + "/", tarfile.DIRTYPE, mode=0o755))

    def bytes(self, name: str, data: bytes) -> None:
        self.tf.addfile(self._info(name, size=len(data)), io.BytesIO(data))

    def stream(self, name: str, size: int, f: BinaryIO) -> None:
        self.tf.addfile(self._info(name, size=size), f)

    def close(self) -> None:
        self.tf.close()

    def abort(self) -> None:
        """Drop the stream without writing the end blocks (the output failed or is being discarded)."""
        stream = self.tf.fileobj
        self.tf.closed = True
        if hasattr(stream, "closed"):
            stream.closed = True  # tarfile's _Stream would otherwise flush into a dead file on __del__


def _oci_index(store: Store, selected: Iterable[_Saved]) -> tuple[bytes, builtins.list[Digest]]:
    """index.json bytes for ``selected`` and every blob it reaches (manifests, configs, layers)."""
    entries, blobs = [], []
    for s in selected:
        manifest = store.manifest(s.image)
        for d in (s.image.manifest_digest, manifest.config.digest, *(x.digest for x in manifest.layers)):
            if d not in blobs:
                blobs.append(d)
        base = {
            "mediaType": s.image.manifest_media_type,
            "digest": str(s.image.manifest_digest),
            "size": len(manifest.raw),
        }
        tags = s.tags or [None]
        for t in tags:
            e = dict(base)
            if t:
                e["annotations"] = {REF_NAME: t}
            entries.append(e)
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
    return json.dumps(doc, separators=(",", ":")).encode(), blobs


def _write_oci_tar(store: Store, selected: builtins.list[_Saved], out: BinaryIO) -> None:
    index, blobs = _oci_index(store, selected)
    t = _Tar(out)
    try:
        _oci_tar_body(store, t, index, blobs)
    except BaseException:
        t.abort()
        raise


def _oci_tar_body(store: Store, t: _Tar, index: bytes, blobs: builtins.list[Digest]) -> None:
    t.bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    t.dir("blobs")
    for d in blobs:
        t.dir(f"blobs/{d.algorithm}")
        with store.open_blob(d) as f:
            t.stream(f"blobs/{d.algorithm}/{d.encoded}", store.blob_size(d), f)
    t.bytes("index.json", index)
    t.close()


class _VerifyingReader:
    """Counts and hashes what passes, so a layer's decompressed bytes are checked against its diff ID."""

    def __init__(self, f: BinaryIO, algorithm: str = "sha256") -> None:
        self.f = f
        self.h = Hasher(algorithm)

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        return data


def _write_docker_tar(store: Store, selected: builtins.list[_Saved], out: BinaryIO) -> None:
    t = _Tar(out)
    try:
        _docker_tar_body(store, t, selected)
    except BaseException:
        t.abort()
        raise


def _docker_tar_body(store: Store, t: _Tar, selected: builtins.list[_Saved]) -> None:
    items: builtins.list[dict[str, Any]] = []
    written: set[str] = set()
    for s in selected:
        manifest = store.manifest(s.image)
        cfg_name = f"{s.image.id.encoded}.json"
        if cfg_name not in written:
            t.bytes(cfg_name, store.config_bytes(s.image))
            written.add(cfg_name)
        paths = []
        for layer in s.image.layers:
            name = f"{layer.diff_id.encoded}.tar"
            paths.append(name)
            if name in written:
                continue
            written.add(name)
            kind = mt.LAYER_COMPRESSION.get(layer.media_type)
            with store.open_blob(layer.digest) as raw:
                reader = (
                    compression.decompressor(raw, kind) if kind else compression.sniffing_decompressor(raw)
                )
                v = _VerifyingReader(reader)  # type: ignore[arg-type]
                t.stream(name, layer.diff_size, v)  # type: ignore[arg-type]
            if v.h.digest() != layer.diff_id:
                raise ContentError(
                    f"layer {layer.digest} in the store no longer matches diff ID {layer.diff_id}; "
                    "the store is corrupted (remove and re-pull the image)"
                )
        del manifest
        items.append({"Config": cfg_name, "RepoTags": builtins.list(s.tags), "Layers": paths})
    t.bytes("manifest.json", json.dumps(items, separators=(",", ":")).encode())
    t.close()


def save_layout(store: Store, path: str | os.PathLike[str], selected: Iterable[_Saved | str]) -> None:
    """Write images into an OCI layout directory, creating it or adding to an existing one."""
    root = Path(path)
    items = [s if isinstance(s, _Saved) else _select(store, [s], False, "oci-dir")[0] for s in selected]
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    if (root / "index.json").exists() and not (root / "oci-layout").exists():
        raise UsageError(f"{root} has an index.json but no oci-layout: not an OCI layout")
    index_raw, blobs = _oci_index(store, items)
    for d in blobs:
        target = root / "blobs" / d.algorithm / d.encoded
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_blob(store, d, target)
    new = json.loads(index_raw)
    if (root / "index.json").exists():
        try:
            old = json.loads((root / "index.json").read_bytes())
        except ValueError as e:
            raise UsageError(f"{root}/index.json is not valid JSON: {e}") from None
        replaced = {(e.get("annotations") or {}).get(REF_NAME) for e in new["manifests"]} - {None}
        keep = [
            e
            for e in old.get("manifests", [])
            if (e.get("annotations") or {}).get(REF_NAME) not in replaced and e not in new["manifests"]
        ]
        new["manifests"] = keep + new["manifests"]
    atomic_write(root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    atomic_write(root / "index.json", json.dumps(new, separators=(",", ":")).encode())


def _save_dir_transport(store: Store, root: Path, s: _Saved, compress: bool) -> None:
    manifest = store.manifest(s.image)
    root.mkdir(parents=True, exist_ok=True)
    layers = []
    changed = manifest.media_type != mt.DOCKER_MANIFEST
    for layer in manifest.layers:
        kind = mt.LAYER_COMPRESSION.get(layer.media_type)
        if kind == "zstd":
            raise UsageError(
                f"layer {layer.digest} is zstd-compressed, which the docker v2s2 format cannot carry; "
                "use --format oci-dir"
            )
        if compress and kind == "none":
            digest, size = _gzip_blob_to(store, layer.digest, root)
            layers.append({"mediaType": mt.DOCKER_LAYER_GZIP, "size": size, "digest": digest})
            changed = True
            continue
        _copy_blob(store, layer.digest, root / layer.digest.encoded)
        media = mt.to_docker(layer.media_type)
        changed |= media != layer.media_type
        layers.append({"mediaType": media, "size": layer.size, "digest": str(layer.digest)})
    _copy_blob(store, manifest.config.digest, root / manifest.config.digest.encoded)
    if changed:
        raw = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mt.DOCKER_MANIFEST,
                "config": {
                    "mediaType": mt.DOCKER_CONFIG,
                    "size": manifest.config.size,
                    "digest": str(manifest.config.digest),
                },
                "layers": layers,
            },
            indent=3,
        ).encode()
    else:
        raw = manifest.raw
    atomic_write(root / "manifest.json", raw)
    atomic_write(root / "version", DIR_VERSION)


def _copy_blob(store: Store, digest: Digest, target: Path) -> None:
    if target.is_file() and target.stat().st_size == store.blob_size(digest):
        return
    with atomic_writer(target, sync=False) as out, open(store.blobs.path(digest), "rb") as src:
        shutil.copyfileobj(src, out, CHUNK)


def _gzip_blob_to(store: Store, digest: Digest, root: Path) -> tuple[str, int]:
    # named by the digest of what it becomes: written under a fixed name, then renamed
    tmp = root / f".tmp-gzip-{os.getpid()}-{time.monotonic_ns()}"
    h = Hasher("sha256")

    class _Out(io.RawIOBase):
        def __init__(self, f: BinaryIO) -> None:
            self.f = f

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[override]
            h.update(b)
            self.f.write(b)
            return len(b)

    try:
        with open(tmp, "wb") as f, store.open_blob(digest) as src:
            out = _Out(f)
            z = compression.compressor(out, "gzip")  # type: ignore[arg-type]
            while chunk := src.read(CHUNK):
                z.write(chunk)
            z.close()
        d = h.digest()
        os.replace(tmp, root / d.encoded)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return str(d), h.size


class _RawAdapter(io.RawIOBase):
    """Any object with ``read(n)`` as a RawIOBase, so a BufferedReader can peek at its magic."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self._f.read(len(b))
        n = len(data)
        b[:n] = data
        return n
