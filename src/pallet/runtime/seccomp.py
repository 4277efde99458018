"""Seccomp: the whole runtime-spec profile language, compiled and loaded into the container's init.

Design (the same split runc makes): before the fork, :func:`compile_profile` validates the
profile and has libseccomp (libseccomp.so.2 through ctypes; no binding to install, ~1 ms to open)
generate the classic-BPF program, then prepends an "-ENOSYS stub" so syscalls newer than anything
the profile knows fail with ENOSYS instead of the default action (glibc falls back from clone3,
faccessat2 ... only on ENOSYS). In the child, :func:`load` is one seccomp(2) system call on
those bytes: no libseccomp, no allocation of note, and every filter flag the kernel has
(TSYNC, LOG, SPEC_ALLOW, NEW_LISTENER, WAIT_KILLABLE_RECV) whatever libseccomp's version.

Importing this module imports nothing but ``os``; ctypes, json and socket load on first use.
"""

from __future__ import annotations

import os

from pallet.errors import RuntimeFailure

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds to import; the runtime starts per container
    from typing import Any


class SeccompError(RuntimeFailure):
    """A seccomp profile is invalid or could not be compiled, loaded or handed to its listener."""


#: runtime-spec action -> SECCOMP_RET_* value (the errno/trace data goes in the low 16 bits)
ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,          # = KILL_THREAD
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
_WITH_DATA = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
_ALLOWISH = ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE")

OPERATORS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}

#: runtime-spec architecture -> libseccomp's name for it
ARCHS = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips", "SCMP_ARCH_MIPS64": "mips64", "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel", "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc", "SCMP_ARCH_PPC64": "ppc64", "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390", "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc", "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64", "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k", "SCMP_ARCH_SH": "sh", "SCMP_ARCH_SHEB": "sheb",
}

#: runtime-spec filter flags -> SECCOMP_FILTER_FLAG_* bits
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}
_NEW_LISTENER = 8
_TSYNC_ESRCH = 16
_SET_MODE_FILTER = 1
_BPF_MAXINSNS = 4096
_ENOSYS = 38

#: syscalls that may not be sent to the listener: the init passes the listener fd to the runtime
#: with write(2) after loading the filter, which a notification on write would deadlock (runc)
_NO_NOTIFY = ("write",)


class Filter:
    """A compiled profile, ready to load. Made before fork so errors surface in ``create``."""

    __slots__ = ("default_action", "flags", "listener_metadata", "listener_path", "program",
                 "seccomp_nr", "skipped", "wants_notify")

    #: the profile asks for SCMP_ACT_NOTIFY: load() returns a listener fd to send to listenerPath
    wants_notify: bool

    def __init__(self, program: bytes, flags: int, seccomp_nr: int, wants_notify: bool,
                 listener_path: str, listener_metadata: str, default_action: str,
                 skipped: list[str]) -> None:
        #: the classic-BPF program (struct sock_filter[]), ENOSYS stub included
        self.program = program
        #: SECCOMP_FILTER_FLAG_* bits for seccomp(2)
        self.flags = flags
        #: seccomp(2)'s syscall number on this machine
        self.seccomp_nr = seccomp_nr
        self.wants_notify = wants_notify
        self.listener_path = listener_path
        self.listener_metadata = listener_metadata
        self.default_action = default_action
        #: syscall names the profile lists that this kernel/libseccomp does not know (skipped)
        self.skipped = skipped

    def __len__(self) -> int:
        return len(self.program) // 8


# --- libseccomp through ctypes -----------------------------------------------------------------

_LIB: Any = None


