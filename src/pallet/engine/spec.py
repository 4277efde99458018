"""From an image config and the user's options to docker's Config/HostConfig, then to config.json.

Two pure steps, so each is testable without a container:

* :func:`compose` (at ``create``): docker's merge rules — Entrypoint/Cmd (``--entrypoint``
  clears the image's Cmd), Env, WorkingDir, User, Labels, StopSignal, Healthcheck, the image's
  Volumes as anonymous volumes — and every flag checked, giving the ``Config`` and ``HostConfig``
  that ``inspect`` shows and a normalised mount list.
* :func:`runtime_spec` (at every ``start``): the OCI runtime-spec ``config.json`` — docker's
  default mounts, capabilities, seccomp profile, masked and read-only paths, device rules,
  cgroup limits and rlimits clamped to what the host can grant.
"""

from __future__ import annotations

import os
import resource

from pallet.engine import options as o
from pallet.engine import security
from pallet.engine.errors import PlatformMismatch
from pallet.errors import UsageError
from pallet.records import dataclass

TYPE_CHECKING = False  # typing costs an import on the hot path: annotations are strings
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: the network mode used when --network is not given: the default bridge network
DEFAULT_NETWORK = "bridge"
#: rlimits given when the user sets none: podman's defaults, clamped to the host's hard limits
DEFAULT_RLIMITS = {"nofile": 1048576, "nproc": 4194304}
_RLIMIT_CONST = {
    "core": "RLIMIT_CORE",
    "cpu": "RLIMIT_CPU",
    "data": "RLIMIT_DATA",
    "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS",
    "memlock": "RLIMIT_MEMLOCK",
    "msgqueue": "RLIMIT_MSGQUEUE",
    "nice": "RLIMIT_NICE",
    "nofile": "RLIMIT_NOFILE",
    "nproc": "RLIMIT_NPROC",
    "rss": "RLIMIT_RSS",
    "rtprio": "RLIMIT_RTPRIO",
    "rttime": "RLIMIT_RTTIME",
    "sigpending": "RLIMIT_SIGPENDING",
    "stack": "RLIMIT_STACK",
    "as": "RLIMIT_AS",
}
_NS_PER_S = 1_000_000_000


def check_platform(image_config: dict[str, Any], wanted: str | None = None) -> str:
    """Refuse an image for another OS or architecture; returns its "os/arch[/variant]"."""
    img_os = image_config.get("os") or "linux"
    arch = image_config.get("architecture") or ""
    variant = image_config.get("variant") or ""
    plat = "/".join(p for p in (img_os, arch, variant) if p)
    host = f"linux/{security.native_arch()}"
    if wanted:
        w = wanted.split("/")
        if w[0] != img_os or (len(w) > 1 and w[1] != arch):
            raise PlatformMismatch(
                f"image platform ({plat}) does not match the requested platform ({wanted})"
            )
    if img_os != "linux" or (arch and arch != security.native_arch()):
        raise PlatformMismatch(
            f"image platform ({plat}) does not match the host ({host}): this host cannot "
            "run it (no emulation is configured)"
        )
    return plat


