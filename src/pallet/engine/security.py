"""Docker's confinement defaults: capabilities, seccomp, masked and read-only paths, LSM options.

``seccomp_default.json`` is moby's default profile, copied unchanged from
github.com/moby/profiles/seccomp v0.2.3 (vendored in moby/moby as
vendor/github.com/moby/profiles/seccomp/default.json; Apache-2.0, Copyright The Moby Authors).
It is a template: :func:`compose_seccomp` turns it into a runtime-spec ``linux.seccomp`` object
for one container, keeping the rules whose ``includes``/``excludes`` (architecture, capabilities,
minimum kernel) match, as moby's ``setupSeccomp`` does.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

from pallet.errors import EngineError, UsageError
from pallet.runtime.capnames import NAMES as CAP_NAMES

TYPE_CHECKING = False  # typing costs an import on the hot path: annotations are strings
if TYPE_CHECKING:
    from typing import Any

#: docker's default capability set (moby daemon/pkg/oci/caps/defaults.go)
DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

#: docker's masked paths (moby daemon/pkg/oci/defaults.go)
MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


@cache
def host_caps() -> list[str]:
    """Every capability this kernel knows and pallet itself may grant (for --privileged and
    --cap-add ALL): a container cannot get a capability missing from our own bounding set."""
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = len(CAP_NAMES) - 1
    bounding = (1 << (last + 1)) - 1
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapBnd:"):
                bounding = int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return [c for i, c in enumerate(CAP_NAMES[: last + 1]) if bounding & (1 << i)]


def normalize_cap(name: str) -> str:
    n = name.strip().upper()
    if n == "ALL":
        return n
    if not n.startswith("CAP_"):
        n = "CAP_" + n
    if n not in CAP_NAMES:
        raise UsageError(f"unknown capability {name!r}")
    return n


def capabilities(add: list[str], drop: list[str], privileged: bool) -> list[str]:
    """docker's TweakCapabilities: defaults, minus drops (ALL drops everything), plus adds."""
    if privileged:
        return list(host_caps())
    adds = [normalize_cap(c) for c in add]
    drops = [normalize_cap(c) for c in drop]
    if "ALL" in adds:
        base = list(host_caps())
        return [c for c in base if c not in drops]
    base = [] if "ALL" in drops else [c for c in DEFAULT_CAPS if c not in drops]
    known = set(host_caps())
    for c in adds:
        if c not in known:
            raise UsageError(
                f"cannot add capability {c}: pallet does not hold it itself (it is not in "
                "this process's bounding set)"
            )
        if c not in base:
            base.append(c)
    return [c for c in base if c in known]


def masked_paths() -> list[str]:
    paths = list(MASKED_PATHS)
    try:
        cpus = sorted(os.listdir("/sys/devices/system/cpu"))
    except OSError:
        cpus = []
    for cpu in cpus:
        if cpu.startswith("cpu") and cpu[3:].isdigit():
            p = f"/sys/devices/system/cpu/{cpu}/thermal_throttle"
            if os.path.exists(p):
                paths.append(p)
    return paths


# -- seccomp -------------------------------------------------------------------------------------

_GO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "i686": "x86",
    "i386": "x86",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64",
    "loongarch64": "loong64",
}
_SECCOMP_ARCH = {
    "amd64": "SCMP_ARCH_X86_64",
    "x86": "SCMP_ARCH_X86",
    "arm64": "SCMP_ARCH_AARCH64",
    "arm": "SCMP_ARCH_ARM",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "s390x": "SCMP_ARCH_S390X",
    "riscv64": "SCMP_ARCH_RISCV64",
    "mips64": "SCMP_ARCH_MIPS64",
    "loong64": "SCMP_ARCH_LOONGARCH64",
}


def native_arch() -> str:
    """The host's architecture as Go and OCI spell it (amd64, arm64 ...)."""
    m = os.uname().machine
    return _GO_ARCH.get(m, m)


