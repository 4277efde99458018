"""``run``/``create`` options, and their validation into docker's Config and HostConfig shapes.

Everything the user typed is checked here, before anything is created, so bad input gets one
clear error and leaves no half-made container behind. The stored shapes are docker's (what
``inspect`` shows): ``Config`` (what runs) and ``HostConfig`` (how it is confined).
"""

from __future__ import annotations

import json
import os
import re
import signal as _signal

from pallet.errors import UsageError
from pallet.records import dataclass, field

TYPE_CHECKING = False  # typing costs an import on the hot path: annotations are strings
if TYPE_CHECKING:
    from typing import Any

#: default stop timeout (seconds), as docker
DEFAULT_STOP_TIMEOUT = 10
#: docker's default /dev/shm size
DEFAULT_SHM_SIZE = 64 << 20
NETWORK_MODES = ("none", "host")
LOG_DRIVERS = ("json-file", "k8s-file", "none")
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")


@dataclass
class CreateOptions:
    """What ``pallet create``/``run`` accept, as plain values (the CLI parses flags into this)."""

    name: str | None = None
    entrypoint: str | list[str] | None = None
    env: list[str] = field(default_factory=list)
    env_files: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    group_add: list[str] = field(default_factory=list)
    hostname: str | None = None
    labels: list[str] = field(default_factory=list)
    tty: bool = False
    interactive: bool = False
    attach: bool = False
    auto_remove: bool = False
    volumes: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    tmpfs: list[str] = field(default_factory=list)
    memory: str | int | None = None
    memory_swap: str | int | None = None
    memory_reservation: str | int | None = None
    cpus: float | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    pids_limit: int | None = None
    ulimits: list[str] = field(default_factory=list)
    read_only: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    security_opt: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    init: bool = False
    restart: str = "no"
    stop_signal: str | None = None
    stop_timeout: int | None = None
    health_cmd: str | None = None
    health_interval: str | None = None
    health_timeout: str | None = None
    health_retries: int | None = None
    health_start_period: str | None = None
    no_healthcheck: bool = False
    runtime: str | None = None
    pull: str = "missing"
    platform: str | None = None
    log_driver: str = "json-file"
    log_opts: list[str] = field(default_factory=list)
    add_hosts: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    sysctls: list[str] = field(default_factory=list)
    shm_size: str | int | None = None
    #: the --network values as given (a list: podman's NAME:opts hold commas), or one string
    network: str | list[str] | None = None
    publish: list[str] = field(default_factory=list)
    publish_all: bool = False
    expose: list[str] = field(default_factory=list)
    network_aliases: list[str] = field(default_factory=list)
    ip: str | None = None
    mac_address: str | None = None
    cgroup_parent: str | None = None
    oom_score_adj: int | None = None


# -- small parsers ------------------------------------------------------------------------------

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*$", re.I)


