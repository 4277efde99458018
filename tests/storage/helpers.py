"""Helpers for storage tests: crafted tars, tree listings, OCI layout reading."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pallet.content import compression


@dataclass
class E:
    """One entry of a crafted layer tar."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    linkname: str = ""
    uid: int = 0
    gid: int = 0
    mtime: float = 1_700_000_000
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] | None = None


def f(name: str, data: bytes = b"x", mode: int = 0o644, **kw) -> E:
    return E(name, tarfile.REGTYPE, data, mode, **kw)


def d(name: str, mode: int = 0o755, **kw) -> E:
    return E(name, tarfile.DIRTYPE, b"", mode, **kw)


def sym(name: str, target: str, **kw) -> E:
    return E(name, tarfile.SYMTYPE, b"", 0o777, target, **kw)


def hard(name: str, target: str, **kw) -> E:
    return E(name, tarfile.LNKTYPE, b"", 0o644, target, **kw)


def make_tar(entries: Iterable[E], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = e.type, e.mode, e.uid, e.gid, e.mtime
            ti.linkname = e.linkname
            ti.devmajor, ti.devminor = e.devmajor, e.devminor
            ti.uname = ti.gname = ""
            if e.pax:
                ti.pax_headers = dict(e.pax)
            if e.type == tarfile.REGTYPE:
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def compress(raw: bytes, kind: str = "gzip") -> bytes:
    buf = io.BytesIO()
    w = compression.compressor(buf, kind)
    w.write(raw)
    if w is not buf:
        w.close()
    return buf.getvalue()


def diff_id(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def tree(root: Path, *, content: bool = True, mtimes: bool = False, skip_root: bool = True
         ) -> dict[str, tuple]:
    """path -> (kind, mode, size, link target, uid, gid[, sha256][, mtime_ns][, xattrs]) of a tree,
    never following symlinks; hardlink groups appear as an 'inode group' index."""
    out: dict[str, tuple] = {}
    groups: dict[tuple[int, int], str] = {}
    rootb = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(rootb):
        dirnames.sort()  # a deterministic walk: hardlink groups are named by their first path
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.fsdecode(os.path.relpath(p, rootb))
            st = os.lstat(p)
            m = st.st_mode
            if stat.S_ISDIR(m):
                kind = "dir"
            elif stat.S_ISLNK(m):
                kind = "symlink"
            elif stat.S_ISREG(m):
                kind = "file"
            elif stat.S_ISFIFO(m):
                kind = "fifo"
            elif stat.S_ISCHR(m):
                kind = f"chr{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
            elif stat.S_ISBLK(m):
                kind = f"blk{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
            else:
                kind = "other"
            size = st.st_size if kind == "file" else 0
            target = os.fsdecode(os.readlink(p)) if kind == "symlink" else ""
            row: tuple = (kind, stat.S_IMODE(m), size, target, st.st_uid, st.st_gid)
            if content:
                digest = ""
                if kind == "file":
                    with open(p, "rb") as fh:
                        digest = hashlib.sha256(fh.read()).hexdigest()
                row += (digest,)
            if mtimes:
                row += (st.st_mtime_ns,)
                xs = {}
                try:
                    for x in os.listxattr(p, follow_symlinks=False):
                        if not x.startswith("trusted.overlay."):
                            xs[x] = os.getxattr(p, x, follow_symlinks=False)
                except OSError:
                    pass
                row += (tuple(sorted(xs.items())),)
                if kind == "file" and st.st_nlink > 1:
                    k = (st.st_dev, st.st_ino)
                    row += (groups.setdefault(k, rel),)
            out[rel] = row
    if not skip_root:
        st = os.lstat(root)
        out["."] = ("dir", stat.S_IMODE(st.st_mode), 0, "", st.st_uid, st.st_gid)
    return out


def snapshot(root: Path, exclude: Iterable[str] = ()) -> dict[str, tuple]:
    """Everything about a tree that a write outside a layer root could change."""
    ex = {os.fsencode(x) for x in exclude}
    out: dict[str, tuple] = {}
    rootb = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(rootb):
        if dirpath == rootb:
            dirnames[:] = [x for x in dirnames if x not in ex]
            filenames = [x for x in filenames if x not in ex]
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = b""
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    data = fh.read()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(p)
            out[os.fsdecode(p)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink, st.st_mtime_ns,
                                   hashlib.sha256(data).hexdigest())
    st = os.lstat(root)
    out["."] = (st.st_mode, st.st_uid, st.st_gid, st.st_nlink)
    return out


def read_layout(layout: Path, tag: str = "latest") -> tuple[list[dict], list[str]]:
    """(layer descriptors, diff IDs) of the image tagged ``tag`` in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    manifest = json.loads(blob(layout, desc["digest"]).read_bytes())
    config = json.loads(blob(layout, manifest["config"]["digest"]).read_bytes())
    return manifest["layers"], config["rootfs"]["diff_ids"]


def blob(layout: Path, digest: str) -> Path:
    algo, hexd = digest.split(":", 1)
    return layout / "blobs" / algo / hexd


def expected_owners(layout: Path) -> dict[str, tuple[int, int]]:
    """uid/gid each path ends up with, replaying the layer tars with OCI whiteout rules."""
    layers, _ = read_layout(layout)
    owners: dict[str, tuple[int, int]] = {}
    for desc in layers:
        with tarfile.open(blob(layout, desc["digest"]), "r:*") as tf:
            for ti in tf:
                name = ti.name.rstrip("/").removeprefix("./")
                dname, base = os.path.split(name)
                if base == ".wh..wh..opq":
                    for k in [k for k in owners if k.startswith(dname + "/")]:
                        del owners[k]
                    continue
                if base.startswith(".wh."):
                    gone = os.path.join(dname, base[4:])
                    for k in [k for k in owners if k == gone or k.startswith(gone + "/")]:
                        del owners[k]
                    continue
                if ti.type == tarfile.LNKTYPE:
                    owners[name] = owners[ti.linkname]
                else:
                    owners[name] = (ti.uid, ti.gid)
    return owners