def _lib() -> Any:
    """libseccomp.so.2 with the prototypes we use (opened once)."""
    global _LIB
    if _LIB is not None:
        return _LIB
    import ctypes

    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as e:
        raise SeccompError(f"seccomp: cannot load libseccomp.so.2 (install libseccomp2): {e}") from None
    vp, u32, i, ui = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint
    lib.seccomp_init.restype, lib.seccomp_init.argtypes = vp, [u32]
    lib.seccomp_release.restype, lib.seccomp_release.argtypes = None, [vp]
    lib.seccomp_arch_add.restype, lib.seccomp_arch_add.argtypes = i, [vp, u32]
    lib.seccomp_arch_exist.restype, lib.seccomp_arch_exist.argtypes = i, [vp, u32]
    lib.seccomp_arch_native.restype, lib.seccomp_arch_native.argtypes = u32, []
    lib.seccomp_arch_resolve_name.restype = u32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = i
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name_arch.restype = i
    lib.seccomp_syscall_resolve_name_arch.argtypes = [u32, ctypes.c_char_p]
    lib.seccomp_rule_add_array.restype = i
    lib.seccomp_rule_add_array.argtypes = [vp, u32, i, ui, vp]
    lib.seccomp_attr_set.restype, lib.seccomp_attr_set.argtypes = i, [vp, i, u32]
    lib.seccomp_export_bpf.restype, lib.seccomp_export_bpf.argtypes = i, [vp, i]
    lib.seccomp_api_get.restype, lib.seccomp_api_get.argtypes = ui, []

    class _Version(ctypes.Structure):
        _fields_ = [("major", ui), ("minor", ui), ("micro", ui)]

    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    lib.seccomp_version.argtypes = []

    class ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
        _fields_ = [("arg", ui), ("op", i), ("datum_a", ctypes.c_uint64),
                    ("datum_b", ctypes.c_uint64)]

    lib.ArgCmp = ArgCmp
    _LIB = lib
    return lib


_VERSION: str | None = None  # the loaded library's: it cannot change in a process


