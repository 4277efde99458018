"""Platforms (os/architecture/variant) and choosing one from an index, as containerd does."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pallet.errors import UsageError

_MACHINE_TO_ARCH = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386", "armhf": "arm",
                 "armel": "arm"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/arm64/v8``, ``linux/amd64``, or just ``arm64`` (os defaults to linux)."""
        parts = [p.strip().lower() for p in text.split("/")]
        if not text or any(not p for p in parts) or len(parts) > 3:
            raise UsageError(f"invalid platform {text!r}: expected os/arch[/variant]")
        if len(parts) == 1:
            parts = ["linux", *parts]
        os_, arch = parts[0], _ARCH_ALIASES.get(parts[1], parts[1])
        variant = parts[2] if len(parts) == 3 else ""
        return cls(os_, arch, variant).normalized()

    @classmethod
    def host(cls) -> Platform:
        arch, variant = _MACHINE_TO_ARCH.get(os.uname().machine, (os.uname().machine, ""))
        return cls("linux", arch, variant)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Platform:
        return cls(
            os=str(d.get("os", "")),
            architecture=str(d.get("architecture", "")),
            variant=str(d.get("variant", "") or ""),
            os_version=str(d.get("os.version", "") or ""),
            os_features=tuple(d.get("os.features") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        if self.os_version:
            d["os.version"] = self.os_version
        if self.os_features:
            d["os.features"] = list(self.os_features)
        return d

    def normalized(self) -> Platform:
        """arm64 means arm64/v8 and arm means arm/v7 unless said otherwise (containerd's rule)."""
        variant = self.variant
        if self.architecture == "arm64" and variant in ("", "8"):
            variant = "v8"
        elif self.architecture == "arm" and variant == "":
            variant = "v7"
        elif self.architecture == "arm" and variant in ("5", "6", "7", "8"):
            variant = "v" + variant
        elif self.architecture == "amd64" and variant == "v1":
            variant = ""
        return Platform(self.os, self.architecture, variant, self.os_version, self.os_features)

    def matches(self, other: Platform) -> bool:
        """Whether an image for ``other`` runs on ``self`` (variants: exact after normalising)."""
        a, b = self.normalized(), other.normalized()
        if a.os != b.os or a.architecture != b.architecture:
            return False
        return not b.variant or not a.variant or a.variant == b.variant


def choose(candidates: list[tuple[Platform, Any]], want: Platform) -> Any | None:
    """Pick the entry whose platform best matches ``want``: exact variant first, then any match."""
    want = want.normalized()
    key = (want.os, want.architecture, want.variant)
    for plat, item in candidates:
        p = plat.normalized()
        if (p.os, p.architecture, p.variant) == key:
            return item
    for plat, item in candidates:
        if want.matches(plat):
            return item
    return None
