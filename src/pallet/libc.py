"""The smallest FFI to the C library this process already has loaded, for the system calls
Python 3.11 lacks (mount, prctl, pivot_root, clone3 ...), shared by the runtime, the layer
storage and the engine.

Built on ``_ctypes``, the C half of ctypes, with the few C types callers need: ``import ctypes``
costs ~3 ms (its Python half defines every C type and helper) on paths that run per container;
``_ctypes`` ~0.5 ms. The calls are the same foreign calls ctypes makes (ctypes' CDLL is these few
lines around ``_ctypes``). Functions return C ``int`` unless said otherwise and save errno for
:func:`get_errno`, like ``ctypes.CDLL(None, use_errno=True)``.
"""

from __future__ import annotations

import _ctypes
import os


class c_int(_ctypes._SimpleCData):
    _type_ = "i"


class c_uint(_ctypes._SimpleCData):
    _type_ = "I"


class c_ushort(_ctypes._SimpleCData):
    _type_ = "H"


class c_long(_ctypes._SimpleCData):
    _type_ = "l"


class c_ulong(_ctypes._SimpleCData):
    _type_ = "L"


class c_char(_ctypes._SimpleCData):
    _type_ = "c"


c_size_t = c_ulong


class Libc:
    """What a CFuncPtr needs of a library: its dlopen handle (the process's own symbols)."""

    _handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)


class CFunc(_ctypes.CFuncPtr):
    """A libc function returning int, errno saved for get_errno() (CDLL(None, use_errno=True))."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class CLongFunc(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_long


class PyLongFunc(_ctypes.CFuncPtr):
    """Like CLongFunc but the GIL stays held across the call (ctypes' PyDLL)."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO | _ctypes.FUNCFLAG_PYTHONAPI
    _restype_ = c_long


class LibcFuncs:
    """``libc.name``: libc's function ``name`` (looked up on first use)."""

    def __getattr__(self, name: str) -> CFunc:
        f = CFunc((name, Libc))
        setattr(self, name, f)
        return f


libc = LibcFuncs()
syscall = CLongFunc(("syscall", Libc))
get_errno = _ctypes.get_errno


def check(rc: int, what: str) -> None:
    """A libc call's result: nonzero raises OSError(errno, "WHAT: strerror")."""
    if rc != 0:
        err = get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper() -> None:
    """Make orphaned descendants this process's children (a container's init, once the runtime
    that forked it exits), so that this process can wait for them."""
    libc.prctl(c_int(PR_SET_CHILD_SUBREAPER), c_ulong(1), c_ulong(0), c_ulong(0), c_ulong(0))


def set_process_title(title: str) -> None:
    """Show this process as ``title`` in ps and top (a monitor forked from ``pallet run`` would
    otherwise keep the CLI's command line and look like a CLI that never ended).

    comm through PR_SET_NAME; the command line by overwriting the original argument area in
    place through /proc/self/mem, as the setproctitle package does (whose package imports
    logging: 14 ms and a megabyte in every monitor; PR_SET_MM would need CAP_SYS_RESOURCE).
    CPython keeps its own copy of argv, so nothing in the interpreter changes. Best effort."""
    data = title.encode()
    libc.prctl(c_int(15), data[:15] + b"\0", c_ulong(0), c_ulong(0), c_ulong(0))  # PR_SET_NAME
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (stat fields 48, 49)
        if end <= start:
            return
        room = end - start
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(data[: room - 1].ljust(room, b"\0"))
    except (OSError, ValueError, IndexError):
        pass
