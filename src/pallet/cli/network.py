"""``pallet network``: create, ls, inspect, rm, prune, exists, reload, connect, disconnect.

Flags and output follow podman's ``network`` commands. ``connect``/``disconnect`` work on a
running container, which only the engine can find: :func:`resolve_container` is the hook the
engine fills in (container name or id -> id, name, network namespace path).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from pallet.context import Context
from pallet.errors import UsageError


def resolve_container(name_or_id: str, ctx: Context) -> tuple[str, str, str]:
    """(container id, container name, netns path) of a running container on bridge networks."""
    from pallet.engine import networking

    return networking.resolve_container(name_or_id, ctx)


def _kv(items: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid {what} {item!r}: expected KEY=VALUE")
        out[key] = value if sep else ""
    return out


def register(subparsers: Any, verb: str) -> None:
    p = subparsers.add_parser(
        "network",
        help="manage networks",
        description="Manage bridge networks: create, list, inspect, remove, prune, "
        "and connect or disconnect running containers.",
    )
    sub = p.add_subparsers(dest="network_command", metavar="COMMAND", parser_class=type(p))

    c = sub.add_parser(
        "create",
        help="create a network",
        description="Create a bridge network. Its bridge, addresses and rules appear with "
        "its first container and go with its last.",
    )
    c.add_argument("-d", "--driver", default="bridge", help="network driver (only bridge)")
    c.add_argument("--subnet", help="subnet in CIDR form (default: a free /24 from 10.89.0.0/16 ...)")
    c.add_argument("--gateway", help="gateway address in the subnet (default: its first address)")
    c.add_argument("--internal", action="store_true", help="no outbound traffic and no route out")
    c.add_argument("--label", action="append", metavar="KEY=VALUE", help="set metadata (repeatable)")
    c.add_argument("--disable-dns", action="store_true", help="no DNS responder for container names")
    c.add_argument(
        "--dns",
        action="append",
        metavar="IP",
        help="upstream resolvers of the network's DNS (default: the host's)",
    )
    c.add_argument("-o", "--opt", action="append", metavar="KEY=VALUE", help="driver option: mtu=N")
    c.add_argument("--interface-name", help="name of the bridge on the host")
    c.add_argument("--ignore", action="store_true", help="do not fail if the network exists")
    c.add_argument("name", metavar="NAME")
    c.set_defaults(func=create)

    ls = sub.add_parser("ls", aliases=["list"], help="list networks", description="List networks.")
    ls.add_argument("-q", "--quiet", action="store_true", help="print names only")
    ls.add_argument("--format", help="json, or a template like '{{.Name}} {{.Driver}}'")
    ls.add_argument(
        "-f", "--filter", action="append", metavar="KEY=VALUE", help="name=, id=, driver=, label=KEY[=VALUE]"
    )
    ls.add_argument("--no-trunc", action="store_true", help="print full network ids")
    ls.set_defaults(func=list_)

    i = sub.add_parser("inspect", help="show networks in JSON", description="Show networks in detail.")
    i.add_argument("-f", "--format", help="a template like '{{.Subnets}}' (default: JSON)")
    i.add_argument("names", nargs="+", metavar="NETWORK")
    i.set_defaults(func=inspect)

    r = sub.add_parser("rm", aliases=["remove"], help="remove networks", description="Remove networks.")
    r.add_argument("-f", "--force", action="store_true", help="disconnect containers using it first")
    r.add_argument("names", nargs="+", metavar="NETWORK")
    r.set_defaults(func=remove)

    pr = sub.add_parser(
        "prune",
        help="remove unused networks",
        description="Remove every network (but the default) that no container uses.",
    )
    pr.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    pr.add_argument("--filter", action="append", metavar="label=KEY[=VALUE]", help="only these networks")
    pr.set_defaults(func=prune)

    e = sub.add_parser("exists", help="exit 0 if a network exists, 1 if not")
    e.add_argument("name", metavar="NETWORK")
    e.set_defaults(func=exists)

    rl = sub.add_parser(
        "reload",
        help="re-apply firewall rules and clean up after crashes",
        description="Rewrite pallet's nftables table from its state (after a firewall "
        "reload flushed it) and remove what dead containers left.",
    )
    rl.set_defaults(func=reload)

    cn = sub.add_parser(
        "connect",
        help="connect a container to a network",
        description="Connect a container to a network: at once if it runs, else from its next start.",
    )
    cn.add_argument("--alias", action="append", default=[], help="network-scoped alias (repeatable)")
    cn.add_argument("--ip", help="IPv4 address from the network's subnet")
    cn.add_argument("--mac-address", help="MAC address of the new interface")
    cn.add_argument("network", metavar="NETWORK")
    cn.add_argument("container", metavar="CONTAINER")
    cn.set_defaults(func=connect)

    dc = sub.add_parser(
        "disconnect",
        help="disconnect a container from a network",
        description="Disconnect a container from a network: at once if it runs, and for its next starts.",
    )
    dc.add_argument("-f", "--force", action="store_true", help="accepted for compatibility")
    dc.add_argument("network", metavar="NETWORK")
    dc.add_argument("container", metavar="CONTAINER")
    dc.set_defaults(func=disconnect)


def create(args: argparse.Namespace, ctx: Context) -> int:
    from pallet import network

    net = network.create(
        args.name,
        subnet=args.subnet,
        gateway=args.gateway,
        internal=args.internal,
        labels=_kv(args.label, "label"),
        dns=not args.disable_dns,
        driver=args.driver,
        options=_kv(args.opt, "option"),
        dns_servers=args.dns,
        interface_name=args.interface_name,
        ignore=args.ignore,
        ctx=ctx,
    )
    print(net.name)
    return 0


def _template(fmt: str, obj: dict[str, Any]) -> str:
    def field(m: re.Match[str]) -> str:
        value: Any = obj
        for part in m.group(1).split("."):
            if not part:
                continue
            value = value.get(part, "") if isinstance(value, dict) else ""
        return json.dumps(value) if isinstance(value, dict | list) else str(value)

    fmt = fmt.replace("\\t", "\t").replace("\\n", "\n")
    return re.sub(r"\{\{\s*((?:\.[A-Za-z0-9_]+)+|\.)\s*\}\}", field, fmt)


def _view(doc: dict[str, Any]) -> dict[str, Any]:
    """Template fields as podman names them (.Name, .ID, .Driver, .Subnets ...)."""
    return {
        "Name": doc["name"],
        "ID": doc["id"],
        "Driver": doc["driver"],
        "Created": doc["created"],
        "NetworkInterface": doc["network_interface"],
        "Internal": doc["internal"],
        "DNSEnabled": doc["dns_enabled"],
        "Labels": doc["labels"],
        "Options": doc["options"],
        "Subnets": doc["subnets"],
        "IPv6Enabled": doc["ipv6_enabled"],
        "Containers": doc.get("containers", {}),
        **doc,
    }


def _matches(doc: dict[str, Any], filters: list[str]) -> bool:
    for f in filters:
        key, sep, value = f.partition("=")
        if not sep:
            raise UsageError(f"invalid filter {f!r}: expected KEY=VALUE")
        if key == "name":
            if not re.search(value, doc["name"]):
                return False
        elif key == "id":
            if not doc["id"].startswith(value):
                return False
        elif key == "driver":
            if doc["driver"] != value:
                return False
        elif key == "label":
            lk, lsep, lv = value.partition("=")
            if lk not in doc["labels"] or (lsep and doc["labels"][lk] != lv):
                return False
        else:
            raise UsageError(f"invalid filter {key!r}: name, id, driver or label")
    return True


def list_(args: argparse.Namespace, ctx: Context) -> int:
    from pallet import network
    from pallet.cli import render

    docs = [n.to_dict() for n in network.list_networks(ctx)]
    docs = [d for d in docs if _matches(d, args.filter or [])]
    if args.quiet:
        for d in docs:
            print(d["name"])
    elif args.format == "json":
        render.print_json(docs)
    elif args.format:
        for d in docs:
            print(_template(args.format, _view(d)))
    else:
        render.table(
            ["NETWORK ID", "NAME", "DRIVER"],
            [[d["id"] if args.no_trunc else d["id"][:12], d["name"], d["driver"]] for d in docs],
        )
    return 0


def inspect(args: argparse.Namespace, ctx: Context) -> int:
    from pallet import network
    from pallet.cli import render

    docs, missing = [], []
    for name in args.names:
        try:
            docs.append(network.inspect(name, ctx))
        except network.NetworkNotFound:
            missing.append(name)
    if args.format:
        for d in docs:
            print(_template(args.format, _view(d)))
    else:
        render.print_json(docs)
    if missing:
        raise network.NetworkNotFound(f"network {missing[0]!r} not found")
    return 0


def _remove_one(name: str, force: bool, ctx: Context) -> str:
    """podman's ``network rm``: refused while any container (running or not) is configured to use
    the network; ``-f`` removes those containers first (stopping running ones)."""
    from pallet import network
    from pallet.engine import containers, networking
    from pallet.network import store

    if name in ("bridge", network.DEFAULT_NETWORK):
        raise network.InvalidNetworkConfig(
            f"the default network {network.DEFAULT_NETWORK!r} cannot be removed"
        )
    net = store.find(ctx, name)
    users = networking.containers_using(ctx, net.name)
    if users and not force:
        names = ", ".join(sorted(c.name for c in users))
        raise network.NetworkInUse(
            f"network {net.name} is in use by container(s): {names} (pallet network rm -f removes them)"
        )
    for c in users:
        containers.remove(c.id, force=True, volumes=True, ctx=ctx)
    return network.remove(net.name, force=force, ctx=ctx)


def remove(args: argparse.Namespace, ctx: Context) -> int:
    from pallet import network

    first: Exception | None = None
    for name in args.names:
        try:
            print(_remove_one(name, args.force, ctx))
        except network.NetworkError as e:
            if first is None:
                first = e
            else:
                print(f"Error: {e}", file=sys.stderr)
    if first is not None:
        raise first
    return 0


def prune(args: argparse.Namespace, ctx: Context) -> int:
    from pallet import network

    labels: dict[str, str | None] = {}
    for f in args.filter or []:
        key, sep, value = f.partition("=")
        if key != "label" or not sep:
            raise UsageError(f"invalid filter {f!r}: only label=KEY[=VALUE]")
        lk, lsep, lv = value.partition("=")
        labels[lk] = lv if lsep else None
    if not args.force:
        sys.stderr.write(
            "WARNING! This will remove all networks not used by at least one container.\n"
            "Are you sure you want to continue? [y/N] "
        )
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower() if sys.stdin and not sys.stdin.closed else ""
        if answer not in ("y", "yes"):
            return 0
    from pallet.engine import networking

    for name in network.prune(labels or None, ctx, keep=networking.used_networks(ctx)):
        print(name)
    return 0


def exists(args: argparse.Namespace, ctx: Context) -> int:
    from pallet import network

    return 0 if network.exists(args.name, ctx) else 1


def reload(args: argparse.Namespace, ctx: Context) -> int:
    from pallet import network

    network.reload(ctx)
    return 0


def connect(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import networking

    networking.connect(
        ctx, args.container, args.network, aliases=args.alias, ip=args.ip, mac=args.mac_address
    )
    return 0


def disconnect(args: argparse.Namespace, ctx: Context) -> int:
    from pallet.engine import networking

    networking.disconnect(ctx, args.container, args.network)
    return 0
