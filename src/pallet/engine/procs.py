"""Process identity from /proc: a pid plus its start time names one process, even after pid reuse."""

from __future__ import annotations


def now_rfc3339() -> str:
    """UTC time with nanoseconds, as docker prints it (2024-01-02T03:04:05.123456789Z)."""
    import time

    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def proc_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (start time in clock ticks); 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    try:
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return 0


def alive(pid: int, start: int) -> bool:
    """Is ``pid`` still the process that started at ``start`` (0: any), and not a zombie?"""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    rest = data[data.rindex(b")") + 2 :].split()
    if rest[0] in (b"Z", b"X"):
        return False
    return start == 0 or int(rest[19]) == start


_TRACE = __import__("os").environ.get("PALLET_TRACE")


def trace(event: str) -> None:
    """Append a timestamped event to $PALLET_TRACE (start-up profiling across CLI and monitor)."""
    if _TRACE:
        import os
        import time

        with open(_TRACE, "a") as f:
            f.write(f"{time.monotonic():.4f} {os.getpid()} {event} cpu={time.process_time() * 1000:.1f}\n")
