"""AppArmor and SELinux: applied when the host has them, a clear error when a config asks for one it lacks.

"""

from __future__ import annotations


def check(apparmor_profile: str, selinux_label: str) -> None:
    """Before fork: raise RuntimeFailure if the config asks for an LSM the host lacks."""
    raise NotImplementedError


def apply_exec_labels(apparmor_profile: str, selinux_label: str) -> None:
    """In the init, just before exec: set the AppArmor exec profile / SELinux exec label."""
    raise NotImplementedError


def apply_mount_label(options: list[str], mount_label: str) -> list[str]:
    """Add the SELinux context= option to a mount's data when the host has SELinux."""
    raise NotImplementedError