def _kernel_at_least(version: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        out = []
        for p in v.split(".")[:2]:
            digits = "".join(ch for ch in p if ch.isdigit())
            out.append(int(digits or 0))
        return tuple(out)

    return parts(os.uname().release) >= parts(version)


def compose_seccomp(profile: dict[str, Any], bounding_caps: list[str]) -> dict[str, Any]:
    """A docker-format profile (archMap, includes/excludes) → runtime-spec ``linux.seccomp``."""
    if not profile.get("defaultAction") and not profile.get("syscalls"):
        return {}
    if profile.get("architectures") and profile.get("archMap"):
        raise EngineError("seccomp profile: both 'architectures' and 'archMap' are set; use one")
    arch = native_arch()
    out: dict[str, Any] = {
        k: v for k, v in profile.items() if k not in ("archMap", "syscalls", "architectures")
    }
    archs = list(profile.get("architectures") or [])
    sarch = _SECCOMP_ARCH.get(arch)
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == sarch:
            archs.append(sarch)
            archs.extend(entry.get("subArchitectures") or [])
            break
    if archs:
        out["architectures"] = archs
    caps = set(bounding_caps)
    syscalls = []
    for call in profile.get("syscalls") or []:
        names = call.get("names") or ([call["name"]] if call.get("name") else [])
        ex = call.get("excludes") or {}
        inc = call.get("includes") or {}
        if ex.get("arches") and arch in ex["arches"]:
            continue
        if ex.get("caps") and any(c in caps for c in ex["caps"]):
            continue
        if ex.get("minKernel") and _kernel_at_least(ex["minKernel"]):
            continue
        if inc.get("arches") and arch not in inc["arches"]:
            continue
        if inc.get("caps") and not all(c in caps for c in inc["caps"]):
            continue
        if inc.get("minKernel") and not _kernel_at_least(inc["minKernel"]):
            continue
        rule: dict[str, Any] = {"names": names, "action": call["action"]}
        for key in ("args", "errnoRet"):
            if call.get(key) is not None:
                rule[key] = call[key]
        syscalls.append(rule)
    out["syscalls"] = syscalls
    return out


@cache
def _default_template() -> dict[str, Any]:
    with open(Path(__file__).with_name("seccomp_default.json"), encoding="utf-8") as f:
        return json.load(f)


def default_seccomp(bounding_caps: list[str]) -> dict[str, Any]:
    """docker's default seccomp profile for a container with these bounding capabilities."""
    return compose_seccomp(_default_template(), bounding_caps)


def load_seccomp(path: str, bounding_caps: list[str]) -> dict[str, Any]:
    """A user's profile file (docker's format or runtime-spec's), composed like the default."""
    try:
        with open(path, encoding="utf-8") as f:
            profile = json.load(f)
    except OSError as e:
        raise UsageError(f"cannot read seccomp profile {path}: {e.strerror}") from None
    except ValueError as e:
        raise UsageError(f"seccomp profile {path} is not valid JSON: {e}") from None
    if not isinstance(profile, dict):
        raise UsageError(f"seccomp profile {path} must be a JSON object")
    return compose_seccomp(profile, bounding_caps)


def parse_security_opts(opts: list[str]) -> dict[str, Any]:
    """``seccomp=FILE|unconfined``, ``no-new-privileges[=true]``, ``apparmor=P``, ``label=...``."""
    out: dict[str, Any] = {"seccomp": None, "no_new_privileges": False, "apparmor": None, "label": []}
    for raw in opts:
        key, sep, value = raw.partition("=")
        if not sep:
            key, sep, value = raw.partition(":")  # docker's legacy colon form
        key = key.strip()
        if key == "no-new-privileges":
            out["no_new_privileges"] = value.strip().lower() in ("", "true", "1")
        elif key == "seccomp":
            if not value:
                raise UsageError("security-opt seccomp needs a value: a profile file or 'unconfined'")
            out["seccomp"] = value
        elif key == "apparmor":
            out["apparmor"] = value
        elif key == "label":
            if value not in ("disable", "nested") and value.split(":", 1)[0] not in (
                "user",
                "role",
                "type",
                "level",
                "filetype",
            ):
                raise UsageError(
                    f"invalid security-opt label {value!r}: use disable, user:, role:, type:,"
                    " level: or filetype:"
                )
            out["label"].append(value)
        elif key == "mask" or key == "unmask" or key == "proc-opts":
            out.setdefault(key, value)
        else:
            raise UsageError(
                f"invalid security-opt {raw!r}: use seccomp=, no-new-privileges, apparmor= or label="
            )
    return out


def apparmor_enabled() -> bool:
    try:
        return Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")
