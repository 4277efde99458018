"""Linux capabilities: the five sets of runtime-spec ``process.capabilities``.

Order of use in the container's init: drop_bounding() while still root, then (after setuid with
keep_caps) set_sets(), then set_ambient().
"""

from __future__ import annotations


def parse(names: list[str] | None) -> set[int]:
    """Capability names ("CAP_SYS_ADMIN") to numbers; an unknown name raises RuntimeFailure."""
    raise NotImplementedError


def keep_caps(on: bool) -> None:
    """prctl(PR_SET_KEEPCAPS) so permitted caps survive a setuid away from 0."""
    raise NotImplementedError


def drop_bounding(keep: set[int]) -> None:
    """Drop every capability not in ``keep`` from the bounding set."""
    raise NotImplementedError


def set_sets(effective: set[int], permitted: set[int], inheritable: set[int]) -> None:
    """capset(2) for the calling thread."""
    raise NotImplementedError


def set_ambient(ambient: set[int]) -> None:
    """Clear the ambient set and raise these (each must be permitted and inheritable)."""
    raise NotImplementedError


def all_known() -> list[str]:
    """Every capability name this kernel knows (for ``features`` and ``--privileged``)."""
    raise NotImplementedError
