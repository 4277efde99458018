"""The layer store: image layers keyed by chain ID, container layers, image mounts, GC, df.

This is what the image pull, ``commit`` and the engine call. It sits on a graph driver
(:mod:`pallet.storage.driver`) and adds the OCI semantics:

* :meth:`LayerStore.apply` takes a layer as a *stream* of (compressed) bytes and applies it in
  one pass: compressed-digest hash → decompress → diff-ID hash → tar → disk. It extracts into a
  private snapshot and commits it under its chain ID only when complete and verified, so a
  crash (even kill -9) never leaves a half layer visible; the leftovers are removed on the next
  open. A per-chain-ID flock makes N concurrent applies of one layer extract it once: the
  others wait, then reuse it.
* With overlay, layers extract without their parent on disk and are rebased at commit, so the
  layers of an image unpack concurrently (:meth:`LayerStore.apply_image`).
* Container layers are active snapshots on an image's top layer; image mounts are refcounted
  read-only views, as ``podman image mount``; :meth:`LayerStore.gc` removes layers nothing uses.

Chain IDs follow the OCI image spec: ChainID(L0) = DiffID(L0),
ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
"""

from __future__ import annotations

import _thread  # threading's locks without threading (~0.6 ms of `pallet run`)
import contextlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from pallet.content.digest import CHUNK, Digest, Hasher, chain_id, chain_ids
from pallet.context import Context
from pallet.context import default as default_context
from pallet.errors import ConfigError, DigestMismatch, NotFound, StorageError
from pallet.fsutil import atomic_write, file_lock
from pallet.records import dataclass, field, replace
from pallet.storage import conf as storage_conf
from pallet.storage.driver import Driver, DriverOptions, Info, Kind, SnapshotNotFound, Usage, tree_usage
from pallet.storage.mount import Mount, is_mountpoint, mount_all, unmount

TYPE_CHECKING = False  # no typing import at start-up (pallet run)
if TYPE_CHECKING:
    import threading
    from typing import BinaryIO

    from pallet.storage.diff import Change

# The layer applier (pallet.storage.extract: tar reader, decompressors, worker threads) and
# logging are imported on first use: ``pallet run`` only creates, mounts and removes container
# layers, and every millisecond of its start-up is measured.


class _Log:
    """``logging.getLogger(__name__)``, imported when something is logged (it costs start-up)."""

    def __getattr__(self, name: str):
        import logging

        return getattr(logging.getLogger(__name__), name)


log = _Log()

L_LAYER = "pallet.layer"
L_DIFF_ID = "pallet.diff-id"
L_SIZE = "pallet.size"
L_USAGE = "pallet.usage"
L_INODES = "pallet.inodes"
L_COMPRESSED = "pallet.compressed-digest"
L_COMPRESSED_SIZE = "pallet.compressed-size"
L_MEDIA_TYPE = "pallet.media-type"
L_CONTAINER = "pallet.container"
L_IMAGE = "pallet.image"

EXTRACT_PREFIX = "extract-"
CONTAINER_PREFIX = "container-"
IMAGE_PREFIX = "image-"

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$")


class LayerNotFound(StorageError, NotFound):
    """No layer with that chain ID is in storage."""


class ContainerLayerNotFound(StorageError, NotFound):
    """No container layer with that ID."""


@dataclass(frozen=True)
class Layer:
    """An image layer in storage."""

    chain_id: str
    diff_id: str
    parent: str | None
    #: bytes of the uncompressed layer tar (what the diff ID hashes)
    size: int
    #: bytes of file data this layer holds on disk by itself
    usage: int
    compressed_digest: str | None = None
    compressed_size: int | None = None
    media_type: str | None = None
    created: str = ""
    #: True when this call unpacked the layer, False when it was already there
    applied: bool = False


@dataclass(frozen=True)
class LayerSource:
    """A layer to apply with :meth:`LayerStore.apply_image`. ``open`` is called when the layer's
    turn comes (so a download starts only when it can stream straight to disk)."""

    open: Callable[[], BinaryIO]
    media_type: str
    diff_id: str | None = None
    compressed_digest: str | None = None
    compressed_size: int | None = None


@dataclass(frozen=True)
class ContainerLayer:
    """A container's writable layer."""

    id: str
    parent: str | None
    created: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageRef:
    """What df and image mounts need to know of an image (the image store provides it)."""

    id: str
    top_chain_id: str | None
    names: tuple[str, ...] = ()
    created: str = ""


