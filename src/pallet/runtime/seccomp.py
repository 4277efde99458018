"""Seccomp: the whole runtime-spec profile language, compiled and loaded into the container's init.

INTERFACE STUB: the lifecycle code calls exactly these; the seccomp work fills them in.
"""

from __future__ import annotations

from typing import Any


class Filter:
    """A compiled profile, ready to load. Made before fork so errors surface in ``create``."""

    #: the profile asks for SCMP_ACT_NOTIFY: load() returns a listener fd to send to listenerPath
    wants_notify: bool


def compile_profile(profile: dict[str, Any]) -> Filter:
    """Validate and compile ``linux.seccomp``. Raises RuntimeFailure naming the bad part."""
    raise NotImplementedError


def load(filt: Filter) -> int | None:
    """Install the filter in the calling process (after no_new_privs, just before exec).

    Returns the notify listener fd when the profile has SCMP_ACT_NOTIFY, else None.
    """
    raise NotImplementedError


def send_listener(filt: Filter, listener_fd: int, listener_path: str, state: dict[str, Any],
                  metadata: str = "") -> None:
    """Send the listener fd with the container state to ``listenerPath`` (runtime-spec's protocol)."""
    raise NotImplementedError


def features() -> dict[str, Any]:
    """The ``linux.seccomp`` object of ``pallet-runtime features``."""
    raise NotImplementedError
