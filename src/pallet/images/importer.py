"""import: an image of one layer from a rootfs tarball (plain, gzip, zstd), a directory, stdin or a URL.

The source is read once: its tar stream is validated member by member while the same bytes are
hashed (the diff ID) and gzip-compressed straight into the blob store (the layer digest).
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from pallet.content import compression
from pallet.content import mediatypes as mt
from pallet.content.digest import CHUNK, Digest, Hasher
from pallet.content.manifest import Manifest, parse
from pallet.content.platform import Platform
from pallet.errors import ContentError, UsageError
from pallet.images.changes import apply_changes
from pallet.store import Image, Store
from pallet.store import names as naming
from pallet.store.store import now_rfc3339


# -- the layer ------------------------------------------------------------------------------------------
class _Sink(io.RawIOBase):
    """The gzip compressor's output: straight into a blob writer."""

    def __init__(self, write: Callable[[bytes], int]) -> None:
        self._write = write

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self._write(bytes(b))
        return len(b)


class _LayerOut:
    """Uncompressed tar bytes in; diff ID counted, gzip bytes into the store."""

    def __init__(self, store: Store) -> None:
        self.writer = store.writer()
        self.error: Exception | None = None
        self.diff = Hasher("sha256")
        self._gz = compression.compressor(_Sink(self.writer.write), "gzip")  # type: ignore[arg-type]

    def write(self, data: bytes) -> int:
        if self.error is not None:  # tarfile flushes again while unwinding: report the first failure
            raise self.error
        try:
            self.diff.update(data)
            self._gz.write(data)
        except Exception as e:
            self.error = e
            raise
        return len(data)

    def finish(self) -> tuple[Digest, int, Digest, int]:
        """(layer digest, layer size, diff ID, diff size)."""
        self._gz.close()
        size = self.writer.written
        digest = self.writer.commit()
        return digest, size, self.diff.digest(), self.diff.size

    def abort(self) -> None:
        self.writer.abort()


class _Tee:
    """Reads from ``f`` and hands every byte read to ``out`` (tarfile validates, we store)."""

    def __init__(self, f: BinaryIO, out: _LayerOut) -> None:
        self.f, self.out = f, out

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if data:
            self.out.write(data)
        return data


def _layer_from_tar_stream(stream: BinaryIO, out: _LayerOut, label: str) -> int:
    """Validate a (compressed) tar while teeing its uncompressed bytes to ``out``; member count."""
    try:
        tee = _Tee(compression.sniffing_decompressor(stream), out)
        count = 0
        with tarfile.open(fileobj=tee, mode="r|") as tf:  # type: ignore[call-overload]
            for _ in tf:
                count += 1
        while tee.read(CHUNK):  # the end-of-archive padding belongs to the layer too
            pass
    except tarfile.ReadError as e:
        raise ContentError(f"{label}: not a tar archive: {e}") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ContentError(f"{label}: corrupted or truncated tar archive: {e}") from None
    except Exception as e:
        if type(e).__name__ == "ZstdError":
            raise ContentError(f"{label}: corrupted zstd stream: {e}") from None
        raise
    return count


def _layer_from_directory(root: Path, out: _LayerOut) -> None:
    """A reproducible tar of ``root``'s contents (sorted, numeric owners, hardlinks kept)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]

        def walk(directory: Path, prefix: str) -> None:
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError as e:
                raise UsageError(f"cannot read {directory}: {e.strerror}") from None
            for entry in entries:
                arc = f"{prefix}{entry.name}"
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISSOCK(st.st_mode):
                    continue  # tar cannot carry sockets
                ti = tf.gettarinfo(entry.path, arcname=arc)
                ti.uname = ti.gname = ""
                if ti.isreg():
                    with open(entry.path, "rb") as f:
                        tf.addfile(ti, f)
                else:
                    tf.addfile(ti)
                if ti.isdir():
                    walk(Path(entry.path), arc + "/")

        walk(root, "")


def import_(
    store: Store,
    source: str | os.PathLike[str] | BinaryIO,
    reference: str | None = None,
    *,
    changes: Iterable[str] = (),
    message: str = "",
    platform: Platform | None = None,
    label: str | None = None,
) -> Image:
    """Create an image of one gzip layer from ``source``; named ``reference`` (podman's rules), if given."""
    name = naming.tag_name(reference) if reference else None
    config_block = apply_changes(changes)
    plat = platform or Platform.host()
    out = _LayerOut(store)
    try:
        if isinstance(source, (str, os.PathLike)) and str(source) == "-":
            label = label or "-"
            _layer_from_tar_stream(sys.stdin.buffer, out, "stdin")
        elif isinstance(source, str) and source.startswith(("http://", "https://")):
            label = label or source
            _import_url(source, out)
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            label = label or str(path)
            if path.is_dir():
                _layer_from_directory(path, out)
            elif path.exists():
                with open(path, "rb") as f:
                    _layer_from_tar_stream(f, out, str(path))
            else:
                raise UsageError(f"{path}: no such file or directory")
        else:
            label = label or "-"
            _layer_from_tar_stream(source, out, label)
        digest, size, diff_id, diff_size = out.finish()
    except BaseException:
        out.abort()
        raise
    created = now_rfc3339()
    cfg: dict[str, Any] = {"created": created, "architecture": plat.architecture, "os": plat.os}
    if plat.variant:
        cfg["variant"] = plat.variant
    comment = message or f"Imported from {label}"
    cfg.update(
        {
            "comment": comment,
            "config": config_block,
            "rootfs": {"type": "layers", "diff_ids": [str(diff_id)]},
            "history": [{"created": created, "comment": comment}],
        }
    )
    config_raw = json.dumps(cfg, separators=(",", ":")).encode()
    config_digest = Digest.of(config_raw)
    manifest_raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": str(config_digest), "size": len(config_raw)},
            "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": str(digest), "size": size}],
        },
        separators=(",", ":"),
    ).encode()
    manifest = parse(manifest_raw, mt.OCI_MANIFEST)
    assert isinstance(manifest, Manifest)
    try:
        return store.add_image(
            manifest, config=config_raw, names=[name] if name else [], diff_sizes={diff_id: diff_size}
        )
    finally:
        store.release([digest, config_digest, manifest.digest])


def _import_url(url: str, out: _LayerOut) -> None:
    import httpx

    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60) as resp:
            if resp.status_code != 200:
                raise UsageError(f"{url}: HTTP {resp.status_code}")
            _layer_from_tar_stream(_IterReader(resp.iter_bytes(CHUNK)), out, url)  # type: ignore[arg-type]
    except httpx.HTTPError as e:
        raise UsageError(f"{url}: {e}") from None


class _IterReader(io.RawIOBase):
    def __init__(self, it: Any) -> None:
        self._it, self._buf = it, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n
