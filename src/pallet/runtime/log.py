"""runc-compatible logging without the ``logging`` module (5 ms to import).

``--log FILE --log-format json`` writes lines like runc's logrus output, which containerd and
conmon parse: ``{"level":"error","msg":"...","time":"2024-01-01T00:00:00Z"}``.
"""

from __future__ import annotations

import os
import time

from pallet.runtime import jsonio

_path: str | None = None
_json = False
_debug = False


def configure(path: str | None, fmt: str = "text", debug: bool = False) -> None:
    global _path, _json, _debug
    _path, _json, _debug = path or None, fmt == "json", debug


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def _write(level: str, msg: str) -> None:
    if _path is None:
        if level == "debug" and _debug:
            os.write(2, f"DEBU[{_now()}] {msg}\n".encode(errors="replace"))
        return
    if _json:
        line = jsonio.dumps({"level": level, "msg": msg, "time": _now()})
    else:
        line = f'time="{_now()}" level={level} msg="{msg}"'
    try:
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        os.write(fd, (line + "\n").encode(errors="replace"))
    finally:
        os.close(fd)


def debug(msg: str) -> None:
    if _debug:
        _write("debug", msg)


def info(msg: str) -> None:
    if _debug:
        _write("info", msg)


def warning(msg: str) -> None:
    _write("warning", msg)
    if _path is None:
        os.write(2, f"WARN: {msg}\n".encode(errors="replace"))


def error(msg: str) -> None:
    """Errors go to the log (if any) and, as one line, to stderr."""
    _write("error", msg)
    os.write(2, f"{msg}\n".encode(errors="replace"))
