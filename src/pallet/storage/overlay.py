"""The overlay driver: kernel overlayfs (default) or fuse-overlayfs (a mount program).

Each snapshot is ``snapshots/<id>/diff`` (its own changes) plus ``work`` for active ones. A
committed snapshot gets a short link ``l/<26 chars> -> ../snapshots/<id>/diff`` so that a
mount's ``lowerdir=`` list stays short (the kernel takes one page of options), as docker's
overlay2 does; past that, the mount helper mounts from ``home`` with relative paths.

Layer diffs are extracted straight into ``diff`` in overlay format (whiteouts as 0/0 char
devices, opaque directories as ``trusted.overlay.opaque=y``), with no parent on disk, so the
layers of an image unpack concurrently and are rebased onto their parent at commit.
"""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path

from pallet.content.digest import sha256_of
from pallet.errors import StorageError
from pallet.storage.driver import Driver, DriverOptions, Info, Kind
from pallet.storage.mount import Mount

_PARAMS = Path("/sys/module/overlay/parameters")


def link_name(name: str) -> str:
    """The short, stable link name of a committed snapshot."""
    return base64.b32encode(sha256_of(b"pallet-link:" + name.encode())).decode()[:26]


def _rw_options() -> tuple[str, ...]:
    """Pin features that would make an upperdir unreadable as a plain diff (if this kernel has them)."""
    out = []
    for opt, value in (("index", "off"), ("redirect_dir", "off"), ("metacopy", "off")):
        if (_PARAMS / opt).exists():
            out.append(f"{opt}={value}")
    return tuple(out)


class OverlayDriver(Driver):
    name = "overlay"
    apply_format = "overlay"  # = pallet.storage.extract.OVERLAY, not imported here
    supports_rebase = True

    def __init__(self, home: str | os.PathLike[str], options: DriverOptions | None = None) -> None:
        super().__init__(home, options)
        self._links = self.home / "l"
        self._links.mkdir(exist_ok=True, mode=0o700)
        self.mount_program = self.options.mount_program
        if self.mount_program:
            self.name = "fuse-overlayfs" if os.path.basename(self.mount_program) == "fuse-overlayfs" \
                else self.name
            self._empty = self.home / "empty"
            self._empty.mkdir(exist_ok=True, mode=0o755)
        for o in self.options.mountopt:
            if o.startswith("metacopy=on") or o.startswith("redirect_dir=on"):
                raise StorageError(f"overlay: mount option {o!r} is not supported: diffs and commits "
                                   "need whole files in the upper directory")

    def data_dir(self, key: str) -> Path:
        return self.dir_of(key) / "diff"

    def lower_dirs(self, name: str) -> list[Path]:
        """The diff dirs of committed snapshot ``name`` and its ancestors, top first."""
        return [self.dir_of(n) / "diff" for n in [name, *self.parents(name)]]

    def _populate(self, tmp: Path, kind: Kind, parent: str) -> None:
        (tmp / "diff").mkdir(mode=0o755)
        os.chmod(tmp / "diff", 0o755)
        if kind == Kind.ACTIVE:
            (tmp / "work").mkdir(mode=0o700)

    def _link_path(self, name: str) -> Path:
        link = self._links / link_name(name)
        if not link.is_symlink():  # repaired lazily after a crash between commit's steps
            self._make_link(name)
        return link

    def _make_link(self, name: str) -> None:
        link = self._links / link_name(name)
        target = os.path.join("..", "snapshots", self.dir_of(name).name, "diff")
        tmp = self._links / f".{link.name}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)

    def mounts(self, key: str) -> list[Mount]:
        info = self.stat(key)
        if info.kind == Kind.COMMITTED:
            raise StorageError(f"{self.name}: {key!r} is committed; make a view or prepare on it to mount")
        d = self.dir_of(key)
        chain = [info.parent, *self.parents(info.parent)] if info.parent else []
        lowers = [os.fspath(self._link_path(p)) for p in chain]
        extra = tuple(self.options.mountopt)
        if self.mount_program:
            return [self._fuse_mount(info, d, lowers, extra)]
        if info.kind == Kind.VIEW:
            if not lowers:
                return [Mount("bind", os.fspath(d / "diff"), ("ro",))]
            if len(lowers) == 1:
                return [Mount("bind", os.fspath(self.dir_of(chain[0]) / "diff"), ("ro",))]
            return [Mount("overlay", "overlay", ("ro", f"lowerdir={':'.join(lowers)}", *extra))]
        if not lowers:
            return [Mount("bind", os.fspath(d / "diff"), ("rw",))]
        return [Mount("overlay", "overlay", (*_rw_options(), f"lowerdir={':'.join(lowers)}",
                                             f"upperdir={d / 'diff'}", f"workdir={d / 'work'}", *extra))]

    def _fuse_mount(self, info: Info, d: Path, lowers: list[str], extra: tuple[str, ...]) -> Mount:
        assert self.mount_program is not None
        if info.kind == Kind.VIEW:
            lowers = lowers or [os.fspath(d / "diff")]
            return Mount(f"fuse3.{os.path.basename(self.mount_program)}", self.mount_program,
                         ("ro", f"lowerdir={':'.join(lowers)}", *extra))
        lowers = lowers or [os.fspath(self._empty)]
        return Mount(f"fuse3.{os.path.basename(self.mount_program)}", self.mount_program,
                     (f"lowerdir={':'.join(lowers)}", f"upperdir={d / 'diff'}", f"workdir={d / 'work'}",
                      *extra))

    def _before_commit(self, d: Path, info: Info) -> None:
        work = d / "work"
        if work.exists():
            import shutil  # on first use: with bz2 and lzma it costs `run` ~1.6 ms
            shutil.rmtree(work, ignore_errors=True)

    def _after_commit(self, d: Path, info: Info) -> None:
        self._make_link(info.name)

    def _after_remove(self, info: Info) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._links / link_name(info.name)).unlink()

    def _cleanup_extra(self, removed: list[str]) -> None:
        for n in os.listdir(self._links):
            p = self._links / n
            if p.is_symlink() and not p.exists():
                p.unlink()
                removed.append(str(p))
