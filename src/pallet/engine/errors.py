"""The engine's finer errors, all under :class:`pallet.errors.EngineError`.

Exit statuses follow docker and podman: 125 for the engine's own failures, 126 when the
container's command cannot be executed, 127 when it does not exist; ``podman rm`` uses 1 for
"no such container" and 2 for "container is running".
"""

from __future__ import annotations

from pallet.errors import EngineError, NotFound


class NoSuchContainer(EngineError, NotFound):
    """No container has this name, ID or unique ID prefix."""


class NoSuchVolume(EngineError, NotFound):
    """No volume has this name."""


class NoSuchImage(EngineError, NotFound):
    """The image is not in local storage and the pull policy forbids (or failed) fetching it."""


class ContainerStateError(EngineError):
    """The container is in the wrong state for the operation (running, paused, being removed)."""


class ContainerRunning(ContainerStateError):
    """Removing a running container without force."""

    exit_code = 2


class VolumeInUse(EngineError):
    """A volume cannot be removed while a container uses it."""

    exit_code = 2


class NameConflict(EngineError):
    """A container or volume name is already taken."""


class CommandNotFound(EngineError):
    """The container's command does not exist (docker's 127)."""

    exit_code = 127


class CommandNotExecutable(EngineError):
    """The container's command exists but cannot be executed (docker's 126)."""

    exit_code = 126


class RuntimeNotFound(EngineError):
    """The OCI runtime asked for is not installed."""


class PlatformMismatch(EngineError):
    """The image was built for another OS or architecture."""


class ImagePullFailed(EngineError):
    """Pulling the container's image failed (the message names the image and the cause)."""
