"""The one door to the cgroups and seccomp packages, which are built in parallel behind stubs.

Every call from the lifecycle goes through :func:`call`: a ``NotImplementedError`` from them means
"not available yet" (logged at debug) and yields ``default``, so containers still run without
resource limits or syscall filtering until the implementation lands. Anything else propagates.
"""

from __future__ import annotations

from pallet.errors import RuntimeFailure
from pallet.runtime import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Unavailable(RuntimeFailure):
    """Raised by :func:`require` when the feature is still a stub."""


def call(fn: Callable[..., Any], *args: Any, default: Any = None, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        log.debug(f"{getattr(fn, '__qualname__', fn)}: not available yet")
        return default


def require(fn: Callable[..., Any], *args: Any, what: str = "", **kwargs: Any) -> Any:
    """Like call(), but the caller needs the result: raises Unavailable naming ``what``."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise Unavailable(
            f"{what or getattr(fn, '__qualname__', fn)} is not available in this build"
        ) from None


def cgroup_manager(cgroups_path: str | None, container_id: str) -> Any:
    """The cgroups Manager, or None while the package is a stub."""
    from pallet.runtime import cgroups

    return call(cgroups.manager, cgroups_path, container_id)
