"""``-u name|uid[:group|gid]`` resolved from the image's /etc/passwd and /etc/group, as docker does.

The files are read inside the container's root with :func:`pallet.engine.paths.read_in_root`,
so a symlinked /etc/passwd cannot make the engine read a host file.
"""

from __future__ import annotations

from pallet.engine.paths import read_in_root
from pallet.errors import EngineError
from pallet.records import dataclass, field


@dataclass(frozen=True)
class ExecUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = field(default=())
    home: str = "/"
    name: str = ""


def _parse(data: bytes | None, nfields: int) -> list[list[str]]:
    out = []
    if not data:
        return out
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < nfields:
            parts += [""] * (nfields - len(parts))
        out.append(parts)
    return out


def _int(text: str) -> int | None:
    try:
        v = int(text)
    except ValueError:
        return None
    return v if 0 <= v < 2**32 - 1 else None


def resolve(rootfs: str, spec: str | None, group_add: list[str] | tuple[str, ...] = ()) -> ExecUser:
    """Docker's GetExecUser: ``spec`` is "" (root), "name", "uid", "name:group", "uid:gid" ..."""
    spec = (spec or "").strip()
    user_part, _, group_part = spec.partition(":")
    if not user_part:
        user_part = "0"
    passwd = _parse(read_in_root(rootfs, "/etc/passwd"), 7)
    groups = _parse(read_in_root(rootfs, "/etc/group"), 4)

    uid_n = _int(user_part)
    entry = None
    for p in passwd:
        if (uid_n is None and p[0] == user_part) or (uid_n is not None and _int(p[2]) == uid_n):
            entry = p
            break
    if entry is None:
        if uid_n is None:
            raise EngineError(f"unable to find user {user_part}: no matching entries in passwd file")
        uid, gid, home, name = uid_n, 0, "/", ""
    else:
        uid = _int(entry[2]) or 0
        gid = _int(entry[3]) or 0
        home = entry[5] or "/"
        name = entry[0]

    if group_part:
        gid_n = _int(group_part)
        match = None
        for g in groups:
            if (gid_n is None and g[0] == group_part) or (gid_n is not None and _int(g[2]) == gid_n):
                match = g
                break
        if match is None:
            if gid_n is None:
                raise EngineError(f"unable to find group {group_part}: no matching entries in group file")
            gid = gid_n
        else:
            gid = _int(match[2]) or 0

    extra: list[int] = []
    if name:
        for g in groups:
            members = [m.strip() for m in g[3].split(",") if m.strip()]
            gnum = _int(g[2])
            if name in members and gnum is not None and gnum != gid and gnum not in extra:
                extra.append(gnum)
    for ga in group_add:
        gnum = _int(ga)
        if gnum is None:
            for g in groups:
                if g[0] == ga:
                    gnum = _int(g[2])
                    break
            if gnum is None:
                raise EngineError(f"unable to find group {ga}: no matching entries in group file")
        if gnum not in extra:
            extra.append(gnum)
    return ExecUser(uid=uid, gid=gid, additional_gids=tuple(extra), home=home, name=name)
