"""The engine's one seam to images and layer storage: :class:`ImageSource`.

The engine never reads the image store or drives a graph driver itself. It asks an ImageSource
to resolve a name (pulling per the pull policy), to give a container a mounted copy-on-write
root filesystem, to release or delete it, to protect an image from ``rmi`` while a container
uses it, and to turn a container's changes into a new image (``commit``).

Which implementation is used: ``$PALLET_IMAGE_SOURCE`` (``module:callable``, called with the
:class:`~pallet.context.Context`) if set, else :data:`DEFAULT_FACTORY`: the image store + layer
storage implementation, :class:`pallet.engine.store_source.StoreImageSource`, which is what
``pallet`` and the test suite use. The variable is the seam for embedding pallet's engine over
another image store.
"""

from __future__ import annotations

import importlib
import os

from pallet.errors import EngineError
from pallet.records import dataclass, field

TYPE_CHECKING = False  # typing costs an import on pallet run's path; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from pallet.context import Context

#: pull policies as podman and docker spell them
PULL_POLICIES = ("always", "missing", "never", "newer")

#: ``module:callable`` used when $PALLET_IMAGE_SOURCE is unset (the store+storage source)
DEFAULT_FACTORY = "pallet.engine.store_source:StoreImageSource"


@dataclass(frozen=True)
class ImageInfo:
    """What the engine needs to know about an image."""

    #: docker's image ID: "sha256:<hex>" of the image config blob
    id: str
    #: names that point at it, normalised ("localhost/small:latest"); may be empty
    names: tuple[str, ...]
    #: the OCI image config JSON as a dict (architecture, os, config{Env, Cmd ...}, rootfs, history)
    config: dict[str, Any] = field(hash=False, compare=False)
    #: "os/arch[/variant]", e.g. "linux/amd64"
    platform: str = "linux/amd64"
    #: manifest digest ("sha256:..."), for inspect's RepoDigests; None if unknown
    digest: str | None = None
    #: unpacked size in bytes (0 if unknown)
    size: int = 0


class ImageSource:
    """Images and container root filesystems, as the engine uses them (a protocol: implementations
    need not inherit from it, they only provide these methods).

    Every method is safe to call from several processes at once (the monitor of one container
    and the CLI removing another), and every "remove"/"release" is idempotent, so an interrupted
    cleanup can simply be repeated.
    """

    def resolve(self, name: str, pull_policy: str = "missing", platform: str | None = None) -> ImageInfo:
        """Find ``name`` (a reference, an image ID or a unique ID prefix) locally, pulling it as
        ``pull_policy`` says ("always", "missing", "never", "newer"). ``platform`` ("linux/arm64")
        selects from a multi-platform index; None means the host's.
        Raises :class:`pallet.engine.errors.NoSuchImage` (or the store's/registry's own error)."""
        ...

    def lookup(self, image_id: str) -> ImageInfo | None:
        """The image with this exact ID, without pulling; None if it no longer exists."""
        ...

    def prepare_rootfs(self, container_id: str, image: ImageInfo, *, volatile: bool = False) -> str:
        """Create the container's writable layer on top of ``image`` if it does not exist yet,
        mount it, and return the mounted root filesystem's absolute path. Called at every start;
        calling it while already mounted returns the same path.

        ``volatile``: the layer will be deleted when the container exits (``--rm``), so the
        driver may skip durability (overlayfs ``volatile``: no sync on unmount, which otherwise
        flushes the whole backing filesystem), as podman does for ``--rm``."""
        ...

    def release_rootfs(self, container_id: str) -> None:
        """Unmount the container's root filesystem (it stopped); its changes are kept."""
        ...

    def remove_rootfs(self, container_id: str) -> None:
        """Unmount and delete the container's writable layer. Succeeds if it is already gone."""
        ...

    def rootfs_size(self, container_id: str) -> int:
        """Bytes in the container's writable layer (docker's SizeRw); 0 if it has none."""
        ...

    def hold(self, image_id: str, container_id: str) -> None:
        """Record that ``container_id`` uses ``image_id``, so ``rmi`` refuses to remove it."""
        ...

    def unhold(self, image_id: str, container_id: str) -> None:
        """Forget :meth:`hold`. Succeeds if there was no hold."""
        ...

    def commit(
        self, container_id: str, parent: ImageInfo, config: dict[str, Any], names: list[str]
    ) -> ImageInfo:
        """Make a new image: ``parent``'s layers plus the container layer's diff (OCI whiteouts).

        ``config`` is the new image config, complete except that its ``rootfs.diff_ids`` are the
        parent's: the source appends the new layer's diff ID. ``names`` are what the user typed
        (``myimage:v2``), to be normalised and tagged; may be empty (a dangling image)."""
        ...

    def graph_driver(self, container_id: str) -> dict[str, Any]:
        """docker inspect's GraphDriver object: {"Name": "overlay", "Data": {"MergedDir": ...}}."""
        ...


def get_image_source(ctx: Context) -> ImageSource:
    """The ImageSource for ``ctx``: $PALLET_IMAGE_SOURCE, else the store+storage default."""
    spec = os.environ.get("PALLET_IMAGE_SOURCE") or DEFAULT_FACTORY
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and module_name.startswith(e.name):
            raise EngineError(
                f"no image source available: module {module_name!r} is not installed"
                " (set PALLET_IMAGE_SOURCE=module:callable)"
            ) from None
        raise
    try:
        factory = getattr(module, attr or "ImageSource")
    except AttributeError:
        raise EngineError(f"image source {spec!r}: {module_name} has no attribute {attr!r}") from None
    return factory(ctx)
