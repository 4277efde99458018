"""An ImageSource over OCI image layouts, for the engine's tests and benchmark only.

The real ImageSource (pallet.store + pallet.storage) is being written in parallel; until it is
merged, the engine is exercised through this one, which uses tools pallet did not write:

* "pulling" an image means finding ``$PALLET_TEST_LAYOUTS/<repository>`` (an OCI layout, e.g.
  from refimage.py) with the tag, and unpacking it once with ``umoci raw unpack`` into
  ``ROOT/layout-source/images/<config digest>/rootfs``;
* each container gets a real overlayfs mount: that rootfs as lowerdir, its own upper and work
  directories;
* ``commit`` turns the overlay upper directory into an OCI layer tar (overlay whiteouts become
  ``.wh.`` entries, opaque directories ``.wh..wh..opq``) and applies it over a copy of the
  parent's rootfs, so a committed image runs like any other.

Select it with PALLET_IMAGE_SOURCE=tests.engine.support.layout_source:LayoutImageSource.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from pallet.context import Context
from pallet.engine import mounts
from pallet.engine.errors import NoSuchImage
from pallet.engine.image_source import ImageInfo
from pallet.errors import StoreError
from pallet.fsutil import atomic_write, file_lock


def _normalize(name: str) -> tuple[str, str]:
    """(repository, tag) with docker.io/library and localhost prefixes dropped."""
    ref = name
    for prefix in ("docker.io/library/", "docker.io/", "localhost/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            break
    if "@" in ref:
        ref = ref.split("@", 1)[0]
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        repo, tag = ref, "latest"
    return repo, tag


class LayoutImageSource:
    """ImageSource over OCI layouts found in ``$PALLET_TEST_LAYOUTS``."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.base = Path(ctx.root) / "layout-source"
        self.layouts = Path(os.environ.get("PALLET_TEST_LAYOUTS", "/nonexistent"))
        #: unpacked images and names; $PALLET_TEST_CACHE shares them between roots (tests)
        self.cache = Path(os.environ.get("PALLET_TEST_CACHE") or self.base)

    # -- images -----------------------------------------------------------------------------------
    def _names(self) -> dict[str, str]:
        try:
            return json.loads((self.cache / "names.json").read_text())
        except FileNotFoundError:
            return {}

    def _image_dir(self, image_id: str) -> Path:
        return self.cache / "images" / image_id.removeprefix("sha256:")

    def lookup(self, image_id: str) -> ImageInfo | None:
        d = self._image_dir(image_id)
        try:
            config = json.loads((d / "config.json").read_text())
            info = json.loads((d / "info.json").read_text())
        except FileNotFoundError:
            return None
        names = tuple(n for n, i in self._names().items() if i == image_id)
        plat = f"{config.get('os', 'linux')}/{config.get('architecture', '')}"
        return ImageInfo(
            id=image_id,
            names=names,
            config=config,
            platform=plat,
            digest=info.get("digest"),
            size=info.get("size", 0),
        )

    def _local(self, name: str) -> ImageInfo | None:
        repo, tag = _normalize(name)
        image_id = self._names().get(f"localhost/{repo}:{tag}")
        if image_id is None:
            hexpart = name.removeprefix("sha256:")
            if len(hexpart) >= 4 and all(c in "0123456789abcdef" for c in hexpart):
                images = self.cache / "images"
                matches = (
                    [p.name for p in images.iterdir() if p.name.startswith(hexpart)]
                    if images.is_dir()
                    else []
                )
                if len(matches) == 1:
                    image_id = "sha256:" + matches[0]
        return self.lookup(image_id) if image_id else None

    def resolve(self, name: str, pull_policy: str = "missing", platform: str | None = None) -> ImageInfo:
        local = self._local(name)
        if pull_policy == "never" or (pull_policy in ("missing", "newer") and local is not None):
            if local is None:
                raise NoSuchImage(f"{name}: image not known (--pull never)")
            return local
        return self._pull(name, local)

    def _pull(self, name: str, local: ImageInfo | None) -> ImageInfo:
        repo, tag = _normalize(name)
        layout = self.layouts / repo
        try:
            index = json.loads((layout / "index.json").read_text())
        except FileNotFoundError:
            if local is not None:
                return local
            raise NoSuchImage(
                f"pulling {name}: repository {repo} not found (no OCI layout {layout})"
            ) from None
        desc = next(
            (
                m
                for m in index.get("manifests", [])
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
            ),
            None,
        )
        if desc is None:
            raise NoSuchImage(f"pulling {name}: manifest unknown: tag {tag!r} not found")
        blobs = layout / "blobs"
        manifest = json.loads((blobs / desc["digest"].replace(":", "/")).read_bytes())
        cfg_digest = manifest["config"]["digest"]
        config = json.loads((blobs / cfg_digest.replace(":", "/")).read_bytes())
        import subprocess
        import tempfile

        d = self._image_dir(cfg_digest)
        self.cache.mkdir(parents=True, exist_ok=True)
        with file_lock(self.cache / "lock", what="the test image cache"):
            if not (d / "config.json").exists():
                d.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=d))
                res = subprocess.run(
                    ["umoci", "raw", "unpack", "--image", f"{layout}:{tag}", str(tmp / "rootfs")],
                    capture_output=True,
                    text=True,
                )
                if res.returncode != 0:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise StoreError(f"umoci unpack of {layout}:{tag} failed: {res.stderr.strip()}")
                shutil.rmtree(d / "rootfs", ignore_errors=True)
                os.rename(tmp / "rootfs", d / "rootfs")
                tmp.rmdir()
                size = sum(layer.get("size", 0) for layer in manifest.get("layers", []))
                atomic_write(d / "info.json", json.dumps({"digest": desc["digest"], "size": size}).encode())
                atomic_write(d / "config.json", json.dumps(config).encode())
            names = self._names()
            names[f"localhost/{repo}:{tag}"] = cfg_digest
            atomic_write(self.cache / "names.json", json.dumps(names).encode())
        info = self.lookup(cfg_digest)
        assert info is not None
        return info

    # -- container root filesystems ------------------------------------------------------------------
    def _cdir(self, container_id: str) -> Path:
        return self.base / "containers" / container_id

    def prepare_rootfs(self, container_id: str, image: ImageInfo, *, volatile: bool = False) -> str:
        d = self._cdir(container_id)
        merged = d / "merged"
        for sub in ("upper", "work", "merged"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "image").write_text(image.id)
        if not mounts.is_mountpoint(str(merged)):
            lower = self._image_dir(image.id) / "rootfs"
            opts = f"lowerdir={lower},upperdir={d / 'upper'},workdir={d / 'work'}"
            if volatile:  # deleted at exit (--rm): no sync of the backing filesystem on unmount
                opts += ",volatile"
            mounts.mount("overlay", str(merged), "overlay", 0, opts)
        return str(merged)

    def release_rootfs(self, container_id: str) -> None:
        merged = str(self._cdir(container_id) / "merged")
        if os.path.isdir(merged):
            try:
                mounts.umount(merged)
            except OSError:
                mounts.umount(merged, mounts.MNT_DETACH)

    def remove_rootfs(self, container_id: str) -> None:
        self.release_rootfs(container_id)
        shutil.rmtree(self._cdir(container_id), ignore_errors=True)

    def rootfs_size(self, container_id: str) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self._cdir(container_id) / "upper"):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, f)).st_size
        return total

    def hold(self, image_id: str, container_id: str) -> None:
        d = self._image_dir(image_id) / "holds"
        d.mkdir(parents=True, exist_ok=True)
        (d / container_id).touch()

    def unhold(self, image_id: str, container_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._image_dir(image_id) / "holds" / container_id).unlink()

    def holds(self, image_id: str) -> list[str]:
        d = self._image_dir(image_id) / "holds"
        return sorted(os.listdir(d)) if d.is_dir() else []

    def graph_driver(self, container_id: str) -> dict[str, Any]:
        d = self._cdir(container_id)
        image_id = (d / "image").read_text() if (d / "image").exists() else ""
        return {
            "Name": "overlay",
            "Data": {
                "LowerDir": str(self._image_dir(image_id) / "rootfs"),
                "UpperDir": str(d / "upper"),
                "WorkDir": str(d / "work"),
                "MergedDir": str(d / "merged"),
            },
        }

    # -- commit ------------------------------------------------------------------------------------
    def diff_tar(self, container_id: str) -> bytes:
        """The container's changes as an OCI layer (uncompressed tar with whiteouts)."""
        import io
        import stat
        import tarfile

        upper = self._cdir(container_id) / "upper"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for dirpath, dirnames, filenames in os.walk(upper):
                dirnames.sort()
                rel_dir = os.path.relpath(dirpath, upper)
                for name in sorted(dirnames) + sorted(filenames):
                    full = os.path.join(dirpath, name)
                    rel = os.path.normpath(os.path.join(rel_dir, name))
                    st = os.lstat(full)
                    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                        wh = tarfile.TarInfo(os.path.join(os.path.dirname(rel), ".wh." + name).lstrip("./"))
                        tf.addfile(wh)
                        continue
                    ti = tf.gettarinfo(full, arcname=rel)
                    ti.uname = ti.gname = ""
                    if ti.isreg():
                        with open(full, "rb") as f:
                            tf.addfile(ti, f)
                    else:
                        tf.addfile(ti)
                    if stat.S_ISDIR(st.st_mode):
                        with contextlib.suppress(OSError):
                            if os.getxattr(full, "trusted.overlay.opaque") == b"y":
                                tf.addfile(tarfile.TarInfo(os.path.join(rel, ".wh..wh..opq")))
        return buf.getvalue()

    def commit(
        self, container_id: str, parent: ImageInfo, config: dict[str, Any], names: list[str]
    ) -> ImageInfo:
        import hashlib
        import subprocess
        import tempfile

        layer = self.diff_tar(container_id)
        diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
        config = json.loads(json.dumps(config))
        config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        config["rootfs"]["diff_ids"] = [*list(parent.config.get("rootfs", {}).get("diff_ids", [])), diff_id]
        raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        image_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        d = self._image_dir(image_id)
        with file_lock(self.cache / "lock", what="the test image cache"):
            if not (d / "config.json").exists():
                d.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=".commit-", dir=d))
                res = subprocess.run(
                    ["cp", "-a", "--", f"{self._image_dir(parent.id) / 'rootfs'}/.", str(tmp)],
                    capture_output=True,
                    text=True,
                )
                if res.returncode != 0:
                    raise StoreError(f"copying the parent rootfs failed: {res.stderr.strip()}")
                _apply_layer(tmp, layer)
                os.rename(tmp, d / "rootfs")
                (d / "layer.tar").write_bytes(layer)
                atomic_write(d / "info.json", json.dumps({"digest": None, "size": len(layer)}).encode())
                atomic_write(d / "config.json", raw)
            if names:
                all_names = self._names()
                for n in names:
                    repo, tag = _normalize(n)
                    all_names[f"localhost/{repo}:{tag}"] = image_id
                atomic_write(self.cache / "names.json", json.dumps(all_names).encode())
        info = self.lookup(image_id)
        assert info is not None
        return info


def _apply_layer(root: Path, layer: bytes) -> None:
    """Apply an OCI layer tar (trusted: we just made it) with whiteout semantics."""
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(layer)) as tf:
        for m in tf:
            d, base = os.path.split(m.name)
            if base == ".wh..wh..opq":
                target = root / d
                for child in os.listdir(target):
                    p = target / child
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                continue
            if base.startswith(".wh."):
                p = root / d / base[4:]
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                continue
            p = root / m.name
            if (p.exists() and not p.is_dir()) or (p.is_symlink()):
                p.unlink()
            tf.extract(m, root, numeric_owner=True, filter="fully_trusted")
