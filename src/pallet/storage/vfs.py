"""The vfs driver: every snapshot is a full copy of its parent. Slow and big, but it works on
any filesystem (no overlay needed), like podman's and docker's vfs.

A layer is its parent's tree copied (``cp -a --reflink=auto``: hardlinks, xattrs, devices,
sparse files and reflinks where the filesystem has them) plus the layer applied with real
deletions. Views need no copy: a committed snapshot never changes, so a view bind-mounts it
read-only.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pallet.errors import StorageError
from pallet.storage.driver import Driver, Kind
from pallet.storage.mount import Mount


class VfsDriver(Driver):
    name = "vfs"
    apply_format = "naive"  # = pallet.storage.extract.NAIVE, not imported here
    supports_rebase = False

    def data_dir(self, key: str) -> Path:
        return self.dir_of(key) / "fs"

    def _populate(self, tmp: Path, kind: Kind, parent: str) -> None:
        if not parent or kind == Kind.VIEW:
            (tmp / "fs").mkdir(mode=0o755)
            os.chmod(tmp / "fs", 0o755)
            return
        src = self.data_dir(parent)
        res = subprocess.run(["cp", "-a", "--reflink=auto", "--", os.fspath(src), os.fspath(tmp / "fs")],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise StorageError(f"vfs: cannot copy {parent!r}: {res.stderr.strip() or res.returncode}")

    def mounts(self, key: str) -> list[Mount]:
        info = self.stat(key)
        if info.kind == Kind.COMMITTED:
            raise StorageError(f"vfs: {key!r} is committed; make a view or prepare on it to mount")
        if info.kind == Kind.VIEW:
            src = self.data_dir(info.parent) if info.parent else self.data_dir(key)
            return [Mount("bind", os.fspath(src), ("ro",))]
        return [Mount("bind", os.fspath(self.data_dir(key)), ("rw",))]
