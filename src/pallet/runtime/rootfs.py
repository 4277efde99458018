"""The container's root filesystem: mounts, devices, pivot_root, masked and read-only paths.

Runs in the container init, inside its new mount namespace. Every mount destination is resolved
with openat2(RESOLVE_IN_ROOT) from a handle on the rootfs and mounted through /proc/self/fd, so a
symlink in the image can never send a mount outside the root (the runc CVE-2021-30465 class).
"""

from __future__ import annotations

import os
import stat

from pallet.errors import RuntimeFailure
from pallet.runtime import log, spec
from pallet.runtime import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_DEVICES = [  # path, major, minor
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
]
_RESOLVE = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS
_LOCKED = (
    sc.MS_NOSUID
    | sc.MS_NODEV
    | sc.MS_NOEXEC
    | sc.MS_NOATIME
    | sc.MS_NODIRATIME
    | sc.MS_RELATIME
    | sc.MS_RDONLY
)
# statvfs f_flag bits (ST_*) → MS_* flags
_ST_TO_MS = (
    (1, sc.MS_RDONLY),
    (2, sc.MS_NOSUID),
    (4, sc.MS_NODEV),
    (8, sc.MS_NOEXEC),
    (1024, sc.MS_NOATIME),
    (2048, sc.MS_NODIRATIME),
    (4096, sc.MS_RELATIME),
)


class MountError(RuntimeFailure):
    """A mount in config.json could not be made."""


def parse_options(options: list[str]) -> tuple[int, int, list[int], list[str], set[str]]:
    """(flags, cleared, propagation flags, data options, extensions) from a mount's options."""
    flags = cleared = 0
    prop: list[int] = []
    data: list[str] = []
    ext: set[str] = set()
    for o in options:
        if o in spec.MOUNT_FLAGS:
            clear, f = spec.MOUNT_FLAGS[o]
            if clear:
                flags &= ~f
                cleared |= f
            else:
                flags |= f
        elif o in spec.PROPAGATION:
            prop.append(spec.PROPAGATION[o])
        elif o in spec.RECURSIVE or o in spec.EXTRA_OPTIONS:
            ext.add(o)
        else:
            data.append(o)
    return flags, cleared, prop, data, ext


def _mount_flags_of(path: str) -> int:
    st = os.statvfs(path)
    out = 0
    for st_bit, ms in _ST_TO_MS:
        if st.f_flag & st_bit:
            out |= ms
    return out


