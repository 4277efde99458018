"""The container process: rlimits, user and groups, capabilities, environment, cwd, exec.

Shared by the init (``create``) and ``exec``. The order matters: rlimits and the bounding set
while still root; keep-caps across setuid; then the capability sets; no_new_privs; seccomp;
fds marked close-on-exec; execve.
"""

from __future__ import annotations

import _signal  # the builtin: `signal` is a .py module, not importable once the rootfs is pivoted
import os

from pallet.errors import RuntimeFailure
from pallet.runtime import capabilities, spec
from pallet.runtime import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ExecFailed(RuntimeFailure):
    """The process could not be executed (not found: 127; not executable: 126)."""

    def __init__(self, msg: str, code: int = 127) -> None:
        super().__init__(msg)
        self.exit_code = code


def set_rlimits(rlimits: list[dict[str, Any]]) -> None:
    import resource  # imported before pivot_root by create's _preload when there are rlimits

    for r in rlimits:
        num = spec.RLIMITS[r["type"]]
        soft, hard = r["soft"], r["hard"]
        inf = resource.RLIM_INFINITY
        soft = inf if soft >= 2**64 - 1 or soft < 0 else soft
        hard = inf if hard >= 2**64 - 1 or hard < 0 else hard
        try:
            resource.setrlimit(num, (soft, hard))
        except (OSError, ValueError) as e:
            cur = resource.getrlimit(num)[1]
            why = getattr(e, "strerror", None) or str(e)
            have = "unlimited" if cur == inf else str(cur)
            raise RuntimeFailure(
                f"setrlimit {r['type']} soft={r['soft']} hard={r['hard']}: {why} "
                f"(the host's hard limit is {have}; it refuses to raise hard limits)"
            ) from None


def home_for(uid: int, env: list[str]) -> list[str]:
    """Add HOME from the container's /etc/passwd when the config does not set it (as runc)."""
    if any(e.startswith("HOME=") for e in env):
        return env
    home = "/"
    try:
        with open("/etc/passwd", "rb") as f:
            for line in f.read().decode(errors="replace").splitlines():
                parts = line.split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    home = parts[5] or "/"
                    break
    except OSError:
        pass
    return [*env, f"HOME={home}"]


def lookup(arg0: str, env: list[str]) -> str:
    """Resolve args[0] like execvp, with the container's PATH; raises ExecFailed as runc words it."""
    if "/" in arg0:
        if not os.path.exists(arg0):
            raise ExecFailed(f'exec: "{arg0}": stat {arg0}: no such file or directory', 127)
        if os.path.isdir(arg0) or not os.access(arg0, os.X_OK):
            raise ExecFailed(f'exec: "{arg0}": permission denied', 126)
        return arg0
    path = ""
    for e in env:
        if e.startswith("PATH="):
            path = e[5:]
    for d in (path or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        cand = os.path.join(d or ".", arg0)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise ExecFailed(f'exec: "{arg0}": executable file not found in $PATH', 127)


def set_user(user: dict[str, Any], in_userns_setgroups_denied: bool = False) -> None:
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    groups = [int(g) for g in user.get("additionalGids") or []]
    try:
        if not in_userns_setgroups_denied:
            os.setgroups(groups)
    except OSError as e:
        raise RuntimeFailure(f"setgroups {groups}: {e.strerror}") from None
    try:
        os.setresgid(gid, gid, gid)
    except OSError as e:
        raise RuntimeFailure(f"setgid {gid}: {e.strerror} (is the gid mapped?)") from None
    try:
        os.setresuid(uid, uid, uid)
    except OSError as e:
        raise RuntimeFailure(f"setuid {uid}: {e.strerror} (is the uid mapped?)") from None


def apply_identity(proc: dict[str, Any], setgroups_denied: bool = False) -> None:
    """Bounding set, user switch keeping caps, then the effective/permitted/inheritable/ambient sets."""
    caps = proc.get("capabilities")
    user = proc.get("user") or {}
    if caps is not None:
        try:
            capabilities.drop_bounding(capabilities.parse(caps.get("bounding")))
        except OSError as e:
            raise RuntimeFailure(f"dropping bounding capabilities: {e.strerror}") from None
        capabilities.keep_caps(True)
    set_user(user, setgroups_denied)
    if caps is not None:
        capabilities.keep_caps(False)
        try:
            capabilities.set_sets(
                capabilities.parse(caps.get("effective")),
                capabilities.parse(caps.get("permitted")),
                capabilities.parse(caps.get("inheritable")),
            )
        except OSError as e:
            raise RuntimeFailure(f"capset: {e.strerror}") from None
        capabilities.set_ambient(capabilities.parse(caps.get("ambient")))
    um = user.get("umask")
    os.umask(0o022 if um is None else int(um))


def no_new_privileges() -> None:
    sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


def set_oom_score_adj(value: int | None) -> None:
    if value is None:
        return
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as e:
        raise RuntimeFailure(f"oom_score_adj {value}: {e.strerror}") from None


def chdir(cwd: str) -> None:
    try:
        os.chdir(cwd)
    except OSError as e:
        raise RuntimeFailure(f"chdir to cwd ({cwd!r}) set in config.json: {e.strerror}") from None


def close_fds(keep_extra: int) -> None:
    """Everything but 0-2 and the preserved fds becomes close-on-exec: no host fd leaks in."""
    for fd in range(3, 3 + keep_extra):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    try:
        sc.close_range(3 + keep_extra, 0xFFFFFFFF, sc.CLOSE_RANGE_CLOEXEC)
    except OSError:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd >= 3 + keep_extra:
                try:
                    os.set_inheritable(fd, False)
                except OSError:
                    pass


def env_dict(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in env:
        k, sep, v = e.partition("=")
        if sep:
            out[k] = v
    return out


def execve(path: str, args: list[str], env: list[str]) -> None:
    """Replace this process with the container's program.

    CPython ignores SIGPIPE and SIGXFSZ at start-up and ignored signals survive execve: put them
    back to the default so `yes | head` in a container ends as it does under runc."""
    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
    try:
        os.execve(path, args, env_dict(env))
    except OSError as e:
        code = 127 if e.errno == 2 else 126
        raise ExecFailed(f'exec: "{args[0]}": {e.strerror}', code) from None