def _healthcheck(image_hc: dict[str, Any] | None, opts: o.CreateOptions) -> dict[str, Any] | None:
    if opts.no_healthcheck:
        if opts.health_cmd:
            raise UsageError("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    hc = dict(image_hc or {})
    if opts.health_cmd is not None:
        hc["Test"] = ["CMD-SHELL", opts.health_cmd] if opts.health_cmd else ["NONE"]
    for key, value, what in (
        ("Interval", opts.health_interval, "health-interval"),
        ("Timeout", opts.health_timeout, "health-timeout"),
        ("StartPeriod", opts.health_start_period, "health-start-period"),
    ):
        ns = o.parse_duration(value, what)
        if ns is not None:
            if ns < 0 or (0 < ns < 1_000_000):
                raise UsageError(f"--{what} must be at least 1ms")
            hc[key] = ns
    if opts.health_retries is not None:
        if opts.health_retries < 0:
            raise UsageError("--health-retries cannot be negative")
        hc["Retries"] = opts.health_retries
    if not hc.get("Test"):
        return hc if hc else None
    return hc


def compose(
    image_config: dict[str, Any],
    command: list[str] | None,
    opts: o.CreateOptions,
    *,
    container_id: str,
    image_name: str,
) -> dict[str, Any]:
    """docker's Config + HostConfig for a new container, and its normalised mounts (pure)."""
    icfg = image_config.get("config") or {}
    # -- command ---------------------------------------------------------------------------------
    entrypoint = o.parse_entrypoint(opts.entrypoint)
    if entrypoint is None:
        entrypoint = list(icfg.get("Entrypoint") or [])
        cmd = list(command) if command else list(icfg.get("Cmd") or [])
    else:
        cmd = list(command or [])
    if not entrypoint and not cmd:
        raise UsageError("no command specified: the image has no Entrypoint or Cmd, give one after the image")
    # -- env -------------------------------------------------------------------------------------
    user_env: list[str] = []
    for path in opts.env_files:
        user_env += o.parse_env_file(path)
    user_env += opts.env
    env = o.merge_env(list(icfg.get("Env") or []), o.expand_env(user_env))
    # -- working dir, user, labels, stop signal ------------------------------------------------
    workdir = opts.workdir if opts.workdir is not None else (icfg.get("WorkingDir") or "")
    if workdir and not workdir.startswith("/"):
        raise UsageError(f"the working directory {workdir!r} is invalid: it needs to be an absolute path")
    user = opts.user if opts.user is not None else (icfg.get("User") or "")
    labels = dict(icfg.get("Labels") or {})
    labels.update(o.parse_kv_list(opts.labels, "label"))
    stop_signal = opts.stop_signal or icfg.get("StopSignal") or "SIGTERM"
    o.signal_number(stop_signal)
    if opts.stop_timeout is not None and opts.stop_timeout < -1:
        raise UsageError("--stop-timeout must be -1 (wait forever) or more")
    # -- network ---------------------------------------------------------------------------------
    from pallet.engine import networking

    net = networking.compose(opts, image_config)
    network = net["NetworkMode"]
    hostname = opts.hostname
    if hostname is None:
        hostname = os.uname().nodename if network == "host" else container_id[:12]
    if len(hostname) > 64:
        raise UsageError(f"invalid hostname {hostname!r}: at most 64 characters")
    # -- resources -------------------------------------------------------------------------------
    memory = o.parse_bytes(opts.memory, "memory")
    swap = o.parse_bytes(opts.memory_swap, "memory-swap")
    reservation = o.parse_bytes(opts.memory_reservation, "memory-reservation")
    if memory is not None and 0 < memory < 6 << 20:
        raise UsageError("minimum memory limit allowed is 6MB")
    if swap is not None and swap != -1:
        if memory is None or memory <= 0:
            raise UsageError("you should always set the memory limit when using the memory-swap limit")
        if swap < memory:
            raise UsageError(
                "minimum memory-swap limit should be larger than the memory limit; use -1 for unlimited swap"
            )
    nano_cpus = 0
    if opts.cpus is not None:
        if opts.cpus <= 0:
            raise UsageError("--cpus must be a positive number")
        if opts.cpus > (os.cpu_count() or 1):
            raise UsageError(
                f"range of CPUs is from 0.01 to {os.cpu_count()}.00, as there are only "
                f"{os.cpu_count()} CPUs available"
            )
        nano_cpus = int(opts.cpus * 1e9)
    if opts.cpu_shares is not None and opts.cpu_shares < 0:
        raise UsageError("--cpu-shares must not be negative")
    if opts.cpuset_cpus is not None and not _valid_cpuset(opts.cpuset_cpus):
        raise UsageError(f"invalid --cpuset-cpus {opts.cpuset_cpus!r}: expected a list such as 0-2,4")
    shm = o.parse_bytes(opts.shm_size, "shm-size")
    if shm is not None and shm <= 0:
        raise UsageError("--shm-size must be greater than 0")
    ulimits = [o.parse_ulimit(u) for u in opts.ulimits]
    devices = [o.parse_device(d) for d in opts.devices]
    for d in devices:
        if not os.path.exists(d["PathOnHost"]):
            raise UsageError(
                f"error gathering device information while adding custom device "
                f"{d['PathOnHost']!r}: no such file or directory"
            )
    sec = security.parse_security_opts(opts.security_opt)
    if sec["apparmor"] and sec["apparmor"] != "unconfined" and not security.apparmor_enabled():
        raise UsageError(
            f"apparmor profile {sec['apparmor']!r} requested, but AppArmor is not enabled on this host"
        )
    for lab in sec["label"]:
        if lab not in ("disable", "nested") and not security.selinux_enabled():
            raise UsageError(f"SELinux label {lab!r} requested, but SELinux is not enabled on this host")
    if sec["seccomp"] and sec["seccomp"] != "unconfined":
        security.load_seccomp(sec["seccomp"], security.DEFAULT_CAPS)  # validate now, load at start
        sec["seccomp"] = os.path.abspath(sec["seccomp"])
    caps = security.capabilities(opts.cap_add, opts.cap_drop, opts.privileged)
    sysctls = o.parse_kv_list(opts.sysctls, "sysctl")
    for k in sysctls:
        o.validate_sysctl(k, network)
    restart = o.parse_restart(opts.restart)
    if opts.auto_remove and restart["Name"]:
        raise UsageError("conflicting options: --restart and --rm (a removed container cannot restart)")
    if opts.log_driver not in o.LOG_DRIVERS:
        raise UsageError(f"unknown log driver {opts.log_driver!r}: use json-file, k8s-file or none")
    log_opts = o.parse_kv_list(opts.log_opts, "log-opt")
    for k, v in log_opts.items():
        if k == "max-size":
            if (o.parse_bytes(v, "log-opt max-size") or 0) <= 0:
                raise UsageError("log-opt max-size must be a positive size")
        elif k == "max-file":
            if not v.isdigit() or int(v) < 1:
                raise UsageError("log-opt max-file must be a positive integer")
        elif k not in ("tag", "labels", "env", "mode", "compress"):
            raise UsageError(f"unknown log-opt {k!r} for the {opts.log_driver} log driver")
    if "max-file" in log_opts and "max-size" not in log_opts and log_opts["max-file"] != "1":
        raise UsageError("log-opt max-file needs max-size (the file is never rotated otherwise)")
    extra_hosts = []
    for h in opts.add_hosts:
        host, ip = o.parse_add_host(h)
        extra_hosts.append(f"{host}:{ip}")
    import ipaddress

    for d in opts.dns:
        try:
            ipaddress.ip_address(d)
        except ValueError:
            raise UsageError(f"invalid --dns {d!r}: not an IP address") from None
    if opts.pull not in ("always", "missing", "never", "newer"):
        raise UsageError(f"invalid --pull {opts.pull!r}: use always, missing, never or newer")
    if opts.pids_limit is not None and opts.pids_limit == 0:
        raise UsageError("--pids-limit must be positive or -1 (unlimited)")

    # -- mounts ----------------------------------------------------------------------------------
    mounts: list[dict[str, Any]] = []
    for v in opts.volumes:
        mounts.append(o.parse_volume(v))
    for m in opts.mounts:
        mounts.append(o.parse_mount(m))
    for t in opts.tmpfs:
        mounts.append(o.parse_tmpfs(t))
    seen: set[str] = set()
    for m in mounts:
        if m["Target"] in seen:
            raise UsageError(f"duplicate mount point: {m['Target']}")
        if m["Target"] == "/":
            raise UsageError("invalid mount: the destination cannot be /")
        seen.add(m["Target"])
        if m["Type"] == "volume" and not m["Source"]:
            m["Anonymous"] = True
    image_volumes = dict(icfg.get("Volumes") or {})
    for dst in image_volumes:
        nd = os.path.normpath(dst)
        if nd not in seen and nd != "/":
            mounts.append(
                {
                    "Type": "volume",
                    "Source": "",
                    "Target": nd,
                    "ReadOnly": False,
                    "Propagation": "",
                    "NoCopy": False,
                    "Mode": "",
                    "FromFlag": "image",
                    "Anonymous": True,
                }
            )
            seen.add(nd)
    config_volumes = {m["Target"]: {} for m in mounts if m["Type"] == "volume" and m.get("Anonymous")}
    config_volumes.update({os.path.normpath(k): {} for k in image_volumes})

    hc = _healthcheck(icfg.get("Healthcheck"), opts)
    attach = opts.attach
    config = {
        "Hostname": hostname,
        "Domainname": "",
        "User": user,
        "AttachStdin": attach and opts.interactive,
        "AttachStdout": attach,
        "AttachStderr": attach,
        "ExposedPorts": net["ExposedPorts"],
        "Tty": opts.tty,
        "OpenStdin": opts.interactive,
        "StdinOnce": attach and opts.interactive,
        "Env": env,
        "Cmd": cmd or None,
        "Image": image_name,
        "Volumes": config_volumes or None,
        "WorkingDir": workdir,
        "Entrypoint": entrypoint or None,
        "OnBuild": None,
        "Labels": labels,
        "StopSignal": stop_signal,
    }
    if opts.stop_timeout is not None:
        config["StopTimeout"] = opts.stop_timeout
    if hc is not None:
        config["Healthcheck"] = hc
    host_config = {
        "Binds": [v for v in opts.volumes] or None,
        "ContainerIDFile": "",
        "LogConfig": {"Type": opts.log_driver, "Config": log_opts},
        "NetworkMode": network,
        "PortBindings": net["PortBindings"],
        "RestartPolicy": restart,
        "AutoRemove": opts.auto_remove,
        "VolumeDriver": "",
        "VolumesFrom": None,
        "CapAdd": [security.normalize_cap(c) for c in opts.cap_add] or None,
        "CapDrop": [security.normalize_cap(c) for c in opts.cap_drop] or None,
        "Dns": list(opts.dns),
        "DnsOptions": list(opts.dns_options),
        "DnsSearch": list(opts.dns_search),
        "ExtraHosts": extra_hosts or None,
        "GroupAdd": list(opts.group_add) or None,
        "IpcMode": "private",
        "Cgroup": "",
        "OomScoreAdj": opts.oom_score_adj or 0,
        "PidMode": "",
        "Privileged": opts.privileged,
        "PublishAllPorts": net["PublishAllPorts"],
        "ReadonlyRootfs": opts.read_only,
        "SecurityOpt": list(opts.security_opt) or None,
        "Tmpfs": {m["Target"]: m["Mode"] for m in mounts if m.get("FromFlag") == "--tmpfs"} or None,
        "UTSMode": "",
        "UsernsMode": "",
        "ShmSize": shm if shm is not None else o.DEFAULT_SHM_SIZE,
        "Sysctls": sysctls or None,
        "Runtime": opts.runtime or "",
        "CgroupParent": opts.cgroup_parent or "",
        "Memory": memory or 0,
        "MemorySwap": swap if swap is not None else (2 * memory if memory else 0),
        "MemoryReservation": reservation or 0,
        "NanoCpus": nano_cpus,
        "CpuShares": opts.cpu_shares or 0,
        "CpusetCpus": opts.cpuset_cpus or "",
        "PidsLimit": opts.pids_limit,
        "Ulimits": ulimits or None,
        "Devices": devices or None,
        "Init": opts.init,
        "Mounts": [m for m in mounts if m.get("FromFlag") == "--mount"] or None,
        "MaskedPaths": [] if opts.privileged else security.masked_paths(),
        "ReadonlyPaths": [] if opts.privileged else list(security.READONLY_PATHS),
    }
    return {
        "Config": config,
        "HostConfig": host_config,
        "MountSpecs": mounts,
        "Networks": net["Networks"],
        "PortMappings": net["PortMappings"],
        "Capabilities": caps,
        "Security": sec,
        "PullPolicy": opts.pull,
    }


def _valid_cpuset(text: str) -> bool:
    ncpu = os.cpu_count() or 1
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return False
        if int(lo) >= ncpu or (hi and (int(hi) >= ncpu or int(hi) < int(lo))):
            return False
    return True


# -- config.json ---------------------------------------------------------------------------------


@dataclass
class StartInputs:
    """What :func:`runtime_spec` needs beyond the stored config, found at start time."""

    rootfs: str
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str
    #: mounts resolved to host paths: dicts with Type, Source, Target, ReadOnly, Propagation, Options
    mounts: list[dict[str, Any]]
    hosts_path: str
    resolv_path: str
    hostname_path: str
    cgroups_path: str
    console_size: tuple[int, int] | None = None
    init_path: str | None = None
    netns_path: str | None = None
    cgroup_v2: bool = False


def _host_hard(name: str) -> int:
    """The host's hard limit for an rlimit; -1 for unlimited."""
    const = getattr(resource, _RLIMIT_CONST[name], None)
    if const is None:
        return -1
    hard = resource.getrlimit(const)[1]
    return -1 if hard == resource.RLIM_INFINITY else hard


def _clamp_rlimit(name: str, soft: int, hard: int) -> tuple[int, int]:
    host = _host_hard(name)
    if host == -1:
        return soft, hard
    hard = host if hard == -1 or hard > host else hard
    soft = hard if soft == -1 or soft > hard else soft
    return soft, hard


def _limit(v: int) -> int:
    return 2**64 - 1 if v == -1 else v


def rlimits(ulimits: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Defaults plus the user's --ulimit values, each clamped to the host's hard limit."""
    wanted: dict[str, tuple[int, int]] = {k: (v, v) for k, v in DEFAULT_RLIMITS.items()}
    for u in ulimits or []:
        wanted[u["Name"]] = (u["Soft"], u["Hard"])
    out = []
    for name, (soft, hard) in wanted.items():
        soft, hard = _clamp_rlimit(name, soft, hard)
        out.append({"type": _RLIMIT_CONST[name], "soft": _limit(soft), "hard": _limit(hard)})
    return out


def _device_rules(privileged: bool) -> list[dict[str, Any]]:
    if privileged:
        return [{"allow": True, "access": "rwm"}]
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    # what runc and docker let every container use: mknod of anything, the standard character
    # devices, ptys, and tun; fuse (10:229) stays denied as docker's spec says
    for typ, major, minor, access in (
        ("c", None, None, "m"),
        ("b", None, None, "m"),
        ("c", 1, 3, "rwm"),
        ("c", 1, 5, "rwm"),
        ("c", 1, 7, "rwm"),
        ("c", 1, 8, "rwm"),
        ("c", 1, 9, "rwm"),
        ("c", 5, 0, "rwm"),
        ("c", 5, 1, "rwm"),
        ("c", 5, 2, "rwm"),
        ("c", 136, None, "rwm"),
        ("c", 10, 200, "rwm"),
    ):
        rule: dict[str, Any] = {"allow": True, "type": typ, "access": access}
        if major is not None:
            rule["major"] = major
        if minor is not None:
            rule["minor"] = minor
        rules.append(rule)
    return rules


def _device_entry(host_path: str, ctr_path: str) -> dict[str, Any] | None:
    import stat

    st = os.stat(host_path)
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return {
        "path": ctr_path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def _host_devices() -> list[tuple[str, str]]:
    """Every device node under the host's /dev (for --privileged), skipping pty and fd links."""
    out = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if d not in ("pts", "shm", "fd", "mqueue")]
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            if p in ("/dev/console", "/dev/ptmx", "/dev/tty"):
                continue
            try:
                if not os.path.islink(p):
                    out.append((p, p))
            except OSError:
                continue
    return out


def _depth(path: str) -> int:
    return len(os.path.normpath(path).split("/"))


def runtime_spec(stored: dict[str, Any], inputs: StartInputs, *, process_args: list[str]) -> dict[str, Any]:
    """The OCI runtime-spec config.json for one start of a container (pure but for host limits)."""
    cfg, hc = stored["Config"], stored["HostConfig"]
    privileged = bool(hc.get("Privileged"))
    caps = list(stored["Capabilities"])
    sec = stored["Security"]
    env = list(cfg.get("Env") or [])
    # docker's order: PATH, HOSTNAME, TERM, then the config's values replace or append
    base_env = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={cfg['Hostname']}"]
    if cfg.get("Tty"):
        base_env.append("TERM=xterm")
    env = o.merge_env(base_env, env)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={inputs.home or '/'}")

    args = list(process_args)
    if inputs.init_path:
        args = ["/dev/init", "--", *args]
    process: dict[str, Any] = {
        "terminal": bool(cfg.get("Tty")),
        "user": {"uid": inputs.uid, "gid": inputs.gid},
        "args": args,
        "env": env,
        "cwd": cfg.get("WorkingDir") or "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": rlimits(hc.get("Ulimits")),
        "noNewPrivileges": bool(sec.get("no_new_privileges")),
    }
    if inputs.additional_gids:
        process["user"]["additionalGids"] = list(inputs.additional_gids)
    if inputs.console_size and cfg.get("Tty"):
        process["consoleSize"] = {"height": inputs.console_size[0], "width": inputs.console_size[1]}
    if sec.get("apparmor") and sec["apparmor"] != "unconfined" and not privileged:
        process["apparmorProfile"] = sec["apparmor"]
    if hc.get("OomScoreAdj"):
        process["oomScoreAdj"] = hc["OomScoreAdj"]

    read_only = bool(hc.get("ReadonlyRootfs"))
    shm_size = hc.get("ShmSize") or o.DEFAULT_SHM_SIZE
    user_targets = {m["Target"] for m in inputs.mounts}
    defaults: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
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
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "rw" if privileged else "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "rw" if privileged else "ro"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_size}"],
        },
    ]
    net_mode = hc.get("NetworkMode") or DEFAULT_NETWORK
    files = [
        ("/etc/hostname", inputs.hostname_path),
        ("/etc/hosts", inputs.hosts_path),
        ("/etc/resolv.conf", inputs.resolv_path),
    ]
    for dst, src in files:
        defaults.append(
            {
                "destination": dst,
                "type": "bind",
                "source": src,
                "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev", "ro" if read_only else "rw"],
            }
        )
    mounts = [m for m in defaults if m["destination"] not in user_targets]
    user_mounts = []
    for m in inputs.mounts:
        if m["Type"] == "tmpfs":
            opts = list(m.get("TmpfsOptions") or [])
            flags = [x for x in opts if not x.startswith(("size=", "mode="))]
            if not any(x in ("exec", "noexec") for x in flags):
                opts.append("noexec")
            if not any(x in ("suid", "nosuid") for x in flags):
                opts.append("nosuid")
            if not any(x in ("dev", "nodev") for x in flags):
                opts.append("nodev")
            if m.get("ReadOnly") and "ro" not in opts:
                opts.append("ro")
            user_mounts.append(
                {"destination": m["Target"], "type": "tmpfs", "source": "tmpfs", "options": opts}
            )
        else:
            opts = ["rbind", m.get("Propagation") or "rprivate", "ro" if m.get("ReadOnly") else "rw"]
            user_mounts.append(
                {"destination": m["Target"], "type": "bind", "source": m["Source"], "options": opts}
            )
    user_mounts.sort(key=lambda m: _depth(m["destination"]))
    mounts += user_mounts
    if inputs.init_path:
        mounts.append(
            {
                "destination": "/dev/init",
                "type": "bind",
                "source": inputs.init_path,
                "options": ["bind", "ro", "nosuid", "nodev"],
            }
        )

    namespaces: list[dict[str, Any]] = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    if net_mode.startswith("container:"):
        namespaces.append({"type": "network", "path": inputs.netns_path})
    elif net_mode != "host":
        ns: dict[str, Any] = {"type": "network"}
        if inputs.netns_path:
            ns["path"] = inputs.netns_path
        namespaces.append(ns)
    if inputs.cgroup_v2:
        namespaces.append({"type": "cgroup"})

    resources: dict[str, Any] = {"devices": _device_rules(privileged)}
    mem: dict[str, Any] = {}
    if hc.get("Memory"):
        mem["limit"] = hc["Memory"]
        if hc.get("MemorySwap"):
            mem["swap"] = hc["MemorySwap"]
    if hc.get("MemoryReservation"):
        mem["reservation"] = hc["MemoryReservation"]
    if mem:
        resources["memory"] = mem
    cpu: dict[str, Any] = {}
    if hc.get("NanoCpus"):
        cpu["period"] = 100000
        cpu["quota"] = hc["NanoCpus"] * 100000 // _NS_PER_S
    if hc.get("CpuShares"):
        cpu["shares"] = hc["CpuShares"]
    if hc.get("CpusetCpus"):
        cpu["cpus"] = hc["CpusetCpus"]
    if cpu:
        resources["cpu"] = cpu
    if hc.get("PidsLimit"):
        resources["pids"] = {"limit": hc["PidsLimit"]}

    devices: list[dict[str, Any]] = []
    if privileged:
        for hp, cp in _host_devices():
            try:
                entry = _device_entry(hp, cp)
            except OSError:
                continue
            if entry:
                devices.append(entry)
    for d in hc.get("Devices") or []:
        entry = _device_entry(d["PathOnHost"], d["PathInContainer"])
        if entry is None:
            raise UsageError(f"{d['PathOnHost']} is not a device node")
        devices = [x for x in devices if x["path"] != entry["path"]]
        devices.append(entry)
        if not privileged:
            resources["devices"].append(
                {
                    "allow": True,
                    "type": entry["type"],
                    "major": entry["major"],
                    "minor": entry["minor"],
                    "access": d["CgroupPermissions"],
                }
            )

    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": inputs.cgroups_path,
        "maskedPaths": list(hc.get("MaskedPaths") or []),
        "readonlyPaths": list(hc.get("ReadonlyPaths") or []),
    }
    if devices:
        linux["devices"] = devices
    if hc.get("Sysctls"):
        linux["sysctl"] = dict(hc["Sysctls"])
    seccomp_opt = sec.get("seccomp")
    if not privileged and seccomp_opt != "unconfined":
        profile = security.load_seccomp(seccomp_opt, caps) if seccomp_opt else security.default_seccomp(caps)
        if profile:
            linux["seccomp"] = profile

    annotations = {"org.opencontainers.image.stopSignal": str(cfg.get("StopSignal") or "SIGTERM")}
    return {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": inputs.rootfs, "readonly": read_only},
        "hostname": cfg["Hostname"],
        "mounts": mounts,
        "annotations": annotations,
        "linux": linux,
    }
