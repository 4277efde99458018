"""Device access rules: runtime-spec ``linux.resources.devices`` for v1 (devices.allow/deny) and v2
(a BPF_PROG_TYPE_CGROUP_DEVICE program).

Rules are applied in order to an emulator of the kernel's v1 devices controller (default-allow or
default-deny plus exceptions), as runc does. For v1 that gives the shortest list of writes from the
cgroup's current state to the target, so a live update never passes through "deny everything" when
both states are allow-lists, and rules already in place are not dropped and re-added. For v2 the
emulated state is compiled into the eBPF program.
"""

from __future__ import annotations

import sys

from pallet.runtime.cgroups import _files
from pallet.runtime.cgroups._layout import CgroupError

WILDCARD = -1

#: the devices every container may use whatever its config says (runc's AllowedDevices): mknod of
#: any char/block device, /dev/null zero full random urandom tty, ptys, /dev/ptmx and /dev/net/tun
DEFAULT_ALLOWED: tuple[tuple[bool, str, int, int, str], ...] = (
    (True, "c", WILDCARD, WILDCARD, "m"),
    (True, "b", WILDCARD, WILDCARD, "m"),
    (True, "c", 1, 3, "rwm"),
    (True, "c", 1, 8, "rwm"),
    (True, "c", 1, 7, "rwm"),
    (True, "c", 5, 0, "rwm"),
    (True, "c", 1, 5, "rwm"),
    (True, "c", 1, 9, "rwm"),
    (True, "c", 136, WILDCARD, "rwm"),
    (True, "c", 5, 2, "rwm"),
    (True, "c", 10, 200, "rwm"),
)

Rule = tuple[bool, str, int, int, str]  # (allow, type a|b|c, major, minor, access)
_Key = tuple[str, int, int]


def parse_rules(devices: list[dict]) -> list[Rule]:
    """Validate runtime-spec device entries into rules (type defaults to "a", major/minor to *)."""
    rules: list[Rule] = []
    if not isinstance(devices, list):
        raise CgroupError("cgroup devices: linux.resources.devices must be a list")
    for i, d in enumerate(devices):
        if not isinstance(d, dict):
            raise CgroupError(f"cgroup devices: entry {i} is not an object")
        kind = d.get("type") or "a"
        if kind not in ("a", "b", "c"):
            raise CgroupError(f"cgroup devices: entry {i}: type {kind!r} is not a, b or c")
        access = d.get("access") or ""
        if not access or set(access) - set("rwm"):
            raise CgroupError(f"cgroup devices: entry {i}: access {access!r} must be letters of 'rwm'")
        nums = []
        for field in ("major", "minor"):
            v = d.get(field)
            if v is None:
                v = WILDCARD
            if not isinstance(v, int) or isinstance(v, bool) or v < WILDCARD or v > 0xFFFFFFFF:
                raise CgroupError(f"cgroup devices: entry {i}: bad {field} {d.get(field)!r}")
            nums.append(v)
        if not isinstance(d.get("allow"), bool):
            raise CgroupError(f"cgroup devices: entry {i}: 'allow' must be true or false")
        rules.append((d["allow"], kind, nums[0], nums[1], "".join(c for c in "rwm" if c in access)))
    return rules


def _fmt(kind: str, major: int, minor: int, access: str) -> str:
    ma = "*" if major == WILDCARD else str(major)
    mi = "*" if minor == WILDCARD else str(minor)
    return f"{kind} {ma}:{mi} {access}"