class Root:
    """A handle on the rootfs directory and safe operations beneath it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def open(self, rel: str, flags: int = os.O_PATH) -> int:
        return sc.openat2(self.fd, rel, flags, 0, _RESOLVE)

    def _walk(self, rel: str, mode: int = 0o755, links: int = 0) -> tuple[int, str]:
        """Walk ``rel`` from the root creating missing directories; symlinks (even dangling ones)
        are followed as if the root were ``/``. Returns (O_PATH fd, resolved path)."""
        parts = [p for p in rel.split("/") if p and p != "."]
        cur = os.dup(self.fd)
        done: list[str] = []
        try:
            while parts:
                p = parts.pop(0)
                if p == "..":
                    done = done[:-1]
                    os.close(cur)
                    cur = self._reopen(done)
                    continue
                try:
                    st = os.stat(p, dir_fd=cur, follow_symlinks=False)
                except FileNotFoundError:
                    try:
                        os.mkdir(p, mode, dir_fd=cur)
                    except FileExistsError:
                        pass
                    st = os.stat(p, dir_fd=cur, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > 40:
                        raise OSError(40, "too many levels of symbolic links", rel)
                    target = os.readlink(p, dir_fd=cur)
                    if target.startswith("/"):
                        done = []
                        os.close(cur)
                        cur = os.dup(self.fd)
                    parts = [x for x in target.split("/") if x and x != "."] + parts
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    raise NotADirectoryError(20, "not a directory", "/" + "/".join([*done, p]))
                nfd = os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
                os.close(cur)
                cur = nfd
                done.append(p)
        except BaseException:
            os.close(cur)
            raise
        return cur, "/" + "/".join(done)

    def _reopen(self, done: list[str]) -> int:
        return sc.openat2(self.fd, "/" + "/".join(done), os.O_PATH | os.O_DIRECTORY, 0, _RESOLVE)

    def mkdir_all(self, rel: str, mode: int = 0o755) -> int:
        """Create ``rel`` and its parents inside the root; returns an O_PATH fd on it."""
        return self._walk(rel, mode)[0]

    def ensure_file(self, rel: str, links: int = 0) -> int:
        """An O_PATH fd on ``rel`` (created empty if missing, parents too)."""
        try:
            return self.open(rel)
        except FileNotFoundError:
            pass
        parent, _, name = rel.rstrip("/").rpartition("/")
        pfd, resolved = self._walk(parent)
        try:
            try:
                target = os.readlink(name, dir_fd=pfd)
            except OSError:
                target = None
            if target is not None:  # a dangling symlink: create what it names, inside the root
                if links > 40:
                    raise OSError(40, "too many levels of symbolic links", rel)
                nxt = target if target.startswith("/") else resolved.rstrip("/") + "/" + target
                return self.ensure_file(nxt, links + 1)
            try:
                os.close(
                    os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=pfd)
                )
            except FileExistsError:
                pass
        finally:
            os.close(pfd)
        return self.open(rel)

    def ensure(self, rel: str, directory: bool) -> int:
        if directory:
            try:
                return self.open(rel, os.O_PATH | os.O_DIRECTORY)
            except FileNotFoundError:
                return self.mkdir_all(rel)
        return self.ensure_file(rel)


def _fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _mount_at(
    root: Root,
    dest: str,
    source: str | None,
    fstype: str | None,
    flags: int,
    data: str,
    directory: bool = True,
) -> None:
    fd = root.ensure(dest, directory)
    try:
        sc.mount(source, _fdpath(fd), fstype, flags, data or None)
    finally:
        os.close(fd)


def _remount(root: Root, dest: str, flags: int) -> None:
    fd = root.open(dest)
    try:
        target = _fdpath(fd)
        keep = _mount_flags_of(target) & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        sc.mount(None, target, None, sc.MS_REMOUNT | sc.MS_BIND | flags | keep, None)
    finally:
        os.close(fd)


def _propagate(root: Root, dest: str, props: list[int]) -> None:
    if not props:
        return
    fd = root.open(dest)
    try:
        for p in props:
            sc.mount(None, _fdpath(fd), None, p, None)
    finally:
        os.close(fd)


def mount_one(root: Root, m: dict[str, Any], cgroup_mounts: Any, mount_label: str = "") -> None:
    dest = m["destination"]
    typ = m.get("type") or ""
    source = m.get("source") or ""
    flags, _cleared, props, data, ext = parse_options(m.get("options") or [])
    if mount_label and typ not in ("proc", "sysfs", "cgroup", "cgroup2", "bind", "none", ""):
        from pallet.runtime import lsm

        data = lsm.apply_mount_label(data, mount_label)
    for r in ext & spec.RECURSIVE:
        clear, f = spec.MOUNT_FLAGS.get(r[1:], (False, 0))
        flags = flags & ~f if clear else flags | f
    bind = bool(flags & sc.MS_BIND) or typ == "bind"
    try:
        if bind:
            if not source.startswith("/"):
                source = os.path.join(os.getcwd(), source)
            try:
                is_dir = stat.S_ISDIR(os.stat(source).st_mode)
            except OSError as e:
                raise MountError(f"mount {source} to {dest}: {e.strerror}") from None
            recursive = "rbind" in (m.get("options") or [])
            fd = root.ensure(dest, is_dir)
            try:
                sc.mount(source, _fdpath(fd), None, sc.MS_BIND | (sc.MS_REC if recursive else 0), None)
            finally:
                os.close(fd)
            extra = flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
            if extra:
                _remount(root, dest, extra)
        elif typ in ("cgroup", "cgroup2"):
            _mount_cgroup(root, dest, flags, cgroup_mounts)
        else:
            if typ == "tmpfs" and "tmpcopyup" in ext:
                _tmpfs_copyup(root, dest, source, flags, ",".join(data))
            else:
                _mount_at(
                    root, dest, source or typ or None, typ or None, flags & ~sc.MS_REMOUNT, ",".join(data)
                )
        _propagate(root, dest, props)
    except MountError:
        raise
    except OSError as e:
        raise MountError(f"mount {source or typ} to {dest} (type {typ or 'bind'}): {e.strerror}") from None


def _tmpfs_copyup(root: Root, dest: str, source: str, flags: int, data: str) -> None:
    import shutil
    import tempfile

    fd = root.mkdir_all(dest)
    try:
        tmp = tempfile.mkdtemp(prefix="pallet-copyup-")
        try:
            sc.mount(source or "tmpfs", tmp, "tmpfs", flags, data or None)
            src = _fdpath(fd)
            for name in os.listdir(src):
                s, d = os.path.join(src, name), os.path.join(tmp, name)
                if os.path.isdir(s) and not os.path.islink(s):
                    shutil.copytree(s, d, symlinks=True)
                else:
                    shutil.copy2(s, d, follow_symlinks=False)
            sc.mount(tmp, _fdpath(fd), None, sc.MS_MOVE, None)
        finally:
            os.rmdir(tmp)
    finally:
        os.close(fd)


class CgroupMounts:
    """What /sys/fs/cgroup shows in the container, from the cgroups Manager (computed before
    fork): ``mounts`` as (name, host dir, cgroup mount options), ``symlinks`` as (link, target)
    for co-mounted controllers, and whether the container has its own cgroup namespace."""

    __slots__ = ("cgroupns", "mounts", "symlinks")

    def __init__(self, mounts: list[tuple[str, str, list[str]]], symlinks: list[tuple[str, str]],
                 cgroupns: bool) -> None:
        self.mounts, self.symlinks, self.cgroupns = mounts, symlinks, cgroupns


def _mount_cgroup(root: Root, dest: str, flags: int, cgm: CgroupMounts) -> None:
    """/sys/fs/cgroup: the container's own cgroup in every hierarchy (runc's layout: a tmpfs with
    one directory per v1 hierarchy, plus ``unified`` on a hybrid host; the cgroup2 mount itself
    on a pure v2 host). With a cgroup namespace each is a real cgroup mount, whose root the kernel
    makes the container's cgroup; without one, a bind of the host's directory for it."""
    ro = flags & sc.MS_RDONLY
    base = flags & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_RELATIME | sc.MS_NOATIME)
    entries = cgm.mounts
    if len(entries) == 1 and entries[0][0] == "":  # pure cgroup v2: the mount is dest itself
        _mount_one_cgroup(root, dest, entries[0][1], entries[0][2], base | ro, cgm.cgroupns)
        return
    _mount_at(root, dest, "tmpfs", "tmpfs", base, "mode=755")
    for name, host_dir, opts in entries:
        _mount_one_cgroup(root, dest.rstrip("/") + "/" + name, host_dir, opts, base | ro, cgm.cgroupns,
                          remount=False)
    if cgm.symlinks:
        pfd = root.mkdir_all(dest)
        try:
            for link, target in cgm.symlinks:
                try:
                    os.symlink(target, link, dir_fd=pfd)
                except FileExistsError:
                    pass
        finally:
            os.close(pfd)
    # the binds get the mount's flags (and the tmpfs ro) in one recursive mount_setattr
    attr = 0
    for ms, ma in ((sc.MS_RDONLY, sc.MOUNT_ATTR_RDONLY), (sc.MS_NOSUID, sc.MOUNT_ATTR_NOSUID),
                   (sc.MS_NODEV, sc.MOUNT_ATTR_NODEV), (sc.MS_NOEXEC, sc.MOUNT_ATTR_NOEXEC)):
        if (base | ro) & ms:
            attr |= ma
    if attr:
        fd = root.open(dest)
        try:
            sc.mount_setattr_fd(fd, attr)
        except OSError:  # a kernel without mount_setattr (< 5.12): one remount per mount
            for name, _, _ in entries:
                _remount(root, dest.rstrip("/") + "/" + name, base | ro)
            if ro:
                _remount(root, dest, sc.MS_RDONLY | base)
        finally:
            os.close(fd)


def _mount_one_cgroup(root: Root, dest: str, host_dir: str, opts: list[str], flags: int,
                      cgroupns: bool, remount: bool = True) -> None:
    fd = root.mkdir_all(dest)
    try:
        if cgroupns:
            fstype = "cgroup" if opts else "cgroup2"
            source = "systemd" if opts == ["name=systemd"] else fstype
            sc.mount(source, _fdpath(fd), fstype, flags, ",".join(opts) or None)
            return
        sc.mount(host_dir, _fdpath(fd), None, sc.MS_BIND | sc.MS_REC, None)
    finally:
        os.close(fd)
    if remount:
        _remount(root, dest, flags)


def make_parent_private(rootfs: str) -> None:
    """pivot_root refuses a new root whose parent mount is shared: make that one private."""
    best, shared = "", False
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f.read().decode(errors="replace").splitlines():
            fields = line.split()
            mp = fields[4].replace("\\040", " ")
            if (rootfs == mp or rootfs.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best = mp
                opt = fields[6 : fields.index("-")]
                shared = any(o.startswith("shared:") for o in opt)
    if best and shared:
        sc.mount(None, best, None, sc.MS_PRIVATE, None)


def prepare(
    cfg: dict[str, Any],
    rootfs: str,
    in_userns: bool,
    cgroup_mounts: Any,
    private: bool = True,
    before_devices: Any = None,
) -> Root:
    """Everything before pivot_root: propagation, the rootfs bind, mounts, devices.

    ``private`` is False when the container shares the host's mount namespace: then the host's
    propagation is left alone and the mounts are made under the rootfs as asked."""
    linux = cfg.get("linux") or {}
    if private:
        prop = spec.PROPAGATION.get(linux.get("rootfsPropagation") or "", sc.MS_SLAVE | sc.MS_REC)
        if prop & sc.MS_UNBINDABLE:
            prop = sc.MS_SLAVE | sc.MS_REC  # an unbindable rootfs could not be bound: set after pivot
        try:
            sc.mount(None, "/", None, prop, None)
        except OSError as e:
            raise MountError(f"setting / propagation: {e.strerror}") from None
        make_parent_private(rootfs)
        try:
            sc.mount(rootfs, rootfs, "bind", sc.MS_BIND | sc.MS_REC, None)
        except OSError as e:
            raise MountError(f"bind-mounting the rootfs {rootfs}: {e.strerror}") from None
    root = Root(rootfs)
    label = linux.get("mountLabel") or ""
    setup_dev = False
    for m in cfg.get("mounts") or []:
        if m["destination"].rstrip("/") == "/dev":
            setup_dev = True
        mount_one(root, m, cgroup_mounts, label)
    if before_devices is not None:
        before_devices()
    if setup_dev:
        create_devices(root, linux.get("devices") or [], in_userns, defaults=True)
        dev_symlinks(root)
    elif linux.get("devices"):
        create_devices(root, linux["devices"], in_userns, defaults=False)
    return root


def create_devices(root: Root, devices: list[dict[str, Any]], in_userns: bool, defaults: bool) -> None:
    todo: dict[str, dict[str, Any]] = {}
    if defaults:
        for path, major, minor in DEFAULT_DEVICES:
            todo[path] = {
                "path": path,
                "type": "c",
                "major": major,
                "minor": minor,
                "fileMode": 0o666,
                "uid": 0,
                "gid": 0,
            }
    for d in devices:
        todo[d["path"]] = d
    for d in todo.values():
        try:
            _make_device(root, d, in_userns)
        except OSError as e:
            raise RuntimeFailure(f"creating device {d['path']}: {e.strerror}") from None


def _make_device(root: Root, d: dict[str, Any], in_userns: bool) -> None:
    path = d["path"]
    parent, _, name = path.rstrip("/").rpartition("/")
    pfd = root.mkdir_all(parent)
    try:
        if in_userns:
            # mknod is not allowed in a user namespace: bind the host's node over an empty file
            try:
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=pfd))
            except IsADirectoryError:
                raise
            fd = root.open(path)
            try:
                sc.mount(path, _fdpath(fd), None, sc.MS_BIND, None)
            finally:
                os.close(fd)
            return
        kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[d["type"]]
        mode = d.get("fileMode")
        mode = 0o666 if mode is None else mode
        try:
            os.unlink(name, dir_fd=pfd)
        except FileNotFoundError:
            pass
        dev = os.makedev(d.get("major", 0), d.get("minor", 0)) if d["type"] != "p" else 0
        os.mknod(name, kind | (mode & 0o7777), dev, dir_fd=pfd)
        os.chown(name, d.get("uid", 0) or 0, d.get("gid", 0) or 0, dir_fd=pfd, follow_symlinks=False)
    finally:
        os.close(pfd)


def dev_symlinks(root: Root) -> None:
    links = [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ]
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "core"))
    pfd = root.mkdir_all("/dev")
    try:
        for target, name in links:
            if name == "ptmx":
                try:
                    os.unlink(name, dir_fd=pfd)
                except FileNotFoundError:
                    pass
            try:
                os.symlink(target, name, dir_fd=pfd)
            except FileExistsError:
                pass
    finally:
        os.close(pfd)


def pivot(rootfs: str, no_pivot: bool) -> None:
    """Make ``rootfs`` the root: pivot_root(".", ".") then detach the old root; or MS_MOVE+chroot."""
    try:
        if no_pivot:
            os.chdir(rootfs)
            sc.mount(rootfs, "/", None, sc.MS_MOVE, None)
            os.chroot(".")
            os.chdir("/")
            return
        old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchdir(new)
            sc.pivot_root(".", ".")
            os.fchdir(old)
            sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC, None)
            sc.umount2(".", sc.MNT_DETACH)
        finally:
            os.close(old)
            os.close(new)
        os.chdir("/")
    except OSError as e:
        raise RuntimeFailure(
            f"{'moving' if no_pivot else 'pivoting'} to the rootfs {rootfs}: {e.strerror}"
        ) from None


def root_propagation(cfg: dict[str, Any]) -> None:
    """Give the new root the config's ``rootfsPropagation`` (after pivot_root).

    The rootfs is bound from a parent made private (pivot_root needs that), so without this the
    root is private whatever was asked: "shared" would not propagate mounts between the root and
    its bind mounts, "unbindable" would still be bindable (runc fails runtime-tools on both)."""
    prop = spec.PROPAGATION.get((cfg.get("linux") or {}).get("rootfsPropagation") or "")
    if prop and prop & (sc.MS_SHARED | sc.MS_UNBINDABLE):
        try:
            sc.mount(None, "/", None, prop, None)
        except OSError as e:
            name = cfg["linux"]["rootfsPropagation"]
            raise MountError(f"setting / propagation to {name}: {e.strerror}") from None


def write_sysctls(sysctl: dict[str, str]) -> None:
    for key, value in sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        if ".." in key.split(".") or "/" in key:
            raise RuntimeFailure(f"sysctl {key!r}: not a valid name")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as e:
            raise RuntimeFailure(f"sysctl {key}={value}: {e.strerror}") from None


def readonly_path(path: str) -> None:
    try:
        sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC, None)
    except FileNotFoundError:
        return
    except OSError as e:
        raise RuntimeFailure(f"readonly path {path}: {e.strerror}") from None
    keep = _mount_flags_of(path) & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    try:
        sc.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC | keep, None)
    except OSError as e:
        raise RuntimeFailure(f"readonly path {path}: {e.strerror}") from None


def mask_path(path: str, mount_label: str = "") -> None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        raise RuntimeFailure(f"masked path {path}: {e.strerror}") from None
    try:
        if stat.S_ISDIR(st.st_mode):
            data = f'context="{mount_label}"' if mount_label else None
            sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY, data)
        else:
            sc.mount("/dev/null", path, None, sc.MS_BIND, None)
    except OSError as e:
        raise RuntimeFailure(f"masked path {path}: {e.strerror}") from None


def readonly_root() -> None:
    keep = _mount_flags_of("/") & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    try:
        sc.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | keep, None)
    except OSError as e:
        raise RuntimeFailure(f"making the root read-only: {e.strerror}") from None


def finalize(cfg: dict[str, Any], own_mntns: bool = True) -> None:
    """After pivot_root: sysctls, read-only and masked paths, read-only root."""
    linux = cfg.get("linux") or {}
    if linux.get("sysctl"):
        write_sysctls(linux["sysctl"])
    if not own_mntns:
        return  # these would change the host's mounts
    for p in linux.get("readonlyPaths") or []:
        readonly_path(p)
    for p in linux.get("maskedPaths") or []:
        mask_path(p, linux.get("mountLabel") or "")
    if (cfg.get("root") or {}).get("readonly"):
        readonly_root()
    log.debug("rootfs finalized")


def unmount_under(rootfs: str) -> None:
    """Detach every mount at or below ``rootfs`` (a container that shared the host's mount ns)."""
    if not rootfs:
        return
    prefix = rootfs.rstrip("/") + "/"
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return
    points = [ln.split()[4].replace("\\040", " ") for ln in lines]
    for mp in sorted({p for p in points if p == rootfs or p.startswith(prefix)}, key=len, reverse=True):
        try:
            sc.umount2(mp, sc.MNT_DETACH)
        except OSError:
            pass