@dataclass(frozen=True)
class ImageUsage:
    id: str
    names: tuple[str, ...]
    created: str
    size: int
    shared: int
    unique: int
    containers: int


@dataclass(frozen=True)
class ContainerUsage:
    id: str
    parent: str | None
    image_id: str | None
    size: int


@dataclass(frozen=True)
class LayerUsage:
    chain_id: str
    diff_id: str
    size: int
    images: int
    containers: int


@dataclass(frozen=True)
class DiskUsage:
    """``system df``: images (shared vs unique bytes), containers, layers."""

    images: list[ImageUsage]
    containers: list[ContainerUsage]
    layers: list[LayerUsage]

    @property
    def layers_size(self) -> int:
        return sum(x.size for x in self.layers)

    @property
    def images_size(self) -> int:
        """Bytes of all layers that belong to some image (shared ones counted once)."""
        return sum(x.size for x in self.layers if x.images)

    @property
    def images_reclaimable(self) -> int:
        """Bytes of layers no container uses (removing unused images frees them)."""
        return sum(x.size for x in self.layers if x.images and not x.containers)


def resolve_driver(ctx: Context, conf: storage_conf.StorageConf | None = None) -> tuple[str, DriverOptions]:
    """The driver name and options in effect: --storage-driver, $STORAGE_DRIVER, storage.conf,
    else the best that works here (overlay as root, fuse-overlayfs rootless, else vfs)."""
    conf = conf if conf is not None else storage_conf.load()
    name = ctx.storage_driver or os.environ.get("STORAGE_DRIVER") or conf.driver
    if name is not None and name not in storage_conf.DRIVERS:
        raise ConfigError(f"unknown storage driver {name!r} (pallet has {', '.join(storage_conf.DRIVERS)})")
    program = conf.mount_program
    if name is None:
        name = _auto_driver(ctx, program)
    if name == "fuse-overlayfs":
        import shutil  # on first use: with bz2 and lzma it costs `run` ~1.6 ms
        program = program or shutil.which("fuse-overlayfs")
        if program is None:
            raise ConfigError("storage driver fuse-overlayfs: the fuse-overlayfs program is not installed")
    elif name == "overlay" and program and os.geteuid() == 0:
        pass  # storage.conf asks for a mount program even as root: honour it, as podman does
    elif name != "overlay":
        program = None
    return name, DriverOptions(mount_program=program, mountopt=conf.mountopt)


def _auto_driver(ctx: Context, program: str | None) -> str:
    if os.geteuid() != 0:
        import shutil
        if (program or shutil.which("fuse-overlayfs")) and os.access("/dev/fuse", os.R_OK | os.W_OK):
            return "fuse-overlayfs"
        return "vfs"
    probe = ctx.root / "storage" / "overlay-probe"
    try:
        return "overlay" if probe.read_text().startswith("ok") else "vfs"
    except FileNotFoundError:
        pass
    ok, why = _probe_overlay(ctx.root / "storage")
    with contextlib.suppress(OSError):
        atomic_write(probe, (("ok" if ok else f"fail: {why}") + "\n").encode(), sync=False)
    if not ok:
        log.warning("overlayfs does not work under %s (%s): using the vfs driver", ctx.root, why)
    return "overlay" if ok else "vfs"


def _probe_overlay(base: Path) -> tuple[bool, str]:
    """Mount a two-layer overlay under ``base`` once: does the backing filesystem take it?"""
    try:
        with open("/proc/filesystems") as f:
            if "overlay" not in f.read():
                return False, "the kernel has no overlay filesystem"
    except OSError:
        pass
    d = base / f"probe-{os.urandom(16).hex()}"
    try:
        for sub in ("l1", "l2", "u", "w", "m"):
            (d / sub).mkdir(parents=True)
        m = Mount("overlay", "overlay", (f"lowerdir={d / 'l2'}:{d / 'l1'}", f"upperdir={d / 'u'}",
                                         f"workdir={d / 'w'}"))
        mount_all([m], d / "m")
        unmount(d / "m")
        return True, ""
    except (OSError, StorageError) as e:
        return False, str(e)
    finally:
        import shutil
        shutil.rmtree(d, ignore_errors=True)


