"""Driving an OCI runtime through runc's command line: the only way the engine talks to one.

Any runc-compatible binary works: ``pallet-runtime`` (the default when installed), ``runc``,
``crun``, ``runsc``, ``kata-runtime``. Each keeps its state under ``RUNROOT/runtime/<name>``.
Errors come from the runtime's ``--log`` (JSON lines); an exec failure is mapped to docker's
exit statuses as podman does: not found → 127, permission denied → 126, anything else → 125.
"""

from __future__ import annotations

import json
import os

from pallet.engine.errors import CommandNotExecutable, CommandNotFound, RuntimeNotFound
from pallet.errors import EngineError, RuntimeFailure

#: runtime names users may give to --runtime, and the binaries they stand for
KNOWN_RUNTIMES = {
    "pallet-runtime": "pallet-runtime",
    "runc": "runc",
    "crun": "crun",
    "runsc": "runsc",
    "kata": "kata-runtime",
    "kata-runtime": "kata-runtime",
    "youki": "youki",
}


def _which(name: str) -> str | None:
    """``name``'s executable. pallet-runtime: this installation's own first, the one beside this
    interpreter (a venv used without activating it: ``~/.venv/bin/pallet run`` finds
    ``~/.venv/bin/pallet-runtime``; it is the code the monitor can fork instead of executing),
    then $PATH's; any other runtime: $PATH's."""
    if name == "pallet-runtime":
        import sys

        beside = os.path.join(os.path.dirname(sys.executable), name)
        if os.access(beside, os.X_OK):
            return beside
    import shutil

    return shutil.which(name)


def default_runtime_name() -> str:
    """pallet-runtime when it is installed, else runc."""
    return "pallet-runtime" if _which("pallet-runtime") else "runc"


def resolve(name: str | None) -> tuple[str, str]:
    """(name, absolute path) of a runtime; a clear error when it is not installed."""
    if not name:
        own = _which("pallet-runtime")
        if own is not None:
            return "pallet-runtime", own
        name = "runc"
    if os.path.isabs(name):
        if not os.access(name, os.X_OK):
            raise RuntimeNotFound(f"OCI runtime {name} is not an executable file")
        return os.path.basename(name), name
    binary = KNOWN_RUNTIMES.get(name)
    if binary is None:
        raise RuntimeNotFound(
            f"unknown OCI runtime {name!r}: use one of "
            f"{', '.join(sorted(set(KNOWN_RUNTIMES) - {'kata-runtime'}))} or an absolute path"
        )
    path = _which(binary)
    if path is None:
        raise RuntimeNotFound(f"OCI runtime {name!r} is not installed ({binary} not found in $PATH)")
    return name, path


def last_error(log_path: str | os.PathLike[str]) -> str:
    """The last error message in a runtime's JSON log ('' if none)."""
    try:
        with open(log_path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    msg = ""
    for line in data.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            text = line.decode("utf-8", "replace")
            if text:
                msg = text
            continue
        if isinstance(obj, dict) and obj.get("level") in ("error", "fatal", "panic"):
            msg = str(obj.get("msg", ""))
    return msg


def classify(message: str) -> EngineError:
    """A runtime failure message as the error (and so exit status) docker would give."""
    low = message.lower()
    is_exec = "exec" in low or "executable" in low
    if (
        "executable file not found" in low
        or "executable file `" in low
        or (is_exec and "no such file or directory" in low)
    ):
        return CommandNotFound(message or "executable file not found")
    if is_exec and "permission denied" in low:
        return CommandNotExecutable(message or "permission denied")
    return RuntimeFailure(message or "the OCI runtime failed")


class Runtime:
    """One runtime binary with its state directory."""

    def __init__(self, name: str, path: str, state_root: str) -> None:
        self.name, self.path, self.state_root = name, path, state_root

    def __repr__(self) -> str:
        return f"Runtime({self.name!r}, {self.path!r}, {self.state_root!r})"

    @classmethod
    def for_container(
        cls, runroot: str | os.PathLike[str], name: str | None, path: str | None = None
    ) -> Runtime:
        if path and os.access(path, os.X_OK):
            rname = name or os.path.basename(path)
        else:
            rname, path = resolve(name)
        return cls(rname, path, os.path.join(os.fspath(runroot), "runtime", rname))

    def argv(self, *args: str, log: str | None = None) -> list[str]:
        out = [self.path, "--root", self.state_root]
        if log:
            out += ["--log", log, "--log-format", "json"]
        return out + list(args)

    def call(self, *args: str, log: str | None = None, timeout: float | None = 60) -> tuple[int, str]:
        """Run the runtime; (status, stderr text). Never raises for a nonzero status."""
        import subprocess

        try:
            res = subprocess.run(
                self.argv(*args, log=log),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout,
                close_fds=True,
            )
        except subprocess.TimeoutExpired:
            return 124, f"{self.name} {args[0]} timed out"
        return res.returncode, res.stderr.decode("utf-8", "replace").strip()

    def check(self, *args: str, what: str) -> None:
        rc, err = self.call(*args)
        if rc != 0:
            msg = err.splitlines()[-1] if err else f"exit status {rc}"
            raise RuntimeFailure(f"{what}: {self.name}: {_strip_level(msg)}")

    def state(self, container_id: str) -> dict | None:
        """The runtime's view of the container (``state``), None if it does not know it."""
        import subprocess

        res = subprocess.run(
            self.argv("state", container_id), stdin=subprocess.DEVNULL, capture_output=True, timeout=30
        )
        if res.returncode != 0:
            return None
        try:
            return json.loads(res.stdout)
        except ValueError:
            return None

    def kill(self, container_id: str, signal: int, *, all_procs: bool = False) -> None:
        args = ["kill"] + (["--all"] if all_procs else []) + [container_id, str(signal)]
        self.check(*args, what=f"sending signal {signal} to {container_id[:12]}")

    def delete(self, container_id: str) -> None:
        self.call("delete", "--force", container_id)


def _strip_level(msg: str) -> str:
    """runc prefixes plain-text errors with 'time=... level=error msg=...'; keep the message."""
    if 'msg="' in msg:
        return msg.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
    return msg