def parse_bytes(value: str | int | None, what: str) -> int | None:
    """docker's RAMInBytes: ``512m``, ``1g``, ``1024`` (bytes), binary units; -1 passes through."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    if value.strip() == "-1":
        return -1
    m = _SIZE_RE.match(value)
    if not m:
        raise UsageError(f"invalid {what} {value!r}: expected a number with an optional unit (b, k, m, g)")
    mult = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


_DUR_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DUR_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_duration(value: str | None, what: str) -> int | None:
    """A Go duration (``30s``, ``1m30s``, ``500ms``) in nanoseconds; a bare number means seconds."""
    if value is None or value == "":
        return None
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return int(float(text) * 1_000_000_000)
    pos, total = 0, 0.0
    for m in _DUR_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DUR_NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise UsageError(f"invalid {what} {value!r}: expected a duration such as 30s, 1m30s or 500ms")
    return int(total)


def signal_number(value: str | int) -> int:
    """``SIGTERM``, ``TERM``, ``15``, ``SIGRTMIN+3`` to a number; a bad name is a usage error."""
    if isinstance(value, int):
        return value
    text = value.strip().upper()
    if text.isdigit():
        n = int(text)
        if 0 < n < _signal.NSIG:
            return n
        raise UsageError(f"invalid signal: {value}")
    if not text.startswith("SIG"):
        text = "SIG" + text
    m = re.fullmatch(r"SIGRTM(IN|AX)([+-]\d+)?", text)
    if m:
        base = _signal.SIGRTMIN if m.group(1) == "IN" else _signal.SIGRTMAX
        n = int(base) + int(m.group(2) or 0)
        if _signal.SIGRTMIN <= n <= _signal.SIGRTMAX:
            return n
        raise UsageError(f"invalid signal: {value}")
    try:
        return int(getattr(_signal.Signals, text))
    except AttributeError:
        raise UsageError(f"invalid signal: {value}") from None


def signal_name(n: int) -> str:
    try:
        return _signal.Signals(n).name
    except ValueError:
        return str(n)


def parse_env_file(path: str) -> list[str]:
    """docker's --env-file: KEY=VALUE lines, # comments, a bare KEY takes the host's value."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read env file {path}: {e.strerror}") from None
    out = []
    for n, raw in enumerate(lines, 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key = line.split("=", 1)[0]
        if not key or any(c.isspace() for c in key):
            raise UsageError(f"{path}:{n}: variable {key!r} contains whitespaces")
        out.append(line)
    return out


def expand_env(entries: list[str]) -> list[str]:
    """``KEY`` alone takes the host's value (or is dropped when unset), as docker -e does."""
    out = []
    for e in entries:
        if "=" in e:
            if e.startswith("="):
                raise UsageError(f"invalid environment variable: {e}")
            out.append(e)
        elif e and e in os.environ:
            out.append(f"{e}={os.environ[e]}")
    return out


def merge_env(base: list[str], extra: list[str]) -> list[str]:
    """Replace-or-append by key, keeping order (docker's ReplaceOrAppendEnvValues)."""
    out = list(base)
    index = {e.split("=", 1)[0]: i for i, e in enumerate(out)}
    for e in extra:
        k = e.split("=", 1)[0]
        if k in index:
            out[index[k]] = e
        else:
            index[k] = len(out)
            out.append(e)
    return out


def parse_kv_list(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not k:
            raise UsageError(f"invalid {what} {item!r}: expected KEY=VALUE")
        out[k] = v if sep else ""
    return out


def parse_restart(value: str | None) -> dict[str, Any]:
    text = (value or "no").strip()
    name, _, count = text.partition(":")
    if name not in RESTART_POLICIES:
        raise UsageError(f"invalid restart policy {text!r}: use no, on-failure[:N], always or unless-stopped")
    retries = 0
    if count:
        if name != "on-failure":
            raise UsageError(f"invalid restart policy {text!r}: a retry count is only valid with on-failure")
        if not count.isdigit():
            raise UsageError(f"invalid restart policy {text!r}: the retry count must be a number")
        retries = int(count)
    return {"Name": "" if name == "no" else name, "MaximumRetryCount": retries}


_RLIMITS = (
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
    "as",
)


def parse_ulimit(text: str) -> dict[str, Any]:
    """``nofile=1024:2048`` or ``nproc=512`` (soft = hard)."""
    name, sep, vals = text.partition("=")
    if not sep or name not in _RLIMITS:
        raise UsageError(
            f"invalid ulimit {text!r}: expected NAME=SOFT[:HARD] with NAME one of {', '.join(_RLIMITS)}"
        )
    soft_s, _, hard_s = vals.partition(":")
    try:
        soft = int(soft_s)
        hard = int(hard_s) if hard_s else soft
    except ValueError:
        raise UsageError(f"invalid ulimit {text!r}: limits must be integers") from None
    if soft > hard and hard != -1:
        raise UsageError(f"invalid ulimit {text!r}: soft limit {soft} is above hard limit {hard}")
    return {"Name": name, "Soft": soft, "Hard": hard}


def parse_device(text: str) -> dict[str, str]:
    """``/dev/x[:/dev/y][:rwm]`` as docker's --device."""
    parts = text.split(":")
    if not parts[0].startswith("/") or len(parts) > 3:
        raise UsageError(f"invalid device {text!r}: expected /dev/HOST[:/dev/CONTAINER][:rwm]")
    host, ctr, perms = parts[0], parts[0], "rwm"
    if len(parts) == 2:
        if re.fullmatch(r"[rwm]+", parts[1]):
            perms = parts[1]
        else:
            ctr = parts[1]
    elif len(parts) == 3:
        ctr, perms = parts[1], parts[2]
    if not ctr.startswith("/") or not re.fullmatch(r"[rwm]{1,3}", perms):
        raise UsageError(f"invalid device {text!r}: expected /dev/HOST[:/dev/CONTAINER][:rwm]")
    return {"PathOnHost": host, "PathInContainer": ctr, "CgroupPermissions": perms}


_VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_BIND_OPTS = {
    "ro",
    "rw",
    "z",
    "Z",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
    "nocopy",
    "copy",
    "U",
    "O",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "bind",
    "rbind",
    "delegated",
    "cached",
    "consistent",
}


def validate_volume_name(name: str) -> None:
    if not _VOLUME_NAME_RE.match(name):
        raise UsageError(
            f"invalid volume name {name!r}: use letters, digits, '_', '.' or '-', starting "
            "with a letter or digit"
        )


def parse_volume(text: str) -> dict[str, Any]:
    """``-v``: ``/ctr`` (anonymous), ``name:/ctr[:opts]`` (named), ``/host:/ctr[:opts]`` (bind)."""
    parts = text.split(":")
    if len(parts) == 1:
        src, dst, opts = "", parts[0], []
    elif len(parts) == 2:
        if parts[1].startswith("/"):
            src, dst, opts = parts[0], parts[1], []
        else:
            src, dst, opts = "", parts[0], parts[1].split(",")
    elif len(parts) == 3:
        src, dst, opts = parts[0], parts[1], parts[2].split(",")
    else:
        raise UsageError(f"invalid volume specification {text!r}: expected [SOURCE:]DEST[:OPTIONS]")
    if not dst.startswith("/"):
        raise UsageError(f"invalid volume specification {text!r}: the destination must be an absolute path")
    for o in opts:
        if o not in _BIND_OPTS:
            raise UsageError(f"invalid volume specification {text!r}: unknown option {o!r}")
    ro = "ro" in opts
    if src.startswith("/"):
        kind = "bind"
    elif src:
        validate_volume_name(src)
        kind = "volume"
    else:
        kind = "volume"
    propagation = next(
        (o for o in opts if o in ("shared", "rshared", "slave", "rslave", "private", "rprivate")), "rprivate"
    )
    return {
        "Type": kind,
        "Source": src,
        "Target": os.path.normpath(dst),
        "ReadOnly": ro,
        "Propagation": propagation if kind == "bind" else "",
        "NoCopy": "nocopy" in opts,
        "Mode": ",".join(opts),
        "FromFlag": "-v",
    }


def parse_mount(text: str) -> dict[str, Any]:
    """``--mount type=bind|volume|tmpfs,source=...,target=...,readonly,...`` as docker's."""
    fields: dict[str, str] = {}
    for item in _split_csv(text):
        k, sep, v = item.partition("=")
        k = k.strip().lower()
        fields[k] = v if sep else "true"
    kind = fields.pop("type", "volume")
    if kind not in ("bind", "volume", "tmpfs"):
        raise UsageError(f"invalid mount {text!r}: type must be bind, volume or tmpfs")
    src = fields.pop("source", fields.pop("src", ""))
    dst = fields.pop("target", fields.pop("destination", fields.pop("dst", "")))
    if not dst.startswith("/"):
        raise UsageError(f"invalid mount {text!r}: target must be an absolute path")
    ro_s = fields.pop("readonly", fields.pop("ro", "false"))
    ro = ro_s.lower() in ("true", "1", "")
    m: dict[str, Any] = {
        "Type": kind,
        "Source": src,
        "Target": os.path.normpath(dst),
        "ReadOnly": ro,
        "Propagation": "",
        "NoCopy": False,
        "Mode": "",
        "FromFlag": "--mount",
    }
    if kind == "bind":
        if not src.startswith("/"):
            raise UsageError(f"invalid mount {text!r}: a bind mount needs an absolute source")
        m["Propagation"] = fields.pop("bind-propagation", "rprivate")
        fields.pop("bind-nonrecursive", None)
        m["MustExist"] = True
    elif kind == "volume":
        if src:
            validate_volume_name(src)
        m["NoCopy"] = fields.pop("volume-nocopy", "false").lower() in ("true", "1", "")
        labels = {}
        for k in list(fields):
            if k.startswith("volume-label"):
                lk, _, lv = fields.pop(k).partition("=")
                labels[lk] = lv
        fields.pop("volume-driver", None)
        m["Labels"] = labels
    else:
        if src:
            raise UsageError(f"invalid mount {text!r}: a tmpfs mount takes no source")
        size = fields.pop("tmpfs-size", None)
        mode = fields.pop("tmpfs-mode", None)
        opts = []
        if size is not None:
            opts.append(f"size={parse_bytes(size, 'tmpfs-size')}")
        if mode is not None:
            if not re.fullmatch(r"[0-7]{1,4}", mode):
                raise UsageError(f"invalid mount {text!r}: tmpfs-mode must be octal")
            opts.append(f"mode={mode}")
        m["TmpfsOptions"] = opts
    if fields:
        raise UsageError(f"invalid mount {text!r}: unknown field {next(iter(fields))!r}")
    return m


def parse_tmpfs(text: str) -> dict[str, Any]:
    """``--tmpfs /path[:opts]``: docker's defaults are noexec,nosuid,nodev."""
    dst, _, opts = text.partition(":")
    if not dst.startswith("/"):
        raise UsageError(f"invalid tmpfs {text!r}: the path must be absolute")
    options = [o for o in opts.split(",") if o] if opts else []
    return {
        "Type": "tmpfs",
        "Source": "",
        "Target": os.path.normpath(dst),
        "ReadOnly": "ro" in options,
        "Propagation": "",
        "NoCopy": False,
        "Mode": opts,
        "FromFlag": "--tmpfs",
        "TmpfsOptions": options,
    }


def _split_csv(text: str) -> list[str]:
    """Split on commas outside double quotes (docker parses --mount as CSV)."""
    import csv

    return next(csv.reader([text]))


def parse_add_host(text: str) -> tuple[str, str]:
    host, sep, ip = text.partition(":")
    if not sep:
        host, sep, ip = text.partition("=")
    if not sep or not host or not ip:
        raise UsageError(f"invalid add-host {text!r}: expected HOST:IP")
    if ip == "host-gateway":
        return host, ip  # the container's gateway, filled in when its network is set up
    import ipaddress

    try:
        ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        raise UsageError(f"invalid add-host {text!r}: {ip!r} is not an IP address") from None
    return host, ip.strip("[]")


def parse_entrypoint(value: str | list[str] | None) -> list[str] | None:
    """None keeps the image's; "" clears it; a JSON array is taken as is (podman); else one word."""
    if value is None:
        return None
    if isinstance(value, list):
        return value
    if value == "":
        return []
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            return parsed
    return [value]


_NAMESPACED_SYSCTLS = (
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
    "kernel.domainname",
)


def validate_sysctl(key: str, network: str) -> None:
    """Only namespaced sysctls may be set (docker's rule); net.* needs a private network namespace."""
    if key in _NAMESPACED_SYSCTLS or key.startswith("fs.mqueue."):
        return
    if key.startswith("net."):
        if network == "host":
            raise UsageError(
                f"sysctl {key!r} cannot be set with --network host: the network namespace is the host's"
            )
        return
    if key == "kernel.hostname":
        raise UsageError("sysctl 'kernel.hostname' is not allowed: use --hostname")
    raise UsageError(f"sysctl {key!r} is not allowed: it is not in a separate kernel namespace")
