"""runtime-spec hooks: each hook runs with the container state on stdin and its own timeout.

prestart/createRuntime/createContainer/startContainer failures abort the lifecycle step;
poststart/poststop failures are logged as warnings (the spec says the lifecycle continues).
"""

from __future__ import annotations

from pallet.errors import RuntimeFailure
from pallet.runtime import jsonio, log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class HookFailed(RuntimeFailure):
    """A hook exited nonzero, could not start, or timed out."""


def run_one(kind: str, hook: dict[str, Any], state: dict[str, Any]) -> None:
    import subprocess

    path = hook["path"]
    args = hook.get("args") or [path]
    env = hook.get("env")
    try:
        res = subprocess.run(
            args,
            executable=path,
            input=jsonio.dumps(state).encode(),
            env=None if env is None else dict(e.split("=", 1) for e in env if "=" in e),
            capture_output=True,
            timeout=hook.get("timeout"),
            close_fds=True,
        )
    except subprocess.TimeoutExpired:
        raise HookFailed(f"{kind} hook {path}: timed out after {hook.get('timeout')}s") from None
    except OSError as e:
        raise HookFailed(f"{kind} hook {path}: {e.strerror}") from None
    if res.returncode != 0:
        out = (res.stderr or res.stdout).decode(errors="replace").strip().replace("\n", " ")
        what = f"exit status {res.returncode}" if res.returncode > 0 else f"signal {-res.returncode}"
        raise HookFailed(f"{kind} hook {path}: {what}" + (f": {out}" if out else ""))


def run(
    kind: str, hooks: list[dict[str, Any]] | None, state: dict[str, Any], *, warn_only: bool = False
) -> None:
    for h in hooks or []:
        try:
            run_one(kind, h, state)
        except HookFailed as e:
            if not warn_only:
                raise
            log.warning(str(e))


def has(cfg: dict[str, Any], *kinds: str) -> bool:
    hk = cfg.get("hooks") or {}
    return any(hk.get(k) for k in kinds)