def libseccomp_version() -> str:
    """libseccomp's version, without the full ctypes setup of :func:`_lib` (the compile cache
    asks on every container start): dlopen plus one call through the runtime's small FFI."""
    global _VERSION
    if _VERSION is not None:
        return _VERSION
    import _ctypes

    from pallet.runtime import syscalls as sc

    if _LIB is not None:
        v = _LIB.seccomp_version().contents
        _VERSION = f"{v.major}.{v.minor}.{v.micro}"
        return _VERSION

    class Version(_ctypes.Structure):
        _fields_ = [("major", sc.c_uint), ("minor", sc.c_uint), ("micro", sc.c_uint)]

    class VersionFunc(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL
        _restype_ = _ctypes.POINTER(Version)

    class Lib:
        try:
            _handle = _ctypes.dlopen("libseccomp.so.2", _ctypes.RTLD_LOCAL)
        except OSError as e:
            raise SeccompError(f"seccomp: cannot load libseccomp.so.2 (install libseccomp2): {e}") from None

    v = VersionFunc(("seccomp_version", Lib))().contents
    _VERSION = f"{v.major}.{v.minor}.{v.micro}"
    return _VERSION


def _arch_token(lib: Any, name: str, where: str) -> int:
    scmp = ARCHS.get(name) if isinstance(name, str) else None
    if scmp is None:
        raise SeccompError(f"seccomp: {where}: unknown architecture {name!r} (expected one of "
                           f"{', '.join(sorted(ARCHS))})")
    token = lib.seccomp_arch_resolve_name(scmp.encode())
    if not token:
        raise SeccompError(f"seccomp: {where}: architecture {name} is not supported by libseccomp "
                           f"{libseccomp_version()}")
    return token


def _action(name: Any, errno_ret: Any, where: str) -> int:
    if name not in ACTIONS:
        raise SeccompError(f"seccomp: {where}: unknown action {name!r} (expected one of "
                           f"{', '.join(sorted(ACTIONS))})")
    value = ACTIONS[name]
    if errno_ret is not None:
        if name not in _WITH_DATA:
            raise SeccompError(f"seccomp: {where}: errnoRet is only valid with SCMP_ACT_ERRNO and "
                               f"SCMP_ACT_TRACE, not {name}")
        if not isinstance(errno_ret, int) or isinstance(errno_ret, bool) or not 0 <= errno_ret <= 0xFFFF:
            raise SeccompError(f"seccomp: {where}: errnoRet {errno_ret!r} is not in 0..65535")
        return value | errno_ret
    if name in _WITH_DATA:
        return value | 1  # EPERM, as runc
    return value


def _u64(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**64:
        raise SeccompError(f"seccomp: {what} {v!r} is not an unsigned 64-bit integer")
    return v


# --- the ENOSYS stub ---------------------------------------------------------------------------

_AUDIT_ARCH_X86_64 = 0xC000003E
_SCMP_ARCH_X32 = 0x4000003E
_X32_BIT = 0x40000000


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    import sys

    return (code.to_bytes(2, sys.byteorder) + bytes((jt, jf)) + (k & 0xFFFFFFFF).to_bytes(4, sys.byteorder))


def _enosys_stub(max_nr: dict[int, int]) -> bytes:
    """cBPF that returns ENOSYS for syscall numbers above the highest one the profile names (per
    architecture), and falls through to the real filter otherwise.

    ``max_nr`` maps libseccomp arch tokens (AUDIT_ARCH_* values, except x32 which shares x86_64's
    audit arch and sets bit 30 of the number) to the largest syscall number seen.
    """
    # group by audit arch: (x86_64 with amd64/x32 halves) or a plain arch
    groups: dict[int, dict[str, int]] = {}
    for token, nr in max_nr.items():
        if token == _SCMP_ARCH_X32:
            groups.setdefault(_AUDIT_ARCH_X86_64, {})["x32"] = nr
        elif token == _AUDIT_ARCH_X86_64:
            groups.setdefault(_AUDIT_ARCH_X86_64, {})["amd64"] = nr
        else:
            groups.setdefault(token, {})["plain"] = nr
    # symbolic program: ("ld", off) ("jeq"/"jgt"/"jset", k, target_t, target_f) ("ja", target)
    # ("ret", k) and labels; targets are label names, None = next instruction
    prog: list[tuple] = [("ld", 4)]
    for audit in groups:
        prog.append(("jeq", audit, f"arch{audit}", None))
    prog.append(("ja", "filter"))
    for audit, parts in groups.items():
        prog.append(("label", f"arch{audit}"))
        prog.append(("ld", 0))
        if audit == _AUDIT_ARCH_X86_64:
            x32_target = f"x32_{audit}" if "x32" in parts else "filter"
            prog.append(("jset", _X32_BIT, x32_target, None))
            if "amd64" in parts:
                prog.append(("jgt", parts["amd64"], "enosys", "filter"))
            else:
                prog.append(("ja", "filter"))
            if "x32" in parts:
                prog.append(("label", f"x32_{audit}"))
                prog.append(("jgt", parts["x32"], "enosys", "filter"))
        else:
            prog.append(("jgt", parts["plain"], "enosys", "filter"))
    prog.append(("label", "enosys"))
    prog.append(("ret", ACTIONS["SCMP_ACT_ERRNO"] | _ENOSYS))
    prog.append(("label", "filter"))
    # resolve labels to instruction indexes
    labels, idx = {}, 0
    for ins in prog:
        if ins[0] == "label":
            labels[ins[1]] = idx
        else:
            idx += 1
    out, idx = bytearray(), 0
    for ins in prog:
        op = ins[0]
        if op == "label":
            continue

        def rel(target: str | None, here: int = idx) -> int:
            if target is None:
                return 0
            off = labels[target] - (here + 1)
            if not 0 <= off <= 255:
                raise SeccompError("seccomp: internal error: ENOSYS stub jump out of range")
            return off

        if op == "ld":
            out += _insn(0x20, 0, 0, ins[1])                     # BPF_LD|BPF_W|BPF_ABS
        elif op == "ja":
            out += _insn(0x05, 0, 0, labels[ins[1]] - (idx + 1))  # BPF_JMP|BPF_JA
        elif op == "ret":
            out += _insn(0x06, 0, 0, ins[1])                     # BPF_RET|BPF_K
        else:
            code = {"jeq": 0x15, "jgt": 0x25, "jset": 0x45}[op]  # BPF_JMP|BPF_J*|BPF_K
            out += _insn(code, rel(ins[2]), rel(ins[3]), ins[1])
        idx += 1
    return bytes(out)


# --- compile -----------------------------------------------------------------------------------

def compile_profile(profile: dict[str, Any], *, strict: bool = False, enosys_stub: bool = True,
                    cache_dir: str | None = None) -> Filter:
    """Validate and compile ``linux.seccomp``. Raises RuntimeFailure naming the bad part.

    Syscall names this kernel's libseccomp does not know are skipped (as runc does) and listed
    in ``Filter.skipped``; ``strict=True`` makes them an error instead. ``enosys_stub=False``
    leaves out the ENOSYS stub (then unknown new syscalls get the default action).

    ``cache_dir`` (a root-owned directory, e.g. under the runtime's state root) keeps compiled
    filters keyed by the SHA-256 of the profile, the options, libseccomp's version and the
    kernel: Docker's default profile for three architectures costs libseccomp ~15 ms to compile
    and a cache hit ~1 ms.
    """
    if cache_dir is not None:
        return _cached_compile(profile, strict, enosys_stub, cache_dir)
    return _compile(profile, strict, enosys_stub)


_CACHE_FORMAT = b"pallet-seccomp-1"


_sha256: Any = None


def sha256_impl() -> Any:
    """The bare C SHA-256: hashlib would first load OpenSSL (~3 ms). Looked up once (a module
    that is not there is searched for again on every import; a preloaded runtime asks early)."""
    global _sha256
    if _sha256 is None:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found]  # Python >= 3.12
        except ImportError:
            try:
                from _sha256 import sha256  # type: ignore[import-not-found,no-redef]
            except ImportError:
                from hashlib import sha256
        _sha256 = sha256
    return _sha256


def _cached_compile(profile: dict[str, Any], strict: bool, enosys_stub: bool, cache_dir: str) -> Filter:
    """Docker's profile is the same for every container an engine starts: a hit costs a hash of
    the profile, one small file and libseccomp's version (~1 ms; no ``json``, which pulls in
    ``re``, and no ctypes set-up), where compiling costs ~15 ms."""
    from pallet.runtime import jsonio

    sha256 = sha256_impl()
    try:
        canon = jsonio.dumps(profile, sort_keys=True).encode()
    except (TypeError, ValueError):
        return _compile(profile, strict, enosys_stub)
    h = sha256(_CACHE_FORMAT)
    for part in (canon, repr((strict, enosys_stub)).encode(), libseccomp_version().encode(),
                 " ".join(os.uname()).encode()):
        h.update(len(part).to_bytes(8, "little") + part)
    path = os.path.join(cache_dir, h.hexdigest())
    try:
        with open(path, "rb") as f:
            meta_len = int.from_bytes(f.read(4), "little")
            meta = jsonio.loads(f.read(meta_len))
            program = f.read()
        if len(program) == meta["len"] * 8:
            return Filter(program, meta["flags"], meta["nr"], meta["notify"], meta["path"],
                          meta["metadata"], meta["default"], meta["skipped"])
    except (OSError, ValueError, KeyError):
        pass
    filt = _compile(profile, strict, enosys_stub)
    meta_b = jsonio.dumps({"len": len(filt), "flags": filt.flags, "nr": filt.seccomp_nr,
                         "notify": filt.wants_notify, "path": filt.listener_path,
                         "metadata": filt.listener_metadata, "default": filt.default_action,
                         "skipped": filt.skipped}).encode()
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, len(meta_b).to_bytes(4, "little") + meta_b + filt.program)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written is only slower
    return filt


