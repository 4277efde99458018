"""The engine's ImageSource over the real image store and layer storage.

Names resolve through the store (podman's lookup order); pulls go through
``pallet.images.remote`` (registries.conf, auth, policy); a container's root filesystem is a
writable layer in ``pallet.storage`` on the image's top layer, unpacked first if the image
arrived without its layers on disk (``load``, ``import``, ``commit``).

``pallet run`` calls this several times for one container (resolve, hold, lookup, prepare,
remove, unhold), so a source keeps one store connection for the process (opening one costs
PRAGMAs, a schema check, and a WAL checkpoint with fsyncs at close) and remembers the images it
has read (their config JSON and top layer). Forked children (``cp``, ``export``) get a source
of their own: :func:`pallet.engine.containers.image_source` is per process.
"""

from __future__ import annotations

from pallet.engine.errors import ImagePullFailed, NoSuchImage
from pallet.engine.image_source import ImageInfo
from pallet.errors import NotFound

TYPE_CHECKING = False  # typing costs an import on pallet run's path; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from pallet.context import Context
    from pallet.storage.layers import LayerStore
    from pallet.store import Image, Store


class StoreImageSource:
    """pallet.store + pallet.storage behind the engine's ImageSource seam."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._layers: LayerStore | None = None
        self._open_store: Store | None = None
        #: image ID -> (ImageInfo, top layer chain ID) of images read by this process
        self._known: dict[str, tuple[ImageInfo, str | None]] = {}
        #: pull progress: set by the CLI (a ``pallet.cli.progress`` display); None pulls quietly.
        #: Its ``close()`` is called when each pull ends, so a terminal display stops there.
        self.progress: Any = None

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The process's connection to the image store (opened on first use, never closed: it
        writes no blobs, so it holds no lease)."""
        if self._open_store is None:
            from pallet.store import Store

            self._open_store = Store.open(self.ctx)
        return self._open_store

    @property
    def layers(self) -> LayerStore:
        if self._layers is None:
            from pallet.storage.layers import LayerStore

            self._layers = LayerStore(self.ctx, recover=False)  # run's path: no crash sweep
        return self._layers

    def _info(self, image: Image) -> ImageInfo:
        key = str(image.id)
        known = self._known.get(key)
        if known is not None and known[0].names == tuple(image.names):
            return known[0]
        import json

        config = json.loads(self.store.read_blob(image.id))
        info = ImageInfo(id=key, names=tuple(image.names), config=config,
                         platform=image.platform or "linux/amd64", digest=str(image.manifest_digest),
                         size=image.size)
        self._known[key] = (info, image.top_layer or None)
        return info

    # -- images ----------------------------------------------------------------------------------
    def resolve(self, name: str, pull_policy: str = "missing", platform: str | None = None) -> ImageInfo:
        from pallet.store import ImageNotFound

        if pull_policy != "always":
            try:
                image = self.store.resolve(name).image
            except ImageNotFound:
                image = None
            if image is not None and pull_policy in ("missing", "never"):
                return self._info(image)
            if image is None and pull_policy == "never":
                raise NoSuchImage(f"{name}: image not known (pull policy is never)")
        return self._pull(name, platform, have_local=pull_policy == "newer")

    def _pull(self, name: str, platform: str | None, have_local: bool) -> ImageInfo:
        from pallet.errors import RegistryError
        from pallet.images import remote

        progress = self.progress
        if progress is not None:
            self._announce(name, progress)
        try:
            try:
                result = remote.pull(name, self.ctx, platform=platform, progress=progress)
            finally:
                if progress is not None:
                    progress.close()
        except RegistryError as e:
            if have_local:  # "newer": a registry we cannot reach means use what we have
                return self._info(self.store.resolve(name).image)
            if name not in str(e):  # say which image the failure is about
                raise ImagePullFailed(f"pulling image {name}: {e}") from e
            raise
        return self._info(self.store.get(result.image.id))

    def _announce(self, name: str, progress: Any) -> None:
        """podman's "Trying to pull REGISTRY/REPO:TAG..." (the pull itself announces each
        candidate when a short name has several)."""
        try:
            from pallet.config import registries

            candidates = registries.load(self.ctx).resolve(name)
        except Exception:  # the pull reports a bad name or configuration itself
            return
        if len(candidates) == 1:
            progress.message(f"Trying to pull {candidates[0]}...")

    def lookup(self, image_id: str) -> ImageInfo | None:
        try:
            return self._info(self.store.get(image_id))
        except NotFound:
            return None

    # -- container root filesystems --------------------------------------------------------------
    def prepare_rootfs(self, container_id: str, image: ImageInfo, *, volatile: bool = False) -> str:
        from pallet.errors import StorageError

        layers = self.layers
        try:
            layers.container_layer(container_id)
        except (NotFound, StorageError):
            layers.create_container_layer(container_id, self._top_layer(image.id))
        else:  # a layer made earlier may be mounted already
            path = layers.container_mount_path(container_id)
            if path is not None:
                return str(path)
        return str(layers.mount_container(container_id, volatile=volatile))

    def _top_layer(self, image_id: str) -> str | None:
        """The image's top layer chain ID, its layers unpacked first if storage lacks them."""
        known = self._known.get(image_id)
        if known is not None and (known[1] is None or self.layers.exists(known[1])):
            return known[1]
        from pallet.images.unpack import ensure_unpacked

        image = self.store.get(image_id)
        return ensure_unpacked(self.store, image, self.layers, self.ctx)

    def release_rootfs(self, container_id: str) -> None:
        from pallet.errors import StorageError

        try:
            self.layers.unmount_container(container_id, force=True)
        except (NotFound, StorageError):
            pass

    def remove_rootfs(self, container_id: str) -> None:
        from pallet.errors import StorageError

        try:
            self.layers.remove_container_layer(container_id)
        except (NotFound, StorageError) as e:
            if not isinstance(e, NotFound) and self._exists(container_id):
                raise

    def _exists(self, container_id: str) -> bool:
        try:
            self.layers.container_layer(container_id)
            return True
        except Exception:
            return False

    def rootfs_size(self, container_id: str) -> int:
        try:
            return self.layers.container_usage(container_id).size
        except Exception:
            return 0

    def hold(self, image_id: str, container_id: str) -> None:
        self.store.add_holder(image_id, container_id)

    def unhold(self, image_id: str, container_id: str) -> None:
        self.store.remove_holder(image_id, container_id)

    def commit(self, container_id: str, parent: ImageInfo, config: dict[str, Any],
               names: list[str]) -> ImageInfo:
        from pallet.images.commit import add_layer
        from pallet.store import Store

        with Store.open(self.ctx) as store:  # its own: writing blobs takes a lease, closing ends it
            parent_image = store.get(parent.id) if parent.id else None
            with self.layers.container_diff(container_id) as diff:
                image = add_layer(store, parent_image, diff, config, names)
        return self._info(self.store.get(image.id))

    def graph_driver(self, container_id: str) -> dict[str, Any]:
        layers = self.layers
        data: dict[str, Any] = {}
        try:
            mounts = layers.container_mounts(container_id)
        except Exception:
            mounts = []
        for m in mounts:
            for key, name in (("lowerdir", "LowerDir"), ("upperdir", "UpperDir"), ("workdir", "WorkDir")):
                value = m.option(key)
                if value:
                    data[name] = value
        merged = layers.container_mount_path(container_id)
        if merged is not None:
            data["MergedDir"] = str(merged)
        return {"Name": layers.driver.name, "Data": data}
