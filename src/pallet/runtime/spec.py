"""runtime-spec ``config.json``: loading, the checks a runtime must make before touching the host,
the tables that turn its strings into kernel values, and the default spec for ``spec``.

Validation is hand-written and shallow on purpose (a JSON-schema library would cost more to import
than runc takes to run a container); deeper checks happen where each value is used.
"""

from __future__ import annotations

import os

from pallet.errors import RuntimeFailure
from pallet.runtime import jsonio
from pallet.runtime import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

OCI_VERSION = "1.2.0"
OCI_VERSION_MIN = "1.0.0"

NAMESPACES = {
    "pid": sc.CLONE_NEWPID,
    "network": sc.CLONE_NEWNET,
    "mount": sc.CLONE_NEWNS,
    "ipc": sc.CLONE_NEWIPC,
    "uts": sc.CLONE_NEWUTS,
    "user": sc.CLONE_NEWUSER,
    "cgroup": sc.CLONE_NEWCGROUP,
    "time": sc.CLONE_NEWTIME,
}
#: /proc/PID/ns/<name> for each runtime-spec namespace type
NS_PROC_NAME = {
    "pid": "pid",
    "network": "net",
    "mount": "mnt",
    "ipc": "ipc",
    "uts": "uts",
    "user": "user",
    "cgroup": "cgroup",
    "time": "time",
}

#: mount option → (clear, set) flags
MOUNT_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, sc.MS_SYNCHRONOUS),
    "atime": (True, sc.MS_NOATIME),
    "bind": (False, sc.MS_BIND),
    "defaults": (False, 0),
    "dev": (True, sc.MS_NODEV),
    "diratime": (True, sc.MS_NODIRATIME),
    "dirsync": (False, sc.MS_DIRSYNC),
    "exec": (True, sc.MS_NOEXEC),
    "iversion": (False, sc.MS_I_VERSION),
    "lazytime": (False, sc.MS_LAZYTIME),
    "loud": (True, sc.MS_SILENT),
    "mand": (False, sc.MS_MANDLOCK),
    "noatime": (False, sc.MS_NOATIME),
    "nodev": (False, sc.MS_NODEV),
    "nodiratime": (False, sc.MS_NODIRATIME),
    "noexec": (False, sc.MS_NOEXEC),
    "noiversion": (True, sc.MS_I_VERSION),
    "nolazytime": (True, sc.MS_LAZYTIME),
    "nomand": (True, sc.MS_MANDLOCK),
    "norelatime": (True, sc.MS_RELATIME),
    "nostrictatime": (True, sc.MS_STRICTATIME),
    "nosuid": (False, sc.MS_NOSUID),
    "nosymfollow": (False, sc.MS_NOSYMFOLLOW),
    "rbind": (False, sc.MS_BIND | sc.MS_REC),
    "relatime": (False, sc.MS_RELATIME),
    "remount": (False, sc.MS_REMOUNT),
    "ro": (False, sc.MS_RDONLY),
    "rw": (True, sc.MS_RDONLY),
    "silent": (False, sc.MS_SILENT),
    "strictatime": (False, sc.MS_STRICTATIME),
    "suid": (True, sc.MS_NOSUID),
    "symfollow": (True, sc.MS_NOSYMFOLLOW),
    "sync": (False, sc.MS_SYNCHRONOUS),
}
PROPAGATION = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
#: recursive (mount_setattr) options runc accepts; we apply them as their plain forms recursively
RECURSIVE = {
    "rro",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnodiratime",
    "rdiratime",
    "rrelatime",
    "rnorelatime",
    "rnoatime",
    "ratime",
    "rstrictatime",
    "rnostrictatime",
    "rnosymfollow",
    "rsymfollow",
}
EXTRA_OPTIONS = {"tmpcopyup", "acl", "noacl", "idmap", "ridmap"}

RLIMITS = {
    "RLIMIT_CPU": 0,
    "RLIMIT_FSIZE": 1,
    "RLIMIT_DATA": 2,
    "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5,
    "RLIMIT_NPROC": 6,
    "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14,
    "RLIMIT_RTTIME": 15,
}
HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


