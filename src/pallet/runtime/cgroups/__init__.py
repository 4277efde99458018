"""cgroups for containers: v1, v2 and hybrid hierarchies (this host is hybrid), behind one Manager.

The layout is read from /proc/self/mountinfo, never assumed. Each resource goes to whichever
hierarchy owns its controller: on a hybrid host memory may be v1 while hugetlb is v2, and one
``set`` writes both. The container joins every mounted hierarchy (named ones like name=systemd
and the unified one included), as runc does.

Errors are :class:`CgroupError` (a ``pallet.errors.RuntimeFailure``) naming the file and value:
``cgroup memory: cannot set memory.limit_in_bytes to 1024: device or resource busy``.
"""

from __future__ import annotations

import errno
import os
import time

from pallet.runtime.cgroups._files import subdirs
from pallet.runtime.cgroups._layout import CgroupError, Hierarchy, Layout

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds to import; the runtime starts per container
    from typing import Any

__all__ = ["CgroupError", "Manager", "controllers_available", "features", "manager"]


class Manager:
    """One container's cgroup across every mounted hierarchy (v1 controllers and/or unified)."""

    #: the cgroup path relative to each hierarchy's root, e.g. "/pallet/ID" or "/user.slice/x"
    #: (for a relative cgroupsPath: the path in the first hierarchy; see ``paths`` for each)
    path: str

    def __init__(self, layout: Layout, inner: str, relative: bool) -> None:
        self.layout = layout
        #: hierarchy key ("memory", "cpu,cpuacct", "name=systemd", "" for unified) -> cgroup path
        self.paths: dict[str, str] = {}
        #: hierarchy key -> the host directory of the container's cgroup
        self.dirs: dict[str, str] = {}
        for h in layout.hierarchies():
            if relative:
                own = h.own if h.own is not None else h.root
                if h.version == 2 and layout.mode == "v2":
                    # v2: next to our own cgroup, not inside it (no processes in inner nodes)
                    own = os.path.dirname(own.rstrip("/")) or "/"
                p = os.path.join(own, inner)
            else:
                p = inner
            self.paths[h.key] = p
            self.dirs[h.key] = h.dir_for(p)
        first = layout.hierarchies()
        self.path = self.paths[first[0].key] if first else inner

    # --- helpers ---------------------------------------------------------------------------------

    def _hier(self, controller: str) -> Hierarchy | None:
        return self.layout.by_controller.get(controller)

    def _dir(self, controller: str, what: str | None = None) -> str:
        h = self._hier(controller)
        if h is None:
            raise CgroupError(f"cgroup {what or controller}: the {controller} controller is not "
                              "mounted on this host")
        return self.dirs[h.key]

    def _primary(self) -> tuple[int, str]:
        """A hierarchy every container process is in: v1 devices/pids/freezer ..., else unified."""
        for c in ("devices", "pids", "freezer", "memory", "cpu", "cpuacct", "blkio", "cpuset"):
            h = self._hier(c)
            if h is not None and h.version == 1:
                return 1, self.dirs[h.key]
        if self.layout.unified is not None:
            return 2, self.dirs[""]
        if self.layout.v1:
            return 1, self.dirs[self.layout.v1[0].key]
        raise CgroupError("cgroup: no cgroup hierarchy is mounted")

    # --- lifecycle -------------------------------------------------------------------------------

    def create(self) -> None:
        """Create the cgroup in every hierarchy (idempotent); undone if any hierarchy refuses.

        One mkdir per hierarchy in the usual case (the parent exists): parents are made only when
        missing. A v1 cpuset level we make gets cgroup.clone_children, so the cgroups made under
        it later start with its cpus and mems (a new v1 cpuset is empty and refuses tasks)."""
        from pallet.runtime.cgroups import _files

        made: list[str] = []
        try:
            for h in self.layout.hierarchies():
                d = self.dirs[h.key]
                try:
                    os.mkdir(d, 0o755)
                    new = [d]
                except FileExistsError:
                    continue  # an existing (empty) cgroup is reused
                except FileNotFoundError:
                    new = self._make_parents(h, d)
                except OSError as e:
                    raise CgroupError(f"cgroup {h.name}: cannot create {d}: {_files.strerror(e)}") from None
                made.extend(new)
                if "cpuset" in h.controllers:
                    from pallet.runtime.cgroups import v1

                    for level in new:
                        v1.ensure_cpuset(level)
                        if level != d:
                            _files.try_write(level, "cgroup.clone_children", "1")
                if h.version == 2 and (len(new) > 1 or self.layout.mode == "v2"):
                    self._enable_v2_controllers()
        except BaseException:
            for level in reversed(made):
                try:
                    os.rmdir(level)
                except OSError:
                    pass
            raise

    def _make_parents(self, h: Hierarchy, d: str) -> list[str]:
        """mkdir ``d`` and its missing ancestors, outermost first; returns what was made."""
        from pallet.runtime.cgroups import _files

        chain = []
        p = d
        while not os.path.isdir(p):
            chain.append(p)
            p = os.path.dirname(p)
        made = []
        for level in reversed(chain):
            try:
                os.mkdir(level, 0o755)
            except FileExistsError:
                continue
            except OSError as e:
                raise CgroupError(f"cgroup {h.name}: cannot create {level}: {_files.strerror(e)}") from None
            made.append(level)
        return made

    def _enable_v2_controllers(self) -> None:
        """+controller in cgroup.subtree_control from the cgroup2 root down to our parent, so the
        container's cgroup has the controllers' files (done when those levels are made, and
        before a limit that needs them)."""
        from pallet.runtime.cgroups import v2

        h = self.layout.unified
        if h is None:
            return
        root = h.mountpoint
        levels = [root]
        rel = self.dirs[""][len(root):].strip("/")
        acc = root
        for part in rel.split("/")[:-1] if rel else []:
            acc = os.path.join(acc, part)
            levels.append(acc)
        v2.enable_controllers(levels, h.controllers)

    def apply(self, pid: int) -> None:
        """Move ``pid`` (and so its future children) into the cgroup in every hierarchy."""
        from pallet.runtime.cgroups import _files

        for h in self.layout.hierarchies():
            d = self.dirs[h.key]
            err = _files.try_write(d, "cgroup.procs", pid)
            if err is not None and err.errno == errno.ENOENT and not os.path.isdir(d):
                self.create()
                err = _files.try_write(d, "cgroup.procs", pid)
            if err is not None:
                raise CgroupError(f"cgroup {h.name}: cannot move pid {pid} into {d}: "
                                  f"{_files.strerror(err)}")

    def unified_fd(self) -> int:
        """An O_PATH fd on the container's cgroup2 directory, for ``syscalls.fork_into_cgroup``
        (the child is born there: no migration), or -1 when there is no cgroup2 hierarchy."""
        if self.layout.unified is None:
            return -1
        try:
            return os.open(self.dirs[""], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return -1

    def join(self, unified: bool = True) -> None:
        """Move the calling process, which must be single-threaded, into the cgroup everywhere.

        Same result as ``apply(os.getpid())``, much cheaper: a v1 write of "0" to ``tasks``
        moves only the calling thread, which the kernel does without its global threadgroup lock
        (taking that lock for writing first waits for an RCU grace period, 5-30 ms here, which
        ``apply`` from another process pays on every container start). cgroup2 has no such
        path: ``unified=False`` when the process was born there (``fork_into_cgroup``).
        """
        from pallet.runtime.cgroups import _files

        for h in self.layout.hierarchies():
            if h.version == 2:
                if not unified:
                    continue
                name = "cgroup.procs"
            else:
                name = "tasks"
            err = _files.try_write(self.dirs[h.key], name, "0")
            if err is not None:
                raise CgroupError(f"cgroup {h.name}: cannot join {self.dirs[h.key]}: "
                                  f"{_files.strerror(err)}")

    def set(self, resources: dict[str, Any], *, update: bool = False,
            default_devices: bool = True) -> None:
        """Apply runtime-spec ``linux.resources`` (create and ``update`` both use this).

        Only the keys present are written. Device rules are applied on create even when the config
        lists none (default deny plus runc's default devices: /dev/null, zero, full, tty, random,
        urandom, ptmx, pts, net/tun and mknod of anything); with ``update=True`` they are left
        alone unless ``devices`` is given. ``default_devices=False`` drops the implicit list.

        Raises pallet.errors.RuntimeFailure naming the setting when the host refuses one.
        """
        from pallet.runtime.cgroups import v1, v2

        if resources is None:
            resources = {}
        if not isinstance(resources, dict):
            raise CgroupError("cgroup: linux.resources must be an object")

        def sub(key: str) -> dict:
            v = resources.get(key)
            if v is None:
                return {}
            if not isinstance(v, dict):
                raise CgroupError(f"cgroup: linux.resources.{key} must be an object")
            return v

        cpu = sub("cpu")
        if cpu.get("cpus") or cpu.get("mems"):
            h = self._hier("cpuset")
            d = self._dir("cpuset")
            (v1.set_cpuset if h.version == 1 else _v2_cpuset)(d, cpu)
        if "devices" in resources or not update:
            self._set_devices(resources.get("devices"), default_devices)
        mem = sub("memory")
        if mem:
            h = self._hier("memory")
            (v1.set_memory if h is not None and h.version == 1 else v2.set_memory)(
                self._dir("memory"), mem)
        cpu_keys = {k for k, v in cpu.items() if v is not None and k not in ("cpus", "mems")}
        if cpu_keys:
            h = self._hier("cpu")
            (v1.set_cpu if h is not None and h.version == 1 else v2.set_cpu)(self._dir("cpu"), cpu)
        pids = sub("pids")
        if pids:
            v1.set_pids(self._dir("pids"), pids)
        bio = sub("blockIO")
        if bio:
            h = self._hier("blkio")
            if h is not None:
                v1.set_blkio(self.dirs[h.key], bio)
            else:
                v2.set_io(self._dir("io", "blockIO"), bio)
        hp = resources.get("hugepageLimits")
        if hp:
            h = self._hier("hugetlb")
            if h is not None and h.version == 2:
                self._enable_v2_controllers()
            (v1.set_hugetlb if h is not None and h.version == 1 else v2.set_hugetlb)(
                self._dir("hugetlb"), hp)
        net = sub("network")
        if net.get("classID") is not None:
            v1.set_net_cls(self._dir("net_cls", "network"), net["classID"])
        if net.get("priorities"):
            v1.set_net_prio(self._dir("net_prio", "network"), net["priorities"])
        rdma = sub("rdma")
        if rdma:
            v1.set_rdma(self._dir("rdma"), rdma)
        unified = sub("unified")
        if unified:
            if self.layout.unified is None:
                raise CgroupError("cgroup unified: cannot set "
                                  f"{', '.join(sorted(unified))}: cgroup v2 is not mounted on this host")
            v1_ctrls = frozenset(c for h in self.layout.v1 for c in h.controllers)
            self._enable_v2_controllers()
            v2.set_unified(self.dirs[""], unified, v1_ctrls)

    def _set_devices(self, spec_devices: list | None, default_devices: bool) -> None:
        from pallet.runtime.cgroups import devices

        rules = devices.target_rules(spec_devices, default_devices)
        h = self._hier("devices")
        if h is not None and h.version == 1:
            if self.paths[h.key] in ("/", h.root):
                raise CgroupError("cgroup devices: refusing to change the device rules of the "
                                  "hierarchy's root cgroup")
            devices.set_v1(self.dirs[h.key], rules)
        elif self.layout.unified is not None:
            if self.paths[""] in ("/", self.layout.unified.root):
                raise CgroupError("cgroup devices: refusing to attach a device filter to the "
                                  "hierarchy's root cgroup")
            devices.set_v2(self.dirs[""], rules)
        else:
            raise CgroupError("cgroup devices: no devices controller (v1) or cgroup v2 on this host")

    # --- freezer ---------------------------------------------------------------------------------

    def _freezer(self) -> tuple[int, str]:
        h = self._hier("freezer")
        if h is not None and h.version == 1:
            return 1, self.dirs[h.key]
        if self.layout.unified is not None:
            return 2, self.dirs[""]  # cgroup.freeze is a core v2 file, no controller needed
        raise CgroupError("cgroup freezer: no freezer controller (v1) or cgroup v2 on this host")

    def freeze(self) -> None:
        """Freeze every process; returns once the kernel reports the cgroup frozen."""
        from pallet.runtime.cgroups import v1, v2

        version, d = self._freezer()
        (v1.freeze if version == 1 else v2.freeze)(d)

    def thaw(self) -> None:
        from pallet.runtime.cgroups import v1, v2

        version, d = self._freezer()
        (v1.thaw if version == 1 else v2.thaw)(d)

    def frozen(self) -> bool:
        from pallet.runtime.cgroups import v1, v2

        version, d = self._freezer()
        return (v1.frozen if version == 1 else v2.frozen)(d)

    # --- queries ---------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Every process in the cgroup and its descendants."""
        from pallet.runtime.cgroups import v2

        _, d = self._primary()
        return v2.procs(d)

    def stats(self) -> dict[str, Any]:
        """runc ``events --stats`` shaped numbers: cpu, cpuset, memory, pids, blkio, hugetlb."""
        from pallet.runtime.cgroups import v1, v2
        from pallet.runtime.cgroups.common import hugepage_sizes

        out: dict[str, Any] = {"cpu": {}, "cpuset": {}, "memory": {}, "pids": {}, "blkio": {},
                               "hugetlb": {}}
        h_cpu, h_acct = self._hier("cpu"), self._hier("cpuacct")
        if (h_cpu is None or h_cpu.version == 2) and h_acct is None and self.layout.unified:
            out["cpu"] = v2.cpu_stats(self.dirs[""])  # usage is in every v2 cpu.stat
        elif h_cpu is not None or h_acct is not None:
            out["cpu"] = v1.cpu_stats(self.dirs[h_cpu.key] if h_cpu else None,
                                      self.dirs[h_acct.key] if h_acct else None)
        h = self._hier("cpuset")
        if h is not None:
            out["cpuset"] = v1.cpuset_stats(self.dirs[h.key])
        h = self._hier("memory")
        if h is not None:
            out["memory"] = (v1.memory_stats if h.version == 1 else v2.memory_stats)(self.dirs[h.key])
        h = self._hier("pids")
        if h is not None:
            out["pids"] = (v1.pids_stats if h.version == 1 else v2.pids_stats)(self.dirs[h.key])
        elif self.layout.unified is not None:
            out["pids"] = v2.pids_stats(self.dirs[""])
        h = self._hier("blkio") or self._hier("io")
        if h is not None:
            out["blkio"] = (v1.blkio_stats if h.version == 1 else v2.io_stats)(self.dirs[h.key])
        h = self._hier("hugetlb")
        if h is not None:
            sizes = hugepage_sizes()
            out["hugetlb"] = (v1.hugetlb_stats if h.version == 1 else v2.hugetlb_stats)(
                self.dirs[h.key], sizes)
        return out

    def oom_kill_count(self) -> int:
        """How many processes the kernel OOM-killed in this cgroup."""
        from pallet.runtime.cgroups import v1, v2

        h = self._hier("memory")
        if h is None:
            return 0
        return (v1.oom_kills if h.version == 1 else v2.oom_kills)(self.dirs[h.key])

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed a process in this cgroup."""
        return self.oom_kill_count() > 0

    def exists(self) -> bool:
        _, d = self._primary()
        return os.path.isdir(d)

    # --- teardown --------------------------------------------------------------------------------

    def destroy(self, timeout: float = 5.0) -> None:
        """Remove the cgroup everywhere (processes must be gone); idempotent.

        Child cgroups the container made are removed first. A cgroup whose last process is still
        exiting refuses rmdir with EBUSY for a moment: retried with back-off up to ``timeout``.
        """
        deadline = time.monotonic() + timeout
        failures = []
        for h in self.layout.hierarchies():
            d = self.dirs[h.key]
            err = _rmtree(d, deadline)
            if err is not None:
                failures.append(f"{d}: {err}")
        if failures:
            raise CgroupError("cgroup: cannot remove " + "; ".join(failures))

    def mounts_for_container(self) -> list[tuple[str, str, list[str]]]:
        """(hierarchy dir name under /sys/fs/cgroup, host source dir, options) for a cgroup mount
        inside the container, so /sys/fs/cgroup there shows this container's cgroup as its root.

        ``options`` are the cgroup filesystem's mount data: the v1 controllers (["cpu",
        "cpuacct"], ["name=systemd"]), or [] for cgroup2. Inside a new cgroup namespace mount
        ``-t cgroup -o <options>`` (``-t cgroup2`` for name "unified" or "") at the name, and the
        kernel shows the container's cgroup as the root; without one, bind-mount the source dir.
        Name "" means the cgroup2 mount *is* /sys/fs/cgroup (a pure v2 host).
        """
        out = []
        for h in self.layout.v1:
            opts = sorted(h.controllers) if h.controllers else [h.key]
            out.append((h.name, self.dirs[h.key], opts))
        u = self.layout.unified
        if u is not None:
            out.append(("" if self.layout.mode == "v2" else "unified", self.dirs[""], []))
        return out

    def symlinks_for_container(self) -> list[tuple[str, str]]:
        """(link, target) under /sys/fs/cgroup for co-mounted controllers: cpu -> cpu,cpuacct."""
        out = []
        for h in self.layout.v1:
            if len(h.controllers) > 1:
                for c in sorted(h.controllers):
                    if c != h.name:
                        out.append((c, h.name))
        return out


def _v2_cpuset(d: str, cpu: dict) -> None:
    from pallet.runtime.cgroups import v1

    v1.set_cpuset(d, cpu)  # same file names on v2


def _rmtree(d: str, deadline: float) -> str | None:
    """rmdir ``d`` and the cgroups below it, deepest first; None on success or if already gone."""
    try:
        children = subdirs(d)
    except FileNotFoundError:
        return None
    except OSError as e:
        return e.strerror
    for c in children:
        err = _rmtree(c, deadline)
        if err is not None:
            return err
    delay = 0.001
    while True:
        try:
            os.rmdir(d)
            return None
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                procs = ""
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        left = f.read().split()
                    if left:
                        procs = f" (processes still inside: {' '.join(left[:10])})"
                except OSError:
                    pass
                msg = os.strerror(e.errno)
                return msg[:1].lower() + msg[1:] + procs
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def manager(cgroups_path: str | None, container_id: str, *, systemd: bool | None = None,
            layout: Layout | None = None) -> Manager:
    """The Manager for a config's ``linux.cgroupsPath`` (absolute, relative, or None → default).

    None gives "/pallet/<id>". A relative path goes under the runtime's own cgroup in each
    hierarchy (v1), or next to it (pure v2), as runc does. "slice:prefix:name" (systemd's form,
    recognised when ``systemd`` is None and the path has that shape, or forced with True) maps to
    the cgroupfs path systemd would use: /slice.../prefix-name.scope.
    """
    from pallet.runtime.cgroups import _layout

    inner, relative = _layout.resolve(cgroups_path, container_id, systemd)
    return Manager(layout or _layout.layout(), inner, relative)


def controllers_available() -> dict[str, str]:
    """Controller name → "v1" or "v2" on this host (for ``features``).

    On v2, "devices" (an eBPF program) and "freezer" (cgroup.freeze) need no controller and are
    listed as v2 when no v1 hierarchy has them.
    """
    from pallet.runtime.cgroups import _layout

    lay = _layout.layout()
    out = {c: f"v{h.version}" for c, h in lay.by_controller.items()}
    if lay.unified is not None:
        for c in ("devices", "freezer"):
            out.setdefault(c, "v2")
    return dict(sorted(out.items()))


def features() -> dict[str, bool]:
    """The ``linux.cgroup`` object of ``pallet-runtime features`` (runtime-spec features.md):
    which cgroup versions are usable here, systemd (not driven: paths only) and rdma."""
    from pallet.runtime.cgroups import _layout

    lay = _layout.layout()
    return {
        "v1": any(h.controllers for h in lay.v1),
        "v2": lay.unified is not None,
        "systemd": False,
        "systemdUser": False,
        "rdma": "rdma" in lay.by_controller,
    }
