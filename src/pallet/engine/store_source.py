"""The engine's ImageSource over the real image store and layer storage.

Names resolve through the store (podman's lookup order); pulls go through
``pallet.images.remote`` (registries.conf, auth, policy); a container's root filesystem is a
writable layer in ``pallet.storage`` on the image's top layer, unpacked first if the image
arrived without its layers on disk (``load``, ``import``, ``commit``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pallet.engine.errors import ImagePullFailed, NoSuchImage
from pallet.engine.image_source import ImageInfo
from pallet.errors import NotFound

if TYPE_CHECKING:
    from pallet.context import Context
    from pallet.storage.layers import LayerStore
    from pallet.store import Image, Store


class StoreImageSource:
    """pallet.store + pallet.storage behind the engine's ImageSource seam."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._layers: LayerStore | None = None
        #: pull progress: set by the CLI (a ``pallet.cli.progress`` display); None pulls quietly.
        #: Its ``close()`` is called when each pull ends, so a terminal display stops there.
        self.progress: Any = None

    # -- helpers ---------------------------------------------------------------------------------
    def _store(self) -> Store:
        from pallet.store import Store

        return Store.open(self.ctx)

    @property
    def layers(self) -> LayerStore:
        if self._layers is None:
            from pallet.storage.layers import LayerStore

            self._layers = LayerStore(self.ctx)
        return self._layers

    def _info(self, store: Store, image: Image) -> ImageInfo:
        config = json.loads(store.read_blob(image.id))
        return ImageInfo(id=str(image.id), names=tuple(image.names), config=config,
                         platform=image.platform or "linux/amd64", digest=str(image.manifest_digest),
                         size=image.size)

    # -- images ----------------------------------------------------------------------------------
    def resolve(self, name: str, pull_policy: str = "missing", platform: str | None = None) -> ImageInfo:
        from pallet.store import ImageNotFound

        if pull_policy != "always":
            with self._store() as store:
                try:
                    image = store.resolve(name).image
                except ImageNotFound:
                    image = None
                if image is not None and pull_policy in ("missing", "never"):
                    return self._info(store, image)
                if image is None and pull_policy == "never":
                    raise NoSuchImage(f"{name}: image not known (pull policy is never)")
        return self._pull(name, platform, have_local=pull_policy == "newer")

    def _pull(self, name: str, platform: str | None, have_local: bool) -> ImageInfo:
        from pallet.errors import InvalidReference, RegistryError
        from pallet.images import remote

        progress = self.progress
        if progress is not None:
            progress.message(f"Trying to pull {name}...")
        try:
            try:
                result = remote.pull(name, self.ctx, platform=platform, progress=progress)
            finally:
                if progress is not None:
                    progress.close()
        except RegistryError as e:
            if have_local:  # "newer": a registry we cannot reach means use what we have
                with self._store() as store:
                    return self._info(store, store.resolve(name).image)
            if name not in str(e):  # say which image the failure is about
                raise ImagePullFailed(f"pulling image {name}: {e}") from e
            raise
        except InvalidReference:
            raise
        with self._store() as store:
            return self._info(store, store.get(result.image.id))

    def lookup(self, image_id: str) -> ImageInfo | None:
        with self._store() as store:
            try:
                return self._info(store, store.get(image_id))
            except NotFound:
                return None

    # -- container root filesystems --------------------------------------------------------------
    def prepare_rootfs(self, container_id: str, image: ImageInfo, *, volatile: bool = False) -> str:
        from pallet.errors import StorageError
        from pallet.images.unpack import ensure_unpacked

        layers = self.layers
        try:
            layers.container_layer(container_id)
        except (NotFound, StorageError):
            with self._store() as store:
                top = ensure_unpacked(store, store.get(image.id), layers, self.ctx)
            layers.create_container_layer(container_id, top)
        path = layers.container_mount_path(container_id)
        if path is not None:
            return str(path)
        return str(layers.mount_container(container_id, volatile=volatile))

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
        with self._store() as store:
            store.add_holder(image_id, container_id)

    def unhold(self, image_id: str, container_id: str) -> None:
        with self._store() as store:
            store.remove_holder(image_id, container_id)

    def commit(self, container_id: str, parent: ImageInfo, config: dict[str, Any],
               names: list[str]) -> ImageInfo:
        from pallet.images.commit import add_layer

        with self._store() as store:
            parent_image = store.get(parent.id) if parent.id else None
            with self.layers.container_diff(container_id) as diff:
                image = add_layer(store, parent_image, diff, config, names)
            return self._info(store, image)

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

