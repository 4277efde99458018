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
