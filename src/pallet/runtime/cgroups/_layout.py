"""Where the cgroup hierarchies are and where this process sits in them, read from /proc.

Nothing here assumes /sys/fs/cgroup: v1 hierarchies, the unified (v2) hierarchy and their roots
come from /proc/self/mountinfo, our own cgroups from /proc/self/cgroup. A hybrid host has both.
"""

from __future__ import annotations

import os

from pallet.errors import RuntimeFailure


class CgroupError(RuntimeFailure):
    """A cgroup could not be created, configured, queried or removed."""


#: mount options of a v1 cgroup mount that are not controller names
_V1_NON_CONTROLLERS = frozenset(
    {"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "favordynmods", "none"}
)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


class Hierarchy:
    """One mounted cgroup hierarchy: a v1 hierarchy (one or more controllers, or a named one such
    as name=systemd) or the unified v2 hierarchy (key "")."""

    __slots__ = ("controllers", "key", "mountpoint", "own", "root", "version")

    def __init__(self, key: str, version: int, controllers: frozenset[str], mountpoint: str,
                 root: str, own: str | None) -> None:
        #: "memory", "cpu,cpuacct", "name=systemd"; "" for the unified hierarchy
        self.key = key
        self.version = version
        #: v1: the controllers bound to it; v2: those listed in the mount root's cgroup.controllers
        self.controllers = controllers
        self.mountpoint = mountpoint
        #: the cgroup that the mount shows as its root (not "/" inside some containers)
        self.root = root
        #: this process's cgroup in the hierarchy (None: /proc/self/cgroup does not list it)
        self.own = own

    @property
    def name(self) -> str:
        """Directory name under /sys/fs/cgroup (for the container's cgroup mount)."""
        if self.version == 2:
            return "unified"
        return self.key[len("name="):] if self.key.startswith("name=") else self.key

    def dir_for(self, path: str) -> str:
        """The host directory of cgroup ``path`` (absolute, relative to the hierarchy's root)."""
        root = self.root.rstrip("/")
        if path != root and not path.startswith(root + "/") and root:
            raise CgroupError(
                f"cgroup {self.name}: {path} is outside the part of the hierarchy mounted at "
                f"{self.mountpoint} (which shows {self.root})"
            )
        return self.mountpoint + path[len(root):] if root else self.mountpoint + path

    def __repr__(self) -> str:
        return f"Hierarchy({self.key!r}, v{self.version}, {self.mountpoint!r}, root={self.root!r})"


class Layout:
    """Every cgroup hierarchy mounted in this mount namespace."""

    __slots__ = ("by_controller", "unified", "v1")

    def __init__(self, v1: list[Hierarchy], unified: Hierarchy | None) -> None:
        self.v1 = v1
        self.unified = unified
        #: controller name -> the hierarchy that owns it (v1 first: on a hybrid host a controller
        #: bound to v1 is not available in v2)
        self.by_controller: dict[str, Hierarchy] = {}
        if unified is not None:
            for c in unified.controllers:
                self.by_controller[c] = unified
        for h in v1:
            for c in h.controllers:
                self.by_controller[c] = h

    @property
    def mode(self) -> str:
        """"v1", "v2" or "hybrid" (v1 controllers plus a unified hierarchy)."""
        has_v1 = any(h.controllers for h in self.v1)
        if self.unified is None:
            return "v1"
        return "hybrid" if has_v1 else "v2"

    def hierarchies(self) -> list[Hierarchy]:
        return [*self.v1, *([self.unified] if self.unified is not None else [])]


def parse(mountinfo: str, proc_cgroup: str, known_controllers: frozenset[str] | None = None,
          read_controllers: bool = True) -> Layout:
    """Build a Layout from the text of /proc/self/mountinfo and /proc/self/cgroup."""
    own_v1: dict[frozenset[str], str] = {}
    own_v2: str | None = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        if hid == "0" and ctrls == "":
            own_v2 = path
        else:
            own_v1[frozenset(ctrls.split(","))] = path

    v1: dict[str, Hierarchy] = {}
    unified: Hierarchy | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        if fstype == "cgroup2":
            if unified is not None:
                continue  # same hierarchy mounted again: keep the first
            ctrls: frozenset[str] = frozenset()
            if read_controllers:
                try:
                    with open(os.path.join(mountpoint, "cgroup.controllers")) as f:
                        ctrls = frozenset(f.read().split())
                except OSError:
                    pass
            unified = Hierarchy("", 2, ctrls, mountpoint, root, own_v2)
            continue
        opts = fields[sep + 3].split(",") if len(fields) > sep + 3 else []
        names = [o for o in opts if o.startswith("name=")]
        ctrl_list = [o for o in opts if o not in _V1_NON_CONTROLLERS and "=" not in o
                     and (known_controllers is None or o in known_controllers)]
        if not ctrl_list and not names:
            continue
        key = ",".join(ctrl_list) if ctrl_list else names[0]
        if key in v1:
            continue
        ident = frozenset(ctrl_list + names)
        v1[key] = Hierarchy(key, 1, frozenset(ctrl_list), mountpoint, root, own_v1.get(ident))
    return Layout(list(v1.values()), unified)


def _known_controllers() -> frozenset[str]:
    try:
        with open("/proc/cgroups") as f:
            return frozenset(line.split()[0] for line in f if line and not line.startswith("#"))
    except OSError:
        return frozenset()


_LAYOUT: Layout | None = None


def layout(refresh: bool = False) -> Layout:
    """The host's layout, read once per process (a runtime invocation is one short process)."""
    global _LAYOUT
    if _LAYOUT is None or refresh:
        with open("/proc/self/mountinfo") as f:
            mi = f.read()
        with open("/proc/self/cgroup") as f:
            pc = f.read()
        _LAYOUT = parse(mi, pc, _known_controllers() or None)
    return _LAYOUT


# --- cgroupsPath ---------------------------------------------------------------------------------

def _clean(path: str) -> str:
    """Lexically clean ``path`` as if rooted at "/", so ".." can never climb out (runc does too)."""
    return os.path.normpath("/" + path).replace("//", "/")


def expand_slice(slice_name: str) -> str:
    """systemd's slice nesting: "a-b-c.slice" lives at /a.slice/a-b.slice/a-b-c.slice."""
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise CgroupError(f"cgroupsPath: invalid systemd slice name {slice_name!r}")
    base = slice_name[: -len(".slice")]
    if base == "-":
        return "/"
    parts = base.split("-")
    if any(p == "" for p in parts):
        raise CgroupError(f"cgroupsPath: invalid systemd slice name {slice_name!r}")
    out, prefix = [], ""
    for p in parts:
        prefix = f"{prefix}-{p}" if prefix else p
        out.append(prefix + ".slice")
    return "/" + "/".join(out)


def systemd_path(cgroups_path: str) -> str:
    """The cgroupfs path of a systemd-style "slice:prefix:name" cgroupsPath (runc --systemd-cgroup).

    Without systemd to ask, this is where systemd would put the unit: the slice expanded, and the
    scope "prefix-name.scope" (or "name" itself when it is a ".slice").
    """
    parts = cgroups_path.split(":")
    if len(parts) != 3 or not parts[2]:
        raise CgroupError(
            f'cgroupsPath: expected "slice:prefix:name" for systemd cgroups, got {cgroups_path!r}'
        )
    slice_name, prefix, name = parts
    if "/" in name or "/" in prefix:
        raise CgroupError(f"cgroupsPath: invalid systemd unit in {cgroups_path!r}")
    parent = expand_slice(slice_name or "system.slice")
    if name.endswith(".slice"):
        expand_slice(name)  # validate
        unit = name
    else:
        unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return parent.rstrip("/") + "/" + unit


def looks_systemd(cgroups_path: str) -> bool:
    parts = cgroups_path.split(":")
    return len(parts) == 3 and "/" not in cgroups_path


def resolve(cgroups_path: str | None, container_id: str, systemd: bool | None = None) -> tuple[str, bool]:
    """(path, relative): the cleaned cgroup path and whether it is relative to our own cgroup."""
    if cgroups_path is None or cgroups_path == "":
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise CgroupError(f"cgroup: invalid container id {container_id!r}")
        return f"/pallet/{container_id}", False
    if systemd or (systemd is None and looks_systemd(cgroups_path)):
        return systemd_path(cgroups_path), False
    if cgroups_path.startswith("/"):
        path = _clean(cgroups_path)
        if path == "/":
            raise CgroupError(
                "cgroupsPath '/' is the root cgroup: give the container a cgroup of its own"
            )
        return path, False
    rel = _clean(cgroups_path).lstrip("/")
    if not rel:
        raise CgroupError(f"cgroupsPath {cgroups_path!r} names no cgroup below our own")
    return rel, True
