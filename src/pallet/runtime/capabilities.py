"""Linux capabilities: the five sets of runtime-spec ``process.capabilities``.

Order of use in the container's init: drop_bounding() while still root, then (after setuid with
keep_caps) set_sets(), then set_ambient().
"""

from __future__ import annotations

from pallet.errors import RuntimeFailure
from pallet.runtime import syscalls as sc
from pallet.runtime.capnames import NAMES

_BY_NAME = {n: i for i, n in enumerate(NAMES)}


_last: int | None = None


def last_cap() -> int:
    """The kernel's highest capability number (cached: read before pivot_root)."""
    global _last
    if _last is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
                _last = int(f.read())
        except OSError:
            _last = len(NAMES) - 1
    return _last


def parse(names: list[str] | None) -> set[int]:
    """Capability names ("CAP_SYS_ADMIN") to numbers; an unknown name raises RuntimeFailure.

    A name this runtime knows but the kernel does not is skipped, as runc does (with a warning)."""
    out: set[int] = set()
    last = None
    for n in names or []:
        num = _BY_NAME.get(n.upper() if isinstance(n, str) else n)
        if num is None:
            raise RuntimeFailure(f"unknown capability {n!r}")
        if last is None:
            last = last_cap()
        if num <= last:
            out.add(num)
    return out


def grantable(caps: dict[str, list[str]], new_userns: bool) -> dict[str, list[str]]:
    """The config's capability sets without the values that cannot be granted here, each one
    logged as a warning: runtime-spec says such values "MUST be logged as a warning" and runtimes
    "SHOULD NOT fail" (e.g. in a restricted environment). Left out: names that are no
    capability, ones this kernel lacks, and, unless the container has a user namespace of its
    own (whose bounding set starts full), ones outside the runtime's own bounding set (this host
    withholds CAP_SYS_RESOURCE even from root: runc fails such a container with EPERM)."""
    from pallet.runtime import log

    last = last_cap()
    warned: set[str] = set()
    out: dict[str, list[str]] = {}
    for kind, names in caps.items():
        if not isinstance(names, list):
            out[kind] = names
            continue
        keep = []
        for n in names:
            num = _BY_NAME.get(n.upper()) if isinstance(n, str) else None
            why = ""
            if num is None:
                why = "is not a capability"
            elif num > last:
                why = "is not known to this kernel"
            elif not new_userns and not _in_bounding(num):
                why = "is not in the runtime's bounding set"
            if not why:
                keep.append(n)
            elif n not in warned:
                warned.add(n)
                log.warning(f"capability {n!r} {why}: not granted")
        out[kind] = keep
    bounding = out.get("bounding")
    if isinstance(bounding, list) and isinstance(out.get("inheritable"), list):
        # capset(2) refuses an inheritable capability outside the (new) bounding set
        for n in out["inheritable"]:
            if n not in bounding and n not in warned:
                warned.add(n)
                log.warning(f"capability {n!r} is inheritable but not in the bounding set: not inheritable")
        out["inheritable"] = [n for n in out["inheritable"] if n in bounding]
    return out


def _in_bounding(num: int) -> bool:
    try:
        return sc.prctl(sc.PR_CAPBSET_READ, num) == 1
    except OSError:
        return False


def mask(caps: set[int]) -> int:
    m = 0
    for c in caps:
        m |= 1 << c
    return m


def keep_caps(on: bool) -> None:
    """prctl(PR_SET_KEEPCAPS) so permitted caps survive a setuid away from 0."""
    sc.prctl(sc.PR_SET_KEEPCAPS, 1 if on else 0)


def drop_bounding(keep: set[int]) -> None:
    """Drop every capability not in ``keep`` from the bounding set."""
    for c in range(last_cap() + 1):
        if c not in keep:
            try:
                sc.prctl(sc.PR_CAPBSET_DROP, c)
            except OSError as e:
                if e.errno != 22:  # EINVAL: the kernel does not know it
                    raise


def set_sets(effective: set[int], permitted: set[int], inheritable: set[int]) -> None:
    """capset(2) for the calling thread."""
    sc.capset(mask(effective), mask(permitted), mask(inheritable))


def set_ambient(ambient: set[int]) -> None:
    """Clear the ambient set and raise these (each must be permitted and inheritable)."""
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    for c in sorted(ambient):
        try:
            sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, c)
        except OSError:
            # runc ignores ambient caps that are not both permitted and inheritable
            continue


def all_known() -> list[str]:
    """Every capability name this kernel knows (for ``features`` and ``--privileged``)."""
    return NAMES[: last_cap() + 1]
