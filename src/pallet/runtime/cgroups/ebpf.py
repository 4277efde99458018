"""bpf(2) through ctypes: load a BPF_PROG_TYPE_CGROUP_DEVICE program and attach it to a v2 cgroup,
replacing the one a previous ``set`` attached (BPF_F_REPLACE when the kernel has it, else attach
the new one and then detach the old, so there is never a moment without a filter)."""

from __future__ import annotations

import ctypes
import errno
import os
import sys

from pallet.runtime.cgroups._layout import CgroupError

_BPF_PROG_LOAD, _BPF_PROG_ATTACH, _BPF_PROG_DETACH = 5, 8, 9
_BPF_PROG_GET_FD_BY_ID, _BPF_PROG_QUERY = 13, 16
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI, _BPF_F_REPLACE = 2, 4

#: bpf(2)'s number per machine (uname -m)
_SYS_BPF = {"x86_64": 321, "i386": 357, "i686": 357, "aarch64": 280, "armv7l": 386, "armv8l": 386,
            "ppc64le": 361, "ppc64": 361, "s390x": 351, "riscv64": 280, "loongarch64": 280,
            "mips64": 5315}

_libc: ctypes.CDLL | None = None


def _syscall(cmd: int, attr: ctypes.Array) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    nr = _SYS_BPF.get(os.uname().machine)
    if nr is None:
        raise CgroupError(f"cgroup devices: bpf(2) number unknown on {os.uname().machine}")
    for _ in range(30):
        rc = _libc.syscall(ctypes.c_long(nr), ctypes.c_long(cmd), attr, ctypes.c_ulong(len(attr)))
        if rc >= 0:
            return rc
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.EINTR):
            raise OSError(err, os.strerror(err))
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))


def _attr(size: int = 128) -> ctypes.Array:
    return ctypes.create_string_buffer(size)


def _put(buf: ctypes.Array, off: int, value: int, size: int = 4) -> None:
    ctypes.memmove(ctypes.addressof(buf) + off, value.to_bytes(size, sys.byteorder), size)


def load_program(insns: bytes, license: bytes = b"Apache") -> int:
    """BPF_PROG_LOAD; on failure retry with the verifier log so the error says why."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license)
    attr = _attr()
    _put(attr, 0, _BPF_PROG_TYPE_CGROUP_DEVICE)
    _put(attr, 4, len(insns) // 8)
    _put(attr, 8, ctypes.addressof(code), 8)
    _put(attr, 16, ctypes.addressof(lic), 8)
    try:
        return _syscall(_BPF_PROG_LOAD, attr)
    except OSError as first:
        log = ctypes.create_string_buffer(65536)
        _put(attr, 24, 1)
        _put(attr, 28, len(log))
        _put(attr, 32, ctypes.addressof(log), 8)
        try:
            return _syscall(_BPF_PROG_LOAD, attr)
        except OSError:
            detail = log.value.decode(errors="replace").strip().replace("\n", "; ")
            raise CgroupError(f"cgroup devices: the kernel refused the device filter program: "
                              f"{first.strerror}{': ' + detail if detail else ''}") from None


def attached_programs(cgroup_fd: int) -> list[int]:
    """IDs of the BPF_CGROUP_DEVICE programs attached directly to the cgroup."""
    cap = 64
    while True:
        ids = (ctypes.c_uint32 * cap)()
        attr = _attr()
        _put(attr, 0, cgroup_fd)
        _put(attr, 4, _BPF_CGROUP_DEVICE)
        _put(attr, 16, ctypes.addressof(ids), 8)
        _put(attr, 24, cap)
        try:
            _syscall(_BPF_PROG_QUERY, attr)
        except OSError as e:
            if e.errno == errno.ENOSPC and cap < 65536:
                cap *= 4
                continue
            raise
        count = int.from_bytes(attr.raw[24:28], sys.byteorder)
        return list(ids[:count])


def _prog_fd(prog_id: int) -> int:
    attr = _attr()
    _put(attr, 0, prog_id)
    return _syscall(_BPF_PROG_GET_FD_BY_ID, attr)


def _attach(cgroup_fd: int, prog_fd: int, flags: int, replace_fd: int = 0) -> None:
    attr = _attr()
    _put(attr, 0, cgroup_fd)
    _put(attr, 4, prog_fd)
    _put(attr, 8, _BPF_CGROUP_DEVICE)
    _put(attr, 12, flags)
    _put(attr, 16, replace_fd)
    _syscall(_BPF_PROG_ATTACH, attr)


def _detach(cgroup_fd: int, prog_fd: int) -> None:
    attr = _attr()
    _put(attr, 0, cgroup_fd)
    _put(attr, 4, prog_fd)
    _put(attr, 8, _BPF_CGROUP_DEVICE)
    _syscall(_BPF_PROG_DETACH, attr)


def replace_device_filter(cgroup_dir: str, insns: bytes) -> None:
    """Attach ``insns`` as the cgroup's device filter, removing the filters attached before."""
    try:
        cg = os.open(cgroup_dir, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CgroupError(f"cgroup devices: cannot open {cgroup_dir}: {e.strerror}") from None
    old_fds: list[int] = []
    prog = -1
    try:
        try:
            for pid in attached_programs(cg):
                try:
                    old_fds.append(_prog_fd(pid))
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.EPERM):
                        raise
        except OSError as e:
            raise CgroupError(f"cgroup devices: cannot list the device filters of {cgroup_dir}: "
                              f"{e.strerror}") from None
        prog = load_program(insns)
        replaced = False
        if len(old_fds) == 1:
            try:
                _attach(cg, prog, _BPF_F_ALLOW_MULTI | _BPF_F_REPLACE, old_fds[0])
                replaced = True
            except OSError:
                replaced = False  # kernel without BPF_F_REPLACE: attach, then detach
        if not replaced:
            try:
                _attach(cg, prog, _BPF_F_ALLOW_MULTI)
            except OSError as e:
                raise CgroupError(f"cgroup devices: cannot attach the device filter to {cgroup_dir}: "
                                  f"{e.strerror}") from None
            for fd in old_fds:
                try:
                    _detach(cg, fd)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        raise CgroupError(f"cgroup devices: cannot detach the old device filter "
                                          f"from {cgroup_dir}: {e.strerror}") from None
    finally:
        for fd in [*old_fds, prog, cg]:
            if fd >= 0:
                os.close(fd)