def _compile(profile: dict[str, Any], strict: bool, enosys_stub: bool) -> Filter:
    import ctypes

    if not isinstance(profile, dict):
        raise SeccompError("seccomp: linux.seccomp must be an object")
    default_name = profile.get("defaultAction")
    if default_name is None:
        raise SeccompError("seccomp: defaultAction is required")
    default = _action(default_name, profile.get("defaultErrnoRet"), "defaultAction")
    if default_name == "SCMP_ACT_NOTIFY":
        raise SeccompError("seccomp: defaultAction: SCMP_ACT_NOTIFY cannot be the default action")
    archs = profile.get("architectures") or []
    if not isinstance(archs, list):
        raise SeccompError("seccomp: architectures must be a list")
    flag_names = profile.get("flags") or []
    if not isinstance(flag_names, list):
        raise SeccompError("seccomp: flags must be a list")
    flags = 0
    for f in flag_names:
        if f not in FLAGS:
            raise SeccompError(f"seccomp: flags: unknown flag {f!r} (expected one of "
                               f"{', '.join(FLAGS)})")
        flags |= FLAGS[f]
    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise SeccompError("seccomp: syscalls must be a list")

    lib = _lib()
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise SeccompError(f"seccomp: defaultAction {default_name} is not supported by this "
                           "kernel or libseccomp")
    wants_notify = False
    skipped: list[str] = []
    tokens = [lib.seccomp_arch_native()]
    try:
        for a in archs:
            token = _arch_token(lib, a, "architectures")
            rc = lib.seccomp_arch_add(ctx, token)
            if rc < 0 and rc != -17:  # -EEXIST: the native arch is always there
                raise SeccompError(f"seccomp: architectures: cannot add {a}: {os.strerror(-rc)}")
            if token not in tokens:
                tokens.append(token)
        if len(syscalls) > 32:
            lib.seccomp_attr_set(ctx, 8, 2)  # SCMP_FLTATR_CTL_OPTIMIZE: binary tree
        max_nr: dict[int, int] = {}
        for n, entry in enumerate(syscalls):
            where = f"syscalls[{n}]"
            if not isinstance(entry, dict):
                raise SeccompError(f"seccomp: {where} is not an object")
            names = entry.get("names")
            if not isinstance(names, list) or not names or not all(
                    isinstance(x, str) and x for x in names):
                raise SeccompError(f"seccomp: {where}: names must be a non-empty list of syscall names")
            action_name = entry.get("action")
            action = _action(action_name, entry.get("errnoRet"), f"{where} ({names[0]})")
            args = entry.get("args") or []
            if not isinstance(args, list):
                raise SeccompError(f"seccomp: {where}: args must be a list")
            conds = []
            for m, arg in enumerate(args):
                aw = f"{where} ({names[0]}) args[{m}]"
                if not isinstance(arg, dict):
                    raise SeccompError(f"seccomp: {aw} is not an object")
                index = arg.get("index")
                if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 5:
                    raise SeccompError(f"seccomp: {aw}: index {index!r} is not in 0..5")
                op = arg.get("op")
                if op not in OPERATORS:
                    raise SeccompError(f"seccomp: {aw}: unknown operator {op!r} (expected one of "
                                       f"{', '.join(sorted(OPERATORS))})")
                conds.append((index, OPERATORS[op], _u64(arg.get("value", 0), f"{aw}: value"),
                              _u64(arg.get("valueTwo", 0), f"{aw}: valueTwo")))
            if action_name == "SCMP_ACT_NOTIFY":
                bad = [x for x in names if x in _NO_NOTIFY]
                if bad:
                    raise SeccompError(f"seccomp: {where}: SCMP_ACT_NOTIFY cannot be used for "
                                       f"{bad[0]} (the runtime needs it to hand over the listener)")
                wants_notify = True
            # several conditions on one argument cannot be ANDed by libseccomp: like runc, each
            # becomes its own rule (OR); otherwise all conditions form one rule (AND)
            indexes = [c[0] for c in conds]
            groups = [[c] for c in conds] if len(set(indexes)) != len(indexes) else [conds]
            for name in names:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == -1:  # __NR_SCMP_ERROR: no such syscall anywhere libseccomp knows
                    if strict:
                        raise SeccompError(f"seccomp: {where}: unknown syscall {name!r}")
                    skipped.append(name)
                    continue
                for token in tokens:
                    anr = lib.seccomp_syscall_resolve_name_arch(token, name.encode())
                    if anr >= 0 and anr > max_nr.get(token, -1):
                        max_nr[token] = anr
                if action == default:
                    continue  # same as the default: no rule (libseccomp would refuse it)
                for group in groups or [[]]:
                    arr = (lib.ArgCmp * max(len(group), 1))(*[lib.ArgCmp(*c) for c in group])
                    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(group),
                                                    ctypes.cast(arr, ctypes.c_void_p))
                    if rc < 0:
                        raise SeccompError(f"seccomp: {where}: cannot add a rule for {name} "
                                           f"({action_name}): {os.strerror(-rc)}")
        program = _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)

    if enosys_stub and default_name not in _ALLOWISH and not (
            default_name == "SCMP_ACT_ERRNO" and profile.get("defaultErrnoRet") == _ENOSYS):
        program = _enosys_stub(max_nr) + program
    if len(program) // 8 > _BPF_MAXINSNS:
        raise SeccompError(f"seccomp: the compiled filter has {len(program) // 8} instructions, over "
                           f"the kernel's limit of {_BPF_MAXINSNS}")
    listener_path = profile.get("listenerPath") or ""
    metadata = profile.get("listenerMetadata") or ""
    if not isinstance(listener_path, str) or not isinstance(metadata, str):
        raise SeccompError("seccomp: listenerPath and listenerMetadata must be strings")
    if wants_notify:
        if not listener_path:
            raise SeccompError("seccomp: SCMP_ACT_NOTIFY is used but listenerPath is not set")
        flags |= _NEW_LISTENER
        if flags & FLAGS["SECCOMP_FILTER_FLAG_TSYNC"]:
            flags |= _TSYNC_ESRCH  # TSYNC and a listener are only compatible this way
    elif flags & FLAGS["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]:
        raise SeccompError("seccomp: flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs a "
                           "SCMP_ACT_NOTIFY rule")
    nr = lib.seccomp_syscall_resolve_name(b"seccomp")
    for f in flag_names:
        if not _flag_supported(nr, FLAGS[f]):
            raise SeccompError(f"seccomp: flags: {f} is not supported by this kernel")
    return Filter(program, flags, nr, wants_notify, listener_path, metadata, default_name, skipped)


def _export(lib: Any, ctx: int) -> bytes:
    """seccomp_export_bpf into a memfd, read back."""
    fd = os.memfd_create("pallet-seccomp", os.MFD_CLOEXEC)
    try:
        rc = lib.seccomp_export_bpf(ctx, fd)
        if rc < 0:
            raise SeccompError(f"seccomp: cannot generate the filter: {os.strerror(-rc)}")
        size = os.lseek(fd, 0, os.SEEK_CUR)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


# --- load --------------------------------------------------------------------------------------

_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.syscall.restype = ctypes.c_long
    return _LIBC


def preload() -> None:
    """Everything load() needs, imported before the fork (the init may have no /usr left)."""
    import _ctypes  # noqa: F401

    from pallet.runtime import syscalls  # noqa: F401


def load(filt: Filter) -> int | None:
    """Install the filter in the calling process (after no_new_privs, just before exec).

    Returns the notify listener fd when the profile has SCMP_ACT_NOTIFY, else None. The caller
    must have set no_new_privs (prctl PR_SET_NO_NEW_PRIVS) unless it has CAP_SYS_ADMIN.
    One seccomp(2) call through the runtime's small FFI (no ctypes set-up in the container).
    """
    import _ctypes

    from pallet.runtime import syscalls as sc

    buf = sc.buffer(len(filt.program), filt.program)
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; } (padded to 16 bytes)
    prog = ((len(filt.program) // 8).to_bytes(8, "little")
            + _ctypes.addressof(buf).to_bytes(8, "little"))
    rc = sc._syscall(sc.c_long(filt.seccomp_nr), sc.c_long(_SET_MODE_FILTER),
                     sc.c_ulong(filt.flags), prog)
    if rc < 0:
        err = sc.get_errno()
        hint = ""
        if err == 13:  # EACCES
            hint = " (set no_new_privs first, or keep CAP_SYS_ADMIN)"
        elif err == 22:
            hint = f" (flags {filt.flags:#x} or the program were refused)"
        raise SeccompError(f"seccomp: cannot load the filter: {os.strerror(err).lower()}{hint}")
    return int(rc) if filt.flags & _NEW_LISTENER else None


def _flag_supported(seccomp_nr: int, flag: int) -> bool:
    """seccomp(SET_MODE_FILTER, flag, NULL): EFAULT means the kernel knows the flag (it got as
    far as reading the program), EINVAL that it does not. Nothing is installed either way."""
    import ctypes

    if flag == FLAGS["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]:
        flag |= _NEW_LISTENER
    rc = _libc().syscall(ctypes.c_long(seccomp_nr), ctypes.c_long(_SET_MODE_FILTER),
                         ctypes.c_ulong(flag), ctypes.c_void_p(None))
    return rc < 0 and ctypes.get_errno() == 14  # EFAULT


# --- notify ------------------------------------------------------------------------------------

def send_listener(filt: Filter, listener_fd: int, listener_path: str, state: dict[str, Any],
                  metadata: str = "") -> None:
    """Send the listener fd with the container state to ``listenerPath`` (runtime-spec's protocol).

    One AF_UNIX SOCK_STREAM connection per container: the "container process state" JSON
    ({ociVersion, fds: ["seccompFd"], pid, metadata, state}) with the fd in SCM_RIGHTS, then close.
    """
    import array
    import socket

    from pallet.runtime import jsonio

    msg = {
        "ociVersion": state.get("ociVersion", "1.2.0"),
        "fds": ["seccompFd"],
        "pid": state.get("pid", 0),
        "metadata": metadata or filt.listener_metadata,
        "state": state,
    }
    data = jsonio.dumps(msg).encode()
    path = listener_path or filt.listener_path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            sent = s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", [listener_fd]))])
            if sent < len(data):
                s.sendall(data[sent:])
    except OSError as e:
        raise SeccompError(f"seccomp: cannot send the notify fd to listenerPath {path}: "
                           f"{e.strerror or e}") from None


# --- features ----------------------------------------------------------------------------------

def features() -> dict[str, Any]:
    """The ``linux.seccomp`` object of ``pallet-runtime features``."""
    enabled = False
    try:
        with open("/proc/self/status") as f:
            enabled = any(line.startswith("Seccomp:") for line in f)
    except OSError:
        pass
    try:
        lib = _lib()
    except SeccompError:
        return {"enabled": False, "actions": [], "operators": [], "archs": [],
                "knownFlags": list(FLAGS), "supportedFlags": []}
    archs = sorted(a for a, n in ARCHS.items() if lib.seccomp_arch_resolve_name(n.encode()))
    nr = lib.seccomp_syscall_resolve_name(b"seccomp")
    supported = [f for f, bit in FLAGS.items() if enabled and _flag_supported(nr, bit)]
    return {
        "enabled": enabled,
        "actions": sorted(ACTIONS),
        "operators": sorted(OPERATORS),
        "archs": archs,
        "knownFlags": list(FLAGS),
        "supportedFlags": supported,
    }