class Emulator:
    """The v1 devices controller's state: a default and exceptions keyed by (type, major, minor)."""

    __slots__ = ("default_allow", "rules")

    def __init__(self, default_allow: bool = False) -> None:
        self.default_allow = default_allow
        self.rules: dict[_Key, frozenset[str]] = {}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Emulator) and self.default_allow == other.default_allow
                and self.rules == other.rules)

    def _add(self, key: _Key, perms: frozenset[str]) -> None:
        self.rules[key] = self.rules.get(key, frozenset()) | perms

    def _remove(self, key: _Key, perms: frozenset[str]) -> None:
        kind, major, minor = key
        for partial in ((kind, WILDCARD, minor), (kind, major, WILDCARD), (kind, WILDCARD, WILDCARD)):
            if partial != key and self.rules.get(partial, frozenset()) & perms:
                have = "".join(sorted(self.rules[partial]))
                raise CgroupError(
                    f"cgroup devices: rule {_fmt(kind, major, minor, ''.join(sorted(perms)))} cannot "
                    f"punch a hole in the wildcard rule {_fmt(*partial, have)}"
                )
        left = self.rules.get(key, frozenset()) - perms
        if left:
            self.rules[key] = left
        else:
            self.rules.pop(key, None)

    def apply(self, rule: Rule) -> None:
        allow, kind, major, minor, access = rule
        if kind == "a":
            self.default_allow = allow
            self.rules = {}
            return
        key, perms = (kind, major, minor), frozenset(access)
        if allow == self.default_allow:
            self._remove(key, perms)
        else:
            self._add(key, perms)

    @classmethod
    def from_rules(cls, rules: list[Rule]) -> Emulator:
        emu = cls(False)
        for r in rules:
            emu.apply(r)
        return emu

    @classmethod
    def from_list(cls, text: str) -> Emulator:
        """Parse v1 devices.list (an allow-list; "a *:* rwm" means allow everything)."""
        emu = cls(False)
        for line in text.splitlines():
            fields = line.replace(":", " ").split()
            if len(fields) != 4:
                continue
            kind, ma, mi, access = fields
            if kind == "a":
                emu.apply((True, "a", WILDCARD, WILDCARD, "rwm"))
                continue
            major = WILDCARD if ma == "*" else int(ma)
            minor = WILDCARD if mi == "*" else int(mi)
            emu.apply((True, kind, major, minor, access))
        return emu

    def _ordered(self) -> list[tuple[_Key, frozenset[str]]]:
        # the order rules were first given in: the kernel lists v1 exceptions in the order they
        # were written, and the spec says entries apply "in the listed order"
        return list(self.rules.items())

    def transition(self, target: Emulator) -> list[Rule]:
        """The writes that take a cgroup from this state to ``target``."""
        out: list[Rule] = []
        old = self.rules
        if self.default_allow or self.default_allow != target.default_allow:
            out.append((target.default_allow, "a", WILDCARD, WILDCARD, "rwm"))
            old = {}
        for key, perms in sorted(old.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
            dropped = perms - target.rules.get(key, frozenset())
            if dropped:
                out.append((target.default_allow, *key, "".join(c for c in "rwm" if c in dropped)))
        for key, perms in target._ordered():
            gained = perms - old.get(key, frozenset())
            if gained:
                out.append((not target.default_allow, *key, "".join(c for c in "rwm" if c in gained)))
        return out


def target_rules(spec_devices: list[dict] | None, default_devices: bool = True) -> list[Rule]:
    rules = parse_rules(spec_devices or [])
    return rules + list(DEFAULT_ALLOWED) if default_devices else rules


# --- cgroup v1 -------------------------------------------------------------------------------------

def set_v1(dirpath: str, rules: list[Rule]) -> None:
    """Bring devices.list to the emulated target with the fewest writes, then check the result."""
    try:
        current = Emulator.from_list(_files.read(dirpath, "devices.list"))
    except OSError as e:
        raise CgroupError(f"cgroup devices: cannot read {dirpath}/devices.list: "
                          f"{_files.strerror(e)}") from None
    target = Emulator.from_rules(rules)
    for allow, kind, major, minor, access in current.transition(target):
        name = "devices.allow" if allow else "devices.deny"
        _files.write(dirpath, name, _fmt(kind, major, minor, access), "devices")
    after = Emulator.from_list(_files.read(dirpath, "devices.list"))
    if after.default_allow != target.default_allow or (not target.default_allow and after != target):
        raise CgroupError(f"cgroup devices: {dirpath}/devices.list does not match the requested rules "
                          "(is a parent cgroup more restrictive?)")


# --- cgroup v2: eBPF ------------------------------------------------------------------------------

_DEV_BLOCK, _DEV_CHAR = 1, 2
_ACC = {"m": 1, "r": 2, "w": 4}


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    regs = (src << 4) | dst if sys.byteorder == "little" else (dst << 4) | src
    if imm > 0x7FFFFFFF:
        imm -= 1 << 32
    return code.to_bytes(1, "little") + regs.to_bytes(1, "little") + off.to_bytes(
        2, sys.byteorder, signed=True) + imm.to_bytes(4, sys.byteorder, signed=True)


def bpf_program(rules: list[Rule]) -> bytes:
    """A BPF_PROG_TYPE_CGROUP_DEVICE program for ``rules``: returns 1 to allow an access, 0 to deny.

    r2 = device type, r3 = requested access bits, r4 = major, r5 = minor; each exception is a block
    that jumps to the next one on mismatch and returns its verdict on a match; the default ends it.
    """
    emu = Emulator.from_rules(rules)
    # (code, dst, src, off-or-label, imm); labels resolve to "start of block n"
    prog: list[list] = [
        [0x61, 2, 1, 0, 0], [0x54, 2, 0, 0, 0xFFFF],   # r2 = ctx->access_type & 0xffff
        [0x61, 3, 1, 0, 0], [0x74, 3, 0, 0, 16],       # r3 = ctx->access_type >> 16
        [0x61, 4, 1, 4, 0],                            # r4 = ctx->major
        [0x61, 5, 1, 8, 0],                            # r5 = ctx->minor
    ]
    starts: list[int] = []
    for n, ((kind, major, minor), perms) in enumerate(emu._ordered()):
        starts.append(len(prog))
        nxt = ("next", n + 1)
        prog.append([0x55, 2, 0, nxt, _DEV_BLOCK if kind == "b" else _DEV_CHAR])  # if r2 != type
        access = sum(_ACC[c] for c in perms)
        if access != 7 and not emu.default_allow:
            # an allow exception covers a request only if it grants every requested bit
            prog += [[0xBC, 1, 3, 0, 0], [0x54, 1, 0, 0, access], [0x5D, 1, 3, nxt, 0]]
        elif access != 7:
            # a deny exception refuses a request that asks for any bit it denies
            prog += [[0xBC, 1, 3, 0, 0], [0x54, 1, 0, 0, access], [0x15, 1, 0, nxt, 0]]
        if major != WILDCARD:
            prog.append([0x55, 4, 0, nxt, major])
        if minor != WILDCARD:
            prog.append([0x55, 5, 0, nxt, minor])
        prog += [[0xB4, 0, 0, 0, 0 if emu.default_allow else 1], [0x95, 0, 0, 0, 0]]
    starts.append(len(prog))
    prog += [[0xB4, 0, 0, 0, 1 if emu.default_allow else 0], [0x95, 0, 0, 0, 0]]
    out = bytearray()
    for i, (code, dst, src, off, imm) in enumerate(prog):
        if isinstance(off, tuple):
            off = starts[off[1]] - (i + 1)
        out += _insn(code, dst, src, off, imm)
    return bytes(out)


def set_v2(dirpath: str, rules: list[Rule]) -> None:
    from pallet.runtime.cgroups import ebpf

    ebpf.replace_device_filter(dirpath, bpf_program(rules))
