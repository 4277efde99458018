"""``pallet info``, ``pallet version`` and ``pallet system prune|info|df``."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pallet.context import Context


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _runtime_versions() -> dict[str, str]:
    import subprocess

    from pallet.engine.runtime import KNOWN_RUNTIMES, resolve
    from pallet.errors import PalletError

    out: dict[str, str] = {}
    for name in KNOWN_RUNTIMES:
        if name == "kata-runtime" or name in out:
            continue
        try:
            path = resolve(name)[1]  # pallet-runtime also beside this interpreter, as `run` finds it
        except PalletError:
            continue
        try:
            res = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
            first = (res.stdout or res.stderr).splitlines()[0] if (res.stdout or res.stderr) else ""
        except (OSError, subprocess.TimeoutExpired):
            first = ""
        out[name] = first
    return out


def _count_images(ctx: Context) -> int | None:
    """Images in the store (intermediate ones too, as docker info counts them); None if unreadable."""
    try:
        from pallet import images

        return len(images.list(ctx, all=True))
    except Exception:
        return None


def _storage_facts(ctx: Context) -> dict[str, Any]:
    """The graph driver and what it keeps: docker info's Driver/DriverStatus, podman's store."""
    facts: dict[str, Any] = {"Driver": ctx.storage_driver or "", "DriverStatus": [], "Layers": None}
    try:
        from pallet.storage.layers import LayerStore

        layers = LayerStore(ctx)
    except Exception as e:  # an unusable storage configuration is a fact to show, not a crash
        facts["DriverStatus"] = [["Error", str(e)]]
        return facts
    facts["Driver"] = layers.driver_name
    facts["Layers"] = len(layers.layers())
    status = [["Graph Root", str(layers.home)], ["Run Root", str(layers.run)]]
    fs = _fs_type(layers.home)
    if fs:
        status.insert(0, ["Backing Filesystem", fs])
    facts["DriverStatus"] = status
    return facts


def _fs_type(path: Any) -> str:
    """The filesystem type of the mount holding ``path`` (longest mount-point prefix)."""
    best, fstype = "", ""
    target = os.path.realpath(str(path))
    while not os.path.exists(target) and target != "/":
        target = os.path.dirname(target)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mp = left.split()[4]
                if (target == mp or target.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                    best, fstype = mp, right.split()[0]
    except OSError:
        return ""
    return fstype


def _registry_facts(ctx: Context) -> dict[str, Any]:
    """registries.conf as it applies: search list, per-registry settings, mirrors (podman's info)."""
    try:
        from pallet.config import registries

        conf = registries.load(ctx)
    except Exception as e:
        return {"Error": str(e)}
    return {
        "Search": list(conf.search if conf.search is not None else ["docker.io"]),
        "ShortNameMode": conf.short_name_mode,
        "Registries": [
            {
                "Prefix": r.prefix,
                "Location": r.location,
                "Insecure": r.insecure,
                "Blocked": r.blocked,
                "Mirrors": [m.location for m in r.mirrors],
            }
            for r in conf.registries
        ],
        "Sources": [str(x) for x in conf.sources],
    }


def info_dict(ctx: Context) -> dict[str, Any]:
    """docker info's fields that mean something for pallet, plus the store's (podman's info)."""
    from pallet import __version__
    from pallet.engine import cgroups, containers, security
    from pallet.engine.runtime import default_runtime_name

    cs = containers.list_containers(ctx)
    running = sum(1 for c in cs if c.status in ("running", "restarting", "stopping"))
    paused = sum(1 for c in cs if c.status == "paused")
    runtimes = _runtime_versions()
    sec = ["name=seccomp,profile=builtin"]
    if security.apparmor_enabled():
        sec.append("name=apparmor")
    if security.selinux_enabled():
        sec.append("name=selinux")
    mem = cgroups.host_memory()
    storage = _storage_facts(ctx)
    return {
        "ID": "",
        "Containers": len(cs),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": len(cs) - running - paused,
        "Images": _count_images(ctx),
        "Driver": storage["Driver"],
        "DriverStatus": storage["DriverStatus"],
        "Layers": storage["Layers"],
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": "2" if cgroups.is_v2() else "1",
        "KernelVersion": platform.release(),
        "OperatingSystem": _os_name(),
        "OSType": "linux",
        "Architecture": platform.machine(),
        "NCPU": os.cpu_count() or 1,
        "MemTotal": mem,
        "Name": platform.node(),
        "Runtimes": {k: {"path": k, "version": v} for k, v in runtimes.items()},
        "DefaultRuntime": ctx.runtime or default_runtime_name(),
        "InitBinary": containers.find_init() or "",
        "SecurityOptions": sec,
        "ServerVersion": __version__,
        "DockerRootDir": str(ctx.root),
        "RunRoot": str(ctx.runroot),
        "RegistryConfig": _registry_facts(ctx),
    }


def cmd_info(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli.containers import bytes_size, render_format

    info = info_dict(ctx)
    if args.format:
        print(render_format(args.format, info))
        return 0
    images = info["Images"]
    reg = info["RegistryConfig"]
    lines = [
        "Server:",
        f" Containers: {info['Containers']}",
        f"  Running: {info['ContainersRunning']}",
        f"  Paused: {info['ContainersPaused']}",
        f"  Stopped: {info['ContainersStopped']}",
        f" Images: {images if images is not None else 'N/A'}",
        f" Server Version: {info['ServerVersion']}",
        f" Storage Driver: {info['Driver'] or 'unknown'}",
        *[f"  {k}: {v}" for k, v in info["DriverStatus"]],
        f"  Layers: {info['Layers'] if info['Layers'] is not None else 'N/A'}",
        f" Logging Driver: {info['LoggingDriver']}",
        f" Cgroup Driver: {info['CgroupDriver']}",
        f" Cgroup Version: {info['CgroupVersion']}",
        f" Runtimes: {' '.join(sorted(info['Runtimes']))}",
        f" Default Runtime: {info['DefaultRuntime']}",
        f" Init Binary: {info['InitBinary'] or 'none'}",
        " Security Options:",
        *[f"  {s}" for s in info["SecurityOptions"]],
        f" Kernel Version: {info['KernelVersion']}",
        f" Operating System: {info['OperatingSystem']}",
        f" OSType: {info['OSType']}",
        f" Architecture: {info['Architecture']}",
        f" CPUs: {info['NCPU']}",
        f" Total Memory: {bytes_size(info['MemTotal'])}",
        f" Name: {info['Name']}",
        f" Root Dir: {info['DockerRootDir']}",
        f" Run Root: {info['RunRoot']}",
    ]
    if "Error" in reg:
        lines.append(f" Registries: {reg['Error']}")
    else:
        lines.append(f" Registries (search): {', '.join(reg['Search']) or 'none'}")
        insecure = [r["Prefix"] for r in reg["Registries"] if r["Insecure"]]
        mirrors = [f"{r['Prefix']} -> {m}" for r in reg["Registries"] for m in r["Mirrors"]]
        blocked = [r["Prefix"] for r in reg["Registries"] if r["Blocked"]]
        for title, items in (("Insecure Registries", insecure), ("Registry Mirrors", mirrors),
                             ("Blocked Registries", blocked)):
            if items:
                lines.append(f" {title}:")
                lines += [f"  {i}" for i in items]
    print("\n".join(lines))
    return 0


def cmd_version(args: argparse.Namespace, ctx: Context) -> int:
    from pallet import __version__
    from pallet.cli.containers import render_format
    from pallet.engine.runtime import default_runtime_name

    arch = platform.machine()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(arch, arch)
    rt_name = ctx.runtime or default_runtime_name()
    rt_version = _runtime_versions().get(rt_name, "")
    storage = _storage_facts(ctx)
    data = {
        "Client": {
            "Version": __version__,
            "PythonVersion": platform.python_version(),
            "Os": "linux",
            "Arch": arch,
        },
        "Server": {
            "Version": __version__,
            "Os": "linux",
            "Arch": arch,
            "KernelVersion": platform.release(),
            "Components": [
                {"Name": "Engine", "Version": __version__},
                {"Name": rt_name, "Version": rt_version},
                {
                    "Name": "Storage",
                    "Version": __version__,
                    "Details": {"Driver": storage["Driver"], "Root": str(ctx.root),
                                "RunRoot": str(ctx.runroot)},
                },
            ],
        },
    }
    if args.format:
        print(render_format(args.format, data))
        return 0
    print(
        "Client: pallet\n"
        f" Version:        {__version__}\n"
        f" Python version: {data['Client']['PythonVersion']}\n"
        f" OS/Arch:        linux/{arch}\n\n"
        "Server: pallet (no daemon)\n"
        " Engine:\n"
        f"  Version:       {__version__}\n"
        f"  Kernel:        {platform.release()}\n"
        f" {rt_name}:\n"
        f"  Version:       {rt_version or 'unknown'}\n"
        " Storage:\n"
        f"  Driver:        {storage['Driver'] or 'unknown'}\n"
        f"  Root:          {ctx.root}\n"
        f"  Run Root:      {ctx.runroot}"
    )
    return 0


def _prune_images(ctx: Context, all_images: bool) -> tuple[list[str], int]:
    """Dangling (or all unused) images, then the unpacked layers and blobs nothing uses any more."""
    from pallet import images
    from pallet.images import unpack

    removed = images.prune(ctx=ctx, all=all_images)
    freed = sum(i.size for i in removed)
    unpack.gc_layers(ctx, extra_keep=_container_parents(ctx))
    report = images.gc(ctx)
    return [str(i.id) for i in removed], max(freed, report.freed_bytes)


def _container_parents(ctx: Context) -> set[str]:
    """Layers containers stand on are kept even if their image was force-removed."""
    try:
        from pallet.storage.layers import LayerStore

        return {c.parent for c in LayerStore(ctx).container_layers() if c.parent}
    except Exception:
        return set()


def _prune_networks(ctx: Context, filters: list[str]) -> list[str]:
    """Networks no container uses (as docker and podman prune them), after releasing what dead
    containers and a killed engine left on the host (links, addresses, rules, DNS responders)."""
    from pallet import network
    from pallet.engine import networking

    networking.reconcile(ctx)
    labels: dict[str, str | None] = {}
    for f in filters:
        key, _, value = f.partition("=")
        if key == "label":
            lk, lsep, lv = value.partition("=")
            labels[lk] = lv if lsep else None
    return network.prune(labels or None, ctx, keep=networking.used_networks(ctx))


def cmd_system_prune(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.cli import render
    from pallet.engine import containers, volumes

    if not args.force:
        what = ["all stopped containers", "all networks not used by at least one container"]
        if args.volumes:
            what.append("all anonymous volumes not used by at least one container")
        what.append(
            "all images without at least one container associated to them"
            if args.all
            else "all dangling images"
        )
        sys.stdout.write(
            "WARNING! This will remove:\n"
            + "".join(f"  - {w}\n" for w in what)
            + "\nAre you sure you want to continue? [y/N] "
        )
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    total = 0
    removed, reclaimed = containers.prune(ctx, args.filter)
    total += reclaimed
    if removed:
        print("Deleted Containers:")
        print("\n".join(removed) + "\n")
    if args.volumes:
        vols, vreclaimed = volumes.prune(ctx, filters=[f for f in args.filter if f.startswith("label")])
        total += vreclaimed
        if vols:
            print("Deleted Volumes:")
            print("\n".join(vols) + "\n")
    nets = _prune_networks(ctx, args.filter)
    if nets:
        print("Deleted Networks:")
        print("\n".join(nets) + "\n")
    ids, ireclaimed = _prune_images(ctx, args.all)
    total += ireclaimed
    if ids:
        print("Deleted Images:")
        print("\n".join(ids) + "\n")
    print(f"Total reclaimed space: {render.human_size(total)}")
    return 0


def register(subparsers: Any, verb: str) -> None:
    if verb == "info":
        p = subparsers.add_parser("info", help="show system-wide information")
        p.add_argument("-f", "--format", help="json, or a Go template")
        p.set_defaults(func=cmd_info)
        return
    if verb == "version":
        p = subparsers.add_parser("version", help="show version information")
        p.add_argument("-f", "--format", help="json, or a Go template")
        p.set_defaults(func=cmd_version)
        return
    p = subparsers.add_parser("system", help="manage pallet")
    sub = p.add_subparsers(dest="system_command", metavar="COMMAND", parser_class=type(p))
    i = sub.add_parser("info", help="show system-wide information")
    i.add_argument("-f", "--format", help="json, or a Go template")
    i.set_defaults(func=cmd_info)
    pr = sub.add_parser("prune", help="remove stopped containers, dangling images (and unused volumes)")
    pr.add_argument(
        "-a", "--all", action="store_true", help="remove all unused images, not just dangling ones"
    )
    pr.add_argument("--volumes", action="store_true", help="also prune anonymous volumes")
    pr.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    pr.add_argument("--filter", action="append", default=[], help="until=, label=")
    pr.set_defaults(func=cmd_system_prune)
    from pallet.cli.storage import register_system_df
    from pallet.images.unpack import list_for_storage

    register_system_df(sub, list_images=list_for_storage, container_names=_container_names)


def _container_names(ctx: Context) -> dict[str, str]:
    """Container IDs to names, for ``system df -v``."""
    from pallet.engine import state

    return {c.id: c.name for c in state.state_for(ctx.root).list()}
