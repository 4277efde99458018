"""AppArmor and SELinux: applied when the host has them, a clear error when a config asks for one it lacks.

Both are set through procfs attributes the kernel reads at the next execve, so they are the last
thing the init does before exec.
"""

from __future__ import annotations

import os

from pallet.errors import RuntimeFailure


def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled", "rb") as f:
            return f.read().strip() == b"Y" and os.path.isdir("/sys/kernel/security/apparmor")
    except OSError:
        return False


def selinux_enabled() -> bool:
    try:
        with open("/proc/filesystems", "rb") as f:
            if b"selinuxfs" not in f.read():
                return False
    except OSError:
        return False
    return os.path.isfile("/sys/fs/selinux/enforce")


def check(apparmor_profile: str, selinux_label: str) -> None:
    """Before fork: raise RuntimeFailure if the config asks for an LSM the host lacks."""
    if apparmor_profile and apparmor_profile != "unconfined" and not apparmor_enabled():
        raise RuntimeFailure(
            f"apparmor profile {apparmor_profile!r} requested but AppArmor is not enabled on this host"
        )
    if selinux_label and not selinux_enabled():
        raise RuntimeFailure(
            f"SELinux label {selinux_label!r} requested but SELinux is not enabled on this host"
        )


def _write_attr(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def apply_exec_labels(apparmor_profile: str, selinux_label: str) -> None:
    """In the init, just before exec: set the AppArmor exec profile / SELinux exec label."""
    if apparmor_profile and apparmor_enabled():
        path = "/proc/thread-self/attr/apparmor/exec"
        if not os.path.exists(path):
            path = "/proc/thread-self/attr/exec"
        try:
            _write_attr(path, f"exec {apparmor_profile}")
        except OSError as e:
            raise RuntimeFailure(f"apparmor profile {apparmor_profile!r}: {e.strerror}") from None
    if selinux_label and selinux_enabled():
        try:
            _write_attr("/proc/thread-self/attr/exec", selinux_label)
        except OSError as e:
            raise RuntimeFailure(f"SELinux label {selinux_label!r}: {e.strerror}") from None


def apply_mount_label(options: list[str], mount_label: str) -> list[str]:
    """Add the SELinux context= option to a mount's data when the host has SELinux."""
    if not mount_label or not selinux_enabled():
        return options
    return [*options, f'context="{mount_label}"']