class ConfigInvalid(RuntimeFailure):
    """config.json is missing, malformed or asks for something impossible."""


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigInvalid(f"invalid config.json: {msg}")


def load(bundle: str) -> dict[str, Any]:
    """Read and check ``bundle/config.json``; raises ConfigInvalid with one line naming the fault."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigInvalid(f"bundle {bundle}: config.json not found") from None
    except OSError as e:
        raise ConfigInvalid(f"reading {path}: {e.strerror}") from None
    try:
        cfg = jsonio.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigInvalid(f"{path} is not valid JSON: {e}") from None
    validate(cfg)
    return cfg


def validate(cfg: Any) -> None:
    _expect(isinstance(cfg, dict), "top level must be an object")
    v = cfg.get("ociVersion")
    _expect(isinstance(v, str) and v != "", "ociVersion must be a non-empty string")
    _expect(v.split(".")[0] == "1", f"unsupported ociVersion {v!r} (this runtime implements 1.x)")
    root = cfg.get("root")
    if root is not None:
        _expect(
            isinstance(root, dict) and isinstance(root.get("path"), str) and root["path"] != "",
            "root.path must be a non-empty string",
        )
    proc = cfg.get("process")
    if proc is not None:
        validate_process(proc)
    mounts = cfg.get("mounts") or []
    _expect(isinstance(mounts, list), "mounts must be an array")
    for i, m in enumerate(mounts):
        _expect(isinstance(m, dict), f"mounts[{i}] must be an object")
        d = m.get("destination")
        _expect(isinstance(d, str) and d != "", f"mounts[{i}].destination must be a non-empty string")
        _expect(d.startswith("/"), f"mounts[{i}].destination {d!r} must be absolute")
        opts = m.get("options") or []
        _expect(
            isinstance(opts, list) and all(isinstance(o, str) for o in opts),
            f"mounts[{i}].options must be an array of strings",
        )
    hooks = cfg.get("hooks") or {}
    _expect(isinstance(hooks, dict), "hooks must be an object")
    for name, lst in hooks.items():
        _expect(name in HOOK_NAMES, f"unknown hook type {name!r}")
        _expect(isinstance(lst, list), f"hooks.{name} must be an array")
        for j, h in enumerate(lst):
            _expect(
                isinstance(h, dict) and isinstance(h.get("path"), str) and h["path"].startswith("/"),
                f"hooks.{name}[{j}].path must be an absolute path",
            )
            t = h.get("timeout")
            _expect(t is None or (isinstance(t, int) and t > 0), f"hooks.{name}[{j}].timeout must be > 0")
    linux = cfg.get("linux")
    if linux is not None:
        _expect(isinstance(linux, dict), "linux must be an object")
        seen = set()
        for i, ns in enumerate(linux.get("namespaces") or []):
            t = ns.get("type") if isinstance(ns, dict) else None
            _expect(t in NAMESPACES, f"linux.namespaces[{i}].type {t!r} is not a namespace type")
            _expect(t not in seen, f"linux.namespaces: {t} appears twice")
            seen.add(t)
            p = ns.get("path")
            _expect(
                p is None or (isinstance(p, str) and p.startswith("/")),
                f"linux.namespaces[{i}].path must be absolute",
            )
        for key in ("uidMappings", "gidMappings"):
            for i, mp in enumerate(linux.get(key) or []):
                _expect(
                    isinstance(mp, dict)
                    and all(
                        isinstance(mp.get(k), int) and mp[k] >= 0 for k in ("containerID", "hostID", "size")
                    ),
                    f"linux.{key}[{i}] needs containerID, hostID and size",
                )
        if linux.get("uidMappings") or linux.get("gidMappings"):
            _expect("user" in seen, "uidMappings/gidMappings need a user namespace")
        if "user" in seen and not any(n.get("path") for n in linux["namespaces"] if n["type"] == "user"):
            _expect(
                bool(linux.get("uidMappings")) and bool(linux.get("gidMappings")),
                "a new user namespace needs uidMappings and gidMappings",
            )
        for d in linux.get("devices") or []:
            _expect(
                isinstance(d, dict)
                and d.get("type") in ("c", "b", "u", "p")
                and isinstance(d.get("path"), str)
                and d["path"].startswith("/"),
                f"linux.devices entry {d!r} needs an absolute path and type c, b, u or p",
            )
            if d["type"] != "p":
                _expect(
                    isinstance(d.get("major"), int) and isinstance(d.get("minor"), int),
                    f"linux.devices {d['path']}: major and minor are required for type {d['type']}",
                )
        rp = linux.get("rootfsPropagation")
        _expect(rp in (None, "") or rp in PROPAGATION, f"linux.rootfsPropagation {rp!r} is not valid")
        sysctl = linux.get("sysctl") or {}
        _expect(
            isinstance(sysctl, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in sysctl.items()),
            "linux.sysctl must map strings to strings",
        )


def validate_process(proc: Any, *, where: str = "process") -> None:
    _expect(isinstance(proc, dict), f"{where} must be an object")
    args = proc.get("args")
    _expect(
        isinstance(args, list) and len(args) > 0 and all(isinstance(a, str) for a in args),
        f"{where}.args must be a non-empty array of strings",
    )
    cwd = proc.get("cwd", "/")
    _expect(isinstance(cwd, str) and cwd.startswith("/"), f"{where}.cwd must be an absolute path")
    env = proc.get("env") or []
    _expect(
        isinstance(env, list) and all(isinstance(e, str) for e in env),
        f"{where}.env must be an array of strings",
    )
    user = proc.get("user") or {}
    _expect(isinstance(user, dict), f"{where}.user must be an object")
    for k in ("uid", "gid"):
        _expect(isinstance(user.get(k, 0), int) and user.get(k, 0) >= 0, f"{where}.user.{k} must be >= 0")
    for i, r in enumerate(proc.get("rlimits") or []):
        _expect(
            isinstance(r, dict) and r.get("type") in RLIMITS,
            f"{where}.rlimits[{i}].type {r.get('type') if isinstance(r, dict) else r!r} is not an rlimit",
        )
        _expect(
            isinstance(r.get("soft"), int) and isinstance(r.get("hard"), int),
            f"{where}.rlimits[{i}] needs integer soft and hard",
        )
        _expect(r["soft"] <= r["hard"], f"{where}.rlimits {r['type']}: soft {r['soft']} > hard {r['hard']}")


def namespaces(cfg: dict[str, Any]) -> dict[str, str | None]:
    """type → path (None means "create a new one")."""
    return {n["type"]: n.get("path") or None for n in (cfg.get("linux") or {}).get("namespaces") or []}


def rootfs_path(cfg: dict[str, Any], bundle: str) -> str:
    p = (cfg.get("root") or {}).get("path") or "rootfs"
    return os.path.normpath(os.path.join(bundle, p))


def default_spec(rootless: bool = False) -> dict[str, Any]:
    """What ``spec`` writes: the same defaults as ``runc spec`` (with rootless variant)."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "pallet",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            },
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    if rootless:
        uid, gid = os.getuid(), os.getgid()
        linux = spec["linux"]
        linux["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
        linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]
        linux["namespaces"].append({"type": "user"})
        del linux["resources"]
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != "/sys/fs/cgroup"]
        for m in spec["mounts"]:
            if m["destination"] == "/dev/pts":
                m["options"] = [o for o in m["options"] if o != "gid=5"]
            if m["destination"] == "/sys":
                m.update(type="none", source="/sys", options=["rbind", "nosuid", "noexec", "nodev", "ro"])
        spec["mounts"].append(
            {
                "destination": "/sys/fs/cgroup",
                "type": "none",
                "source": "/sys/fs/cgroup",
                "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
            }
        )
    return spec