def make_driver(name: str, home: Path, options: DriverOptions) -> Driver:
    if name in ("overlay", "fuse-overlayfs"):
        from pallet.storage.overlay import OverlayDriver

        if name == "fuse-overlayfs" and not options.mount_program:
            raise ConfigError("storage driver fuse-overlayfs needs the fuse-overlayfs program")
        return OverlayDriver(home, options if name == "fuse-overlayfs" or options.mount_program
                             else DriverOptions(mountopt=options.mountopt))
    if name == "vfs":
        from pallet.storage.vfs import VfsDriver

        return VfsDriver(home, options)
    raise ConfigError(f"unknown storage driver {name!r}")


_cleaned: set[Path] = set()
_cleaned_lock = _thread.allocate_lock()


class LayerStore:
    """Layers, container layers and image mounts of one storage root and driver."""

    def __init__(self, ctx: Context | None = None, *, driver: str | None = None,
                 conf: storage_conf.StorageConf | None = None, recover: bool = True) -> None:
        """``recover``: sweep crash leftovers (:meth:`cleanup`) at the process's first open of
        this root; ``pallet run`` passes False (it neither applies layers nor mounts images, and
        the sweep reads every snapshot's metadata)."""
        self.ctx = ctx or default_context()
        if driver is not None:
            self.ctx = self.ctx.with_(storage_driver=driver)
        self.driver_name, options = resolve_driver(self.ctx, conf)
        # overlay and fuse-overlayfs store layers the same way: they share a directory
        self.home = self.ctx.root / "storage" / ("overlay" if self.driver_name == "fuse-overlayfs"
                                                 else self.driver_name)
        self.driver = make_driver(self.driver_name, self.home, options)
        self.run = self.ctx.runroot / "storage" / self.driver_name
        self._locks = self.home / "locks"
        self._inflight: dict[str, list[threading.Event]] = {}
        self._inflight_lock = _thread.allocate_lock()
        if recover:
            with _cleaned_lock:
                first = self.home not in _cleaned
                _cleaned.add(self.home)
            if first:
                self.cleanup()

    def __repr__(self) -> str:
        return f"LayerStore({self.home}, driver={self.driver_name})"

    # ------------------------------------------------------------------ image layers

    def apply(self, parent: str | None, stream: BinaryIO, media_type: str, *,
              expected_diff_id: str | None = None, compressed_digest: str | None = None,
              compressed_size: int | None = None, drain_existing: bool = False) -> Layer:
        """Apply one layer from ``stream`` (its blob bytes, compressed per ``media_type``) on the
        layer whose chain ID is ``parent`` (None for a base layer), in one streaming pass.

        ``expected_diff_id`` (the image config's rootfs.diff_ids entry) is verified, and lets a
        layer already in storage be reused without reading ``stream`` at all (unless
        ``drain_existing``: then the stream is read to its end, e.g. so a tee into the blob store
        completes). ``compressed_digest``/``compressed_size`` are verified over the raw bytes.
        A mismatch discards the layer and raises :class:`DigestMismatch` naming it.
        """
        from pallet.content import compression as comp

        compression = comp.of_media_type(media_type)
        parent = parent or None
        if expected_diff_id is not None:
            expected_diff_id = Digest(expected_diff_id)
            cid = chain_id(parent, expected_diff_id)
            layer = self._find(cid)
            if layer is None:
                with self._layer_lock(cid):
                    layer = self._find(cid)
                    if layer is None:
                        return self._extract(parent, stream, compression, media_type, expected_diff_id, cid,
                                             compressed_digest, compressed_size)
            if drain_existing:
                self._drain(stream, compressed_digest, compressed_size, cid)
            return layer
        return self._extract(parent, stream, compression, media_type, None, None, compressed_digest,
                             compressed_size)

    def apply_image(self, sources: Sequence[LayerSource], *, parallel: int | None = None) -> list[Layer]:
        """Apply an image's layers (base first). With a driver that extracts layers on their own
        (overlay) and known diff IDs, up to ``parallel`` layers unpack at once."""
        if not sources:
            return []
        known = all(s.diff_id for s in sources)
        workers = parallel if parallel is not None else min(len(sources), max(2, (os.cpu_count() or 2) + 1))
        if not known or not self.driver.supports_rebase or workers <= 1:
            out: list[Layer] = []
            for s in sources:
                with contextlib.closing(s.open()) as f:
                    out.append(self.apply(out[-1].chain_id if out else None, f, s.media_type,
                                          expected_diff_id=s.diff_id, compressed_digest=s.compressed_digest,
                                          compressed_size=s.compressed_size))
            return out
        chains = chain_ids([s.diff_id for s in sources])  # type: ignore[misc]
        # a layer that finishes first waits for its parent's apply to end before committing
        import threading

        done = {c: threading.Event() for c in chains}
        with self._inflight_lock:
            for c, ev in done.items():
                self._inflight.setdefault(c, []).append(ev)

        def one(i: int) -> Layer:
            s = sources[i]
            try:
                existing = self._find(chains[i])
                if existing is not None:
                    return existing
                with contextlib.closing(s.open()) as f:
                    return self.apply(chains[i - 1] if i else None, f, s.media_type,
                                      expected_diff_id=s.diff_id, compressed_digest=s.compressed_digest,
                                      compressed_size=s.compressed_size)
            finally:
                done[chains[i]].set()

        try:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pallet-apply") as pool:
                futures = [pool.submit(one, i) for i in range(len(sources))]
                errors = []
                results: list[Layer] = []
                for f in futures:
                    try:
                        results.append(f.result())
                    except BaseException as e:
                        errors.append(e)
                if errors:
                    raise errors[0]
        finally:
            with self._inflight_lock:
                for c, ev in done.items():
                    waiting = self._inflight.get(c, [])
                    if ev in waiting:
                        waiting.remove(ev)
                    if not waiting:
                        self._inflight.pop(c, None)
        return results

    def _extract(self, parent: str | None, stream: BinaryIO, compression: str, media_type: str,
                 expected: str | None, cid: str | None, compressed_digest: str | None,
                 compressed_size: int | None) -> Layer:
        from pallet.storage import extract

        what = f"layer {expected}" if expected else "layer"
        key = f"{EXTRACT_PREFIX}{os.urandom(16).hex()} {cid or '?'}"
        d = self.driver
        with self._extract_lock(key):
            if d.supports_rebase:
                mounts = d.prepare(key, "", labels={})
            else:
                if parent:
                    self._wait_layer(parent)
                mounts = d.prepare(key, parent or "", labels={})
            try:
                target = apply_target(mounts)
                lowers = None
                if parent and d.apply_format == extract.OVERLAY:
                    lowers = lambda: self._lower_dirs(parent)  # noqa: E731
                res = extract.apply_stream(target, stream, compression, mode=d.apply_format, lowers=lowers,
                                           what=what)
                if expected is not None and res.diff_id != expected:
                    raise DigestMismatch(f"layer {expected}: the uncompressed layer hashes to {res.diff_id} "
                                         "(diff ID mismatch); the layer was discarded")
                if compressed_digest is not None and res.compressed_digest != compressed_digest:
                    raise DigestMismatch(f"layer {compressed_digest}: the blob hashes to "
                                         f"{res.compressed_digest}; the layer was discarded")
                if compressed_size is not None and 0 <= compressed_size != res.compressed_size:
                    raise DigestMismatch(f"layer {compressed_digest or expected}: blob is "
                                         f"{res.compressed_size} bytes, expected {compressed_size}; "
                                         "the layer was discarded")
                new_cid = cid or chain_id(parent, res.diff_id)
                labels = {L_LAYER: "1", L_DIFF_ID: res.diff_id, L_SIZE: str(res.size),
                          L_MEDIA_TYPE: media_type}
                if res.compressed_digest:
                    labels[L_COMPRESSED] = res.compressed_digest
                    labels[L_COMPRESSED_SIZE] = str(res.compressed_size)
                if d.apply_format == extract.OVERLAY:
                    # the diff dir holds exactly what was written: no need to walk it again
                    labels[L_USAGE], labels[L_INODES] = str(res.file_bytes), str(res.entries)
                else:
                    u = tree_usage(target)
                    labels[L_USAGE], labels[L_INODES] = str(u.size), str(u.inodes)
                if cid is None:
                    with self._layer_lock(new_cid):
                        existing = self._find(new_cid)
                        if existing is not None:
                            d.remove(key)
                            return existing
                        return self._commit(key, new_cid, parent, labels)
                return self._commit(key, new_cid, parent, labels)
            except BaseException:
                with contextlib.suppress(Exception):
                    d.remove(key)
                raise

    def _commit(self, key: str, cid: str, parent: str | None, labels: dict[str, str]) -> Layer:
        if parent:
            self._wait_layer(parent)
        info = self.driver.commit(cid, key, labels=labels, parent=parent or "")
        log.info("applied layer %s", cid)
        return replace(self._layer_of(info), applied=True)

    def _drain(self, stream: BinaryIO, compressed_digest: str | None, compressed_size: int | None,
               cid: str) -> None:
        h = Hasher()
        while chunk := stream.read(CHUNK):
            h.update(chunk)
        if compressed_digest is not None:
            h.verify(compressed_digest, compressed_size, what=f"blob of layer {cid}")

    def _wait_layer(self, cid: str) -> None:
        """Wait until layer ``cid`` is committed (another thread or process may be applying it)."""
        if self.driver.exists(cid):
            return
        with self._inflight_lock:
            events = list(self._inflight.get(cid, ()))
        for ev in events:  # being applied by apply_image in this process: maybe not yet locked
            ev.wait()
        if self.driver.exists(cid):
            return
        with file_lock(self._lock_path(cid), timeout=None):
            pass
        if not self.driver.exists(cid):
            raise LayerNotFound(f"parent layer {cid} is not in storage")

    def _lower_dirs(self, parent: str) -> list[Path]:
        self._wait_layer(parent)
        return self.driver.lower_dirs(parent)  # type: ignore[attr-defined,no-any-return]

    def _lock_path(self, cid: str) -> Path:
        return self._locks / f"layer-{cid.replace(':', '-')}.lock"

    @contextlib.contextmanager
    def _layer_lock(self, cid: str) -> Iterator[None]:
        with file_lock(self._lock_path(cid), timeout=None, what=f"layer {cid}"):
            yield

    @contextlib.contextmanager
    def _extract_lock(self, key: str) -> Iterator[None]:
        path = self._locks / f"{key.split(' ')[0]}.lock"
        with file_lock(path, timeout=None):
            try:
                yield
            finally:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _find(self, cid: str) -> Layer | None:
        try:
            info = self.driver.stat(cid)
        except SnapshotNotFound:
            return None
        if info.kind != Kind.COMMITTED or info.labels.get(L_LAYER) != "1":
            return None
        return self._layer_of(info)

    @staticmethod
    def _layer_of(info: Info) -> Layer:
        lb = info.labels
        csize = lb.get(L_COMPRESSED_SIZE)
        return Layer(chain_id=info.name, diff_id=lb.get(L_DIFF_ID, ""), parent=info.parent or None,
                     size=int(lb.get(L_SIZE, "0")), usage=int(lb.get(L_USAGE, "0")),
                     compressed_digest=lb.get(L_COMPRESSED), compressed_size=int(csize) if csize else None,
                     media_type=lb.get(L_MEDIA_TYPE), created=info.created)

    def exists(self, cid: str) -> bool:
        return self._find(cid) is not None

    def get(self, cid: str) -> Layer:
        layer = self._find(cid)
        if layer is None:
            raise LayerNotFound(f"layer {cid} is not in storage")
        return layer

    def layers(self) -> list[Layer]:
        """Every image layer in storage."""
        return sorted((self._layer_of(i) for i in self.driver.walk()
                       if i.kind == Kind.COMMITTED and i.labels.get(L_LAYER) == "1"),
                      key=lambda x: (x.created, x.chain_id))

    def layer_path(self, cid: str) -> Path:
        """The directory holding the layer's own files (overlay: its diff; vfs: a full tree)."""
        self.get(cid)
        return self.driver.data_dir(cid)

    def remove_layer(self, cid: str) -> None:
        """Remove one layer (it must have no child layer, container layer or mount)."""
        self.get(cid)
        with self._layer_lock(cid):
            self.driver.remove(cid)

    # ------------------------------------------------------------------ container layers

    def _container_key(self, cid: str) -> str:
        if not _ID_RE.match(cid):
            raise StorageError(f"invalid container layer id {cid!r}")
        return CONTAINER_PREFIX + cid

    def create_container_layer(self, id: str, parent: str | None,
                               labels: dict[str, str] | None = None) -> ContainerLayer:
        """A writable layer for container ``id`` on image layer ``parent`` (top chain ID)."""
        key = self._container_key(id)
        if parent:
            self.get(parent)
        self.driver.create_active(key, parent or "", labels={**(labels or {}), L_CONTAINER: id})
        return self.container_layer(id)

    def container_layer(self, id: str) -> ContainerLayer:
        try:
            info = self.driver.stat(self._container_key(id))
        except SnapshotNotFound:
            raise ContainerLayerNotFound(f"container layer {id} does not exist") from None
        return ContainerLayer(id, info.parent or None, info.created, info.labels)

    def container_layers(self) -> list[ContainerLayer]:
        return sorted((ContainerLayer(i.name[len(CONTAINER_PREFIX):], i.parent or None, i.created, i.labels)
                       for i in self.driver.walk()
                       if i.kind == Kind.ACTIVE and i.name.startswith(CONTAINER_PREFIX)),
                      key=lambda c: c.created)

    def container_mounts(self, id: str) -> list[Mount]:
        """The mounts that make container ``id``'s root filesystem (for a runtime to perform)."""
        self.container_layer(id)
        return self.driver.mounts(self._container_key(id))

    def mount_container(self, id: str, *, volatile: bool = False) -> Path:
        """Mount container ``id``'s root filesystem (refcounted) and return its path.

        ``volatile``: the layer is thrown away when the container exits (``run --rm``), so
        overlayfs may skip syncing (its ``volatile`` option): otherwise the unmount flushes the
        whole backing filesystem, which costs hundreds of milliseconds on a busy disk.
        """
        self.container_layer(id)
        key = self._container_key(id)

        def mounts() -> list[Mount]:
            ms = self.driver.mounts(key)
            if not volatile:
                return ms
            return [Mount(m.type, m.source, (*m.options, "volatile")) if m.type == "overlay" else m
                    for m in ms]

        return self._refmount(self.run / "containers" / id, mounts)

    def unmount_container(self, id: str, *, force: bool = False) -> bool:
        """Drop one reference (all with ``force``); returns True once it is really unmounted."""
        self._container_key(id)
        return self._refunmount(self.run / "containers" / id, force)

    def container_mount_path(self, id: str) -> Path | None:
        p = self.run / "containers" / id / "merged"
        return p if is_mountpoint(p) else None

    def remove_container_layer(self, id: str, *, force: bool = True) -> None:
        """Remove container ``id``'s layer (unmounting it first when ``force``)."""
        self.container_layer(id)
        if force:
            self.unmount_container(id, force=True)
        self.driver.remove(self._container_key(id))
        import shutil
        shutil.rmtree(self.run / "containers" / id, ignore_errors=True)

    def container_diff(self, id: str) -> BinaryIO:
        """The container's changes as an uncompressed OCI layer tar stream (read it to the end;
        a failure raises from ``read``). Applying it on the parent reproduces the container."""
        from pallet.storage import diff as diffmod

        return diffmod.diff_stream(lambda out: self.write_container_diff(id, out), f"diff of container {id}")

    def write_container_diff(self, id: str, out: BinaryIO) -> None:
        from pallet.storage import extract

        layer = self.container_layer(id)
        key = self._container_key(id)
        upper = self.driver.data_dir(key)
        from pallet.storage import diff as diffmod

        if self.driver.apply_format == extract.OVERLAY:
            diffmod.write_overlay_diff(upper, out)
        else:
            lower = self.driver.data_dir(layer.parent) if layer.parent else None
            diffmod.write_naive_diff(lower, upper, out)

    def container_changes(self, id: str) -> list[Change]:
        """What ``podman diff`` lists: A/C/D per path."""
        from pallet.storage import diff as diffmod
        from pallet.storage import extract

        layer = self.container_layer(id)
        upper = self.driver.data_dir(self._container_key(id))
        if self.driver.apply_format == extract.OVERLAY:
            lowers = self.driver.lower_dirs(layer.parent) if layer.parent else []  # type: ignore[attr-defined]

            def lower_exists(rel: bytes) -> bool:
                return extract.lookup_lower(lowers, rel.split(b"/")) is not None

            return diffmod.overlay_changes(upper, lower_exists)
        lower = self.driver.data_dir(layer.parent) if layer.parent else None
        return diffmod.naive_changes(lower, upper)

    def container_usage(self, id: str) -> Usage:
        """Bytes the container's writable layer adds (vfs: its copy minus the image's)."""
        from pallet.storage import extract

        layer = self.container_layer(id)
        u = self.driver.usage(self._container_key(id))
        if self.driver.apply_format == extract.NAIVE and layer.parent:
            base = self.get(layer.parent)
            return Usage(max(0, u.size - base.usage), u.inodes)
        return u

    # ------------------------------------------------------------------ image mounts

    def _image_key(self, image_id: str) -> str:
        if not _ID_RE.match(image_id):
            raise StorageError(f"invalid image id {image_id!r}")
        return IMAGE_PREFIX + image_id

    def _image_dir(self, image_id: str) -> Path:
        return self.run / "images" / image_id.replace(":", "-")

    def mount_image(self, image_id: str, top_chain_id: str | None) -> Path:
        """Mount a read-only merged view of an image's layers (refcounted, as ``podman image
        mount``); returns its path."""
        key = self._image_key(image_id)
        if top_chain_id:
            self.get(top_chain_id)

        def mounts() -> list[Mount]:
            try:
                info = self.driver.stat(key)
                if info.parent != (top_chain_id or ""):
                    raise StorageError(f"image {image_id} is mounted with other layers ({info.parent})")
            except SnapshotNotFound:
                self.driver.view(key, top_chain_id or "", labels={L_IMAGE: image_id})
            return self.driver.mounts(key)

        return self._refmount(self._image_dir(image_id), mounts)

    def unmount_image(self, image_id: str, *, force: bool = False) -> bool:
        """Drop one reference (all with ``force``); True once unmounted (and the view removed)."""
        key = self._image_key(image_id)
        done = self._refunmount(self._image_dir(image_id), force)
        if done:
            with contextlib.suppress(SnapshotNotFound):
                self.driver.remove(key)
        return done

    def image_mounts(self) -> dict[str, Path]:
        """Mounted images: image ID -> path."""
        out = {}
        for info in self.driver.walk():
            if info.kind == Kind.VIEW and info.name.startswith(IMAGE_PREFIX):
                image_id = info.labels.get(L_IMAGE, info.name[len(IMAGE_PREFIX):])
                p = self._image_dir(image_id) / "merged"
                if is_mountpoint(p):
                    out[image_id] = p
        return out

    # ------------------------------------------------------------------ refcounted mounts

    def _refmount(self, base: Path, mounts: Callable[[], list[Mount]]) -> Path:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = base / "merged"
        with file_lock(base / "lock", what=f"mount {base.name}"):
            count = _read_count(base / "count")
            if count <= 0 or not is_mountpoint(target):
                target.mkdir(exist_ok=True, mode=0o755)
                mount_all(mounts(), target)
                count = 0
            atomic_write(base / "count", f"{count + 1}\n".encode(), sync=False)
        return target

    def _refunmount(self, base: Path, force: bool) -> bool:
        target = base / "merged"
        if not base.exists():
            return True
        with file_lock(base / "lock", what=f"mount {base.name}"):
            count = _read_count(base / "count") - 1
            if force or count <= 0:
                unmount(target)  # (not mounted is fine: no mountinfo to read first)
                with contextlib.suppress(FileNotFoundError):
                    (base / "count").unlink()
                with contextlib.suppress(OSError):
                    target.rmdir()
                return True
            atomic_write(base / "count", f"{count}\n".encode(), sync=False)
            return False

    # ------------------------------------------------------------------ GC, cleanup, df

    def cleanup(self) -> list[str]:
        """Remove crash leftovers: half-extracted layers whose process is gone, staging dirs."""
        removed = self.driver.cleanup()
        for info in list(self.driver.walk()):
            if info.kind == Kind.VIEW and info.name.startswith(IMAGE_PREFIX):
                # an image view nobody has mounted (its mount went with a reboot of runroot)
                base = self._image_dir(info.labels.get(L_IMAGE, info.name[len(IMAGE_PREFIX):]))
                with _try_lock(base / "lock") as got:
                    if got and not is_mountpoint(base / "merged"):
                        with contextlib.suppress(StorageError):
                            self.driver.remove(info.name)
                            removed.append(info.name)
                        with contextlib.suppress(FileNotFoundError):
                            (base / "count").unlink()
                continue
            if info.kind == Kind.ACTIVE and info.name.startswith(EXTRACT_PREFIX):
                lock = self._locks / f"{info.name.split(' ')[0]}.lock"
                if _lock_free(lock):
                    with contextlib.suppress(StorageError):
                        self.driver.remove(info.name)
                        removed.append(info.name)
                    with contextlib.suppress(FileNotFoundError):
                        lock.unlink()
        return removed

    def gc(self, keep: Iterable[str]) -> list[str]:
        """Remove image layers not needed by ``keep`` (chain IDs the image store still uses),
        nor by a container layer or image mount. Returns the removed chain IDs."""
        infos = {i.name: i for i in self.driver.walk()}
        needed: set[str] = set()

        def mark(cid: str | None) -> None:
            while cid and cid not in needed:
                needed.add(cid)
                info = infos.get(cid)
                cid = info.parent if info else None

        for k in keep:
            mark(k)
        for info in infos.values():
            if info.kind != Kind.COMMITTED:
                mark(info.parent)  # containers, image views, extractions in progress
        removed: list[str] = []
        victims = {n for n, i in infos.items() if i.kind == Kind.COMMITTED and i.labels.get(L_LAYER) == "1"
                   and n not in needed}
        while victims:
            parents_of_victims = {infos[v].parent for v in victims}
            leaves = [v for v in victims if v not in parents_of_victims]
            if not leaves:
                break
            for v in leaves:
                try:
                    with self._layer_lock(v):
                        self.driver.remove(v)
                    removed.append(v)
                except StorageError as e:
                    log.warning("gc: keeping layer %s: %s", v, e)
                victims.discard(v)
        removed_extra = self.cleanup()
        log.debug("gc removed %d layers and %d leftovers", len(removed), len(removed_extra))
        return removed

    def disk_usage(self, images: Sequence[ImageRef] = ()) -> DiskUsage:
        """Sizes of images (shared vs unique), containers and layers, as ``system df``."""
        infos = {i.name: i for i in self.driver.walk()}
        layers = {n: self._layer_of(i) for n, i in infos.items()
                  if i.kind == Kind.COMMITTED and i.labels.get(L_LAYER) == "1"}

        def chain(cid: str | None) -> list[str]:
            out = []
            while cid and cid in infos:
                out.append(cid)
                cid = infos[cid].parent
            return out

        image_layers = {img.id: chain(img.top_chain_id) for img in images}
        users: dict[str, set[str]] = {n: set() for n in layers}
        for img_id, cids in image_layers.items():
            for c in cids:
                if c in users:
                    users[c].add(img_id)
        containers = self.container_layers()
        cont_users: dict[str, int] = dict.fromkeys(layers, 0)
        cont_usage = []
        for c in containers:
            for cid in chain(c.parent):
                if cid in cont_users:
                    cont_users[cid] += 1
            img = c.labels.get(L_IMAGE)
            if img is None:
                img = next((i.id for i in images if i.top_chain_id == c.parent), None)
            try:
                size = self.container_usage(c.id).size
            except StorageError:
                size = 0
            cont_usage.append(ContainerUsage(c.id, c.parent, img, size))
        img_usage = []
        for img in images:
            cids = image_layers[img.id]
            size = sum(layers[c].usage for c in cids if c in layers)
            shared = sum(layers[c].usage for c in cids if c in layers and len(users[c]) > 1)
            ncont = sum(1 for c in cont_usage if c.image_id == img.id
                        or (c.image_id is None and c.parent == img.top_chain_id))
            img_usage.append(ImageUsage(img.id, img.names, img.created, size, shared, size - shared, ncont))
        layer_usage = [LayerUsage(n, lay.diff_id, lay.usage, len(users[n]), cont_users[n])
                       for n, lay in sorted(layers.items(), key=lambda kv: kv[1].created)]
        return DiskUsage(img_usage, cont_usage, layer_usage)


def apply_target(mounts: Sequence[Mount]) -> Path:
    """Where a layer diff is extracted for a prepared snapshot: a bind mount's source, or an
    overlay's upperdir (containerd applies straight to the upper dir the same way)."""
    if len(mounts) == 1:
        m = mounts[0]
        if m.type == "bind":
            return Path(m.source)
        upper = m.option("upperdir")
        if upper:
            return Path(upper)
    raise StorageError(f"cannot apply a layer to mounts {mounts!r}")


def _read_count(p: Path) -> int:
    try:
        return int(p.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


@contextlib.contextmanager
def _try_lock(path: Path) -> Iterator[bool]:
    """Hold ``path``'s flock if nobody else does (yields False when busy)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:  # its directory is gone: nobody can hold it
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _lock_free(path: Path) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def open_store(ctx: Context | None = None, driver: str | None = None) -> LayerStore:
    """The layer store of ``ctx`` (root, runroot, --storage-driver)."""
    return LayerStore(ctx, driver=driver)
